package nginx

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock is a settable millisecond clock starting, like a machine up for a
// while, well past zero.
type fakeClock struct{ now uint64 }

const t0 = 100_000

func (c *fakeClock) read() uint64 { return c.now }

type limitSpec struct {
	rate    string
	burst   uint64
	delay   uint64
	nodelay bool
}

// step is one request: at ms after t0, with one key per limit, and what
// nginx decides for it.
type step struct {
	at     uint64
	keys   []string
	status Status
	delay  time.Duration // Delayed and DelayedDryRun
	excess uint64        // thousandths, for Delayed and Rejected
	zone   int           // limit that delayed or rejected
}

func newSet(t *testing.T, c *fakeClock, specs []limitSpec, dryRun bool) *Set {
	t.Helper()
	var limits []Limit
	for i, s := range specs {
		z, err := NewZone(ZoneConfig{Name: fmt.Sprint("z", i), Rate: MustParseRate(s.rate), MaxKeys: 100}, c.read)
		if err != nil {
			t.Fatal(err)
		}
		limits = append(limits, Limit{Zone: z, Burst: s.burst, Delay: s.delay, NoDelay: s.nodelay})
	}
	set, err := NewSet(limits, dryRun)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func k(keys ...string) []string { return keys }

func pass(at uint64, keys ...string) step { return step{at: at, keys: keys, status: Passed} }
func delayed(at uint64, ms int, excess uint64, keys ...string) step {
	return step{at: at, keys: keys, status: Delayed, delay: time.Duration(ms) * time.Millisecond, excess: excess}
}
func rejected(at uint64, excess uint64, zone int, keys ...string) step {
	return step{at: at, keys: keys, status: Rejected, excess: excess, zone: zone}
}

// TestGolden replays arrival schedules request by request and checks each
// decision against what nginx's limit_req arithmetic gives (worked out by
// hand from the module's integer formulas, in the comments).
func TestGolden(t *testing.T) {
	seven := func(mk func(i int) step) []step {
		var out []step
		for i := 0; i < 7; i++ {
			out = append(out, mk(i))
		}
		return out
	}
	tests := []struct {
		name   string
		limits []limitSpec
		dryRun bool
		steps  []step
	}{
		{
			// The documentation's example: seven requests in the same
			// millisecond. The first finds no node (excess 0); each next
			// adds 1000; 10r/s drains 1000 per 100 ms, so the n-th waits
			// (n-1)×100 ms; the seventh's 6000 is over burst 5000.
			name:   "10r/s burst=5, seven at once",
			limits: []limitSpec{{rate: "10r/s", burst: 5}},
			steps: append(seven(func(i int) step {
				if i == 0 {
					return pass(0, "a")
				}
				if i == 6 {
					return rejected(0, 6000, 0, "a")
				}
				return delayed(0, 100*i, uint64(1000*i), "a")
			}),
				// 100 ms later the stored 5000 has drained to 4000: one more
				// is admitted at 5000, delayed 500 ms.
				delayed(100, 500, 5000, "a"),
				// Another key has its own state.
				pass(100, "b"),
				// 1 ms later 10 thousandths drained: 4990+1000 > 5000.
				rejected(101, 5990, 0, "a"),
			),
		},
		{
			name:   "10r/s burst=5 nodelay, seven at once",
			limits: []limitSpec{{rate: "10r/s", burst: 5, nodelay: true}},
			steps: append(seven(func(i int) step {
				if i == 6 {
					return rejected(0, 6000, 0, "a")
				}
				return pass(0, "a")
			}),
				// nodelay admits at once but still charges: the excess is 5000,
				// so only one more fits after 100 ms.
				pass(100, "a"),
				rejected(100, 6000, 0, "a"),
			),
		},
		{
			// Two-stage: the first delay=2 above the rate pass at once,
			// the rest of the burst waits (excess-2000)/10 ms.
			name:   "10r/s burst=5 delay=2, seven at once",
			limits: []limitSpec{{rate: "10r/s", burst: 5, delay: 2}},
			steps: seven(func(i int) step {
				switch {
				case i <= 2:
					return pass(0, "a")
				case i == 6:
					return rejected(0, 6000, 0, "a")
				}
				return delayed(0, 100*(i-2), uint64(1000*i), "a")
			}),
		},
		{
			// No burst: the second request within the second is over 0.
			// Rejected requests charge nothing, so 1000 ms after the first
			// the excess is back to 0.
			name:   "1r/s",
			limits: []limitSpec{{rate: "1r/s"}},
			steps: []step{
				pass(0, "a"),
				rejected(999, 1, 0, "a"),
				pass(1000, "a"),
				rejected(1500, 500, 0, "a"),
				pass(2000, "a"),
			},
		},
		{
			// 30r/m is 500 thousandths per second, one request per 2 s.
			name:   "30r/m",
			limits: []limitSpec{{rate: "30r/m"}},
			steps: []step{
				pass(0, "a"),
				rejected(1999, 1, 0, "a"),
				pass(2000, "a"),
			},
		},
		{
			// 1r/m is 16 thousandths per second (1000/60 truncated): the
			// bucket drains in 62.5 s, not 60.
			name:   "1r/m truncates",
			limits: []limitSpec{{rate: "1r/m"}},
			steps: []step{
				pass(0, "a"),
				rejected(60000, 40, 0, "a"),
				rejected(62499, 1, 0, "a"),
				pass(62500, "a"),
			},
		},
		{
			// Per key and per server. A request rejected by the first zone
			// is not charged to the second: c is then admitted by the
			// second zone, whose burst 1 would have been used up by b.
			name:   "two zones, rejected by the first charges neither",
			limits: []limitSpec{{rate: "1r/s"}, {rate: "10r/s", burst: 1, nodelay: true}},
			steps: []step{
				pass(0, "a", "srv"),
				rejected(0, 1000, 0, "a", "srv"),
				rejected(0, 1000, 0, "a", "srv"),
				pass(0, "b", "srv"),
				rejected(0, 2000, 1, "c", "srv"),
				// c's node in the first zone was created by the lookup and
				// released uncharged: c still passes it once the server
				// zone has drained.
				pass(100, "c", "srv"),
			},
		},
		{
			// The longest delay wins and names its zone: 1r/s asks
			// 1000 ms, 10r/s 100 ms.
			name:   "two zones, longest delay",
			limits: []limitSpec{{rate: "10r/s", burst: 5}, {rate: "1r/s", burst: 5}},
			steps: []step{
				pass(0, "k", "k"),
				{at: 0, keys: k("k", "k"), status: Delayed, delay: time.Second, excess: 1000, zone: 1},
				// 500 ms later: zone 0 holds 0, zone 1 holds 500; now 1500
				// in zone 1, 1000 in zone 0.
				{at: 500, keys: k("k", "k"), status: Delayed, delay: 1500 * time.Millisecond, excess: 1500, zone: 1},
			},
		},
		{
			// The first zone's delay is the longer one: it is found while
			// committing the earlier zones.
			name:   "two zones, the earlier zone delays",
			limits: []limitSpec{{rate: "1r/s", burst: 5}, {rate: "100r/s", burst: 5}},
			steps: []step{
				pass(0, "k", "k"),
				{at: 0, keys: k("k", "k"), status: Delayed, delay: time.Second, excess: 1000, zone: 0},
			},
		},
		{
			// An empty key is not counted: with every key empty nginx does
			// not limit at all, and the other zones decide alone.
			name:   "empty keys",
			limits: []limitSpec{{rate: "1r/s"}, {rate: "1r/s"}},
			steps: []step{
				{at: 0, keys: k("", ""), status: NotLimited, zone: -1},
				{at: 0, keys: k("", ""), status: NotLimited, zone: -1},
				pass(0, "a", ""),
				rejected(0, 1000, 0, "a", ""),
				pass(0, "", "b"),
				rejected(0, 1000, 1, "", "b"),
			},
		},
		{
			// Dry run: nothing is held back, keys are charged the same,
			// the status tells what would have been done.
			name:   "dry run",
			limits: []limitSpec{{rate: "10r/s", burst: 1}},
			dryRun: true,
			steps: []step{
				pass(0, "a"),
				{at: 0, keys: k("a"), status: DelayedDryRun, delay: 100 * time.Millisecond, excess: 1000},
				{at: 0, keys: k("a"), status: RejectedDryRun, excess: 2000},
				{at: 100, keys: k("a"), status: DelayedDryRun, delay: 100 * time.Millisecond, excess: 1000},
			},
		},
	}
	for _, tc := range tests {
		// Decide reads the zones' clock; DecideAt is given the time, and
		// the zones' clock, left at zero, must not be read.
		for _, given := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/given=%v", tc.name, given), func(t *testing.T) {
				golden(t, tc.limits, tc.dryRun, tc.steps, given)
			})
		}
	}
}

