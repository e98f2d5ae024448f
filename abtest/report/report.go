// Package report turns an experiment's stored events into its report: units
// per variant, the metric's mean or conversion rate, each treatment's
// difference from control with a confidence interval and p-value (Welch's
// t-test for means, the two-proportion z-test for rates), boxplot outlier
// removal, the sample-ratio-mismatch check and optional CUPED.
package report

import (
	"math"
	"slices"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/stats"
	"github.com/opskit/opskit/abtest/store"
)

// SRMThreshold is the p-value below which the sample ratio is flagged.
const SRMThreshold = 0.001

// Options say what to compute.
type Options struct {
	// Metric is the conversion or metric name; empty reports units and the
	// sample-ratio check only.
	Metric string
	// Variants in config order, control first; empty takes the variants
	// seen in exposures (sorted).
	Variants []string
	// Weights are the intended shares of Variants (empty: equal).
	Weights []float64
	// IQRK is the boxplot fence multiplier k; 0 keeps every unit.
	IQRK float64
	// CUPED adjusts the metric by its pre-period value (events before
	// PreEnd) when set.
	CUPED bool
	// PreEnd splits the pre-period (covariate) from the experiment period;
	// zero means no pre-period: every event counts.
	PreEnd time.Time
	// Level is the confidence level of the intervals (default 0.95).
	Level float64
}

// Report is an experiment's result.
type Report struct {
	Experiment string          `json:"experiment"`
	Metric     string          `json:"metric,omitempty"`
	Kind       string          `json:"kind,omitempty"` // "mean" or "rate"
	Level      float64         `json:"level"`
	Variants   []VariantResult `json:"variants"`
	SRM        SRM             `json:"srm"`
	Fences     *stats.Fences   `json:"fences,omitempty"`
	CUPEDTheta *float64        `json:"cuped_theta,omitempty"`
	Excluded   Excluded        `json:"excluded"`
	Events     int             `json:"events"`
	Warnings   []string        `json:"warnings,omitempty"`
}

// SRM is the sample-ratio-mismatch check: units per variant against the
// intended shares.
type SRM struct {
	ChiSquare stats.JSONFloat `json:"chi_square"`
	PValue    stats.JSONFloat `json:"p_value"`
	Mismatch  bool            `json:"mismatch"`
}

// Excluded counts units left out of the analysis.
type Excluded struct {
	Forced         int `json:"forced"`          // whitelisted units
	MixedVariants  int `json:"mixed_variants"`  // exposed to more than one variant
	UnknownVariant int `json:"unknown_variant"` // exposed to a variant not in the config
	Unexposed      int `json:"unexposed"`       // metric events of units never exposed
}

// VariantResult is one arm.
type VariantResult struct {
	Name     string             `json:"name"`
	Units    int                `json:"units"`
	Outliers int                `json:"outliers_removed"`
	Analyzed int                `json:"analyzed"`
	Value    stats.JSONFloat    `json:"value"` // mean, or conversion rate
	ValueCI  [2]stats.JSONFloat `json:"value_ci"`
	// NaiveValue is the mean over every unit, outliers kept.
	NaiveValue stats.JSONFloat `json:"naive_value"`
	// Conversions counts converted units (rates only).
	Conversions int `json:"conversions,omitempty"`
	// Versus control (absent for the control itself).
	Comparison      *stats.Comparison `json:"comparison,omitempty"`
	NaiveComparison *stats.Comparison `json:"naive_comparison,omitempty"`
}

type unitState struct {
	seen      bool
	variant   int32 // index in Options.Variants, NotExposed or UnknownVariant
	mixed     bool
	forced    bool
	value     float64
	pre       float64
	converted bool
}

// armUnits is the analyzed units' values by arm, and the units excluded.
type armUnits struct {
	units, conversions []int
	values, pres       [][]float64
	excluded           Excluded
}

