// Package route is alarm's routing tree, in Alertmanager's configuration
// format and with its semantics: an alert walks the tree depth first, the
// first matching child takes it unless that child says `continue`, a node
// with no matching child takes it itself, and children inherit receiver,
// group_by and timers from their parent.
package route

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/internal/metric"
)

// Defaults of the root route, as in Alertmanager.
const (
	DefaultGroupWait      = 30 * time.Second
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
)

// Config is one route node as written in YAML.
type Config struct {
	Receiver            string            `yaml:"receiver"`
	GroupBy             []string          `yaml:"group_by"`
	Matchers            []string          `yaml:"matchers"`
	Match               map[string]string `yaml:"match"`
	MatchRE             map[string]string `yaml:"match_re"`
	Continue            bool              `yaml:"continue"`
	GroupWait           *Duration         `yaml:"group_wait"`
	GroupInterval       *Duration         `yaml:"group_interval"`
	RepeatInterval      *Duration         `yaml:"repeat_interval"`
	MuteTimeIntervals   []string          `yaml:"mute_time_intervals"`
	ActiveTimeIntervals []string          `yaml:"active_time_intervals"`
	Routes              []*Config         `yaml:"routes"`
}

// Route is a built node of the tree.
type Route struct {
	Receiver            string
	GroupBy             []string // sorted; empty with GroupByAll
	GroupByAll          bool     // group_by: ['...']: every label
	Matchers            []*metric.Matcher
	Continue            bool
	GroupWait           time.Duration
	GroupInterval       time.Duration
	RepeatInterval      time.Duration
	MuteTimeIntervals   []string
	ActiveTimeIntervals []string
	Routes              []*Route

	parent *Route
	key    string
}

// Build checks and builds the tree from its root config. receivers and
// intervals name what exists, so that a route naming anything else is an
// error at load time rather than a lost alert later.
func Build(c *Config, receivers, intervals map[string]bool) (*Route, error) {
	if c == nil {
		return nil, fmt.Errorf("route: missing root route")
	}
	if c.Receiver == "" {
		return nil, fmt.Errorf("route: the root route needs a receiver")
	}
	if len(c.Matchers) > 0 || len(c.Match) > 0 || len(c.MatchRE) > 0 {
		return nil, fmt.Errorf("route: the root route must not have matchers (it takes every alert)")
	}
	if len(c.MuteTimeIntervals) > 0 || len(c.ActiveTimeIntervals) > 0 {
		return nil, fmt.Errorf("route: the root route must not have mute or active time intervals")
	}
	root := &Route{
		GroupWait: DefaultGroupWait, GroupInterval: DefaultGroupInterval, RepeatInterval: DefaultRepeatInterval,
	}
	return build(c, root, nil, receivers, intervals, "route")
}

