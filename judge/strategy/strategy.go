// Package strategy is judge's strategy file: which series a strategy
// watches (metric, tag matchers, endpoints, host groups), its condition in
// open-falcon's grammar, its timers (for, keep_firing_for, nodata), and the
// labels and annotations of the alerts it raises.
package strategy

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/internal/metric"
)

// File is the strategy file as written.
type File struct {
	Strategies []Spec `yaml:"strategies"`
}

// Spec is one strategy as written in the file.
type Spec struct {
	Name string `yaml:"name"`
	// Metric is the metric name the strategy watches.
	Metric string `yaml:"metric"`
	// Tags are matchers on the series tags: `mount=/`, `mount!=/boot`,
	// `iface=~eth.*`, `iface!~lo|docker.*`.
	Tags []string `yaml:"tags"`
	// Endpoints lists the hosts watched; EndpointPattern is a regular
	// expression (anchored) over them; Groups names host groups of the
	// groups file. Empty means every endpoint; given together, an endpoint
	// matching any of them is watched.
	Endpoints       []string `yaml:"endpoints"`
	EndpointPattern string   `yaml:"endpoint_pattern"`
	Groups          []string `yaml:"groups"`
	// Condition is `FUNC(#N) OP VALUE`; empty for a nodata-only strategy.
	Condition string `yaml:"condition"`
	// Expression is arithmetic over the latest values of several metrics
	// of one endpoint and tag set, compared with a threshold; it replaces
	// metric and condition.
	Expression    string            `yaml:"expression"`
	For           time.Duration     `yaml:"for"`
	KeepFiringFor time.Duration     `yaml:"keep_firing_for"`
	Nodata        time.Duration     `yaml:"nodata"`
	Priority      *int              `yaml:"priority"`
	MaxStep       int               `yaml:"max_step"`
	RepeatEvery   time.Duration     `yaml:"repeat_interval"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
	Runbook       string            `yaml:"runbook"`
	// Flap damps an alert that fires and resolves over and over.
	Flap Flap `yaml:"flap"`
}

// Flap is flap damping: an alert whose state changes more than Changes
// times within Window is held firing (annotated flapping) until its
// condition has been steady for a whole Window.
type Flap struct {
	Changes int           `yaml:"changes"`
	Window  time.Duration `yaml:"window"`
}

// DefaultPriority is used when a strategy gives none.
const DefaultPriority = 3

// Strategy is one compiled strategy.
type Strategy struct {
	Spec
	Priority  int
	Severity  string
	Cond      *Condition // nil for a nodata-only or expression strategy
	Expr      *Expr      // nil unless an expression strategy
	matchers  []*metric.Matcher
	endpoints map[string]bool
	endpoint  *regexp.Regexp
	any       bool // no endpoint restriction
	summary   *template.Template
	anns      map[string]*template.Template
}

// Window is how many points a series must keep for this strategy.
func (s *Strategy) Window() int {
	if s.Cond == nil {
		return 0
	}
	return s.Cond.Window()
}

// Severity maps priorities 0-5 to Alertmanager-style severities.
func Severity(priority int) string {
	switch {
	case priority <= 1:
		return "critical"
	case priority <= 3:
		return "warning"
	}
	return "info"
}

// Matches reports whether the series (already known to carry the strategy's
// metric name) is watched by it.
func (s *Strategy) Matches(ls metric.Labels) bool {
	if !s.any {
		ep := ls.Get(metric.EndpointLabel)
		if !s.endpoints[ep] && (s.endpoint == nil || !s.endpoint.MatchString(ep)) {
			return false
		}
	}
	return metric.MatchesLabels(ls, s.matchers)
}

// Groups maps a host group to its endpoints.
type Groups map[string][]string

// ParseGroups reads a groups file: YAML mapping group name → endpoints.
func ParseGroups(name string, data []byte) (Groups, error) {
	g := Groups{}
	if err := kit.ParseStrict(name, data, &g); err != nil {
		return nil, err
	}
	return g, nil
}

// Set is a compiled strategy file, indexed by metric name.
type Set struct {
	List     []*Strategy
	byMetric map[string][]*Strategy
}

// ForMetric returns the strategies watching a metric name.
func (s *Set) ForMetric(name string) []*Strategy {
	if s == nil {
		return nil
	}
	return s.byMetric[name]
}

// MaxWindow is the largest window among the strategies.
func (s *Set) MaxWindow() int {
	w := 0
	for _, st := range s.List {
		w = max(w, st.Window())
	}
	return w
}

// Load reads and compiles the strategy file, and the groups file if given.
func Load(path, groupsPath string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("strategies: %w", err)
	}
	var groups Groups
	if groupsPath != "" {
		gd, err := os.ReadFile(groupsPath)
		if err != nil {
			return nil, fmt.Errorf("groups: %w", err)
		}
		if groups, err = ParseGroups(groupsPath, gd); err != nil {
			return nil, err
		}
	}
	return Parse(path, data, groups)
}

// Parse compiles a strategy file. name labels errors, which say which
// strategy (by position and name) and which field is wrong.
func Parse(name string, data []byte, groups Groups) (*Set, error) {
	var f File
	if err := kit.ParseStrict(name, data, &f); err != nil {
		return nil, err
	}
	set := &Set{byMetric: map[string][]*Strategy{}}
	seen := map[string]bool{}
	for i, spec := range f.Strategies {
		st, err := compile(spec, groups)
		if err != nil {
			return nil, fmt.Errorf("%s: strategies[%d] (%s): %w", name, i, spec.Name, err)
		}
		if seen[st.Name] {
			return nil, fmt.Errorf("%s: strategies[%d]: name %q is used twice", name, i, st.Name)
		}
		seen[st.Name] = true
		set.List = append(set.List, st)
		if st.Expr != nil {
			for _, m := range st.Expr.Metrics {
				set.byMetric[m] = append(set.byMetric[m], st)
			}
			continue
		}
		set.byMetric[st.Metric] = append(set.byMetric[st.Metric], st)
	}
	return set, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.:-]*$`)