// Builder accumulates an experiment's events; Build computes the report.
type Builder struct {
	experiment string
	opt        Options
	variantIdx map[string]int32
	discover   bool
	units      []unitState // by the store's unit number (Add)
	// Units taken by AddUnit go straight to their arm (or exclusion): no
	// per-unit state to keep for them.
	aggregated armUnits
	events     int
	conv, met  int
	preEnd     int64
}

// NewBuilder starts a report of experiment.
func NewBuilder(experiment string, opt Options) *Builder {
	if opt.Level == 0 {
		opt.Level = 0.95
	}
	b := &Builder{experiment: experiment, opt: opt, variantIdx: map[string]int32{}, preEnd: math.MinInt64}
	if !opt.PreEnd.IsZero() {
		b.preEnd = opt.PreEnd.UnixNano()
	}
	b.discover = len(opt.Variants) == 0
	for i, v := range opt.Variants {
		b.variantIdx[v] = int32(i)
	}
	return b
}

// unit is the state of the unit numbered id by the store: a slice index,
// no hashing of unit ids.
func (b *Builder) unit(id uint32) *unitState {
	if int(id) >= len(b.units) {
		b.units = slices.Grow(b.units, int(id)+1-len(b.units))
		for len(b.units) <= int(id) {
			b.units = append(b.units, unitState{variant: NotExposed})
		}
	}
	u := &b.units[id]
	u.seen = true
	return u
}

// Add takes one stored event. Do not mix with AddUnit in one report.
func (b *Builder) Add(r *store.Record) {
	b.events++
	switch r.Kind {
	case events.Exposure:
		u := b.unit(r.UnitID)
		v, ok := b.variantIdx[string(r.Variant)]
		if !ok {
			if b.discover {
				v = int32(len(b.opt.Variants))
				b.opt.Variants = append(b.opt.Variants, string(r.Variant))
				b.variantIdx[string(r.Variant)] = v
			} else {
				v = UnknownVariant
			}
		}
		if r.Forced {
			u.forced = true
		}
		if u.variant == NotExposed {
			u.variant = v
		} else if u.variant != v {
			u.mixed = true
		}
	case events.Conversion, events.Metric:
		if b.opt.Metric == "" || string(r.Name) != b.opt.Metric {
			return
		}
		u := b.unit(r.UnitID)
		if r.Time < b.preEnd {
			u.pre += r.Value
			return
		}
		u.value += r.Value
		if r.Kind == events.Conversion {
			b.conv++
			u.converted = true
		} else {
			b.met++
		}
	}
}

// Build computes the report from the events added so far.
func (b *Builder) Build() *Report {
	opt := b.opt
	if b.discover {
		// Discovered variants in a stable order.
		order := slices.Clone(opt.Variants)
		slices.Sort(order)
		remap := make([]int32, len(order))
		for newIdx, name := range order {
			remap[b.variantIdx[name]] = int32(newIdx)
		}
		for i := range b.units {
			if v := b.units[i].variant; v >= 0 {
				b.units[i].variant = remap[v]
			}
		}
		opt.Variants = order
	}
	rep := &Report{Experiment: b.experiment, Metric: opt.Metric, Level: opt.Level, Events: b.events}
	n := len(opt.Variants)
	rep.Variants = make([]VariantResult, n)
	for i, name := range opt.Variants {
		rep.Variants[i].Name = name
	}
	values := make([][]float64, n)
	pres := make([][]float64, n)
	conversions := make([]int, n)
	if agg := &b.aggregated; len(agg.units) == n {
		copy(values, agg.values)
		copy(pres, agg.pres)
		copy(conversions, agg.conversions)
		for i := range rep.Variants {
			rep.Variants[i].Units = agg.units[i]
		}
		rep.Excluded = agg.excluded
	}
	for i := range b.units {
		u := &b.units[i]
		if !u.seen || rep.excluded(u) {
			continue
		}
		rep.Variants[u.variant].Units++
		values[u.variant] = append(values[u.variant], u.value)
		pres[u.variant] = append(pres[u.variant], u.pre)
		if u.converted {
			conversions[u.variant]++
		}
	}
	counts := make([]int, n)
	for i := range rep.Variants {
		counts[i] = rep.Variants[i].Units
	}
	weights := opt.Weights
	if len(weights) != n {
		weights = make([]float64, n)
		for i := range weights {
			weights[i] = 1
		}
	}
	chi, p := stats.ChiSquareGoodnessOfFit(counts, weights)
	rep.SRM.ChiSquare, rep.SRM.PValue = stats.JSONFloat(chi), stats.JSONFloat(p)
	if rep.SRM.PValue < SRMThreshold {
		rep.SRM.Mismatch = true
		rep.Warnings = append(rep.Warnings, "sample ratio mismatch: units per variant differ from the configured weights (p < 0.001); the assignment or logging is broken and the results are not trustworthy")
	}
	if opt.Metric == "" || n == 0 {
		return rep
	}
	if opt.CUPED && opt.PreEnd.IsZero() {
		rep.Warnings = append(rep.Warnings, "CUPED needs a pre-period: the experiment has no start time, so nothing was adjusted")
	}
	if b.conv > 0 && b.met == 0 {
		b.rates(rep, conversions)
	} else {
		b.means(rep, values, pres)
	}
	return rep
}