func golden(t *testing.T, limits []limitSpec, dryRun bool, steps []step, given bool) {
	c := &fakeClock{now: t0}
	set := newSet(t, c, limits, dryRun)
	for i, st := range steps {
		var d Decision
		if given {
			c.now = 0 // a clock the zones must not read
			d = set.DecideAt(st.keys, t0+st.at)
		} else {
			c.now = t0 + st.at
			d = set.Decide(st.keys)
		}
		if d.Status != st.status {
			t.Fatalf("request %d at +%dms %v: status %v, want %v (%+v)", i+1, st.at, st.keys, d.Status, st.status, d)
		}
		if d.Delay != st.delay {
			t.Errorf("request %d: delay %v, want %v", i+1, d.Delay, st.delay)
		}
		if st.status != Passed && st.status != NotLimited {
			if d.Excess != st.excess || d.Zone != st.zone {
				t.Errorf("request %d: excess %d zone %d, want %d zone %d", i+1, d.Excess, d.Zone, st.excess, st.zone)
			}
		}
	}
}

func TestOriginAt(t *testing.T) {
	o := NewOrigin()
	clock := o.Clock()
	before := clock()
	now := time.Now()
	after := clock()
	at := o.At(now)
	if at < before || at > after {
		t.Fatalf("At(now) = %d, outside the clock's %d..%d", at, before, after)
	}
	if got, want := o.At(now.Add(1500*time.Millisecond)), at+1500; got != want {
		t.Fatalf("At 1.5 s later = %d, want %d", got, want)
	}
	if got := o.At(now.Add(-48 * time.Hour)); got != uint64(24*time.Hour/time.Millisecond) {
		t.Fatalf("At before the origin = %d, want the head start", got)
	}
}