func compile(spec Spec, groups Groups) (*Strategy, error) {
	st := &Strategy{Spec: spec, Priority: DefaultPriority}
	if !nameRE.MatchString(spec.Name) {
		return nil, fmt.Errorf("name %q: want letters, digits, _ . : - (it becomes the alertname)", spec.Name)
	}
	if spec.Expression != "" {
		if spec.Metric != "" || spec.Condition != "" || spec.Nodata != 0 {
			return nil, fmt.Errorf("expression replaces metric, condition and nodata: give it alone")
		}
		x, err := ParseExpr(spec.Expression)
		if err != nil {
			return nil, err
		}
		st.Expr = x
	} else if spec.Metric == "" {
		return nil, fmt.Errorf("metric is missing")
	}
	if spec.Priority != nil {
		if *spec.Priority < 0 || *spec.Priority > 5 {
			return nil, fmt.Errorf("priority %d: want 0 (highest) to 5", *spec.Priority)
		}
		st.Priority = *spec.Priority
	}
	st.Severity = Severity(st.Priority)
	if spec.Condition == "" && spec.Nodata == 0 && st.Expr == nil {
		return nil, fmt.Errorf("give a condition, a nodata duration, or both")
	}
	if spec.Condition != "" {
		c, err := ParseCondition(spec.Condition)
		if err != nil {
			return nil, err
		}
		st.Cond = c
	}
	for field, d := range map[string]time.Duration{"for": spec.For, "keep_firing_for": spec.KeepFiringFor, "nodata": spec.Nodata, "repeat_interval": spec.RepeatEvery} {
		if d < 0 {
			return nil, fmt.Errorf("%s %v: must not be negative", field, d)
		}
	}
	if spec.Flap.Changes < 0 || spec.Flap.Window < 0 || (spec.Flap.Changes > 0) != (spec.Flap.Window > 0) {
		return nil, fmt.Errorf("flap: give both changes and window, positive")
	}
	if spec.MaxStep < 0 {
		return nil, fmt.Errorf("max_step %d: must not be negative", spec.MaxStep)
	}
	for _, t := range spec.Tags {
		m, err := ParseMatcher(t)
		if err != nil {
			return nil, err
		}
		st.matchers = append(st.matchers, m)
	}
	st.endpoints = map[string]bool{}
	for _, e := range spec.Endpoints {
		st.endpoints[e] = true
	}
	for _, g := range spec.Groups {
		members, ok := groups[g]
		if !ok {
			return nil, fmt.Errorf("group %q is not in the groups file", g)
		}
		for _, e := range members {
			st.endpoints[e] = true
		}
	}
	if spec.EndpointPattern != "" {
		re, err := regexp.Compile("^(?:" + spec.EndpointPattern + ")$")
		if err != nil {
			return nil, fmt.Errorf("endpoint_pattern: %w", err)
		}
		st.endpoint = re
	}
	st.any = len(spec.Endpoints) == 0 && len(spec.Groups) == 0 && spec.EndpointPattern == ""
	for k := range spec.Labels {
		if !labelNameRE.MatchString(k) {
			return nil, fmt.Errorf("label name %q: want [A-Za-z_][A-Za-z0-9_]*", k)
		}
	}
	st.anns = map[string]*template.Template{}
	keys := make([]string, 0, len(spec.Annotations))
	for k := range spec.Annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t, err := parseTemplate(k, spec.Annotations[k])
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", k, err)
		}
		st.anns[k] = t
	}
	if _, ok := st.anns["summary"]; !ok {
		text := "{{ $labels.endpoint }} {{ $labels.metric }} = {{ $value }}: " + spec.Name
		if st.Cond != nil {
			text += " (" + st.Cond.String() + ")"
		}
		if st.Expr != nil {
			text += " (" + st.Expr.String() + ")"
		}
		st.anns["summary"], _ = parseTemplate("summary", text)
	}
	return st, nil
}

var labelNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseMatcher reads `name=value`, `name!=value`, `name=~re` or `name!~re`.
func ParseMatcher(s string) (*metric.Matcher, error) {
	i := strings.IndexAny(s, "=!")
	if i <= 0 {
		return nil, fmt.Errorf("tag matcher %q: want name=value, name!=value, name=~regexp or name!~regexp", s)
	}
	name, rest := strings.TrimSpace(s[:i]), s[i:]
	var t metric.MatchType
	switch {
	case strings.HasPrefix(rest, "=~"):
		t, rest = metric.MatchRegexp, rest[2:]
	case strings.HasPrefix(rest, "!~"):
		t, rest = metric.MatchNotRegexp, rest[2:]
	case strings.HasPrefix(rest, "!="):
		t, rest = metric.MatchNotEqual, rest[2:]
	case strings.HasPrefix(rest, "="):
		t, rest = metric.MatchEqual, rest[1:]
	default:
		return nil, fmt.Errorf("tag matcher %q: want an operator = != =~ !~", s)
	}
	return metric.NewMatcher(t, name, strings.TrimSpace(rest))
}

// templateData is what annotation templates see as $value and $labels.
type templateData struct {
	Value  float64
	Labels map[string]string
}

// parseTemplate accepts Prometheus-style `{{ $value }}` and
// `{{ $labels.endpoint }}`.
func parseTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=zero").Parse("{{$value := .Value}}{{$labels := .Labels}}" + text)
}

// Render renders the strategy's annotations for one alert, adding
// the condition and the runbook URL.
func (s *Strategy) Render(value float64, labels map[string]string) map[string]string {
	out := make(map[string]string, len(s.anns)+2)
	for k, t := range s.anns {
		var b bytes.Buffer
		if err := t.Execute(&b, templateData{Value: value, Labels: labels}); err != nil {
			out[k] = s.Spec.Annotations[k] + " (template error: " + err.Error() + ")"
			continue
		}
		out[k] = b.String()
	}
	if s.Cond != nil {
		out["condition"] = s.Cond.String()
	}
	if s.Expr != nil {
		out["condition"] = s.Expr.String()
	}
	if s.Runbook != "" {
		out["runbook_url"] = s.Runbook
	}
	return out
}
