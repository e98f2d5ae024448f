package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/store"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

type sim struct {
	t   *testing.T
	s   *store.Store
	buf []events.Event
}

func newSim(t *testing.T) *sim {
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &sim{t: t, s: s}
}

func (m *sim) add(e events.Event) {
	e.Experiment = "exp"
	m.buf = append(m.buf, e)
	if len(m.buf) >= 5000 {
		m.flush()
	}
}

func (m *sim) flush() {
	if err := m.s.Append(m.buf); err != nil {
		m.t.Fatal(err)
	}
	m.buf = m.buf[:0]
}

func (m *sim) report(opt Options) *Report {
	m.flush()
	r, err := Compute(m.s, "exp", opt)
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// TestKnownEffectWithOutliers simulates revenue per unit with a true +5 %
// lift and a handful of enormous control values (bots, test orders): with
// boxplot fences the lift is found; the naive means without outlier removal
// miss it.
func TestKnownEffectWithOutliers(t *testing.T) {
	m := newSim(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		unit := fmt.Sprint("u", i)
		variant, mean := "control", 10.0
		if i%2 == 1 {
			variant, mean = "treatment", 10.5
		}
		m.add(events.Event{Kind: events.Exposure, Unit: unit, Variant: variant, Time: t0})
		value := mean + 2*rng.NormFloat64()
		if variant == "control" && i%1000 == 0 {
			value = 5000 // an outlier
		}
		m.add(events.Event{Kind: events.Metric, Unit: unit, Name: "revenue", Value: value, Time: t0.Add(time.Hour)})
	}
	r := m.report(Options{Metric: "revenue", Variants: []string{"control", "treatment"}, IQRK: 1.5})
	if r.Kind != "mean" || len(r.Variants) != 2 {
		t.Fatalf("report %+v", r)
	}
	c, tr := r.Variants[0], r.Variants[1]
	if c.Units != 10000 || tr.Units != 10000 || c.Outliers < 20 || tr.Outliers > 100 {
		t.Errorf("units %d/%d, outliers %d/%d", c.Units, tr.Units, c.Outliers, tr.Outliers)
	}
	cmp := tr.Comparison
	if cmp.PValue > 0.001 || cmp.DiffCI[0] > 0.5 || cmp.DiffCI[1] < 0.5 || cmp.RelCI[0] > 0.05 || cmp.RelCI[1] < 0.05 {
		t.Errorf("with outlier removal: %+v, want the +0.5 (+5%%) lift inside the interval and significant", cmp)
	}
	naive := tr.NaiveComparison
	if naive.PValue < 0.05 && naive.Diff > 0 {
		t.Errorf("naive comparison found the lift despite the outliers: %+v", naive)
	}
	if r.SRM.Mismatch {
		t.Errorf("balanced arms flagged: %+v", r.SRM)
	}
}

func TestSampleRatioMismatch(t *testing.T) {
	tests := []struct {
		control, treatment int
		weights            []float64
		mismatch           bool
	}{
		{5000, 5400, nil, true},
		{5000, 5050, nil, false},
		{1000, 9000, []float64{0.1, 0.9}, false},
		{1000, 9000, []float64{0.5, 0.5}, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc), func(t *testing.T) {
			m := newSim(t)
			for i := range tc.control + tc.treatment {
				v := "control"
				if i >= tc.control {
					v = "treatment"
				}
				m.add(events.Event{Kind: events.Exposure, Unit: fmt.Sprint("u", i), Variant: v, Time: t0})
			}
			r := m.report(Options{Variants: []string{"control", "treatment"}, Weights: tc.weights})
			if r.SRM.Mismatch != tc.mismatch || (len(r.Warnings) > 0) != tc.mismatch {
				t.Errorf("SRM %+v, warnings %q", r.SRM, r.Warnings)
			}
		})
	}
}

func TestConversionRate(t *testing.T) {
	m := newSim(t)
	for i := range 4000 {
		unit := fmt.Sprint("u", i)
		v := []string{"a", "b"}[i%2]
		m.add(events.Event{Kind: events.Exposure, Unit: unit, Variant: v, Time: t0})
		// a converts 10 %, b 15 %; a second conversion of a unit counts once.
		if (v == "a" && i%20 == 0) || (v == "b" && (i%40 == 1 || i%40 == 3 || i%40 == 5)) {
			m.add(events.Event{Kind: events.Conversion, Unit: unit, Name: "buy", Value: 1, Time: t0})
			m.add(events.Event{Kind: events.Conversion, Unit: unit, Name: "buy", Value: 1, Time: t0})
		}
	}
	// A whitelisted unit and a unit that saw both arms are left out.
	m.add(events.Event{Kind: events.Exposure, Unit: "qa", Variant: "b", Forced: true, Time: t0})
	m.add(events.Event{Kind: events.Exposure, Unit: "u0", Variant: "b", Time: t0})
	r := m.report(Options{Metric: "buy", Variants: []string{"a", "b"}})
	if r.Kind != "rate" {
		t.Fatalf("kind %q", r.Kind)
	}
	a, b := r.Variants[0], r.Variants[1]
	if a.Units != 1999 || b.Units != 2000 || r.Excluded.Forced != 1 || r.Excluded.MixedVariants != 1 {
		t.Errorf("units %d/%d excluded %+v", a.Units, b.Units, r.Excluded)
	}
	if float64(b.Value) < 0.14 || float64(b.Value) > 0.16 || b.Comparison.PValue > 0.001 {
		t.Errorf("b rate %v comparison %+v", b.Value, b.Comparison)
	}
}

