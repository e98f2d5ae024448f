package clickhouse

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/internal/testkit"
)

// benchEvents is the size of one benchmark round (ABTEST_BENCH_EVENTS,
// default 1,000,000).
func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("ABTEST_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// BenchmarkIntakeAndReport inserts benchEvents() events into ab_events in
// batches of 50,000 (the forwarder's batch size), reporting events/s, then
// times the report that ClickHouse aggregates per unit.
func BenchmarkIntakeAndReport(b *testing.B) {
	ch := testkit.SharedClickHouse(b)
	ctx := context.Background()
	s, err := Open(ctx, Options{Addr: ch.NativeAddr(), Database: ch.Database()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	n := benchEvents()
	units := max(n/10, 1)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	batch := make([]events.Event, 0, 50_000)
	for b.Loop() {
		var insertTime time.Duration
		for u := range units {
			unit := "user-" + strconv.Itoa(u)
			variant := "control"
			if u%2 == 1 {
				variant = "treatment"
			}
			batch = append(batch, events.Event{Kind: events.Exposure, Experiment: "bench", Unit: unit, Variant: variant, Time: start})
			for k := 1; k < 10; k++ {
				batch = append(batch, events.Event{Kind: events.Metric, Experiment: "bench", Unit: unit, Name: "revenue", Value: float64(k + u%7), Time: start.Add(time.Minute)})
			}
			if len(batch) >= 50_000 || u == units-1 {
				began := time.Now()
				if err := s.Deliver(ctx, batch); err != nil {
					b.Fatal(err)
				}
				insertTime += time.Since(began)
				batch = batch[:0]
			}
		}
		b.ReportMetric(float64(units*10)/insertTime.Seconds(), "events/s")
		began := time.Now()
		rep, err := s.Report(ctx, "bench", report.Options{Metric: "revenue", Variants: []string{"control", "treatment"}, IQRK: 1.5})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(began).Seconds(), "report-s")
		if rep.Variants[0].Units+rep.Variants[1].Units != units {
			b.Fatalf("report holds %d units, want %d", rep.Variants[0].Units+rep.Variants[1].Units, units)
		}
	}
}
