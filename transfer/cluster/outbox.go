package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/spool"
)

// Deliverer sends one batch of spooled blocks to a destination. It returns
// nil once the destination has the points (durably, for a peer), a
// *PermanentError when retrying cannot help (the batch is dropped and
// counted), or any other error to retry after a backoff.
type Deliverer interface {
	Deliver(ctx context.Context, blocks [][]byte, points int) error
}

// DelivererFunc adapts a function to a Deliverer.
type DelivererFunc func(ctx context.Context, blocks [][]byte, points int) error

// Deliver calls f.
func (f DelivererFunc) Deliver(ctx context.Context, blocks [][]byte, points int) error {
	return f(ctx, blocks, points)
}

// PermanentError marks a delivery failure that retrying cannot fix, such as
// a destination refusing the body as malformed.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// OutboxOptions tune an Outbox.
type OutboxOptions struct {
	// Kind and Name label the outbox's metrics and logs: kind is peer,
	// judge, kafka or clickhouse; name is the destination.
	Kind, Name string
	// Dir holds the outbox's spool.
	Dir string
	// MaxBytes bounds the spool (default 1 GiB).
	MaxBytes int64
	// BatchPoints is the most points sent in one delivery (default 10000).
	BatchPoints int
	// BatchBlocks is the most spooled blocks sent in one delivery (default 256).
	BatchBlocks int
	// MinBackoff and MaxBackoff bound the wait after a failed delivery; it
	// doubles from the first to the second (defaults 100ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one delivery (default 30s).
	Timeout time.Duration
	// To is the destination's address for the hop statistics (see
	// internal/hop); empty counts none.
	To string
	// Dye traces dyed points when the destination acknowledges them.
	Dye     *dye.Tracer
	Metrics *metrics.Set
	Logger  *slog.Logger
}

func (o *OutboxOptions) defaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.BatchPoints <= 0 {
		o.BatchPoints = 10000
	}
	if o.BatchBlocks <= 0 {
		o.BatchBlocks = 256
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Second, o.MinBackoff)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Outbox is the durable, ordered, bounded path to one destination: Add
// writes a block to the destination's spool (fsynced; the caller may then
// acknowledge the points), and Run delivers the spool in order, in
// batches, retrying with exponential backoff while the destination is
// away. When the spool is full its oldest blocks are dropped and counted.
type Outbox struct {
	opts    OutboxOptions
	spool   *spool.Spool
	deliver Deliverer

	sent, dropped, failures *metrics.Counter
	hop                     *hop.Hop
	backlog                 *hop.Backlog // spooling times, for the hop latency
	up                      atomic.Bool
	lastErr                 atomic.Pointer[string]
}

