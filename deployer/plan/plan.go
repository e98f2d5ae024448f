// Package plan holds a deploy's strategy: the apps file that sets it per
// app, and the arithmetic that cuts a host list into batches and decides
// when a batch has failed.
package plan

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/opskit/opskit/internal/kit"
)

// Amount is a count of hosts or a percentage of them: 3 or "10%".
type Amount struct {
	N       int
	Percent bool
}

func (a Amount) String() string {
	if a.Percent {
		return strconv.Itoa(a.N) + "%"
	}
	return strconv.Itoa(a.N)
}

// ParseAmount reads "3" or "10%".
func ParseAmount(s string) (Amount, error) {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || n < 0 {
		return Amount{}, fmt.Errorf("%q: want a count or a percentage such as 10%%", s)
	}
	if pct && n > 100 {
		return Amount{}, fmt.Errorf("%q: a percentage is at most 100%%", s)
	}
	return Amount{N: n, Percent: pct}, nil
}

// UnmarshalYAML takes 3 or "10%".
func (a *Amount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a count or a percentage", n.Line)
	}
	v, err := ParseAmount(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*a = v
	return nil
}

// MarshalJSON writes 3 or "10%".
func (a Amount) MarshalJSON() ([]byte, error) {
	if a.Percent {
		return []byte(strconv.Quote(a.String())), nil
	}
	return []byte(strconv.Itoa(a.N)), nil
}

