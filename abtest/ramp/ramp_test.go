package ramp

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/abtest/stats"
)

const rampConfig = `
experiments:
  - key: checkout
    variants: [{name: control}, {name: new}]
    ramp:
      - {coverage: 0.1}
      - {coverage: 0.5, after: 1h}
      - {coverage: 1, after: 2h}
    guardrails:
      - {metric: revenue, max_drop: 0.05}
  - key: plain
    variants: [{name: control}, {name: t}]
`

type fakeReports struct {
	srm     bool
	revenue float64 // treatment's relative difference
	calls   []string
}

func (f *fakeReports) report(_ context.Context, experiment string, opt report.Options) (*report.Report, error) {
	f.calls = append(f.calls, experiment+"/"+opt.Metric)
	r := &report.Report{Experiment: experiment, Variants: []report.VariantResult{{Name: "control"}, {Name: "new"}}}
	r.SRM.Mismatch = f.srm
	r.SRM.PValue = stats.JSONFloat(1e-6)
	if opt.Metric == "revenue" {
		r.Variants[1].Comparison = &stats.Comparison{Relative: f.revenue}
	}
	return r, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t *testing.T, dir string, clk *clock, reports *fakeReports, applied **sdk.Assigner) *Controller {
	t.Helper()
	c, err := New(Options{StateFile: filepath.Join(dir, "ramp.json"), Report: reports.report, Now: clk.now,
		Apply: func(a *sdk.Assigner) { *applied = a }})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sdk.ParseConfig([]byte(rampConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

func coverageOf(a *sdk.Assigner) float64 {
	in := 0
	for i := range 10000 {
		if a.Evaluate("checkout", sdk.Unit{ID: "u" + string(rune('a'+i%26)) + time.Duration(i).String()}, time.Now()).InExperiment {
			in++
		}
	}
	return float64(in) / 10000
}

func TestRampAdvancesPausesAndResumes(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	reports := &fakeReports{revenue: -0.01}
	var applied *sdk.Assigner
	c := setup(t, dir, clk, reports, &applied)
	ctx := context.Background()
	if got := coverageOf(applied); got < 0.08 || got > 0.12 {
		t.Fatalf("first step covers %.3f, want 0.1", got)
	}
	// Not yet due: no check runs.
	clk.t = clk.t.Add(59 * time.Minute)
	_ = c.Check(ctx)
	if len(reports.calls) != 0 || c.States()["checkout"].Step != 0 {
		t.Fatalf("checked early: %v %+v", reports.calls, c.States())
	}
	clk.t = clk.t.Add(time.Minute)
	_ = c.Check(ctx)
	if st := c.States()["checkout"]; st.Step != 1 || st.Coverage != 0.5 || st.Paused {
		t.Fatalf("after 1h: %+v", st)
	}
	if got := coverageOf(applied); got < 0.47 || got > 0.53 {
		t.Fatalf("second step covers %.3f", got)
	}
	if _, ok := c.States()["plain"]; ok {
		t.Error("an experiment without ramp got a state")
	}
	// The guardrail fails: the ramp pauses at 0.5 with the reason.
	reports.revenue = -0.08
	clk.t = clk.t.Add(2 * time.Hour)
	_ = c.Check(ctx)
	st := c.States()["checkout"]
	if !st.Paused || st.Step != 1 || !strings.Contains(st.Reason, "guardrail revenue") {
		t.Fatalf("after a failing guardrail: %+v", st)
	}
	clk.t = clk.t.Add(10 * time.Hour)
	_ = c.Check(ctx)
	if c.States()["checkout"].Step != 1 {
		t.Fatal("a paused ramp advanced")
	}
	// A restart keeps the state.
	c = setup(t, dir, clk, reports, &applied)
	if st := c.States()["checkout"]; !st.Paused || st.Step != 1 {
		t.Fatalf("after restart: %+v", st)
	}
	// Resumed with the guardrail fixed but a sample ratio mismatch: paused again.
	if err := c.Resume("checkout"); err != nil {
		t.Fatal(err)
	}
	reports.revenue, reports.srm = 0.01, true
	clk.t = clk.t.Add(2 * time.Hour)
	_ = c.Check(ctx)
	if st := c.States()["checkout"]; !st.Paused || !strings.Contains(st.Reason, "sample ratio") {
		t.Fatalf("after SRM: %+v", st)
	}
	_ = c.Resume("checkout")
	reports.srm = false
	clk.t = clk.t.Add(2 * time.Hour)
	_ = c.Check(ctx)
	if st := c.States()["checkout"]; st.Step != 2 || st.Coverage != 1 {
		t.Fatalf("final step: %+v", st)
	}
	if got := coverageOf(applied); got != 1 {
		t.Fatalf("last step covers %.3f", got)
	}
	if err := c.Resume("plain"); err == nil {
		t.Error("resumed an experiment without ramp")
	}
}