// excluded counts u in rep.Excluded when the analysis leaves it out, and
// reports whether it does.
func (rep *Report) excluded(u *unitState) bool {
	switch {
	case u.variant == NotExposed:
		rep.Excluded.Unexposed++
	case u.forced:
		rep.Excluded.Forced++
	case u.mixed:
		rep.Excluded.MixedVariants++
	case u.variant == UnknownVariant:
		rep.Excluded.UnknownVariant++
	default:
		return false
	}
	return true
}

func (b *Builder) rates(rep *Report, conversions []int) {
	rep.Kind = "rate"
	z := stats.NormalQuantile(1 - (1-rep.Level)/2)
	for i := range rep.Variants {
		v := &rep.Variants[i]
		v.Analyzed, v.Conversions = v.Units, conversions[i]
		v.Value, v.NaiveValue = stats.JSONFloat(math.NaN()), stats.JSONFloat(math.NaN())
		v.ValueCI = stats.Pair([2]float64{math.NaN(), math.NaN()})
		if v.Units > 0 {
			p := float64(v.Conversions) / float64(v.Units)
			se := math.Sqrt(p * (1 - p) / float64(v.Units))
			v.Value, v.NaiveValue, v.ValueCI = stats.JSONFloat(p), stats.JSONFloat(p), stats.Pair([2]float64{p - z*se, p + z*se})
		}
		if i > 0 {
			c := stats.TwoProportions(conversions[0], rep.Variants[0].Units, v.Conversions, v.Units, rep.Level)
			v.Comparison = &c
		}
	}
}

