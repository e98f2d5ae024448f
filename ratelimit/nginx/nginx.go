// Package nginx is nginx's limit_req algorithm, reproduced decision for
// decision: the same integer arithmetic in thousandths of a request, the
// same millisecond clock, the same order of lookups and of the commit across
// several zones (a request refused by one zone is charged to none), burst,
// nodelay, delay=N and dry run.
//
// A Zone is what limit_req_zone declares: a rate and a table of keys, each
// with its excess (requests above the rate, in thousandths) and the
// millisecond it was last charged. A Set is what the limit_req directives of
// one location declare: an ordered list of Limits (zone, burst, delay) and
// the dry-run switch. Set.Decide takes one key per limit and answers like
// the module would: PASSED, DELAYED for N ms, or REJECTED.
//
//	zone, _ := nginx.NewZone(nginx.ZoneConfig{Name: "perip", Rate: nginx.MustParseRate("10r/s"), MaxKeys: 100000}, nil)
//	set, _ := nginx.NewSet([]nginx.Limit{{Zone: zone, Burst: 5}}, false)
//	d := set.Decide([]string{clientIP})
//	switch d.Status {
//	case nginx.Rejected: // answer 429 (nginx's default is 503)
//	case nginx.Delayed: // wait d.Delay, then serve
//	}
//
// Everything is safe for concurrent use.
package nginx

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opskit/opskit/ratelimit/internal/lru"
)

// Rate is a zone's rate in thousandths of a request per second, the unit
// nginx computes in: 10r/s is 10000, 30r/m is 500, 1r/m is 16.
type Rate uint64

// ParseRate reads nginx's "Nr/s" or "Nr/m" (N a positive integer).
func ParseRate(s string) (Rate, error) {
	var scale uint64
	switch {
	case strings.HasSuffix(s, "r/s"):
		scale = 1
	case strings.HasSuffix(s, "r/m"):
		scale = 60
	default:
		return 0, fmt.Errorf("rate %q: want Nr/s or Nr/m", s)
	}
	digits := s[:len(s)-3]
	n, err := strconv.ParseUint(digits, 10, 63)
	if err != nil || n == 0 || strings.ContainsAny(digits, "+-") {
		return 0, fmt.Errorf("rate %q: want a positive whole number of requests", s)
	}
	if n > math.MaxInt64/1000 {
		return 0, fmt.Errorf("rate %q is too large", s)
	}
	return Rate(n * 1000 / scale), nil
}

// MustParseRate is ParseRate for constants; it panics on a bad rate.
func MustParseRate(s string) Rate {
	r, err := ParseRate(s)
	if err != nil {
		panic(err)
	}
	return r
}

// String prints the rate as nginx would accept it where it can.
func (r Rate) String() string {
	if r%1000 == 0 {
		return fmt.Sprintf("%dr/s", r/1000)
	}
	return fmt.Sprintf("%d.%03dr/s", r/1000, r%1000)
}

// Clock returns milliseconds on a clock that does not go backwards, like
// nginx's ngx_current_msec (milliseconds of CLOCK_MONOTONIC).
type Clock func() uint64

// MonotonicClock returns milliseconds since an origin one day before the
// call, read from Go's monotonic clock. The day of head start matters: nginx
// gives a key first seen in a zone that is not the last of a location a
// "last charged" time of 0, so its first charge decays by rate × now; with
// now of at least a day, as on any machine up for a day, that decay clears
// the charge, as it does in nginx.
func MonotonicClock() Clock {
	return NewOrigin().Clock()
}

// Origin is the zero of a MonotonicClock, kept so that a caller that has
// already read the time for a request can give the clock's value at that
// time (At) instead of having the zone read the clock again.
type Origin struct{ t time.Time }

// headStart is the day a MonotonicClock starts at (see MonotonicClock).
const headStart = uint64(24 * time.Hour / time.Millisecond)

// NewOrigin starts a monotonic millisecond clock now.
func NewOrigin() Origin { return Origin{t: time.Now()} }

// Clock reads the clock.
func (o Origin) Clock() Clock {
	return func() uint64 { return headStart + uint64(time.Since(o.t)/time.Millisecond) }
}

// At is the clock's value at t, a time read from time.Now (its monotonic
// reading is used); a t before the origin counts as the origin.
func (o Origin) At(t time.Time) uint64 {
	d := t.Sub(o.t)
	if d < 0 {
		d = 0
	}
	return headStart + uint64(d/time.Millisecond)
}

// ZoneConfig declares a zone.
type ZoneConfig struct {
	Name string
	Rate Rate
	// MaxKeys bounds the keys held (nginx bounds them by the zone's shared
	// memory size). Beyond it, keys idle for a minute with no excess go
	// first, then the least recently used.
	MaxKeys int
	// FailOpen: when a new key cannot be held, the request is not counted
	// by this zone (as for an empty key). Otherwise it is rejected, as
	// nginx does.
	FailOpen bool
}

