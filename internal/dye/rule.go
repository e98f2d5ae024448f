package dye

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// Match says which items a rule dyes; every field given must hold.
type Match struct {
	Endpoint string            `json:"endpoint,omitempty"`
	Metric   string            `json:"metric,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	// Path is a log file's path (log lines only).
	Path string `json:"path,omitempty"`
	// Contains is a substring of a log line (log lines only).
	Contains string `json:"contains,omitempty"`
}

// Rule is one dye: an id, what it matches and until when.
type Rule struct {
	ID    string    `json:"id"`
	Match Match     `json:"match"`
	Until time.Time `json:"until"`
}

// Limits on rules, so a rule cannot be made expensive to match.
const (
	MaxIDLen    = 64
	MaxValueLen = 1024
	MaxTags     = 16
	// MaxRules is the most rules a daemon holds at once.
	MaxRules = 64
)

// ErrBadRule wraps every reason a rule is refused.
var ErrBadRule = errors.New("bad dye rule")

func (m Match) pointFields() bool { return m.Endpoint != "" || m.Metric != "" || len(m.Tags) > 0 }
func (m Match) lineFields() bool  { return m.Path != "" || m.Contains != "" }

// Check reports what is wrong with a rule, if anything.
func (r Rule) Check() error {
	if err := CheckID(r.ID); err != nil {
		return err
	}
	m := r.Match
	if !m.pointFields() && !m.lineFields() {
		return fmt.Errorf("%w %q: match nothing given (endpoint, metric, tags, path or contains)", ErrBadRule, r.ID)
	}
	if m.lineFields() && (m.Metric != "" || len(m.Tags) > 0) {
		return fmt.Errorf("%w %q: path and contains match log lines, which have no metric or tags", ErrBadRule, r.ID)
	}
	if len(m.Tags) > MaxTags {
		return fmt.Errorf("%w %q: %d tags, at most %d", ErrBadRule, r.ID, len(m.Tags), MaxTags)
	}
	for k, v := range m.Tags {
		if k == "" || v == "" {
			return fmt.Errorf("%w %q: tag %q=%q: want a name and a value", ErrBadRule, r.ID, k, v)
		}
		if len(k) > MaxValueLen || len(v) > MaxValueLen {
			return fmt.Errorf("%w %q: tag longer than %d bytes", ErrBadRule, r.ID, MaxValueLen)
		}
	}
	for _, v := range []string{m.Endpoint, m.Metric, m.Path, m.Contains} {
		if len(v) > MaxValueLen {
			return fmt.Errorf("%w %q: value longer than %d bytes", ErrBadRule, r.ID, MaxValueLen)
		}
	}
	if r.Until.IsZero() {
		return fmt.Errorf("%w %q: no end time (until)", ErrBadRule, r.ID)
	}
	return nil
}

// CheckID accepts ids of letters, digits, '.', '_' and '-'.
func CheckID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id %q: want 1 to %d characters", ErrBadRule, id, MaxIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: id %q: only letters, digits, '.', '_' and '-'", ErrBadRule, id)
		}
	}
	return nil
}

// labelGetter is what point matching reads: metric.Labels, or a map.
type labelGetter interface{ Get(name string) string }

// Map adapts a label map (an alert's series) for matching.
type Map map[string]string

// Get returns the value of name.
func (m Map) Get(name string) string { return m[name] }

// matchesLabels is generic so that metric.Labels is not boxed into an
// interface (an allocation per point) on the hot path.
func matchesLabels[L labelGetter](m *Match, ls L) bool {
	if !m.pointFields() || m.lineFields() {
		return false
	}
	if m.Endpoint != "" && ls.Get(metric.EndpointLabel) != m.Endpoint {
		return false
	}
	if m.Metric != "" && ls.Get(metric.NameLabel) != m.Metric {
		return false
	}
	for k, v := range m.Tags {
		if ls.Get(k) != v {
			return false
		}
	}
	return true
}

func (m *Match) matchesLine(host, path string, line []byte) bool {
	if !m.lineFields() || m.Metric != "" || len(m.Tags) > 0 {
		return false
	}
	if m.Endpoint != "" && m.Endpoint != host {
		return false
	}
	if m.Path != "" && m.Path != path {
		return false
	}
	return m.Contains == "" || bytes.Contains(line, []byte(m.Contains))
}

// ParseMatch reads the command-line form of a match:
// "endpoint=web01,metric=cpu.idle,core=0" — endpoint, metric, path and
// contains are those fields, any other name is a tag.
func ParseMatch(s string) (Match, error) {
	var m Match
	s = strings.TrimSpace(s)
	if s == "" {
		return m, fmt.Errorf("%w: empty match", ErrBadRule)
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return Match{}, fmt.Errorf("%w: %q: want name=value", ErrBadRule, part)
		}
		switch k {
		case "endpoint":
			m.Endpoint = v
		case "metric", metric.NameLabel:
			m.Metric = v
		case "path":
			m.Path = v
		case "contains":
			m.Contains = v
		default:
			if m.Tags == nil {
				m.Tags = map[string]string{}
			}
			m.Tags[k] = v
		}
	}
	if !m.pointFields() && !m.lineFields() {
		return Match{}, fmt.Errorf("%w: empty match", ErrBadRule)
	}
	return m, nil
}

// String renders a match in the form ParseMatch reads.
func (m Match) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("endpoint", m.Endpoint)
	add("metric", m.Metric)
	for _, k := range slices.Sorted(maps.Keys(m.Tags)) {
		add(k, m.Tags[k])
	}
	add("path", m.Path)
	add("contains", m.Contains)
	return strings.Join(parts, ",")
}

// request is the body of POST /admin/dye.
type request struct {
	ID    string    `json:"id"`
	Match Match     `json:"match"`
	Until time.Time `json:"until"`
	// For is a duration ("10m") from now, instead of Until.
	For string `json:"for"`
}

// DecodeRule reads the body of POST /admin/dye at now. An absent id is
// made with newID; "for" gives the end time from now when until is absent.
func DecodeRule(body []byte, now time.Time, newID func() string) (Rule, error) {
	var req request
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Rule{}, fmt.Errorf("%w: %w", ErrBadRule, err)
	}
	r := Rule{ID: req.ID, Match: req.Match, Until: req.Until}
	if r.ID == "" && newID != nil {
		r.ID = newID()
	}
	if req.For != "" {
		if !r.Until.IsZero() {
			return Rule{}, fmt.Errorf("%w: give until or for, not both", ErrBadRule)
		}
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 {
			return Rule{}, fmt.Errorf("%w: for %q: want a positive duration such as 10m", ErrBadRule, req.For)
		}
		r.Until = now.Add(d)
	}
	if err := r.Check(); err != nil {
		return Rule{}, err
	}
	return r, nil
}
