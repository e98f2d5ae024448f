// Package agent holds collector's periodic work: the host metrics and
// StatsD flush loops, and the `collector once` subcommand.
package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/hostmetrics"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/collector/statsd"
)

// Every calls fn at each multiple of interval on the wall clock (so that
// every host stamps the same instants) until ctx ends.
func Every(ctx context.Context, interval time.Duration, fn func(now time.Time)) {
	for {
		next := time.Now().Truncate(interval).Add(interval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		fn(next)
	}
}

// HostMetrics collects a round of host metrics at every interval and writes
// it to s. A first round at once primes the counters for the rates.
func HostMetrics(ctx context.Context, c *hostmetrics.Collector, interval time.Duration, s sink.Sink, set *metrics.Set, log *slog.Logger) error {
	rounds := set.NewCounter("opskit_collector_host_rounds_total")
	failed := set.NewCounter("opskit_collector_host_round_errors_total")
	points := set.NewCounter("opskit_collector_host_points_total")
	lastErr := ""
	collect := func(now time.Time, write bool) {
		pts, err := c.Collect(now)
		if err != nil {
			failed.Inc()
			// The same missing file would be logged every round.
			if err.Error() != lastErr {
				log.Warn("some host metrics could not be read", "err", err)
				lastErr = err.Error()
			}
		} else {
			lastErr = ""
		}
		if !write {
			return
		}
		rounds.Inc()
		if err := s.Write(ctx, pts); err != nil {
			log.Error("host metrics not spooled", "points", len(pts), "err", err)
			return
		}
		points.Add(len(pts))
	}
	collect(time.Now(), false)
	Every(ctx, interval, func(now time.Time) { collect(now, true) })
	return nil
}

// StatsDFlusher flushes the aggregator at every interval, and once more
// when ctx ends so a graceful stop keeps the partial interval.
func StatsDFlusher(ctx context.Context, agg *statsd.Aggregator, interval time.Duration, s sink.Sink, counters *sink.Counters, set *metrics.Set, log *slog.Logger) error {
	datagrams := set.NewCounter("opskit_collector_statsd_datagrams_total")
	last := time.Now()
	flush := func(ctx context.Context, now time.Time) {
		pts, counts := agg.Flush(now.Unix(), now.Sub(last))
		last = now
		datagrams.Add(int(counts.Datagrams))
		counters.Received(statsd.Proto, int(counts.Received))
		for reason, n := range counts.Rejected {
			counters.RejectedN(statsd.Proto, reason, int(n))
		}
		if len(pts) == 0 {
			return
		}
		if err := s.Write(ctx, pts); err != nil {
			counters.Dropped(statsd.Proto, len(pts), err)
		}
	}
	Every(ctx, interval, func(now time.Time) { flush(ctx, now) })
	flush(context.WithoutCancel(ctx), time.Now())
	return nil
}
