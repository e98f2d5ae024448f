package adaptive

import (
	"context"
	"sort"
	"testing"
	"time"
)

// simServer is a backend of `slots` slots each taking `service` per
// request; requests beyond the slots wait in FIFO order.
type simServer struct {
	slots   int
	service time.Duration
	busy    []simReq // in service, by finish time
	queue   []simReq
}

type simReq struct {
	arrived, finish time.Time
	tok             Token
}

type simResult struct {
	offered, admitted, done int
	latencies               []time.Duration // of admitted requests
	limits                  []int           // sampled every 100 ms
}

// simulate offers rps(t) requests a second, open-loop, for d on a simulated
// clock and returns what happened; slotsAt may change the slots over time.
// Latencies and counts are of requests arriving after `judgeFrom`.
func simulate(t *testing.T, cfg Config, rps func(time.Duration) float64, d, judgeFrom time.Duration, srv *simServer, slotsAt func(time.Duration) int) (*Limiter, simResult) {
	t.Helper()
	now := time.Unix(1_000_000, 0)
	begin := now
	cfg.Now = func() time.Time { return now }
	cfg.Rand = func(n int64) int64 { return n / 2 }
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var res simResult
	step := 50 * time.Microsecond
	nextArrival := now
	nextLimitSample := now
	for now.Before(begin.Add(d)) {
		if slotsAt != nil {
			srv.slots = slotsAt(now.Sub(begin))
		}
		// Finish what is due.
		kept := srv.busy[:0]
		for _, r := range srv.busy {
			if !r.finish.After(now) {
				r.tok.Done(false)
				if r.arrived.Sub(begin) >= judgeFrom {
					res.done++
					res.latencies = append(res.latencies, now.Sub(r.arrived))
				}
			} else {
				kept = append(kept, r)
			}
		}
		srv.busy = kept
		// Arrivals.
		for !nextArrival.After(now) {
			judged := nextArrival.Sub(begin) >= judgeFrom
			if judged {
				res.offered++
			}
			tok, err := l.Acquire(context.Background())
			if err == nil {
				if judged {
					res.admitted++
				}
				srv.queue = append(srv.queue, simReq{arrived: nextArrival, tok: tok})
			}
			nextArrival = nextArrival.Add(time.Duration(float64(time.Second) / rps(nextArrival.Sub(begin))))
		}
		// Start service.
		for len(srv.busy) < srv.slots && len(srv.queue) > 0 {
			r := srv.queue[0]
			srv.queue = srv.queue[1:]
			r.finish = now.Add(srv.service)
			srv.busy = append(srv.busy, r)
		}
		if !nextLimitSample.After(now) {
			res.limits = append(res.limits, l.Limit())
			nextLimitSample = nextLimitSample.Add(100 * time.Millisecond)
		}
		now = now.Add(step)
	}
	return l, res
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)*99/100]
}

// ramp offers 0.5×, 1×, 2× then 4× capacity, 5 s each, as a service does
// when its traffic grows (the limiter learns the no-load latency first).
func ramp(capacity float64) func(time.Duration) float64 {
	return func(at time.Duration) float64 {
		switch {
		case at < 5*time.Second:
			return 0.5 * capacity
		case at < 10*time.Second:
			return capacity
		case at < 15*time.Second:
			return 2 * capacity
		}
		return 4 * capacity
	}
}

// TestOverloadHeldAtCapacity: a backend of 20 slots × 10 ms serves 2000/s.
// Offered up to 4× that, each algorithm keeps goodput near capacity and
// the latency of admitted requests near the no-load 10 ms; with no limiter
// latency grows without bound.
func TestOverloadHeldAtCapacity(t *testing.T) {
	const capacity = 2000.0
	for _, tc := range []struct {
		alg      string
		goodput  float64 // fraction of capacity at least
		p99Bound time.Duration
	}{
		{"auto", 0.9, 20 * time.Millisecond},
		{"seed", 0.9, 20 * time.Millisecond},
		// Gradient2 oscillates between 20 and 100+ here: latency
		// is bounded but well above brpc's.
		{"gradient2", 0.9, 100 * time.Millisecond},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			srv := &simServer{slots: 20, service: 10 * time.Millisecond}
			// Judge the 4× phase after its first second.
			_, res := simulate(t, Config{Algorithm: tc.alg}, ramp(capacity), 25*time.Second, 16*time.Second, srv, nil)
			goodput := float64(res.done) / 9
			p := p99(res.latencies)
			t.Logf("%s at 4×: goodput %.0f/s of %.0f, p99 %v, last limits %v", tc.alg, goodput, capacity, p, res.limits[len(res.limits)-10:])
			if goodput < tc.goodput*capacity {
				t.Errorf("goodput %.0f/s, want >= %.0f%% of %.0f", goodput, 100*tc.goodput, capacity)
			}
			if p > tc.p99Bound {
				t.Errorf("p99 latency %v, want <= %v", p, tc.p99Bound)
			}
		})
	}
	// Without a limit the backlog grows by 3× capacity a second: the
	// requests of the 4× phase wait seconds, most never finish in the run.
	srv := &simServer{slots: 20, service: 10 * time.Millisecond}
	_, res := simulate(t, Config{InitialLimit: 1 << 30, MinLimit: 1 << 30, MaxLimit: 1 << 30}, ramp(capacity), 20*time.Second, 16*time.Second, srv, nil)
	if backlog := len(srv.queue); backlog < 5*capacity || res.done > res.admitted/2 {
		t.Errorf("without a working limit: backlog %d, %d of %d finished; the simulation shows no collapse", backlog, res.done, res.admitted)
	}
}