// Zone holds one rate and the state of every key it has seen.
type Zone struct {
	name     string
	rate     atomic.Uint64 // thousandths a second; changed by SetRate
	failOpen bool
	clock    Clock

	mu    sync.Mutex
	table *lru.Table[node]

	expired atomic.Uint64 // idle keys dropped (no excess left)
	evicted atomic.Uint64 // keys dropped while full, least recently used first
	full    atomic.Uint64 // new keys that could not be held
}

// node is one key's state, nginx's ngx_http_limit_req_node_t.
type node struct {
	excess uint64 // thousandths of a request above the rate
	last   uint64 // ms of the last charge
	count  uint32 // requests between lookup and commit: not evictable
}

// NewZone makes a zone; clock nil means MonotonicClock.
func NewZone(cfg ZoneConfig, clock Clock) (*Zone, error) {
	if cfg.Rate == 0 {
		return nil, fmt.Errorf("zone %q: rate must be positive", cfg.Name)
	}
	if cfg.MaxKeys < 1 {
		return nil, fmt.Errorf("zone %q: max keys %d: want at least 1", cfg.Name, cfg.MaxKeys)
	}
	if clock == nil {
		clock = MonotonicClock()
	}
	z := &Zone{name: cfg.Name, failOpen: cfg.FailOpen, clock: clock, table: lru.New[node](cfg.MaxKeys)}
	z.rate.Store(uint64(cfg.Rate))
	return z, nil
}

// SetRate changes the zone's rate, keeping every key's excess (as nginx
// does when a reload changes the rate of a zone it keeps). Cluster mode
// uses it to give each gateway its share.
func (z *Zone) SetRate(r Rate) {
	if r == 0 {
		r = 1
	}
	z.rate.Store(uint64(r))
}

// Name is the zone's name.
func (z *Zone) Name() string { return z.name }

// Rate is the zone's rate.
func (z *Zone) Rate() Rate { return Rate(z.rate.Load()) }

// ZoneStats are a zone's counters.
type ZoneStats struct {
	Keys, MaxKeys          int
	Expired, Evicted, Full uint64
}

// Stats returns the keys held and the eviction counters.
func (z *Zone) Stats() ZoneStats {
	z.mu.Lock()
	keys, max := z.table.Len(), z.table.Max()
	z.mu.Unlock()
	return ZoneStats{Keys: keys, MaxKeys: max, Expired: z.expired.Load(), Evicted: z.evicted.Load(), Full: z.full.Load()}
}

// Excess returns the key's excess now (thousandths of a request), without
// charging it; false if the zone holds no such key.
func (z *Zone) Excess(key string) (uint64, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	n, ok := z.table.Peek(key)
	if !ok {
		return 0, false
	}
	e := int64(n.excess - z.rate.Load()*uint64(elapsed(z.clock(), n.last))/1000)
	if e < 0 {
		e = 0
	}
	return uint64(e), true
}

// elapsed is nginx's ms since last: negative differences (a clock that went
// back) count as 0, or as 1 beyond a minute.
func elapsed(now, last uint64) int64 {
	ms := int64(now - last)
	if ms < -60000 {
		return 1
	}
	if ms < 0 {
		return 0
	}
	return ms
}

// charge is the excess after one more request ms after the last one.
func (z *Zone) charge(n *node, ms int64) uint64 {
	e := int64(n.excess - z.rate.Load()*uint64(ms)/1000 + 1000)
	if e < 0 {
		e = 0
	}
	return uint64(e)
}

type lookupResult int

const (
	declined lookupResult = iota
	again                 // counted tentatively; committed by account
	ok                    // the last limit: committed
	busy                  // over burst
	failed                // zone full
)

// lookup is ngx_http_limit_req_lookup. It returns the key's node (held with
// count+1) when the result is again.
func (z *Zone) lookup(key string, burst uint64, account bool, at moment) (lookupResult, uint64, *node) {
	z.mu.Lock()
	defer z.mu.Unlock()
	now := at.of(z)
	if n, found := z.table.Get(key); found {
		ms := elapsed(now, n.last)
		excess := z.charge(n, ms)
		if excess > burst {
			return busy, excess, nil
		}
		if account {
			n.excess = excess
			if ms != 0 {
				n.last = now
			}
			return ok, excess, nil
		}
		n.count++
		return again, excess, n
	}
	z.expire(now, false)
	if z.table.Full() {
		z.expire(now, true)
		if z.table.Full() {
			z.full.Add(1)
			return failed, 0, nil
		}
	}
	n := z.table.Insert(key)
	if account {
		n.last = now
		return ok, 0, nil
	}
	n.last = 0
	n.count = 1
	return again, 0, n
}

