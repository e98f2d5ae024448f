// Package adaptive limits the requests in flight to an upstream to what it
// can serve without queueing, measuring rather than configuring that limit.
//
// Three algorithms estimate the limit from the latency and throughput of
// finished requests:
//
//   - Auto, brpc's auto concurrency limiter: the limit is the peak
//     throughput (an EMA that follows rises at once and falls slowly) times
//     the no-load latency (an EMA of the smallest window averages), times
//     1 + an explore ratio that grows while latency stays near the no-load
//     latency and shrinks when it does not. Samples are gathered in windows
//     of 1 s or 100–200 samples; failed requests count against latency.
//     Every 25–50 s the limit is cut to 0.9 × qps × no-load latency and
//     samples are ignored for two latencies, so that the no-load latency is
//     measured afresh.
//   - Seed, brpc's first formula: qps × ((2 + alpha) × no-load latency −
//     latency), with the same windows.
//   - Gradient2, Netflix's: the limit moves by the ratio of a long-term
//     latency average to the latest latency, plus a small queue allowance,
//     smoothed.
//
// A Limiter admits a request while fewer than the limit are in flight; over
// the limit it refuses at once, or lets the request wait a bounded time in
// a LIFO queue (the newest waiter is the likeliest still wanted). A request
// whose deadline is nearer than the current latency is refused at once.
package adaptive

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Errors of Acquire.
var (
	ErrLimited  = errors.New("over the concurrency limit")
	ErrDeadline = errors.New("deadline shorter than the current latency")
)

// Config chooses and tunes a limiter.
type Config struct {
	// Algorithm: "auto" (default), "seed" or "gradient2".
	Algorithm string
	// InitialLimit, MinLimit, MaxLimit bound the limit (defaults 40, 9,
	// 1000; brpc floors its limit at its worker count, 9 by default).
	InitialLimit, MinLimit, MaxLimit int
	// QueueTimeout > 0 lets requests over the limit wait up to this long,
	// at most QueueSize of them (default 100).
	QueueTimeout time.Duration
	QueueSize    int
	// Now and Rand replace the clock and the remeasure jitter (tests).
	Now  func() time.Time
	Rand func(n int64) int64
}

// algorithm turns samples into a limit; calls are serialized by Limiter.
type algorithm interface {
	sample(now time.Time, latency time.Duration, inflight int, failed bool)
	limit() int
	latency() time.Duration // current typical latency, for deadlines
	snapshot(s *Snapshot)
}

// Limiter bounds the requests in flight.
type Limiter struct {
	cfg Config
	alg algorithm

	mu       sync.Mutex
	inflight int
	waiters  []chan struct{} // LIFO: the newest is woken first

	refused, timedOut, deadline uint64
}

// New checks cfg and returns a limiter.
func New(cfg Config) (*Limiter, error) {
	if cfg.InitialLimit == 0 {
		cfg.InitialLimit = 40
	}
	if cfg.MinLimit == 0 {
		cfg.MinLimit = 9
	}
	if cfg.MaxLimit == 0 {
		cfg.MaxLimit = 1000
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 100
	}
	if cfg.MinLimit < 1 || cfg.MaxLimit < cfg.MinLimit || cfg.InitialLimit < cfg.MinLimit || cfg.InitialLimit > cfg.MaxLimit {
		return nil, fmt.Errorf("adaptive: limits must satisfy 1 <= min (%d) <= initial (%d) <= max (%d)", cfg.MinLimit, cfg.InitialLimit, cfg.MaxLimit)
	}
	if cfg.QueueTimeout < 0 || cfg.QueueSize < 0 {
		return nil, errors.New("adaptive: negative queue timeout or size")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Int64N
	}
	l := &Limiter{cfg: cfg}
	switch cfg.Algorithm {
	case "", "auto":
		l.alg = newAuto(cfg, false)
	case "seed":
		l.alg = newAuto(cfg, true)
	case "gradient2":
		l.alg = newGradient2(cfg)
	default:
		return nil, fmt.Errorf("adaptive: algorithm %q: want auto, seed or gradient2", cfg.Algorithm)
	}
	return l, nil
}

// Token is an admitted request; call Done once it has its answer.
type Token struct {
	l     *Limiter
	start time.Time
}

// Acquire admits a request or says why not.
func (l *Limiter) Acquire(ctx context.Context) (Token, error) {
	now := l.cfg.Now()
	l.mu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		if lat := l.alg.latency(); lat > 0 && dl.Sub(now) < lat {
			l.deadline++
			l.mu.Unlock()
			return Token{}, ErrDeadline
		}
	}
	if l.inflight < l.alg.limit() {
		l.inflight++
		l.mu.Unlock()
		return Token{l: l, start: now}, nil
	}
	if l.cfg.QueueTimeout <= 0 || len(l.waiters) >= l.cfg.QueueSize {
		l.refused++
		l.mu.Unlock()
		return Token{}, ErrLimited
	}
	wake := make(chan struct{}, 1)
	l.waiters = append(l.waiters, wake)
	l.mu.Unlock()

	t := time.NewTimer(l.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case <-wake:
		// Done handed us its slot: inflight already counts us.
		return Token{l: l, start: l.cfg.Now()}, nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, w := range l.waiters {
		if w == wake {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			l.timedOut++
			if ctx.Err() != nil {
				return Token{}, ctx.Err()
			}
			return Token{}, ErrLimited
		}
	}
	// Woken while timing out: the slot is ours.
	return Token{l: l, start: l.cfg.Now()}, nil
}

// Done records the request's latency and frees its slot. failed marks an
// error answer (it counts against latency, as brpc punishes errors).
func (t Token) Done(failed bool) {
	l := t.l
	if l == nil {
		return
	}
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.alg.sample(now, now.Sub(t.start), l.inflight, failed)
	// Hand the slot to the newest waiter if the limit allows.
	if n := len(l.waiters); n > 0 && l.inflight <= l.alg.limit() {
		w := l.waiters[n-1]
		l.waiters = l.waiters[:n-1]
		w <- struct{}{}
		return
	}
	l.inflight--
}

// Snapshot is a limiter's state for /admin/limits.
type Snapshot struct {
	Algorithm    string  `json:"algorithm"`
	Limit        int     `json:"limit"`
	InFlight     int     `json:"in_flight"`
	Queued       int     `json:"queued"`
	MinLatencyMs float64 `json:"min_latency_ms"`
	// SampleLatencyMs is the last window's (or sample's) average latency.
	SampleLatencyMs float64 `json:"sample_latency_ms"`
	MaxQPS          float64 `json:"ema_max_qps,omitempty"`
	ExploreRatio    float64 `json:"explore_ratio,omitempty"`
	Remeasuring     bool    `json:"remeasuring,omitempty"`
	Refused         uint64  `json:"refused"`
	QueueTimeouts   uint64  `json:"queue_timeouts"`
	DeadlineRefused uint64  `json:"deadline_refused"`
}

// Snapshot returns the limiter's state.
func (l *Limiter) Snapshot() Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Snapshot{Limit: l.alg.limit(), InFlight: l.inflight, Queued: len(l.waiters), Refused: l.refused, QueueTimeouts: l.timedOut, DeadlineRefused: l.deadline}
	l.alg.snapshot(&s)
	return s
}

// Limit is the current limit.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.alg.limit()
}

func clamp(v float64, lo, hi int) int {
	if math.IsNaN(v) {
		return lo
	}
	return int(math.Max(float64(lo), math.Min(float64(hi), v)))
}
