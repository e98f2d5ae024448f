// Package forward ships accepted events to the scale-out stores (Kafka,
// ClickHouse) through a crash-safe disk spool per destination: an event is
// in the spool before the client's request is answered, and leaves it only
// once the destination has taken it (at least once).
package forward

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/internal/spool"
)

// Destination takes batches of events; a nil error means they are kept.
type Destination interface {
	Deliver(ctx context.Context, evs []events.Event) error
}

// Forwarder is one destination's spool and sender.
type Forwarder struct {
	name  string
	dest  Destination
	spool *spool.Spool
	log   *slog.Logger

	delivered, failures *metrics.Counter
	minBackoff          time.Duration
	maxBackoff          time.Duration
}

// Options configure a Forwarder.
type Options struct {
	Name     string // "kafka", "clickhouse": labels metrics and logs
	Dir      string // the spool directory
	MaxBytes int64  // the spool's disk bound
	Log      *slog.Logger
	Metrics  *metrics.Set
	// MinBackoff and MaxBackoff bound the wait between failed deliveries.
	MinBackoff, MaxBackoff time.Duration
}

// New opens the spool of a destination.
func New(dest Destination, o Options) (*Forwarder, error) {
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = 10 * time.Second
	}
	label := fmt.Sprintf(`{destination=%q`, o.Name)
	dropped := func(reason string) *metrics.Counter {
		return o.Metrics.GetOrCreateCounter(fmt.Sprintf(`abtest_forward_dropped_total%s,reason=%q}`, label, reason))
	}
	sp, err := spool.Open(spool.Options{Dir: o.Dir, MaxBytes: o.MaxBytes, OnDrop: func(_, count int, reason string) {
		dropped(reason).Add(count)
		o.Log.Error("events dropped from the forwarding spool", "destination", o.Name, "events", count, "reason", reason)
	}})
	if err != nil {
		return nil, fmt.Errorf("%s spool: %w", o.Name, err)
	}
	f := &Forwarder{name: o.Name, dest: dest, spool: sp, log: o.Log,
		delivered:  o.Metrics.NewCounter("opskit_abtest_forward_delivered_total" + label + "}"),
		failures:   o.Metrics.NewCounter("opskit_abtest_forward_failures_total" + label + "}"),
		minBackoff: o.MinBackoff, maxBackoff: o.MaxBackoff}
	o.Metrics.NewGauge("opskit_abtest_forward_pending_events"+label+"}", func() float64 { return float64(sp.Stats().Count) })
	return f, nil
}

// Append puts events in the spool; they are durable when it returns nil.
func (f *Forwarder) Append(evs []events.Event) error {
	var buf []byte
	for i := range evs {
		buf = events.AppendBinary(buf, &evs[i])
	}
	return f.spool.Append(context.Background(), spool.Record{Count: len(evs), Data: buf})
}

// Run delivers spooled events until ctx ends, retrying failures with
// exponential backoff.
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := f.minBackoff
	for {
		if err := f.spool.Wait(ctx); err != nil {
			return nil
		}
		b, err := f.spool.Peek(64, 50_000)
		if err != nil {
			return fmt.Errorf("%s spool: %w", f.name, err)
		}
		evs, err := decode(b.Records)
		if err == nil {
			err = f.dest.Deliver(ctx, evs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			f.failures.Inc()
			f.log.Warn("forwarding failed; retrying", "destination", f.name, "events", len(evs), "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, f.maxBackoff)
			continue
		}
		backoff = f.minBackoff
		if err := f.spool.Ack(b); err != nil {
			return fmt.Errorf("%s spool: %w", f.name, err)
		}
		f.delivered.Add(len(evs))
	}
}

// Pending is the number of events not yet delivered.
func (f *Forwarder) Pending() int { return f.spool.Stats().Count }

// Close closes the spool.
func (f *Forwarder) Close() error { return f.spool.Close() }

func decode(recs []spool.Record) ([]events.Event, error) {
	var out []events.Event
	for _, r := range recs {
		rest := r.Data
		for len(rest) > 0 {
			var e events.Event
			var err error
			if rest, err = events.DecodeBinary(rest, &e); err != nil {
				return nil, fmt.Errorf("spooled event: %w", err)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// Sinks appends to each sink in order; the first error stops it.
type Sinks []interface{ Append([]events.Event) error }

// Append implements the server's Sink.
func (s Sinks) Append(evs []events.Event) error {
	for _, sink := range s {
		if err := sink.Append(evs); err != nil {
			return err
		}
	}
	return nil
}