// OpenOutbox opens (or recovers) the outbox's spool.
func OpenOutbox(opts OutboxOptions, d Deliverer) (*Outbox, error) {
	opts.defaults()
	o := &Outbox{opts: opts, deliver: d}
	lbl := fmt.Sprintf(`kind=%q,dest=%q`, opts.Kind, opts.Name)
	o.sent = opts.Metrics.GetOrCreateCounter(`opskit_transfer_forward_points_sent_total{` + lbl + `}`)
	o.failures = opts.Metrics.GetOrCreateCounter(`opskit_transfer_forward_failures_total{` + lbl + `}`)
	dropped := func(reason string) *metrics.Counter {
		return opts.Metrics.GetOrCreateCounter(fmt.Sprintf(`opskit_transfer_forward_points_dropped_total{%s,reason=%q}`, lbl, reason))
	}
	o.dropped = dropped("refused")
	if opts.To != "" {
		o.hop = hop.New(opts.Metrics, opts.To)
	}
	o.backlog = hop.NewBacklog(0, time.Now())
	sp, err := spool.Open(spool.Options{
		Dir:      opts.Dir,
		MaxBytes: opts.MaxBytes,
		OnDrop: func(records, count int, reason string) {
			o.backlog.Drop(count)
			dropped(reason).Add(count)
			opts.Logger.Error("forward spool dropped points", "kind", opts.Kind, "dest", opts.Name, "points", count, "blocks", records, "reason", reason)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("outbox %s %s: %w", opts.Kind, opts.Name, err)
	}
	o.spool = sp
	// What an earlier run spooled counts from now.
	o.backlog.Add(sp.Stats().Count, time.Now())
	o.up.Store(true)
	opts.Metrics.GetOrCreateGauge(`opskit_transfer_forward_spool_points{`+lbl+`}`, func() float64 { return float64(o.spool.Stats().Count) })
	opts.Metrics.GetOrCreateGauge(`opskit_transfer_forward_spool_bytes{`+lbl+`}`, func() float64 { return float64(o.spool.Stats().Bytes) })
	opts.Metrics.GetOrCreateGauge(`opskit_transfer_forward_up{`+lbl+`}`, func() float64 {
		if o.up.Load() {
			return 1
		}
		return 0
	})
	return o, nil
}

// Add spools one encoded block of points; when it returns nil the points
// survive a crash and will be delivered (or counted as dropped).
func (o *Outbox) Add(ctx context.Context, block []byte, points int) error {
	// Noted before the append, so that a delivery cannot take the points
	// before their spooling time is known.
	o.backlog.Add(points, time.Now())
	if err := o.spool.Append(ctx, spool.Record{Count: points, Data: block}); err != nil {
		o.backlog.Forget(points)
		return err
	}
	return nil
}

// OutboxStatus is an outbox's state for the status endpoint.
type OutboxStatus struct {
	Kind      string      `json:"kind"`
	Name      string      `json:"name"`
	Up        bool        `json:"up"`
	LastError string      `json:"last_error,omitempty"`
	Spool     spool.Stats `json:"spool"`
}

// Status reports the outbox's state.
func (o *Outbox) Status() OutboxStatus {
	st := OutboxStatus{Kind: o.opts.Kind, Name: o.opts.Name, Up: o.up.Load(), Spool: o.spool.Stats()}
	if e := o.lastErr.Load(); e != nil && !st.Up {
		st.LastError = *e
	}
	return st
}

// Pending is the number of points spooled and not yet delivered.
func (o *Outbox) Pending() int { return o.spool.Stats().Count }

// Run delivers the spool until ctx ends.
func (o *Outbox) Run(ctx context.Context) error {
	backoff := o.opts.MinBackoff
	for {
		if err := o.spool.Wait(ctx); err != nil {
			return nil
		}
		b, err := o.spool.Peek(o.opts.BatchBlocks, o.opts.BatchPoints)
		if err != nil {
			return fmt.Errorf("outbox %s %s: %w", o.opts.Kind, o.opts.Name, err)
		}
		if len(b.Records) == 0 {
			continue
		}
		blocks := make([][]byte, len(b.Records))
		for i, r := range b.Records {
			blocks[i] = r.Data
		}
		dctx, cancel := context.WithTimeout(ctx, o.opts.Timeout)
		err = o.deliver.Deliver(dctx, blocks, b.Count)
		cancel()
		var perm *PermanentError
		switch {
		case err == nil:
			o.sent.Add(b.Count)
			o.acked(blocks, b.Count)
		case errors.As(err, &perm):
			o.dropped.Add(b.Count)
			o.backlog.Drop(b.Count)
			o.opts.Logger.Error("destination refused a batch; dropped", "kind", o.opts.Kind, "dest", o.opts.Name, "points", b.Count, "err", err)
		default:
			if ctx.Err() != nil {
				return nil
			}
			o.failures.Inc()
			o.hop.Failed()
			msg := err.Error()
			o.lastErr.Store(&msg)
			if o.up.Swap(false) {
				o.opts.Logger.Warn("destination unreachable; spooling", "kind", o.opts.Kind, "dest", o.opts.Name, "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, o.opts.MaxBackoff)
			continue
		}
		if err := o.spool.Ack(b); err != nil {
			return fmt.Errorf("outbox %s %s: %w", o.opts.Kind, o.opts.Name, err)
		}
		backoff = o.opts.MinBackoff
		if !o.up.Swap(true) {
			o.opts.Logger.Info("destination back; draining spool", "kind", o.opts.Kind, "dest", o.opts.Name, "pending_points", o.spool.Stats().Count)
		}
	}
}

// acked counts a delivered batch in the hop statistics (latency from
// spooling to the destination's answer) and traces its dyed points.
func (o *Outbox) acked(blocks [][]byte, points int) {
	now := time.Now()
	_, latency := o.backlog.Take(points, now)
	o.hop.Acked(points, latency)
	if !o.opts.Dye.Active() {
		return
	}
	var pts []metric.Point
	for _, b := range blocks {
		pts, _ = DecodeBlock(pts, b)
	}
	mean := latency / time.Duration(max(points, 1))
	o.opts.Dye.Points("send "+o.opts.Kind+" "+o.opts.To, pts, func(*metric.Point) time.Duration { return mean })
}

// Close closes the spool; undelivered points stay on disk.
func (o *Outbox) Close() error { return o.spool.Close() }
