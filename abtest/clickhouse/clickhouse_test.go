package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/store"
	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// TestReportMatchesLocalStore writes the same simulated experiment to
// ClickHouse and to the embedded store: both reports must agree.
func TestReportMatchesLocalStore(t *testing.T) {
	ch := testkit.SharedClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addr: ch.NativeAddr(), Database: ch.Database()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()

	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(7, 8))
	var evs []events.Event
	for i := range 3000 {
		unit := fmt.Sprint("u", i)
		v, lift := "control", 0.0
		if i%2 == 1 {
			v, lift = "treatment", 0.8
		}
		evs = append(evs, events.Event{Kind: events.Exposure, Experiment: "exp", Unit: unit, Variant: v, Time: start})
		base := 20 + 4*rng.NormFloat64()
		evs = append(evs,
			events.Event{Kind: events.Metric, Experiment: "exp", Unit: unit, Name: "spend", Value: base, Time: start.Add(-time.Hour)},
			events.Event{Kind: events.Metric, Experiment: "exp", Unit: unit, Name: "spend", Value: base + lift + rng.NormFloat64(), Time: start.Add(time.Duration(i) * time.Millisecond)})
		if i%97 == 0 {
			evs = append(evs, events.Event{Kind: events.Metric, Experiment: "exp", Unit: unit, Name: "spend", Value: 900, Time: start.Add(time.Hour)})
		}
	}
	evs = append(evs,
		events.Event{Kind: events.Exposure, Experiment: "exp", Unit: "qa", Variant: "treatment", Forced: true, Time: start},
		events.Event{Kind: events.Exposure, Experiment: "exp", Unit: "u0", Variant: "treatment", Time: start},
		events.Event{Kind: events.Metric, Experiment: "other", Unit: "u1", Name: "spend", Value: 1, Time: start},
		// Metric events of a unit never exposed.
		events.Event{Kind: events.Metric, Experiment: "exp", Unit: "ghost", Name: "spend", Value: 3, Time: start},
		// A variant outside the configured list, alone and beside a known one.
		events.Event{Kind: events.Exposure, Experiment: "exp", Unit: "odd", Variant: "zzz", Time: start},
		events.Event{Kind: events.Exposure, Experiment: "exp", Unit: "odd2", Variant: "zzz", Time: start},
		events.Event{Kind: events.Exposure, Experiment: "exp", Unit: "odd2", Variant: "control", Time: start})
	// A conversion experiment whose names need quoting in SQL.
	for i := range 2000 {
		unit := fmt.Sprint("c", i)
		v := []string{"a'?", `b\`, "c"}[i%3]
		evs = append(evs, events.Event{Kind: events.Exposure, Experiment: "it's?", Unit: unit, Variant: v, Time: start})
		if rng.Float64() < 0.1+0.05*float64(i%3) {
			evs = append(evs, events.Event{Kind: events.Conversion, Experiment: "it's?", Unit: unit, Name: "buy?", Value: 1, Time: start.Add(time.Minute)})
		}
	}
	if err := s.Deliver(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := local.Append(evs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		experiment string
		opt        report.Options
	}{
		{"exp", report.Options{Metric: "spend", Variants: []string{"control", "treatment"}, IQRK: 1.5, PreEnd: start, CUPED: true}},
		{"exp", report.Options{Metric: "spend", Variants: []string{"control", "treatment"}, IQRK: 1.5}},
		{"exp", report.Options{Metric: "spend", IQRK: 0}},
		{"exp", report.Options{}},
		{"it's?", report.Options{Metric: "buy?", Variants: []string{"a'?", `b\`, "c"}}},
		{"it's?", report.Options{Metric: "buy?"}},
		{"absent", report.Options{Metric: "spend"}},
	} {
		want, err := report.Compute(local, c.experiment, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Report(ctx, c.experiment, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		// The unit order differs (ClickHouse groups by hash), which moves
		// sums by rounding only: compare at 1e-9.
		gj, _ := json.Marshal(roundReport(got))
		wj, _ := json.Marshal(roundReport(want))
		if string(gj) != string(wj) {
			t.Errorf("%s, options %+v:\nClickHouse %s\nlocal      %s", c.experiment, c.opt, gj, wj)
		}
	}
	// The cases above must reach every exclusion and both kinds.
	rep, err := s.Report(ctx, "exp", report.Options{Metric: "spend", Variants: []string{"control", "treatment"}})
	if err != nil {
		t.Fatal(err)
	}
	if ex := rep.Excluded; ex.Forced != 1 || ex.MixedVariants != 2 || ex.UnknownVariant != 1 || ex.Unexposed != 1 || rep.Kind != "mean" {
		t.Errorf("kind %s, excluded %+v; want mean, 1 forced, 2 mixed (u0, odd2), 1 unknown, 1 unexposed", rep.Kind, ex)
	}
	rates, err := s.Report(ctx, "it's?", report.Options{Metric: "buy?"})
	if err != nil {
		t.Fatal(err)
	}
	if rates.Kind != "rate" || len(rates.Variants) != 3 || rates.Variants[0].Conversions == 0 {
		t.Errorf("conversion report: kind %s, variants %+v", rates.Kind, rates.Variants)
	}
}

func roundReport(r *report.Report) any {
	b, _ := json.Marshal(r)
	var v any
	_ = json.Unmarshal(b, &v)
	return roundAll(v)
}

func roundAll(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, item := range x {
			x[k] = roundAll(item)
		}
	case []any:
		for i, item := range x {
			x[i] = roundAll(item)
		}
	case float64:
		return fmt.Sprintf("%.9g", x)
	}
	return v
}
