package engine

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/judge/strategy"
)

// benchSetup builds 1,000 strategies over 500 metrics (a warning and a
// critical threshold each, windows of 3 and 5 points) and one point for
// each of 100,000 series (500 metrics × 200 hosts).
func benchSetup(b *testing.B) (*Engine, []metric.Point) {
	b.Helper()
	const metrics, hosts = 500, 200
	var sb strings.Builder
	sb.WriteString("strategies:\n")
	for m := range metrics {
		fmt.Fprintf(&sb, "- name: m%d_warn\n  metric: bench.m%d\n  condition: all(#3) > 90\n  priority: 3\n", m, m)
		fmt.Fprintf(&sb, "- name: m%d_crit\n  metric: bench.m%d\n  condition: avg(#5) > 99\n  priority: 1\n", m, m)
	}
	set, err := strategy.Parse("bench.yaml", []byte(sb.String()), nil)
	if err != nil {
		b.Fatal(err)
	}
	e := New(Config{})
	e.SetStrategies(set, time.Now())
	pts := make([]metric.Point, 0, metrics*hosts)
	for m := range metrics {
		for h := range hosts {
			pts = append(pts, metric.Point{Labels: metric.New(
				metric.Label{Name: metric.NameLabel, Value: fmt.Sprintf("bench.m%d", m)},
				metric.Label{Name: metric.EndpointLabel, Value: fmt.Sprintf("host-%04d", h)},
				metric.Label{Name: "core", Value: "all"}), Value: 50, Step: 10})
		}
	}
	return e, pts
}

// BenchmarkIngest100kSeries1000Strategies measures points evaluated per
// second on one goroutine, in batches of 1,000 as transfer sends them.
func BenchmarkIngest100kSeries1000Strategies(b *testing.B) {
	e, pts := benchSetup(b)
	ts := int64(1_700_000_000)
	now := time.Now()
	round := func() {
		ts += 10
		for i := range pts {
			pts[i].Time = ts
			pts[i].Value = float64(i % 97)
		}
		for start := 0; start < len(pts); start += 1000 {
			e.Ingest(now, pts[start:start+1000])
		}
	}
	for range 5 {
		round() // fill the windows
	}
	runtime.GC()
	cpu0 := cpuTime()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		round()
		n += len(pts)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "points/s")
	// CPU time, unlike wall time, holds steady on a shared machine.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(n)/1e6), "cpu-s/Mpoints")
	if st := e.Stats(); st.Series != int64(len(pts)) {
		b.Fatalf("series %d", st.Series)
	}
	runtime.KeepAlive(e)
}

// BenchmarkMemoryPerSeries reports the heap held per series by the engine
// (labels excluded: they belong to the points that created the series).
func BenchmarkMemoryPerSeries(b *testing.B) {
	for b.Loop() {
		var before, after runtime.MemStats
		e, pts := benchSetup(b)
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range pts {
			pts[i].Time = 1_700_000_000
		}
		e.Ingest(time.Now(), pts)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(pts)), "bytes/series")
		runtime.KeepAlive(e)
		runtime.KeepAlive(pts)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngestParallel is the same workload from two goroutines (each
// its half of the series), as concurrent push requests are handled.
func BenchmarkIngestParallel(b *testing.B) {
	e, pts := benchSetup(b)
	ts := int64(1_700_000_000)
	now := time.Now()
	half := len(pts) / 2
	round := func() {
		ts += 10
		var wg sync.WaitGroup
		for part := range 2 {
			wg.Add(1)
			go func(mine []metric.Point) {
				defer wg.Done()
				for i := range mine {
					mine[i].Time = ts
					mine[i].Value = float64(i % 97)
				}
				for start := 0; start < len(mine); start += 1000 {
					e.Ingest(now, mine[start:min(start+1000, len(mine))])
				}
			}(pts[part*half : (part+1)*half])
		}
		wg.Wait()
	}
	for range 5 {
		round()
	}
	runtime.GC()
	cpu0 := cpuTime()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		round()
		n += len(pts)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "points/s")
	b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(n)/1e6), "cpu-s/Mpoints")
}
