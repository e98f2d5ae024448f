// Package ramp advances experiments through their coverage steps
// (`ramp:` in the config): a step is taken only once the previous one has
// held for its time and the experiment passes the sample-ratio check and
// every guardrail; a failing check pauses the ramp until an operator
// resumes it. Raising coverage never moves a unit between arms (bucket
// starts do not depend on coverage), so a ramp only adds units.
package ramp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/internal/atomicfile"
)

// State is one experiment's place in its ramp.
type State struct {
	Step     int       `json:"step"`
	Coverage float64   `json:"coverage"`
	Since    time.Time `json:"since"`
	Paused   bool      `json:"paused,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// ReportFunc computes a report (from the local store or ClickHouse).
type ReportFunc func(ctx context.Context, experiment string, opt report.Options) (*report.Report, error)

// Controller keeps ramp states, persisted in a file, and builds the
// assigner with each ramped experiment's current coverage.
type Controller struct {
	path   string
	report ReportFunc
	iqrK   float64
	log    *slog.Logger
	now    func() time.Time
	apply  func(*sdk.Assigner)

	mu     sync.Mutex
	config *sdk.Config
	states map[string]*State
}

// Options configure a Controller.
type Options struct {
	StateFile string
	Report    ReportFunc
	IQRK      float64
	Log       *slog.Logger
	Now       func() time.Time
	// Apply receives every new assigner (config or step change).
	Apply func(*sdk.Assigner)
}

// New loads the saved states.
func New(o Options) (*Controller, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	states, err := LoadStates(o.StateFile)
	if err != nil {
		return nil, err
	}
	return &Controller{path: o.StateFile, report: o.Report, iqrK: o.IQRK, log: o.Log, now: o.Now, apply: o.Apply, states: states}, nil
}

// SetConfig takes a new config and applies it with the ramps' coverages.
func (c *Controller) SetConfig(cfg *sdk.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.config = cfg
	return c.rebuild()
}

// rebuild compiles the config with current coverages and hands it on;
// c.mu is held.
func (c *Controller) rebuild() error {
	if c.config == nil {
		return nil
	}
	now := c.now()
	for _, e := range c.config.Experiments {
		if len(e.Ramp) == 0 {
			continue
		}
		st, ok := c.states[e.Key]
		if !ok {
			st = &State{Since: now}
			c.states[e.Key] = st
		}
		st.Step = min(st.Step, len(e.Ramp)-1)
		st.Coverage = e.Ramp[st.Step].Coverage
	}
	a, err := sdk.New(Effective(c.config, c.states))
	if err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	if c.apply != nil {
		c.apply(a)
	}
	return nil
}

// Effective is cfg with each ramped experiment's coverage set to its
// current step's (the first step when it has no state yet).
func Effective(cfg *sdk.Config, states map[string]*State) *sdk.Config {
	eff := *cfg
	eff.Experiments = append([]sdk.ExperimentConfig(nil), cfg.Experiments...)
	for i := range eff.Experiments {
		e := &eff.Experiments[i]
		if len(e.Ramp) == 0 {
			continue
		}
		step := 0
		if st, ok := states[e.Key]; ok {
			step = min(max(st.Step, 0), len(e.Ramp)-1)
		}
		cov := e.Ramp[step].Coverage
		e.Coverage = &cov
	}
	return &eff
}

// LoadStates reads a state file without taking it over (a missing file
// is no state).
func LoadStates(path string) (map[string]*State, error) {
	states := map[string]*State{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return states, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ramp state: %w", err)
	}
	if err := json.Unmarshal(b, &states); err != nil {
		return nil, fmt.Errorf("ramp state %s: %w", path, err)
	}
	return states, nil
}

func (c *Controller) save() error {
	b, err := json.MarshalIndent(c.states, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(c.path, b, 0o644); err != nil {
		return fmt.Errorf("save ramp state: %w", err)
	}
	return nil
}

// States returns a copy of every ramp state.
func (c *Controller) States() map[string]State {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]State, len(c.states))
	for k, v := range c.states {
		out[k] = *v
	}
	return out
}

// Resume clears a pause; the step's time starts again.
func (c *Controller) Resume(experiment string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.states[experiment]
	if !ok {
		return fmt.Errorf("experiment %q has no ramp", experiment)
	}
	st.Paused, st.Reason, st.Since = false, "", c.now()
	return c.save()
}

// Check runs the due checks once: every unpaused ramp whose current step
// has held long enough either advances or pauses with the reason.
func (c *Controller) Check(ctx context.Context) error {
	c.mu.Lock()
	cfg := c.config
	c.mu.Unlock()
	if cfg == nil {
		return nil
	}
	keys := make([]string, 0)
	byKey := map[string]sdk.ExperimentConfig{}
	for _, e := range cfg.Experiments {
		if len(e.Ramp) > 1 {
			keys = append(keys, e.Key)
			byKey[e.Key] = e
		}
	}
	sort.Strings(keys)
	changed := false
	for _, key := range keys {
		e := byKey[key]
		c.mu.Lock()
		st := *c.states[key]
		c.mu.Unlock()
		if st.Paused || st.Step >= len(e.Ramp)-1 || c.now().Sub(st.Since) < e.Ramp[st.Step+1].After {
			continue
		}
		reason, err := c.verdict(ctx, e)
		if err != nil {
			c.log.Warn("ramp check failed to run; will retry", "experiment", key, "err", err)
			continue
		}
		c.mu.Lock()
		cur := c.states[key]
		if reason != "" {
			cur.Paused, cur.Reason = true, reason
			c.log.Warn("ramp paused", "experiment", key, "coverage", cur.Coverage, "reason", reason)
		} else {
			cur.Step++
			cur.Since = c.now()
			c.log.Info("ramp advanced", "experiment", key, "step", cur.Step, "coverage", e.Ramp[cur.Step].Coverage)
		}
		c.mu.Unlock()
		changed = true
	}
	if !changed {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rebuild()
}

// verdict is "" when the experiment may advance, else why not.
func (c *Controller) verdict(ctx context.Context, e sdk.ExperimentConfig) (string, error) {
	variants := make([]string, len(e.Variants))
	weights := make([]float64, len(e.Variants))
	for i, v := range e.Variants {
		variants[i], weights[i] = v.Name, v.Weight
	}
	if allZero(weights) {
		weights = nil
	}
	base := report.Options{Variants: variants, Weights: weights, IQRK: c.iqrK, PreEnd: e.Start}
	rep, err := c.report(ctx, e.Key, base)
	if err != nil {
		return "", err
	}
	if rep.SRM.Mismatch {
		return fmt.Sprintf("sample ratio mismatch (chi-square %.1f, p %.2g)", float64(rep.SRM.ChiSquare), float64(rep.SRM.PValue)), nil
	}
	for _, g := range e.Guardrails {
		opt := base
		opt.Metric = g.Metric
		rep, err := c.report(ctx, e.Key, opt)
		if err != nil {
			return "", err
		}
		for _, v := range rep.Variants[min(1, len(rep.Variants)):] {
			if v.Comparison != nil && v.Comparison.Relative < -g.MaxDrop {
				return fmt.Sprintf("guardrail %s: %s is %+.2f%% against control, beyond the allowed -%.2f%%",
					g.Metric, v.Name, 100*v.Comparison.Relative, 100*g.MaxDrop), nil
			}
		}
	}
	return "", nil
}

func allZero(ws []float64) bool {
	for _, w := range ws {
		if w != 0 {
			return false
		}
	}
	return true
}

// Run checks every interval until ctx ends.
func (c *Controller) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Check(ctx); err != nil {
				c.log.Error("ramp", "err", err)
			}
		}
	}
}
