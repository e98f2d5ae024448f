package report

import (
	"strconv"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/store"
)

// BenchmarkCompute reports over 1,000,000 events of 100,000 units (the
// whole-system figure for 10,000,000 events is bench/abtest-report.sh).
func BenchmarkCompute(b *testing.B) { benchCompute(b, false) }

// BenchmarkComputeInterleaved writes the same events in rounds over all
// units, so consecutive events never share a unit.
func BenchmarkComputeInterleaved(b *testing.B) { benchCompute(b, true) }

func benchCompute(b *testing.B, interleaved bool) {
	s, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1700000000, 0)
	var buf []events.Event
	const units, perUnit = 100_000, 10
	for i := range units * perUnit {
		u, k := i/perUnit, i%perUnit
		if interleaved {
			u, k = i%units, i/units
		}
		unit := "user-" + strconv.Itoa(u)
		if k == 0 {
			buf = append(buf, events.Event{Kind: events.Exposure, Experiment: "e", Unit: unit, Variant: []string{"c", "t"}[u%2], Time: t0})
		} else {
			buf = append(buf, events.Event{Kind: events.Metric, Experiment: "e", Unit: unit, Name: "m", Value: float64(k + u%5), Time: t0})
		}
		if len(buf) > 10_000 {
			if err := s.Append(buf); err != nil {
				b.Fatal(err)
			}
			buf = buf[:0]
		}
	}
	if err := s.Append(buf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(s, "e", Options{Metric: "m", Variants: []string{"c", "t"}, IQRK: 1.5}); err != nil {
			b.Fatal(err)
		}
	}
}