func (b *Builder) means(rep *Report, values, pres [][]float64) {
	rep.Kind = "mean"
	opt := b.opt
	naive := make([]stats.Summary, len(values))
	for i := range values {
		naive[i] = stats.Summarize(values[i])
	}
	kept, keptPre := values, pres
	if opt.IQRK > 0 {
		total := 0
		for i := range values {
			total += len(values[i])
		}
		pooled := make([]float64, 0, total)
		for i := range values {
			pooled = append(pooled, values[i]...)
		}
		if len(pooled) > 0 {
			f := stats.IQRFences(pooled, opt.IQRK)
			rep.Fences = &f
			kept, keptPre = make([][]float64, len(values)), make([][]float64, len(values))
			for i := range values {
				kept[i] = make([]float64, 0, len(values[i]))
				keptPre[i] = make([]float64, 0, len(values[i]))
				for j, x := range values[i] {
					if f.Contains(x) {
						kept[i] = append(kept[i], x)
						keptPre[i] = append(keptPre[i], pres[i][j])
					} else {
						rep.Variants[i].Outliers++
					}
				}
			}
		}
	}
	if opt.CUPED {
		var xs, ys []float64
		for i := range kept {
			xs = append(xs, keptPre[i]...)
			ys = append(ys, kept[i]...)
		}
		theta, meanX := stats.CUPEDTheta(xs, ys)
		rep.CUPEDTheta = &theta
		adjusted := make([][]float64, len(kept))
		for i := range kept {
			adjusted[i] = make([]float64, len(kept[i]))
			for j, y := range kept[i] {
				adjusted[i][j] = y - theta*(keptPre[i][j]-meanX)
			}
		}
		kept = adjusted
	}
	summaries := make([]stats.Summary, len(kept))
	for i := range kept {
		summaries[i] = stats.Summarize(kept[i])
		v := &rep.Variants[i]
		v.Analyzed, v.Value, v.NaiveValue = summaries[i].N, stats.JSONFloat(summaries[i].Mean), stats.JSONFloat(naive[i].Mean)
		if summaries[i].N > 1 {
			q := stats.StudentTQuantile(1-(1-rep.Level)/2, float64(summaries[i].N-1))
			se := math.Sqrt(summaries[i].Variance / float64(summaries[i].N))
			v.ValueCI = stats.Pair([2]float64{summaries[i].Mean - q*se, summaries[i].Mean + q*se})
		} else {
			v.ValueCI = stats.Pair([2]float64{math.NaN(), math.NaN()})
		}
		if i > 0 {
			c := stats.Welch(summaries[0], summaries[i], rep.Level)
			nc := stats.Welch(naive[0], naive[i], rep.Level)
			v.Comparison, v.NaiveComparison = &c, &nc
		}
	}
}

// Scanner reads an experiment's stored events (store.Store does).
type Scanner interface {
	Scan(experiment string, fn func(*store.Record) error) error
}

// Compute reads experiment's events from s and builds its report.
func Compute(s Scanner, experiment string, opt Options) (*Report, error) {
	b := NewBuilder(experiment, opt)
	if err := s.Scan(experiment, func(r *store.Record) error { b.Add(r); return nil }); err != nil {
		return nil, err
	}
	return b.Build(), nil
}

// AddEvents counts events of units that AddUnit does not take: neither
// exposed nor with events of the metric.
func (b *Builder) AddEvents(n int) { b.events += n }

// Exposure classes of a UnitRow besides a variant's index.
const (
	NotExposed     = -1 // the unit has metric events but no exposure
	UnknownVariant = -2 // exposed to a variant not in Options.Variants
	MixedVariants  = -3 // exposed to more than one variant
)

// UnitRow is one unit's events already aggregated (by ClickHouse). Variant
// is the index in Options.Variants of the variant the unit was exposed to,
// or NotExposed, UnknownVariant or MixedVariants; Forced says a whitelist
// forced it. Value and Pre are the metric's sums in the experiment and
// pre-periods; Conversions and Metrics count its conversion and metric
// events of the metric in the experiment period, Events all its events.
type UnitRow struct {
	Variant                      int
	Forced                       bool
	Value, Pre                   float64
	Conversions, Metrics, Events int
}

// AddUnit takes one aggregated unit instead of its events. The report's
// Options.Variants must be set (the indexes refer to them); do not mix with
// Add in one report.
func (b *Builder) AddUnit(row UnitRow) {
	b.events += row.Events
	b.conv += row.Conversions
	b.met += row.Metrics
	agg := &b.aggregated
	if agg.units == nil {
		n := len(b.opt.Variants)
		agg.units, agg.conversions = make([]int, n), make([]int, n)
		agg.values, agg.pres = make([][]float64, n), make([][]float64, n)
	}
	v := row.Variant
	switch {
	case v == NotExposed:
		agg.excluded.Unexposed++
	case row.Forced:
		agg.excluded.Forced++
	case v == MixedVariants:
		agg.excluded.MixedVariants++
	case v < 0 || v >= len(agg.units):
		agg.excluded.UnknownVariant++
	default:
		agg.units[v]++
		agg.values[v] = append(agg.values[v], row.Value)
		agg.pres[v] = append(agg.pres[v], row.Pre)
		if row.Conversions > 0 {
			agg.conversions[v]++
		}
	}
}