// expire is ngx_http_limit_req_expire: drop up to two least recently used
// keys idle a minute or more with no excess left; when force, first drop the
// least recently used key whatever its excess.
func (z *Zone) expire(now uint64, force bool) {
	for i := 0; i < 3; i++ {
		if i == 0 && !force {
			continue
		}
		_, n, found := z.table.Oldest()
		if !found || n.count != 0 {
			return
		}
		if i != 0 {
			ms := int64(now - n.last)
			if ms < 0 {
				ms = -ms
			}
			if ms < 60000 {
				return
			}
			if int64(n.excess-z.rate.Load()*uint64(ms)/1000) > 0 {
				return
			}
			z.expired.Add(1)
		} else {
			z.evicted.Add(1)
		}
		z.table.RemoveOldest()
	}
}

// release undoes a lookup's hold on a key (the request was refused).
func (z *Zone) release(n *node) {
	z.mu.Lock()
	n.count--
	z.mu.Unlock()
}

// commit charges a held key now and releases it; it returns its excess.
func (z *Zone) commit(n *node, at moment) uint64 {
	z.mu.Lock()
	defer z.mu.Unlock()
	now := at.of(z)
	ms := elapsed(now, n.last)
	excess := z.charge(n, ms)
	if ms != 0 {
		n.last = now
	}
	n.excess = excess
	n.count--
	return excess
}

// noDelay is nginx's delay threshold for nodelay, in thousandths.
const noDelay = math.MaxInt64 / 1000 * 1000

// Limit is one limit_req directive: a zone with its burst and delay.
type Limit struct {
	Zone *Zone
	// Burst is how many requests above the rate are admitted (delayed or
	// not); beyond it requests are rejected.
	Burst uint64
	// Delay is how many requests above the rate pass at once before the
	// rest of the burst is delayed (delay=N); ignored with NoDelay.
	Delay uint64
	// NoDelay passes the whole burst at once.
	NoDelay bool
}

type limit struct {
	zone  *Zone
	burst uint64 // thousandths
	delay uint64 // thousandths
}

// Set is the limit_req directives of one location, decided together.
type Set struct {
	limits []limit
	dryRun bool
}

// NewSet checks the limits and returns them as a set. With dryRun nothing is
// delayed or rejected, but keys are charged and the status says what would
// have happened (nginx's limit_req_dry_run).
func NewSet(limits []Limit, dryRun bool) (*Set, error) {
	if len(limits) == 0 {
		return nil, errors.New("limit_req: no limits")
	}
	s := &Set{dryRun: dryRun}
	for i, l := range limits {
		if l.Zone == nil {
			return nil, fmt.Errorf("limit %d: no zone", i)
		}
		if l.Burst > math.MaxInt64/1000 || l.Delay > math.MaxInt64/1000 {
			return nil, fmt.Errorf("limit %d (zone %q): burst or delay too large", i, l.Zone.name)
		}
		for _, prev := range s.limits {
			if prev.zone == l.Zone {
				return nil, fmt.Errorf("zone %q is used twice in one set", l.Zone.name)
			}
		}
		d := l.Delay * 1000
		if l.NoDelay {
			d = noDelay
		}
		s.limits = append(s.limits, limit{zone: l.Zone, burst: l.Burst * 1000, delay: d})
	}
	return s, nil
}

// Len is the number of limits; Decide wants that many keys.
func (s *Set) Len() int { return len(s.limits) }

// DryRun reports whether the set only observes.
func (s *Set) DryRun() bool { return s.dryRun }

// Status is nginx's $limit_req_status.
type Status int

// The statuses, as nginx names them. NotLimited is a request none of whose
// keys was counted (all empty): nginx leaves $limit_req_status empty.
const (
	NotLimited Status = iota
	Passed
	Delayed
	Rejected
	DelayedDryRun
	RejectedDryRun
)