func TestRetryAfterAndHeadroom(t *testing.T) {
	c := &fakeClock{now: t0}
	set := newSet(t, c, []limitSpec{{rate: "3r/s", burst: 2, nodelay: true}}, false)
	for i, wantRemaining := range []int64{2, 1, 0} {
		d := set.Decide(k("a"))
		if d.Status != Passed || d.Remaining != wantRemaining || d.Tightest != 0 {
			t.Fatalf("request %d: %+v, want passed with %d remaining", i+1, d, wantRemaining)
		}
	}
	d := set.Decide(k("a"))
	// Excess 3000 over burst 2000: 1000 thousandths at 3000/s is 333.3 ms.
	if d.Status != Rejected || d.RetryAfter != 334*time.Millisecond || d.Reset != time.Second {
		t.Fatalf("rejection %+v, want retry after 334ms, reset 1s", d)
	}
	c.now += 333
	if d := set.Decide(k("a")); d.Status != Rejected {
		t.Fatalf("at 333 ms: %v", d.Status)
	}
	c.now++
	if d := set.Decide(k("a")); d.Status != Passed {
		t.Fatalf("at Retry-After: %v", d.Status)
	}
	if e, ok := set.limits[0].zone.Excess("a"); !ok || e != 1998 { // 2000 - 3000×334/1000 + 1000
		t.Fatalf("Excess = %d %v", e, ok)
	}
	if _, ok := set.limits[0].zone.Excess("zz"); ok {
		t.Fatal("Excess of an unknown key")
	}
}

func TestClockGoingBack(t *testing.T) {
	c := &fakeClock{now: t0}
	set := newSet(t, c, []limitSpec{{rate: "1r/s", burst: 10}}, false)
	set.Decide(k("a")) // excess 0, last t0
	c.now = t0 - 10
	// Up to a minute back counts as no time passed.
	if d := set.Decide(k("a")); d.Excess != 1000 {
		t.Fatalf("10 ms back: %+v", d)
	}
	c.now = t0 - 70_000
	// Further back counts as 1 ms (1r/s drains 1 thousandth).
	if d := set.Decide(k("a")); d.Excess != 1999 {
		t.Fatalf("70 s back: %+v", d)
	}
}

