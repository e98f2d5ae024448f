package strategy

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestConditionSemantics checks each function against open-falcon's (and,
// for happen and c_avg, Nightingale's) definitions. Windows are newest
// first, as the functions see them.
func TestConditionSemantics(t *testing.T) {
	cases := []struct {
		cond     string
		vs       []float64
		baseline float64
		value    float64
		fires    bool
		enough   bool
	}{
		// all: every point of the window, value is the newest.
		{"all(#3) > 90", []float64{95, 91, 99}, 0, 95, true, true},
		{"all(#3) > 90", []float64{95, 90, 99}, 0, 95, false, true},
		{"all(#3) > 90", []float64{95, 91}, 0, 0, false, false}, // too few points: not judged
		{"all(#3) > 90", []float64{95, 91, 99, 10}, 0, 95, true, true},
		{"all(#1) >= 90", []float64{90}, 0, 90, true, true},
		// max, min, sum, avg over exactly N points.
		{"max(#3) > 90", []float64{1, 2, 91, 100}, 0, 91, true, true},
		{"max(#3) > 91", []float64{1, 2, 91, 100}, 0, 91, false, true},
		{"min(#2) < 5", []float64{6, 4, 1}, 0, 4, true, true},
		{"min(#2) < 4", []float64{6, 4, 1}, 0, 4, false, true},
		{"sum(#3) >= 6", []float64{1, 2, 3, 100}, 0, 6, true, true},
		{"sum(#3) > 6", []float64{1, 2, 3}, 0, 6, false, true},
		{"avg(#4) == 2.5", []float64{1, 2, 3, 4}, 0, 2.5, true, true},
		{"avg(#2) < 0", []float64{-1, -3}, 0, -2, true, true},
		// Equality with open-falcon's tolerance of 0.0001.
		{"all(#1) == 1", []float64{1.00009}, 0, 1.00009, true, true},
		{"all(#1) == 1", []float64{1.0002}, 0, 1.0002, false, true},
		{"all(#1) = 1", []float64{0.99995}, 0, 0.99995, true, true},
		{"all(#1) != 1", []float64{1.00009}, 0, 1.00009, false, true},
		{"all(#1) != 1", []float64{1.0002}, 0, 1.0002, true, true},
		{"all(#1) <= 1", []float64{1}, 0, 1, true, true},
		{"all(#1) < 1", []float64{1}, 0, 1, false, true},
		// diff(#N) needs N+1 points: newest minus each older one; the first
		// satisfying difference fires.
		{"diff(#2) > 10", []float64{30, 25, 15}, 0, 15, true, true},
		{"diff(#2) > 10", []float64{30, 25}, 0, 0, false, false},
		{"diff(#2) > 20", []float64{30, 25, 15}, 0, 15, false, true},
		{"diff(#1) < -5", []float64{0, 10}, 0, -10, true, true},
		{"diff(#3) > 10", []float64{30, 10, 29, 29}, 0, 20, true, true},
		// pdiff: percent of the older point; zero older points are skipped.
		{"pdiff(#2) > 250", []float64{30, 20, 10}, 0, 200, false, true}, // 50% and 200%: neither; value is the last
		{"pdiff(#1) > 50", []float64{30, 0}, 0, 0, false, true},         // only divisor is zero: judged, not fired
		{"pdiff(#2) > 50", []float64{30, 0, 10}, 0, 200, true, true},
		{"pdiff(#1) < -50", []float64{10, 40}, 0, -75, true, true},
		// lookup(#M,N): at least M of the last N satisfy.
		{"lookup(#2,3) > 5", []float64{6, 1, 7}, 0, 6, true, true},
		{"lookup(#2,3) > 5", []float64{6, 1, 1, 7}, 0, 6, false, true},
		{"lookup(#2,3) > 5", []float64{6, 7}, 0, 0, false, false},
		// happen(#N,M): Nightingale's order, window first.
		{"happen(#3,2) > 5", []float64{6, 1, 7}, 0, 7, true, true}, // reports the M-th satisfying point
		{"happen(#3,3) > 5", []float64{6, 1, 7}, 0, 6, false, true},
		// kdiff(#M,N), kpdiff(#M,N): at least M of the N differences.
		{"kdiff(#2,3) > 5", []float64{10, 1, 9, 2}, 0, 8, true, true},
		{"kdiff(#3,3) > 5", []float64{10, 1, 9, 2}, 0, 8, false, true},
		{"kpdiff(#1,2) >= 100", []float64{10, 0, 5}, 0, 100, true, true},
		{"kpdiff(#2,2) >= 100", []float64{10, 0, 5}, 0, 100, false, true},
		// stddev(#N) = K: newest outside mean ± K population deviations.
		{"stddev(#5) = 1", []float64{10, 1, 1, 1, 1}, 0, 10, true, true},
		{"stddev(#5) = 3", []float64{10, 1, 1, 1, 1}, 0, 10, false, true},
		{"stddev(#3) = 1", []float64{5, 5, 5}, 0, 5, false, true},
		// c_avg family against the earlier period's average.
		{"c_avg(#2,1d) > 5", []float64{20, 10}, 8, 7, true, true},
		{"c_avg_abs(#2,1d) > 5", []float64{0, 2}, 8, 7, true, true},
		{"c_avg_rate(#2,1d) > 50", []float64{20, 10}, 8, 87.5, true, true},
		{"c_avg_rate(#2,1d) < -50", []float64{1, 1}, -4, 125, false, true},
		{"c_avg_rate_abs(#1,1w) > 50", []float64{2}, 8, 75, true, true},
		{"c_avg_rate(#1,1d) > 50", []float64{2}, 0, 0, false, false},     // zero baseline
		{"c_avg(#1,1d) > 50", []float64{2}, math.NaN(), 0, false, false}, // no baseline yet
	}
	for _, c := range cases {
		cond, err := ParseCondition(c.cond)
		if err != nil {
			t.Fatalf("%s: %v", c.cond, err)
		}
		v, fires, enough := cond.Eval(c.vs, c.baseline)
		if fires != c.fires || enough != c.enough || math.Abs(v-c.value) > 1e-9 {
			t.Errorf("%s on %v (baseline %v) = %v, fires %v, enough %v; want %v, %v, %v",
				c.cond, c.vs, c.baseline, v, fires, enough, c.value, c.fires, c.enough)
		}
	}
}