var statusNames = [...]string{"", "PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Decision is the outcome for one request.
type Decision struct {
	Status Status
	// Delay is how long to hold the request before serving it (Delayed;
	// also set for DelayedDryRun, to export would-be latency).
	Delay time.Duration
	// Excess is the excess that decided, in thousandths of a request, as
	// nginx logs it ("excess: 5.000").
	Excess uint64
	// Zone is the index of the limit that rejected or set the delay (-1
	// when none did).
	Zone int
	// ZoneFull: the rejection is because Zone could not hold a new key.
	ZoneFull bool
	// RetryAfter (rejections) is when the refusing zone would next admit
	// this key, from its state now.
	RetryAfter time.Duration
	// Remaining is how many more requests the tightest counted limit would
	// admit right now, and Tightest its index (-1 if none counted); Reset is
	// how long until that limit's excess drains to zero.
	Remaining int64
	Tightest  int
	Reset     time.Duration
}

// Decide counts one request: keys[i] is its key in the set's i-th limit
// ("" means not counted by that limit, as nginx does with an empty key). It
// panics if len(keys) != s.Len().
func (s *Set) Decide(keys []string) Decision {
	return s.decide(keys, moment{})
}

// DecideAt is Decide at now, a reading of the clock every zone of the set
// uses (as nginx decides with ngx_current_msec, read once per turn of its
// event loop): the zones read no clock.
func (s *Set) DecideAt(keys []string, now uint64) Decision {
	return s.decide(keys, moment{ms: now, given: true})
}

// moment is the time a decision is made at: given, or each zone's clock
// read when asked.
type moment struct {
	ms    uint64
	given bool
}

func (m moment) of(z *Zone) uint64 {
	if m.given {
		return m.ms
	}
	return z.clock()
}

func (s *Set) decide(keys []string, at moment) Decision {
	if len(keys) != len(s.limits) {
		panic(fmt.Sprintf("nginx.Set.Decide: %d keys for %d limits", len(keys), len(s.limits)))
	}
	var heldBuf [4]*node
	held := heldBuf[:0]
	if len(s.limits) > len(heldBuf) {
		held = make([]*node, 0, len(s.limits))
	}
	held = held[:len(s.limits)]

	var excess uint64
	rc := declined
	n := 0
	li := 0 // nginx's *limit
	for n = 0; n < len(s.limits); n++ {
		li = n
		l := &s.limits[n]
		if keys[n] == "" || len(keys[n]) > 65535 {
			continue
		}
		var r lookupResult
		r, excess, held[n] = l.zone.lookup(keys[n], l.burst, n == len(s.limits)-1, at)
		if r == failed && l.zone.failOpen {
			continue
		}
		rc = r
		if rc != again {
			break
		}
	}
	if rc == declined {
		return Decision{Status: NotLimited, Zone: -1, Tightest: -1}
	}
	if rc == busy || rc == failed {
		for i := n - 1; i >= 0; i-- {
			if held[i] != nil {
				s.limits[i].zone.release(held[i])
			}
		}
		d := Decision{Status: Rejected, Excess: excess, Zone: n, ZoneFull: rc == failed, Tightest: n}
		if s.dryRun {
			d.Status = RejectedDryRun
		}
		if rc == busy {
			l := &s.limits[n]
			rate := l.zone.rate.Load()
			d.RetryAfter = ceilMillis((excess-l.burst)*1000, rate)
			d.Reset = ceilMillis(excess*1000, rate)
		}
		return d
	}
	if rc == again {
		excess = 0
	}
	d := Decision{Zone: -1, Tightest: -1, Remaining: math.MaxInt64}
	if rc == ok {
		s.note(&d, n, excess)
	}
	delay := s.account(held, n, &excess, &li, &d, at)
	if delay == 0 {
		d.Status = Passed
		return d
	}
	d.Status, d.Delay, d.Excess, d.Zone = Delayed, time.Duration(delay)*time.Millisecond, excess, li
	if s.dryRun {
		d.Status = DelayedDryRun
	}
	return d
}

// note keeps the tightest limit's headroom for the rate-limit headers.
func (s *Set) note(d *Decision, i int, excess uint64) {
	l := &s.limits[i]
	var remaining int64
	if l.burst >= excess {
		remaining = int64((l.burst - excess) / 1000)
	}
	if d.Tightest < 0 || remaining < d.Remaining {
		d.Remaining, d.Tightest = remaining, i
		d.Reset = ceilMillis(excess*1000, l.zone.rate.Load())
	}
}

// account is ngx_http_limit_req_account: commit the held keys of limits
// before n, newest first, and return the longest delay any limit asks for
// (0 if none). *excess and *li follow the limit that set the delay.
func (s *Set) account(held []*node, n int, excess *uint64, li *int, d *Decision, at moment) uint64 {
	var maxDelay uint64
	if l := &s.limits[*li]; *excess > l.delay {
		maxDelay = (*excess - l.delay) * 1000 / l.zone.rate.Load()
	}
	for i := n - 1; i >= 0; i-- {
		if held[i] == nil {
			continue
		}
		l := &s.limits[i]
		e := l.zone.commit(held[i], at)
		s.note(d, i, e)
		if e <= l.delay {
			continue
		}
		if delay := (e - l.delay) * 1000 / l.zone.rate.Load(); delay > maxDelay {
			maxDelay, *excess, *li = delay, e, i
		}
	}
	return maxDelay
}

// ceilMillis is ⌈a/b⌉ milliseconds.
func ceilMillis(a, b uint64) time.Duration {
	return time.Duration((a+b-1)/b) * time.Millisecond
}
