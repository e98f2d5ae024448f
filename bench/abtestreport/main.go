// Command abtestreport measures abtest's embedded store and report: it
// writes a simulated experiment (units × events per unit, with a known lift
// and outliers) into a fresh event store, then times the report over it.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/store"
)

func main() {
	total := flag.Int("events", 10_000_000, "events to write (one exposure per unit, the rest metric values)")
	units := flag.Int("units", 1_000_000, "units")
	dir := flag.String("dir", "", "store directory (default: a new temporary one, removed at the end)")
	batch := flag.Int("batch", 10_000, "events per append")
	interleaved := flag.Bool("interleaved", false, "write in rounds over all units (every unit's exposure, then one metric event of every unit, ...) instead of each unit's events together")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "abtestreport")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	s, err := store.Open(*dir)
	if err != nil {
		fail(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	buf := make([]events.Event, 0, *batch)
	flush := func() {
		if err := s.Append(buf); err != nil {
			fail(err)
		}
		buf = buf[:0]
	}
	perUnit := *total / *units
	began := time.Now()
	written := 0
	event := func(u, k int) events.Event {
		unit := "user-" + strconv.Itoa(u)
		variant, mean := "control", 10.0
		if u%2 == 1 {
			variant, mean = "treatment", 10.3
		}
		if k == 0 {
			return events.Event{Kind: events.Exposure, Experiment: "bench", Unit: unit, Variant: variant, Time: start}
		}
		v := mean/float64(perUnit-1) + rng.NormFloat64()
		if u%5000 == 0 {
			v = 1e5 // outliers
		}
		return events.Event{Kind: events.Metric, Experiment: "bench", Unit: unit, Name: "revenue", Value: v, Time: start.Add(time.Minute)}
	}
	for i := range *units * perUnit {
		u, k := i/perUnit, i%perUnit
		if *interleaved {
			u, k = i%*units, i / *units
		}
		buf = append(buf, event(u, k))
		written++
		if len(buf) >= *batch {
			flush()
		}
	}
	flush()
	writeTime := time.Since(began)
	st, _ := os.Stat(*dir + "/bench.log")
	order := "each unit's events together"
	if *interleaved {
		order = "interleaved over all units"
	}
	fmt.Printf("order: %s\n", order)
	fmt.Printf("wrote %d events of %d units in %.2fs: %.0f events/s into the embedded store (%d-event appends, fsync each), %.0f MB on disk\n",
		written, *units, writeTime.Seconds(), float64(written)/writeTime.Seconds(), *batch, float64(st.Size())/1e6)
	for _, cuped := range []bool{false, true} {
		runtime.GC()
		began = time.Now()
		rep, err := report.Compute(s, "bench", report.Options{Metric: "revenue", Variants: []string{"control", "treatment"}, IQRK: 1.5, CUPED: cuped})
		if err != nil {
			fail(err)
		}
		elapsed := time.Since(began)
		fmt.Printf("report over %d events (IQR fences, CUPED %v): %.2fs\n", rep.Events, cuped, elapsed.Seconds())
		if !cuped {
			_ = report.WriteTable(os.Stdout, rep)
		} else {
			_ = report.WriteTable(io.Discard, rep)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "abtestreport:", err)
	os.Exit(1)
}