// TestCUPEDNarrowsTheInterval: the metric is mostly explained by the
// unit's pre-period value; CUPED keeps the estimate and shrinks the interval.
func TestCUPEDNarrowsTheInterval(t *testing.T) {
	m := newSim(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 6000 {
		unit := fmt.Sprint("u", i)
		v, lift := "control", 0.0
		if i%2 == 1 {
			v, lift = "treatment", 1.0
		}
		base := 50 + 10*rng.NormFloat64()
		m.add(events.Event{Kind: events.Exposure, Unit: unit, Variant: v, Time: t0})
		m.add(events.Event{Kind: events.Metric, Unit: unit, Name: "spend", Value: base + rng.NormFloat64(), Time: t0.Add(-time.Hour)})
		m.add(events.Event{Kind: events.Metric, Unit: unit, Name: "spend", Value: base + lift + 2*rng.NormFloat64(), Time: t0.Add(time.Hour)})
	}
	opt := Options{Metric: "spend", Variants: []string{"control", "treatment"}, PreEnd: t0}
	plain := m.report(opt).Variants[1].Comparison
	opt.CUPED = true
	r := m.report(opt)
	cuped := r.Variants[1].Comparison
	plainWidth, cupedWidth := plain.DiffCI[1]-plain.DiffCI[0], cuped.DiffCI[1]-cuped.DiffCI[0]
	if cupedWidth > plainWidth/3 || cuped.DiffCI[0] > 1 || cuped.DiffCI[1] < 1 || r.CUPEDTheta == nil || *r.CUPEDTheta < 0.9 {
		t.Errorf("plain %+v (width %.3f), CUPED %+v (width %.3f), theta %v", plain, plainWidth, cuped, cupedWidth, r.CUPEDTheta)
	}
}

func TestFormats(t *testing.T) {
	m := newSim(t)
	for i := range 100 {
		unit := fmt.Sprint("u", i)
		v := []string{"control", "blue"}[i%2]
		m.add(events.Event{Kind: events.Exposure, Unit: unit, Variant: v, Time: t0})
		m.add(events.Event{Kind: events.Metric, Unit: unit, Name: "m", Value: float64(i % 7), Time: t0})
	}
	m.add(events.Event{Kind: events.Exposure, Unit: "lonely", Variant: "green", Time: t0})
	r := m.report(Options{Metric: "m", IQRK: 1.5})
	var table, js, html bytes.Buffer
	if err := WriteTable(&table, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"experiment exp", "variant", "blue", "control", "green", "(control)", "sample ratio"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	// One unit in "green": its interval is undefined, written as null.
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, js.String())
	}
	if err := WriteHTML(&html, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html.String(), `const report = {"experiment":"exp"`) || !strings.Contains(html.String(), "<svg") && !strings.Contains(html.String(), "createElementNS") {
		t.Errorf("HTML lacks the embedded report or chart script")
	}
}

// TestAddUnitClasses: aggregated units land in their arm or in the
// exclusion they belong to, in the same order of precedence as events.
func TestAddUnitClasses(t *testing.T) {
	opt := Options{Metric: "spend", Variants: []string{"control", "treatment"}}
	for _, c := range []struct {
		name      string
		row       UnitRow
		wantUnits [2]int
		want      Excluded
	}{
		{"control", UnitRow{Variant: 0, Value: 2, Metrics: 1}, [2]int{1, 0}, Excluded{}},
		{"treatment", UnitRow{Variant: 1, Value: 2, Metrics: 1}, [2]int{0, 1}, Excluded{}},
		{"not exposed", UnitRow{Variant: NotExposed, Value: 2, Metrics: 1}, [2]int{}, Excluded{Unexposed: 1}},
		{"forced", UnitRow{Variant: 1, Forced: true}, [2]int{}, Excluded{Forced: 1}},
		{"forced beats mixed", UnitRow{Variant: MixedVariants, Forced: true}, [2]int{}, Excluded{Forced: 1}},
		{"mixed", UnitRow{Variant: MixedVariants}, [2]int{}, Excluded{MixedVariants: 1}},
		{"unknown", UnitRow{Variant: UnknownVariant}, [2]int{}, Excluded{UnknownVariant: 1}},
		{"index beyond the variants", UnitRow{Variant: 2}, [2]int{}, Excluded{UnknownVariant: 1}},
		{"negative index", UnitRow{Variant: -9}, [2]int{}, Excluded{UnknownVariant: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := NewBuilder("exp", opt)
			b.AddUnit(c.row)
			b.AddEvents(4)
			rep := b.Build()
			if got := [2]int{rep.Variants[0].Units, rep.Variants[1].Units}; got != c.wantUnits || rep.Excluded != c.want {
				t.Errorf("units %v, excluded %+v; want %v, %+v", got, rep.Excluded, c.wantUnits, c.want)
			}
			if want := c.row.Events + 4; rep.Events != want {
				t.Errorf("events %d, want %d", rep.Events, want)
			}
		})
	}
}