func TestZoneFullEvictsAndExpires(t *testing.T) {
	c := &fakeClock{now: t0}
	z, _ := NewZone(ZoneConfig{Name: "z", Rate: MustParseRate("1r/s"), MaxKeys: 2}, c.read)
	set, _ := NewSet([]Limit{{Zone: z, Burst: 5}}, false)
	set.Decide(k("a"))
	set.Decide(k("b"))
	set.Decide(k("b"))
	// Full, nothing idle: the least recently used key goes.
	set.Decide(k("c"))
	if st := z.Stats(); st.Keys != 2 || st.Evicted != 1 || st.Expired != 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := z.Excess("a"); ok {
		t.Fatal("a was not the one evicted")
	}
	// A minute later both have drained and are dropped as idle before a
	// forced eviction is needed.
	c.now += 61_000
	set.Decide(k("d"))
	if st := z.Stats(); st.Keys != 1 || st.Expired != 2 || st.Evicted != 1 {
		t.Fatalf("stats after idle expiry %+v", st)
	}
}

func TestZoneFullWithEveryKeyInUse(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		c := &fakeClock{now: t0}
		z, _ := NewZone(ZoneConfig{Name: "z", Rate: MustParseRate("1r/s"), MaxKeys: 1, FailOpen: failOpen}, c.read)
		// Hold the only key the way a request between lookup and commit
		// does.
		if r, _, _ := z.lookup("held", 0, false, moment{}); r != again {
			t.Fatal(r)
		}
		set, _ := NewSet([]Limit{{Zone: z}}, false)
		d := set.Decide(k("new"))
		want := Rejected
		if failOpen {
			want = NotLimited
		}
		if d.Status != want || d.ZoneFull == failOpen {
			t.Fatalf("failOpen=%v: %+v", failOpen, d)
		}
		if z.Stats().Full != 1 {
			t.Fatalf("full counter %+v", z.Stats())
		}
	}
}

// TestAcceptedWithinRate: in every window of T ms, the requests admitted
// (passed or delayed) are at most rate·T + burst + 1, whatever the arrivals.
func TestAcceptedWithinRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		rate := []string{"1r/s", "7r/s", "10r/s", "100r/s", "30r/m", "1000r/s"}[rng.IntN(6)]
		burst := uint64(rng.IntN(20))
		spec := limitSpec{rate: rate, burst: burst, nodelay: rng.IntN(2) == 0}
		if !spec.nodelay && burst > 0 {
			spec.delay = uint64(rng.IntN(int(burst) + 1))
		}
		c := &fakeClock{now: t0}
		set := newSet(t, c, []limitSpec{spec}, false)
		r := MustParseRate(rate)
		var admitted []uint64
		for i := 0; i < 2000; i++ {
			c.now += uint64(rng.ExpFloat64() * float64(rng.IntN(50)+1))
			if d := set.Decide(k("a")); d.Status == Passed || d.Status == Delayed {
				admitted = append(admitted, c.now)
			}
		}
		for _, window := range []uint64{1, 10, 100, 1000, 5000} {
			limit := uint64(r)*window/1_000_000 + burst + 1
			for i, start := range admitted {
				n := uint64(0)
				for _, at := range admitted[i:] {
					if at >= start+window {
						break
					}
					n++
				}
				if n > limit {
					t.Fatalf("trial %d (%+v): %d admitted in %d ms from %d, bound %d", trial, spec, n, window, start, limit)
				}
			}
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  bool
	}{
		{"10r/s", 10000, false},
		{"1r/s", 1000, false},
		{"30r/m", 500, false},
		{"1r/m", 16, false},
		{"0r/s", 0, true},
		{"r/s", 0, true},
		{"-1r/s", 0, true},
		{"+1r/s", 0, true},
		{"1.5r/s", 0, true},
		{"10r/h", 0, true},
		{"10", 0, true},
		{"99999999999999999999r/s", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestStatusNames(t *testing.T) {
	for s, want := range map[Status]string{Passed: "PASSED", Delayed: "DELAYED", Rejected: "REJECTED", DelayedDryRun: "DELAYED_DRY_RUN", RejectedDryRun: "REJECTED_DRY_RUN"} {
		if s.String() != want {
			t.Errorf("%d = %s", s, s)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10r/s", "30r/m", "0r/s", "r/m", "1e3r/s", "18446744073709551616r/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err == nil && r == 0 {
			t.Fatalf("%q parsed to a zero rate", s)
		}
	})
}
