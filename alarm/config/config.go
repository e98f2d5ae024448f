// Package config reads alarm's notification configuration: a YAML file in
// Alertmanager's format (global.resolve_timeout, route, receivers,
// inhibit_rules), so the same file can drive alarm and Alertmanager. Keys
// alarm does not know are errors naming the key and line, never ignored.
package config

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/inhibit"
	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/route"
	"github.com/opskit/opskit/alarm/timeinterval"
	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/internal/metric"
)

// DefaultResolveTimeout is Alertmanager's.
const DefaultResolveTimeout = 5 * time.Minute

// File is the YAML document.
type File struct {
	Global       Global                  `yaml:"global"`
	Route        *route.Config           `yaml:"route"`
	Receivers    []notify.ReceiverConfig `yaml:"receivers"`
	InhibitRules []inhibit.RuleConfig    `yaml:"inhibit_rules"`
	// TimeIntervals and its older name MuteTimeIntervals name recurring
	// periods for routes and maintenance windows.
	TimeIntervals     []timeinterval.Config `yaml:"time_intervals"`
	MuteTimeIntervals []timeinterval.Config `yaml:"mute_time_intervals"`
	// MaintenanceWindows (opskit) mute matching alerts during named
	// intervals: recurring silences.
	MaintenanceWindows []MaintenanceConfig `yaml:"maintenance_windows"`
}

// MaintenanceConfig is one recurring silence.
type MaintenanceConfig struct {
	Name          string   `yaml:"name"`
	Matchers      []string `yaml:"matchers"`
	TimeIntervals []string `yaml:"time_intervals"`
}

// Maintenance is a built maintenance window.
type Maintenance struct {
	Name      string
	Matchers  []*metric.Matcher
	Intervals []*timeinterval.Set
}

// Mutes reports whether the window is open at t and covers ls.
func (m *Maintenance) Mutes(ls alert.Labels, t time.Time) bool {
	for _, x := range m.Matchers {
		if !x.Matches(ls[x.Name]) {
			return false
		}
	}
	for _, in := range m.Intervals {
		if in.Contains(t) {
			return true
		}
	}
	return false
}

// Global holds the global settings alarm uses.
type Global struct {
	ResolveTimeout *route.Duration `yaml:"resolve_timeout"`
}

// Config is a checked configuration.
type Config struct {
	ResolveTimeout time.Duration
	Route          *route.Route
	Receivers      []*notify.Receiver
	InhibitRules   []*inhibit.Rule
	TimeIntervals  map[string]*timeinterval.Set
	Maintenance    []*Maintenance
	Text           string // the source, for /api/v2/status
}

// Load reads and checks the file at path.
func Load(path string, client *http.Client) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("notification config: %w", err)
	}
	return Parse(path, data, client)
}

// Default is the configuration without a file: every alert grouped by
// alertname to one receiver, "default", which posts to webhookURL (or
// notifies nobody when it is empty).
func Default(webhookURL string, client *http.Client) (*Config, error) {
	text := "route:\n  receiver: default\n  group_by: [alertname]\nreceivers:\n- name: default\n"
	if webhookURL != "" {
		text += fmt.Sprintf("  webhook_configs:\n  - url: %q\n", webhookURL)
	}
	return Parse("default configuration", []byte(text), client)
}

// Parse checks a configuration; name labels errors.
func Parse(name string, data []byte, client *http.Client) (*Config, error) {
	var f File
	if err := kit.ParseStrict(name, data, &f); err != nil {
		return nil, err
	}
	c := &Config{ResolveTimeout: DefaultResolveTimeout, Text: string(data)}
	if f.Global.ResolveTimeout != nil {
		c.ResolveTimeout = time.Duration(*f.Global.ResolveTimeout)
		if c.ResolveTimeout <= 0 {
			return nil, fmt.Errorf("%s: global.resolve_timeout must be positive", name)
		}
	}
	names := map[string]bool{}
	for i, rc := range f.Receivers {
		if names[rc.Name] {
			return nil, fmt.Errorf("%s: receivers[%d]: name %q used twice", name, i, rc.Name)
		}
		r, err := notify.BuildReceiver(rc, client)
		if err != nil {
			return nil, fmt.Errorf("%s: receivers[%d]: %w", name, i, err)
		}
		names[rc.Name] = true
		c.Receivers = append(c.Receivers, r)
	}
	if f.Route == nil {
		return nil, errors.New(name + ": no route")
	}
	c.TimeIntervals = map[string]*timeinterval.Set{}
	known := map[string]bool{}
	for i, tc := range append(append([]timeinterval.Config(nil), f.TimeIntervals...), f.MuteTimeIntervals...) {
		if known[tc.Name] {
			return nil, fmt.Errorf("%s: time interval %q defined twice", name, tc.Name)
		}
		set, err := timeinterval.Build(tc)
		if err != nil {
			return nil, fmt.Errorf("%s: time_intervals[%d]: %w", name, i, err)
		}
		known[tc.Name] = true
		c.TimeIntervals[tc.Name] = set
	}
	for i, mc := range f.MaintenanceWindows {
		m := &Maintenance{Name: mc.Name}
		if m.Name == "" {
			m.Name = fmt.Sprintf("maintenance_windows[%d]", i)
		}
		for _, s := range mc.Matchers {
			ms, err := matcher.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("%s: maintenance_windows[%d]: %w", name, i, err)
			}
			m.Matchers = append(m.Matchers, ms...)
		}
		if len(m.Matchers) == 0 || len(mc.TimeIntervals) == 0 {
			return nil, fmt.Errorf("%s: maintenance_windows[%d]: needs matchers and time_intervals", name, i)
		}
		for _, n := range mc.TimeIntervals {
			set := c.TimeIntervals[n]
			if set == nil {
				return nil, fmt.Errorf("%s: maintenance_windows[%d]: time interval %q is not defined", name, i, n)
			}
			m.Intervals = append(m.Intervals, set)
		}
		c.Maintenance = append(c.Maintenance, m)
	}
	root, err := route.Build(f.Route, names, known)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.Route = root
	for i, rc := range f.InhibitRules {
		r, err := inhibit.BuildRule(rc)
		if err != nil {
			return nil, fmt.Errorf("%s: inhibit_rules[%d]: %w", name, i, err)
		}
		c.InhibitRules = append(c.InhibitRules, r)
	}
	return c, nil
}