func TestPDiffFiresOnSecondOlderPoint(t *testing.T) {
	cond, _ := ParseCondition("pdiff(#2) > 100")
	v, fires, _ := cond.Eval([]float64{30, 20, 10}, 0)
	if !fires || v != 200 {
		t.Fatalf("pdiff = %v %v; want 200 true (50%% against 20 fails, 200%% against 10 fires)", v, fires)
	}
}

func TestParseCondition(t *testing.T) {
	good := []struct {
		in, canon string
		window    int
	}{
		{"all(#3)>90", "all(#3) > 90", 3},
		{"  max( #10 ) >= -1.5 ", "", 10},
		{"diff(#5) != 0", "diff(#5) != 0", 6},
		{"lookup(#2,5) < 1e3", "lookup(#2,5) < 1000", 5},
		{"happen(#5,2) == 1", "happen(#5,2) == 1", 5},
		{"kpdiff(#1,3) > 10", "kpdiff(#1,3) > 10", 4},
		{"stddev(#10) = 3", "stddev(#10) = 3", 10},
		{"c_avg_rate(#3,1d) > 20", "c_avg_rate(#3,1d) > 20", 3},
		{"c_avg(#3,1w) > 20", "c_avg(#3,1w) > 20", 3},
		{"c_avg(#3,12h) > 20", "c_avg(#3,12h0m0s) > 20", 3},
	}
	for _, g := range good {
		c, err := ParseCondition(g.in)
		if err != nil {
			t.Errorf("%q: %v", g.in, err)
			continue
		}
		if g.canon != "" && c.String() != g.canon {
			t.Errorf("%q prints %q; want %q", g.in, c.String(), g.canon)
		}
		if c.Window() != g.window {
			t.Errorf("%q window %d; want %d", g.in, c.Window(), g.window)
		}
		again, err := ParseCondition(c.String())
		if err != nil || again.String() != c.String() {
			t.Errorf("%q does not round trip: %v %v", c.String(), again, err)
		}
	}
	bad := map[string]string{
		"":                   "want FUNC",
		"all(#3)":            "operator",
		"all(#3) > x":        "threshold",
		"all(#3) > NaN":      "threshold",
		"all(#0) > 1":        "whole number",
		"all(#1001) > 1":     "whole number",
		"all(3) > 1":         "#N",
		"all(#3 > 1":         "missing ')'",
		"foo(#3) > 1":        "unknown function",
		"lookup(#3) > 1":     "2 argument",
		"lookup(#4,3) > 1":   "larger than the window",
		"happen(#3,4) > 1":   "larger than the window",
		"stddev(#5) > 3":     "= K",
		"stddev(#5) = 0.5":   "= K",
		"c_avg(#3) > 1":      "period",
		"c_avg(#3,1y) > 1":   "period",
		"all(#3) <> 1":       "threshold",
		"all(#1,2) > 1":      "1 argument",
		"max(#-1) > 1":       "whole number",
		"pdiff(#2) >= 1 2":   "threshold",
		"all(#3) > 1 # note": "threshold",
	}
	for in, want := range bad {
		_, err := ParseCondition(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v; want one mentioning %q", in, err, want)
		}
	}
}

func TestParsePeriod(t *testing.T) {
	for in, want := range map[string]time.Duration{"1d": 24 * time.Hour, "2w": 14 * 24 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParsePeriod(in); err != nil || got != want {
			t.Errorf("ParsePeriod(%q) = %v %v", in, got, err)
		}
	}
	for _, in := range []string{"0d", "-1h", "d", "1x", ""} {
		if _, err := ParsePeriod(in); err == nil {
			t.Errorf("ParsePeriod(%q) accepted", in)
		}
	}
}
