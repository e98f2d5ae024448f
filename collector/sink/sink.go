// Package sink is what collector's intakes share: the Sink they deliver
// points to, a Batcher that gathers the points of streaming protocols
// (Graphite, StatsD, plugins) into batches, and the intake counters.
package sink

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
)

// Sink takes points; Write returns once they are durable (in the spool).
// It must not keep pts after it returns.
type Sink interface {
	Write(ctx context.Context, pts []metric.Point) error
}

// Func adapts a function to a Sink.
type Func func(ctx context.Context, pts []metric.Point) error

// Write calls f.
func (f Func) Write(ctx context.Context, pts []metric.Point) error { return f(ctx, pts) }

// Counters count intake activity per protocol on a metrics set.
type Counters struct {
	set *metrics.Set
	log *slog.Logger
}

// NewCounters counts on set and logs rejections at debug level to log.
func NewCounters(set *metrics.Set, log *slog.Logger) *Counters {
	if set == nil {
		set = metrics.NewSet()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Counters{set: set, log: log}
}

// Received counts n points accepted by proto's parser.
func (c *Counters) Received(proto string, n int) {
	if c == nil || n <= 0 {
		return
	}
	c.set.GetOrCreateCounter(`opskit_collector_intake_points_received_total{proto="` + proto + `"}`).Add(n)
}

// Rejected counts one refused item; reason is a fixed word, detail and
// where are logged.
func (c *Counters) Rejected(proto, reason, detail, where string) {
	if c == nil {
		return
	}
	c.set.GetOrCreateCounter(`opskit_collector_intake_points_rejected_total{proto="` + proto + `",reason="` + reason + `"}`).Inc()
	c.log.Debug("intake rejected item", "proto", proto, "reason", reason, "detail", detail, "at", where)
}

// RejectedN counts n refused items of one reason at once, without logging.
func (c *Counters) RejectedN(proto, reason string, n int) {
	if c == nil || n <= 0 {
		return
	}
	c.set.GetOrCreateCounter(`opskit_collector_intake_points_rejected_total{proto="` + proto + `",reason="` + reason + `"}`).Add(n)
}

// Dropped counts n points lost because the sink failed.
func (c *Counters) Dropped(proto string, n int, err error) {
	if c == nil || n <= 0 {
		return
	}
	c.set.GetOrCreateCounter(`opskit_collector_intake_points_dropped_total{proto="` + proto + `"}`).Add(n)
	c.log.Warn("intake points dropped: the spool did not take them", "proto", proto, "points", n, "err", err)
}

// Batcher gathers points from many goroutines and writes them to a Sink in
// batches: when MaxPoints are pending, and every FlushInterval. A write that
// fails loses its batch, counted as dropped; streaming protocols have no
// way to tell the sender.
type Batcher struct {
	sink      Sink
	proto     string
	counters  *Counters
	maxPoints int
	interval  time.Duration

	mu      sync.Mutex
	pending []metric.Point
	full    chan struct{}
}

// NewBatcher returns a batcher to s for proto; run it with Run.
func NewBatcher(s Sink, proto string, counters *Counters, maxPoints int, interval time.Duration) *Batcher {
	if maxPoints <= 0 {
		maxPoints = 2000
	}
	if interval <= 0 {
		interval = time.Second
	}
	return &Batcher{sink: s, proto: proto, counters: counters, maxPoints: maxPoints, interval: interval, full: make(chan struct{}, 1)}
}

// Add queues points. It never blocks on the sink.
func (b *Batcher) Add(pts ...metric.Point) {
	if len(pts) == 0 {
		return
	}
	b.mu.Lock()
	b.pending = append(b.pending, pts...)
	n := len(b.pending)
	b.mu.Unlock()
	b.counters.Received(b.proto, len(pts))
	if n >= b.maxPoints {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

// Flush writes what is pending now.
func (b *Batcher) Flush(ctx context.Context) {
	b.mu.Lock()
	pts := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(pts) == 0 {
		return
	}
	if err := b.sink.Write(ctx, pts); err != nil {
		b.counters.Dropped(b.proto, len(pts), err)
	}
}

// Run flushes until ctx ends, then flushes once more with a context that
// is not cancelled, so a graceful stop keeps what was received.
func (b *Batcher) Run(ctx context.Context) error {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.full:
		case <-ctx.Done():
			b.Flush(context.WithoutCancel(ctx))
			return nil
		}
		b.Flush(ctx)
	}
}