// TestCapacityHalved: the backend loses half its slots under 2× load at
// 20 s. brpc's limiter learns a lower capacity only as its peak-qps EMA
// decays (1 % of the gap per window, a time constant of about 20 s here):
// its limit stays near twice the new capacity, which bounds latency near
// 2.5× no-load rather than restoring it. Gradient2 reacts within a second
// but oscillates.
func TestCapacityHalved(t *testing.T) {
	slots := func(at time.Duration) int {
		if at >= 20*time.Second {
			return 10
		}
		return 20
	}
	load := func(at time.Duration) float64 { return min(ramp(2000)(at), 4000) }
	for _, tc := range []struct {
		alg         string
		p99Bound    time.Duration // from 5 s after the cut
		settledFrom int           // 100 ms steps
		settledMax  int
	}{
		{"auto", 30 * time.Millisecond, 250, 25},
		{"gradient2", 100 * time.Millisecond, 210, 70},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			srv := &simServer{slots: 20, service: 10 * time.Millisecond}
			_, res := simulate(t, Config{Algorithm: tc.alg}, load, 45*time.Second, 25*time.Second, srv, slots)
			t.Logf("%s: limit before %v, after the cut %v, from %.1f s %v; p99 from 5 s after %v", tc.alg, res.limits[190:200], res.limits[200:220],
				float64(tc.settledFrom)/10, res.limits[tc.settledFrom:tc.settledFrom+20], p99(res.latencies))
			if p := p99(res.latencies); p > tc.p99Bound {
				t.Errorf("p99 %v after the cut, want <= %v", p, tc.p99Bound)
			}
			mx := 0
			for _, v := range res.limits[tc.settledFrom:] {
				mx = max(mx, v)
			}
			if mx > tc.settledMax {
				t.Errorf("from %.1f s the limit reaches %d, want <= %d", float64(tc.settledFrom)/10, mx, tc.settledMax)
			}
		})
	}
}

func TestQueueAndDeadline(t *testing.T) {
	now := time.Unix(0, 0)
	l, err := New(Config{Algorithm: "gradient2", InitialLimit: 1, MinLimit: 1, MaxLimit: 1, QueueTimeout: time.Second, QueueSize: 1, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		tok, err := l.Acquire(context.Background())
		if err == nil {
			tok.Done(false)
		}
		got <- err
	}()
	for l.Snapshot().Queued != 1 {
		time.Sleep(time.Millisecond)
	}
	// The queue holds one: the next is refused at once.
	if _, err := l.Acquire(context.Background()); err != ErrLimited {
		t.Fatalf("over a full queue: %v", err)
	}
	first.Done(false)
	if err := <-got; err != nil {
		t.Fatalf("queued request: %v", err)
	}
	tok, _ := l.Acquire(context.Background())
	now = now.Add(50 * time.Millisecond)
	tok.Done(false)
	// The last latency was 50 ms: a 10 ms deadline is refused at once.
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(10*time.Millisecond))
	defer cancel()
	if _, err := l.Acquire(ctx); err != ErrDeadline {
		t.Fatalf("short deadline: %v", err)
	}
	if s := l.Snapshot(); s.Refused != 1 || s.DeadlineRefused != 1 || s.InFlight != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{{Algorithm: "vegas"}, {MinLimit: 10, MaxLimit: 5}, {InitialLimit: 2000}, {QueueTimeout: -1}} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
