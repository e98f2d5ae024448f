package storage

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// benchLabels builds n distinct host-metric label sets.
func benchLabels(n int) []metric.Labels {
	out := make([]metric.Labels, n)
	for i := range out {
		out[i] = labels("cpu.busy", "endpoint", "host-"+strconv.Itoa(i/50), "core", strconv.Itoa(i%50))
	}
	return out
}

// BenchmarkAppend measures the write path as the daemon drives it: many
// concurrent writers each sending batches of 1,000 points and waiting for
// them to be durable (AppendWait, group commit every 10 ms as by default),
// over 20,000 series with the default schema.
func BenchmarkAppend(b *testing.B) { benchmarkAppend(b, true) }

// BenchmarkAppendNoWait is BenchmarkAppend with Append instead of
// AppendWait: the WAL is still written and fsynced in the background, but
// writers do not wait for it, so the figure is the CPU cost of the path.
func BenchmarkAppendNoWait(b *testing.B) { benchmarkAppend(b, false) }

func benchmarkAppend(b *testing.B, wait bool) {
	const nSeries, batchSize = 20_000, 1000
	e, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ls := benchLabels(nSeries)
	// Create the series first: the benchmark measures steady-state appends.
	for i := 0; i < nSeries; i += batchSize {
		pts := make([]metric.Point, 0, batchSize)
		for k := i; k < i+batchSize; k++ {
			pts = append(pts, metric.Point{Labels: ls[k], Time: t0, Value: 1})
		}
		if _, err := e.Append(pts); err != nil {
			b.Fatal(err)
		}
	}
	const writers = 32
	var next atomic.Int64
	b.SetParallelism(writers / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	cpuStart := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		g := int(next.Add(1) - 1)
		var own []metric.Labels
		for k := g; k < nSeries; k += writers {
			own = append(own, ls[k])
		}
		if len(own) == 0 {
			for pb.Next() {
			}
			return
		}
		pts := make([]metric.Point, 0, batchSize)
		round, k := int64(1), 0
		for pb.Next() {
			pts = append(pts, metric.Point{Labels: own[k], Time: t0 + round*60, Value: float64(k)})
			if k++; k == len(own) {
				k, round = 0, round+1
			}
			if len(pts) == batchSize {
				var err error
				if wait {
					_, err = e.AppendWait(context.Background(), pts)
				} else {
					_, err = e.Append(pts)
				}
				if err != nil {
					b.Error(err)
					return
				}
				pts = pts[:0]
			}
		}
		if len(pts) > 0 {
			if _, err := e.AppendWait(context.Background(), pts); err != nil {
				b.Error(err)
			}
		}
	})
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpuStart
	b.StopTimer() // the checkpoint at Close is not part of the write path
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "points/s")
	// CPU time (user + system, every thread: writers, WAL, GC) per point
	// varies far less than wall time on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/point")
	st := e.Stats()
	b.ReportMetric(float64(st.PointsAppended)/float64(max(st.WALSyncs, 1)), "points/fsync")
}

// BenchmarkFetch reads one day at 60 s (1,440 slots) of 1,000 series, as a
// query_range over them does; one op is the whole 1,000-series read.
func BenchmarkFetch(b *testing.B) {
	const nSeries, slots = 1000, 1440
	schema, err := NewSchema("day", "", "60s:1d,5m:7d", 0, -1)
	if err != nil {
		b.Fatal(err)
	}
	e, err := Open(b.TempDir(), Options{Schemas: []Schema{schema}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ls := benchLabels(nSeries)
	pts := make([]metric.Point, nSeries)
	for i := 0; i <= slots; i++ {
		for k := range pts {
			pts[k] = metric.Point{Labels: ls[k], Time: t0 + int64(i)*60, Value: float64(i + k)}
		}
		if _, err := e.Append(pts); err != nil {
			b.Fatal(err)
		}
	}
	refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "cpu.busy")})
	if err != nil || len(refs) != nSeries {
		b.Fatalf("select: %d %v", len(refs), err)
	}
	end := int64(t0 + slots*60)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, r := range refs {
			res, err := e.Fetch(r.ID, Average, end-slots*60+1, end, 60)
			if err != nil || len(res.Values) != slots+1 {
				b.Fatalf("fetch: %d %v", len(res.Values), err)
			}
		}
	}
	b.StopTimer()
}

// BenchmarkHeapPerSeries reports the Go heap each active series costs
// (labels, index entries, maps); its data lives in the mapped slab files.
func BenchmarkHeapPerSeries(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		const nSeries = 100_000
		schema, err := NewSchema("small", "", "60s:1h", 0, -1) // keeps the slab files small
		if err != nil {
			b.Fatal(err)
		}
		e, err := Open(b.TempDir(), Options{Schemas: []Schema{schema}, SyncInterval: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		ls := make([]metric.Labels, nSeries)
		for k := range ls {
			ls[k] = labels("app.requests", "endpoint", fmt.Sprintf("host-%05d", k/10), "path", fmt.Sprintf("/api/v%d", k%10))
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		pts := make([]metric.Point, 0, 1000)
		for k := range ls {
			pts = append(pts, metric.Point{Labels: ls[k], Time: t0, Value: 1})
			if len(pts) == cap(pts) {
				if _, err := e.Append(pts); err != nil {
					b.Fatal(err)
				}
				pts = pts[:0]
			}
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/nSeries, "heap-bytes/series")
		e.Close()
		runtime.KeepAlive(ls)
	}
}

// TestHeapPerSeriesIsBounded keeps the per-series heap cost from growing
// unnoticed; the figure is reported by BenchmarkHeapPerSeries.
func TestHeapPerSeriesIsBounded(t *testing.T) {
	const nSeries = 20_000
	e := openTest(t, t.TempDir(), Options{SeriesPerSlab: 4096})
	defer e.Close()
	ls := make([]metric.Labels, nSeries)
	for k := range ls {
		ls[k] = labels("app.requests", "endpoint", fmt.Sprintf("host-%05d", k/10), "path", fmt.Sprintf("/api/v%d", k%10))
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	pts := make([]metric.Point, 0, 1000)
	for k := range ls {
		pts = append(pts, metric.Point{Labels: ls[k], Time: t0, Value: 1})
		if len(pts) == cap(pts) {
			if _, err := e.Append(pts); err != nil {
				t.Fatal(err)
			}
			pts = pts[:0]
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSeries := float64(after.HeapAlloc-before.HeapAlloc) / nSeries
	t.Logf("%.0f heap bytes per series", perSeries)
	if perSeries > 2048 {
		t.Errorf("%.0f heap bytes per series, budget 2048", perSeries)
	}
	runtime.KeepAlive(ls)
}

// processCPU returns the user plus system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
