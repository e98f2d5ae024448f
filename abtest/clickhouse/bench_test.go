package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/forward"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/abtest/server"
	"github.com/opskit/opskit/abtest/store"
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
		// The report above ran while ClickHouse merged the parts just
		// inserted; once the merges are done the query has the cores.
		b.StopTimer()
		waitForMerges(b, ch)
		b.StartTimer()
		began = time.Now()
		if _, err := s.Report(ctx, "bench", report.Options{Metric: "revenue", Variants: []string{"control", "treatment"}, IQRK: 1.5}); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(began).Seconds(), "settled-report-s")
	}
}

// waitForMerges returns when ClickHouse runs no merge in the benchmark's
// database (or after a minute).
func waitForMerges(b *testing.B, ch *testkit.ClickHouseServer) {
	conn := ch.Conn(b)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var merges uint64
		if err := conn.QueryRow(context.Background(),
			"SELECT count() FROM system.merges WHERE database = currentDatabase()").Scan(&merges); err != nil {
			b.Fatal(err)
		}
		if merges == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkHTTPIntakeToClickHouse is the whole intake path: POST /v1/events
// (10,000 events per request, 4 clients), the embedded store and the spool
// (both fsynced before the answer), and the forwarder inserting into
// ClickHouse. It reports events/s from the first request until every event
// is in ab_events.
func BenchmarkHTTPIntakeToClickHouse(b *testing.B) {
	ch := testkit.SharedClickHouse(b)
	ctx := context.Background()
	s, err := Open(ctx, Options{Addr: ch.NativeAddr(), Database: ch.Database()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	dir := b.TempDir()
	st, err := store.Open(filepath.Join(dir, "events"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fw, err := forward.New(s, forward.Options{Name: "clickhouse", Dir: filepath.Join(dir, "spool")})
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fw.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	a, _ := sdk.New(nil)
	srv := server.New(a, server.Options{Sink: forward.Sinks{st, fw}, Scanner: st})
	mux := http.NewServeMux()
	srv.Register(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()

	n := benchEvents()
	const perRequest, clients = 10_000, 4
	bodies := make(chan []byte, clients)
	go func() {
		defer close(bodies)
		var body bytes.Buffer
		for i := range n {
			fmt.Fprintf(&body, `{"type":"metric","unit":"u%d","experiment":"intake","name":"revenue","value":%d,"time":1793491200}`+"\n", i%100_000, i%7)
			if (i+1)%perRequest == 0 || i == n-1 {
				bodies <- bytes.Clone(body.Bytes())
				body.Reset()
			}
		}
	}()
	for b.Loop() {
		began := time.Now()
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for body := range bodies {
					resp, err := http.Post(ts.URL+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
					}
				}
			}()
		}
		wg.Wait()
		acked := time.Since(began)
		for fw.Pending() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		total := time.Since(began)
		var rows uint64
		if err := ch.Conn(b).QueryRow(ctx, "SELECT count() FROM ab_events WHERE experiment = 'intake'").Scan(&rows); err != nil || rows != uint64(n) {
			b.Fatalf("ab_events holds %d rows (%v), want %d", rows, err, n)
		}
		b.ReportMetric(float64(n)/acked.Seconds(), "acked-events/s")
		b.ReportMetric(float64(n)/total.Seconds(), "events/s")
	}
}
