// Package inhibit mutes alerts while other alerts fire, with Alertmanager's
// inhibit_rules: a firing alert matching a rule's source matchers mutes
// every alert matching its target matchers that has the same values for the
// rule's `equal` labels (an absent label counts as the empty value). An
// alert matching both sides never mutes itself.
package inhibit

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/internal/metric"
)

// RuleConfig is one inhibit_rules entry as written in YAML.
type RuleConfig struct {
	SourceMatchers []string          `yaml:"source_matchers"`
	TargetMatchers []string          `yaml:"target_matchers"`
	SourceMatch    map[string]string `yaml:"source_match"`
	SourceMatchRE  map[string]string `yaml:"source_match_re"`
	TargetMatch    map[string]string `yaml:"target_match"`
	TargetMatchRE  map[string]string `yaml:"target_match_re"`
	Equal          []string          `yaml:"equal"`
}

// Rule is a built inhibition rule.
type Rule struct {
	Source []*metric.Matcher
	Target []*metric.Matcher
	Equal  []string
}

// BuildRule checks and builds one rule.
func BuildRule(c RuleConfig) (*Rule, error) {
	src, err := matchers(c.SourceMatchers, c.SourceMatch, c.SourceMatchRE)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	tgt, err := matchers(c.TargetMatchers, c.TargetMatch, c.TargetMatchRE)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	eq := append([]string(nil), c.Equal...)
	sort.Strings(eq)
	return &Rule{Source: src, Target: tgt, Equal: eq}, nil
}

func matchers(list []string, eq, re map[string]string) ([]*metric.Matcher, error) {
	var out []*metric.Matcher
	for _, s := range list {
		ms, err := matcher.Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	for n, v := range eq {
		out = append(out, metric.MustMatcher(metric.MatchEqual, n, v))
	}
	for n, v := range re {
		m, err := metric.NewMatcher(metric.MatchRegexp, n, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func matchAll(ms []*metric.Matcher, ls alert.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls[m.Name]) {
			return false
		}
	}
	return true
}

// equalKey joins the values of the rule's equal labels.
func (r *Rule) equalKey(ls alert.Labels) string {
	var b strings.Builder
	for _, n := range r.Equal {
		b.WriteString(ls[n])
		b.WriteByte(0xff)
	}
	return b.String()
}

// Inhibitor indexes the alerts that match each rule's source side by the
// values of its equal labels, so a check costs a map lookup, not a scan.
type Inhibitor struct {
	rules []*Rule
	now   func() time.Time

	mu sync.RWMutex
	// sources[i][equalKey][fp] is a possible source of rule i.
	sources []map[string]map[alert.Fingerprint]*alert.Alert
	// keyOf[i][fp] is where fp sits in sources[i].
	keyOf []map[alert.Fingerprint]string
}

// New builds an inhibitor over rules; now is the clock.
func New(rules []*Rule, now func() time.Time) *Inhibitor {
	in := &Inhibitor{rules: rules, now: now}
	for range rules {
		in.sources = append(in.sources, map[string]map[alert.Fingerprint]*alert.Alert{})
		in.keyOf = append(in.keyOf, map[alert.Fingerprint]string{})
	}
	return in
}

// Observe records the latest state of an alert.
func (in *Inhibitor) Observe(a *alert.Alert) {
	if len(in.rules) == 0 {
		return
	}
	fp := a.Fingerprint()
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, r := range in.rules {
		in.removeLocked(i, fp)
		if matchAll(r.Source, a.Labels) {
			k := r.equalKey(a.Labels)
			set := in.sources[i][k]
			if set == nil {
				set = map[alert.Fingerprint]*alert.Alert{}
				in.sources[i][k] = set
			}
			set[fp] = a
			in.keyOf[i][fp] = k
		}
	}
}

// Forget drops an alert that is gone from the store.
func (in *Inhibitor) Forget(fp alert.Fingerprint) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for i := range in.rules {
		in.removeLocked(i, fp)
	}
}

func (in *Inhibitor) removeLocked(i int, fp alert.Fingerprint) {
	k, ok := in.keyOf[i][fp]
	if !ok {
		return
	}
	delete(in.keyOf[i], fp)
	set := in.sources[i][k]
	delete(set, fp)
	if len(set) == 0 {
		delete(in.sources[i], k)
	}
}

// InhibitedBy returns the fingerprints of the firing alerts that mute ls,
// sorted; none means it is not inhibited.
func (in *Inhibitor) InhibitedBy(ls alert.Labels) []string {
	if len(in.rules) == 0 {
		return nil
	}
	now := in.now()
	fp := ls.Fingerprint()
	var out []string
	in.mu.RLock()
	defer in.mu.RUnlock()
	for i, r := range in.rules {
		if !matchAll(r.Target, ls) {
			continue
		}
		for sfp, src := range in.sources[i][r.equalKey(ls)] {
			if sfp == fp || src.Resolved(now) {
				continue
			}
			out = append(out, sfp.String())
		}
	}
	sort.Strings(out)
	return dedupSorted(out)
}

func dedupSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