func build(c *Config, inherit *Route, parent *Route, receivers, intervals map[string]bool, where string) (*Route, error) {
	r := &Route{
		Receiver: inherit.Receiver, GroupBy: inherit.GroupBy, GroupByAll: inherit.GroupByAll,
		GroupWait: inherit.GroupWait, GroupInterval: inherit.GroupInterval, RepeatInterval: inherit.RepeatInterval,
		Continue: c.Continue, parent: parent,
		MuteTimeIntervals: c.MuteTimeIntervals, ActiveTimeIntervals: c.ActiveTimeIntervals,
	}
	if c.Receiver != "" {
		r.Receiver = c.Receiver
	}
	if !receivers[r.Receiver] {
		return nil, fmt.Errorf("%s: receiver %q is not defined", where, r.Receiver)
	}
	for _, name := range append(append([]string(nil), c.MuteTimeIntervals...), c.ActiveTimeIntervals...) {
		if !intervals[name] {
			return nil, fmt.Errorf("%s: time interval %q is not defined", where, name)
		}
	}
	if c.GroupBy != nil {
		r.GroupBy, r.GroupByAll = nil, false
		seen := map[string]bool{}
		for _, l := range c.GroupBy {
			if l == "..." {
				if len(c.GroupBy) != 1 {
					return nil, fmt.Errorf("%s: group_by '...' must stand alone", where)
				}
				r.GroupByAll = true
				continue
			}
			if l == "" || seen[l] {
				return nil, fmt.Errorf("%s: group_by label %q is empty or repeated", where, l)
			}
			seen[l] = true
			r.GroupBy = append(r.GroupBy, l)
		}
		sort.Strings(r.GroupBy)
	}
	for _, d := range []struct {
		in  *Duration
		out *time.Duration
		key string
	}{{c.GroupWait, &r.GroupWait, "group_wait"}, {c.GroupInterval, &r.GroupInterval, "group_interval"}, {c.RepeatInterval, &r.RepeatInterval, "repeat_interval"}} {
		if d.in != nil {
			*d.out = time.Duration(*d.in)
		}
		if d.key != "group_wait" && *d.out <= 0 {
			return nil, fmt.Errorf("%s: %s must be positive", where, d.key)
		}
	}
	for _, s := range c.Matchers {
		ms, err := matcher.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s: matchers: %w", where, err)
		}
		r.Matchers = append(r.Matchers, ms...)
	}
	for n, v := range c.Match {
		r.Matchers = append(r.Matchers, metric.MustMatcher(metric.MatchEqual, n, v))
	}
	for n, v := range c.MatchRE {
		m, err := metric.NewMatcher(metric.MatchRegexp, n, v)
		if err != nil {
			return nil, fmt.Errorf("%s: match_re: %w", where, err)
		}
		r.Matchers = append(r.Matchers, m)
	}
	SortMatchers(r.Matchers)
	r.key = matchersKey(r.Matchers)
	if parent != nil {
		r.key = parent.key + "/" + r.key
	}
	for i, cc := range c.Routes {
		child, err := build(cc, r, r, receivers, intervals, fmt.Sprintf("%s.routes[%d]", where, i))
		if err != nil {
			return nil, err
		}
		r.Routes = append(r.Routes, child)
	}
	return r, nil
}

// SortMatchers orders matchers by name, value, then type, as Alertmanager
// does, so that route keys do not depend on the order written.
func SortMatchers(ms []*metric.Matcher) {
	sort.SliceStable(ms, func(i, j int) bool {
		if ms[i].Name != ms[j].Name {
			return ms[i].Name < ms[j].Name
		}
		if ms[i].Value != ms[j].Value {
			return ms[i].Value < ms[j].Value
		}
		return ms[i].Type < ms[j].Type
	})
}

func matchersKey(ms []*metric.Matcher) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Key identifies the node: the chain of matchers from the root, in
// Alertmanager's notation (`{}/{severity="critical"}`).
func (r *Route) Key() string { return r.key }

// Matches reports whether the node's own matchers accept ls.
func (r *Route) Matches(ls alert.Labels) bool {
	for _, m := range r.Matchers {
		if !m.Matches(ls[m.Name]) {
			return false
		}
	}
	return true
}

// Match returns the nodes that take an alert with labels ls.
func (r *Route) Match(ls alert.Labels) []*Route {
	if !r.Matches(ls) {
		return nil
	}
	var all []*Route
	for _, c := range r.Routes {
		got := c.Match(ls)
		all = append(all, got...)
		if got != nil && !c.Continue {
			break
		}
	}
	if len(all) == 0 {
		all = append(all, r)
	}
	return all
}

// GroupLabels are the labels of ls that the node groups by.
func (r *Route) GroupLabels(ls alert.Labels) alert.Labels {
	if r.GroupByAll {
		return ls.Clone()
	}
	out := alert.Labels{}
	for _, n := range r.GroupBy {
		if v, ok := ls[n]; ok {
			out[n] = v
		}
	}
	return out
}

// GroupKey names the aggregation group of ls under this node, in
// Alertmanager's form: route key ":" group labels.
func (r *Route) GroupKey(ls alert.Labels) string {
	return r.key + ":" + r.GroupLabels(ls).String()
}

// Walk calls fn on every node, depth first.
func (r *Route) Walk(fn func(*Route)) {
	fn(r)
	for _, c := range r.Routes {
		c.Walk(fn)
	}
}