// UnmarshalJSON reads 3 or "10%" (or "3").
func (a *Amount) UnmarshalJSON(b []byte) error {
	s := string(b)
	if u, err := strconv.Unquote(s); err == nil {
		s = u
	}
	v, err := ParseAmount(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// MarshalYAML writes the form UnmarshalYAML reads.
func (a Amount) MarshalYAML() (any, error) { return a.String(), nil }

// of resolves the amount against total hosts, rounding a percentage down.
func (a Amount) of(total int) int {
	if !a.Percent {
		return a.N
	}
	return int(math.Floor(float64(a.N) * float64(total) / 100))
}

// Batches cuts total hosts into batch sizes with Ansible's `serial`
// semantics: each entry is a count or a percentage of total (rounded
// down, and at least 1); the last entry repeats until every host is in a
// batch; a batch never holds more than the hosts left. No entry means one
// batch of every host.
func Batches(serial []Amount, total int) []int {
	if total <= 0 {
		return nil
	}
	if len(serial) == 0 {
		return []int{total}
	}
	var out []int
	left := total
	for i := 0; left > 0; i++ {
		a := serial[min(i, len(serial)-1)]
		size := max(a.of(total), 1)
		size = min(size, left)
		out = append(out, size)
		left -= size
	}
	return out
}

// Failed says whether failures in a batch of size hosts break the budget
// max: a batch fails when its failures EXCEED the budget (as Ansible's
// max_fail_percentage). A percentage is of the batch's size, rounded
// down: max_fail "10%" on a batch of 5 allows 0 failures, on 20 allows 2.
func Failed(maxFail Amount, failures, size int) bool {
	return failures > maxFail.of(size)
}

// Pause between batches.
type Pause struct {
	// For waits this long before the next batch (0: none), unless
	// UntilPromote.
	For time.Duration `json:"for,omitempty"`
	// UntilPromote waits for `deployer promote`.
	UntilPromote bool `json:"until_promote,omitempty"`
}

// UnmarshalYAML takes a duration ("30s") or until_promote.
func (p *Pause) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: pause: want a duration or until_promote", n.Line)
	}
	if n.Value == "until_promote" {
		*p = Pause{UntilPromote: true}
		return nil
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d < 0 {
		return fmt.Errorf("line %d: pause %q: want a duration or until_promote", n.Line, n.Value)
	}
	*p = Pause{For: d}
	return nil
}

// Gate is a PromQL query against transfer that must hold after a batch.
type Gate struct {
	// Query must return true (a scalar not 0) or a non-empty vector.
	Query string `yaml:"query" json:"query"`
	// Window the query must keep holding, polled every Interval.
	Window   Duration `yaml:"window" json:"window"`
	Interval Duration `yaml:"interval" json:"interval"`
}

// Duration is a time.Duration written as "30s" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML takes "30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q: want a duration such as 30s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// UnmarshalJSON reads "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// What to do when a batch fails.
const (
	OnFailureRollback = "rollback"
	OnFailureHold     = "hold"
)

// Strategy is how one app is rolled out. A deploy keeps a copy taken when
// it starts, so editing the apps file never changes a deploy under way.
type Strategy struct {
	Batches []Amount `yaml:"batches" json:"batches"`
	Pause   Pause    `yaml:"pause" json:"pause"`
	MaxFail Amount   `yaml:"max_fail" json:"max_fail"`
	// OnFailure is rollback (the default: changed hosts go back to their
	// recorded previous release) or hold (stop and wait for a person).
	OnFailure string `yaml:"on_failure" json:"on_failure"`
	// StepTimeout bounds one host's task from dispatch to result: a host
	// whose agent has not answered by then is failed.
	StepTimeout Duration `yaml:"step_timeout" json:"step_timeout"`
	// BatchTimeout bounds a whole batch (its tasks and its gate).
	BatchTimeout Duration `yaml:"batch_timeout" json:"batch_timeout"`
	// Keep is sent to the agents: releases kept per host (0: theirs).
	Keep int   `yaml:"keep" json:"keep,omitempty"`
	Gate *Gate `yaml:"gate" json:"gate,omitempty"`
}

// Default strategy fields.
const (
	DefaultStepTimeout  = 10 * time.Minute
	DefaultBatchTimeout = 30 * time.Minute
	DefaultGateInterval = 10 * time.Second
)

func (s *Strategy) fill() {
	if s.OnFailure == "" {
		s.OnFailure = OnFailureRollback
	}
	if s.StepTimeout == 0 {
		s.StepTimeout = Duration(DefaultStepTimeout)
	}
	if s.BatchTimeout == 0 {
		s.BatchTimeout = Duration(DefaultBatchTimeout)
	}
	if s.Gate != nil && s.Gate.Interval == 0 {
		s.Gate.Interval = Duration(DefaultGateInterval)
	}
}

func (s *Strategy) check() error {
	var errs []error
	if s.OnFailure != OnFailureRollback && s.OnFailure != OnFailureHold {
		errs = append(errs, fmt.Errorf("on_failure %q: want rollback or hold", s.OnFailure))
	}
	for _, b := range s.Batches {
		if b.N == 0 {
			errs = append(errs, errors.New("batches: an entry of 0 hosts"))
		}
	}
	if s.Gate != nil && strings.TrimSpace(s.Gate.Query) == "" {
		errs = append(errs, errors.New("gate: query is required"))
	}
	return errors.Join(errs...)
}

// Apps is the apps file: a strategy per app, and one for the others.
type Apps struct {
	Default Strategy            `yaml:"default"`
	Apps    map[string]Strategy `yaml:"apps"`
}

// For returns app's strategy (the default for an app not listed).
func (a *Apps) For(app string) Strategy {
	if s, ok := a.Apps[app]; ok {
		return s
	}
	return a.Default
}

// ParseApps reads an apps file:
//
//	default: {max_fail: 0}
//	apps:
//	  web:
//	    batches: [1, "10%", "50%", "100%"]
//	    pause: 30s            # or until_promote
//	    max_fail: "10%"
//	    on_failure: rollback  # or hold
//	    step_timeout: 10m
//	    batch_timeout: 30m
//	    gate: {query: 'sum(rate(http_errors_total{app="web"}[1m])) < 1', window: 2m, interval: 10s}
func ParseApps(name string, data []byte) (*Apps, error) {
	var a Apps
	if err := kit.ParseStrict(name, bytes.TrimSpace(data), &a); err != nil {
		return nil, err
	}
	a.Default.fill()
	if err := a.Default.check(); err != nil {
		return nil, fmt.Errorf("%s: default: %w", name, err)
	}
	for app, s := range a.Apps {
		s.fill()
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("%s: apps.%s: %w", name, app, err)
		}
		a.Apps[app] = s
	}
	return &a, nil
}

// DefaultApps is used without an apps file: every host in one batch, no
// failure allowed, roll back on failure.
func DefaultApps() *Apps {
	a := &Apps{}
	a.Default.fill()
	return a
}
