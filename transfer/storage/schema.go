package storage

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultRetentions are open-falcon's resolutions in Graphite notation.
const DefaultRetentions = "60s:12h,5m:2d,20m:7d,3h:90d,12h:1y"

// DefaultXFF is the largest unknown fraction of primary slots that still
// gives a known consolidated slot.
const DefaultXFF = 0.5

// Retention is one archive: Rows slots of Step seconds each.
type Retention struct {
	Step int64 // seconds per slot
	Rows int64 // slots kept
}

// Span is the time the archive covers.
func (r Retention) Span() int64 { return r.Step * r.Rows }

func (r Retention) String() string { return fmt.Sprintf("%ds:%d", r.Step, r.Rows) }

// Schema fixes the archives of the series whose metric name matches Pattern.
type Schema struct {
	Name       string
	Pattern    *regexp.Regexp // matched against the metric name; nil matches everything
	Retentions []Retention    // finest first; each step a multiple of the first
	// Heartbeat is the longest gap between two points over which the value is
	// still known. 0 means 2 × the series' step (the finest step, or the
	// point's own step when larger).
	Heartbeat int64
	// XFF is the unknown fraction above which a consolidated slot is
	// unknown; negative means DefaultXFF, as 0 is a valid choice.
	XFF float64
}

// DefaultSchema is the schema used when no other matches.
func DefaultSchema() Schema {
	rs, err := ParseRetentions(DefaultRetentions)
	if err != nil {
		panic(err) // constant input
	}
	return Schema{Name: "default", Retentions: rs, XFF: DefaultXFF}
}

// DefaultSchemas is the list used when Options.Schemas is empty.
func DefaultSchemas() []Schema { return []Schema{DefaultSchema()} }

// NewSchema builds a schema from Graphite storage-schemas style fields:
// a regular expression for the metric name ("" or ".*" for all) and a
// retention list. heartbeat 0 and xff < 0 take the defaults.
func NewSchema(name, pattern, retentions string, heartbeat time.Duration, xff float64) (Schema, error) {
	s := Schema{Name: name, XFF: xff}
	if xff < 0 {
		s.XFF = DefaultXFF
	}
	if s.XFF > 1 {
		return Schema{}, fmt.Errorf("schema %q: xff %v: want a fraction between 0 and 1", name, xff)
	}
	if pattern != "" {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return Schema{}, fmt.Errorf("schema %q: pattern: %w", name, err)
		}
		s.Pattern = re
	}
	rs, err := ParseRetentions(retentions)
	if err != nil {
		return Schema{}, fmt.Errorf("schema %q: %w", name, err)
	}
	s.Retentions = rs
	if heartbeat < 0 || heartbeat%time.Second != 0 {
		return Schema{}, fmt.Errorf("schema %q: heartbeat %v: want whole seconds >= 0", name, heartbeat)
	}
	s.Heartbeat = int64(heartbeat / time.Second)
	return s, nil
}

// Match reports whether the schema applies to a metric name.
func (s *Schema) Match(name string) bool {
	return s.Pattern == nil || s.Pattern.MatchString(name)
}

// MatchSchema returns the first schema matching name, or DefaultSchema.
func MatchSchema(schemas []Schema, name string) Schema {
	for i := range schemas {
		if schemas[i].Match(name) {
			return schemas[i]
		}
	}
	return DefaultSchema()
}

// maxRows bounds one archive so a typo cannot allocate terabytes per series.
const maxRows = 10_000_000

// ParseRetentions parses a Graphite retention list such as
// "60s:12h,5m:2d,1h:1y": comma-separated step:length pairs where the step is
// a duration (s, m, h, d, w, y; a bare number is seconds) and the length is a
// duration or a bare number of rows. Archives must be listed finest first,
// each step a multiple of the finest and each archive covering more time than
// the one before.
func ParseRetentions(s string) ([]Retention, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("retentions: empty")
	}
	var out []Retention
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		stepText, lenText, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("retention %d %q: want step:length, e.g. 60s:12h", i+1, part)
		}
		step, err := parseRetentionDuration(stepText)
		if err != nil {
			return nil, fmt.Errorf("retention %d %q: step: %w", i+1, part, err)
		}
		var rows int64
		if n, err := strconv.ParseInt(strings.TrimSpace(lenText), 10, 64); err == nil {
			rows = n
		} else {
			span, err := parseRetentionDuration(lenText)
			if err != nil {
				return nil, fmt.Errorf("retention %d %q: length: %w", i+1, part, err)
			}
			if span%step != 0 {
				return nil, fmt.Errorf("retention %d %q: length %ds is not a multiple of the step %ds", i+1, part, span, step)
			}
			rows = span / step
		}
		if rows <= 0 || rows > maxRows {
			return nil, fmt.Errorf("retention %d %q: %d rows: want 1 to %d", i+1, part, rows, maxRows)
		}
		r := Retention{Step: step, Rows: rows}
		if len(out) > 0 {
			prev := out[len(out)-1]
			if r.Step <= prev.Step {
				return nil, fmt.Errorf("retention %d %q: step %ds must be larger than the previous %ds (finest first)", i+1, part, r.Step, prev.Step)
			}
			if r.Step%out[0].Step != 0 {
				return nil, fmt.Errorf("retention %d %q: step %ds is not a multiple of the finest step %ds", i+1, part, r.Step, out[0].Step)
			}
			if r.Span() <= prev.Span() {
				return nil, fmt.Errorf("retention %d %q: covers %ds, not more than the previous %ds", i+1, part, r.Span(), prev.Span())
			}
		}
		out = append(out, r)
	}
	if len(out) > 16 {
		return nil, fmt.Errorf("retentions: %d archives: at most 16", len(out))
	}
	return out, nil
}

// retentionUnit returns the seconds in one unit of a retention duration.
func retentionUnit(u string) (int64, bool) {
	switch strings.ToLower(u) {
	case "", "s", "sec", "second", "seconds":
		return 1, true
	case "m", "min", "minute", "minutes":
		return 60, true
	case "h", "hour", "hours":
		return 3600, true
	case "d", "day", "days":
		return 86400, true
	case "w", "week", "weeks":
		return 7 * 86400, true
	case "y", "year", "years":
		return 365 * 86400, true
	}
	return 0, false
}

// parseRetentionDuration parses "60", "60s", "5m", "12h", "7d", "1w", "1y"
// into seconds.
func parseRetentionDuration(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q: want a number and a unit (s, m, h, d, w, y)", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	unit, ok := retentionUnit(s[i:])
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (want s, m, h, d, w, y)", s, s[i:])
	}
	if n <= 0 || n > (1<<40)/unit {
		return 0, fmt.Errorf("%q: out of range", s)
	}
	return n * unit, nil
}

// ParseSchemas reads schemas in the format of Graphite's
// storage-schemas.conf, in order (the first match wins):
//
//	# comment
//	[carbon]
//	pattern = ^carbon\.
//	retentions = 60:90d
//
//	[app]
//	pattern = ^app\.
//	retentions = 10s:6h,1m:7d
//	heartbeat = 30s        # optional; default 2 × step
//	xFilesFactor = 0.3     # optional (also "xff"); default 0.5
//
// DefaultSchema still applies to names no section matches. Errors give the
// line number.
func ParseSchemas(text string) ([]Schema, error) {
	type section struct {
		name, pattern, retentions string
		heartbeat                 time.Duration
		xff                       float64
		line                      int
		seen                      map[string]bool
	}
	var sections []*section
	for i, raw := range strings.Split(text, "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") || len(line) < 3 {
				return nil, fmt.Errorf("line %d: section header %q: want [name]", lineNo, line)
			}
			sections = append(sections, &section{name: strings.TrimSpace(line[1 : len(line)-1]), xff: -1, line: lineNo, seen: map[string]bool{}})
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q: want key = value", lineNo, line)
		}
		if len(sections) == 0 {
			return nil, fmt.Errorf("line %d: %q outside a [section]", lineNo, line)
		}
		cur := sections[len(sections)-1]
		key, value = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(value)
		if cur.seen[key] {
			return nil, fmt.Errorf("line %d: %s given twice in [%s]", lineNo, key, cur.name)
		}
		cur.seen[key] = true
		switch key {
		case "pattern":
			cur.pattern = value
		case "retentions":
			cur.retentions = value
		case "heartbeat":
			secs, err := parseRetentionDuration(value)
			if err != nil {
				return nil, fmt.Errorf("line %d: heartbeat: %w", lineNo, err)
			}
			cur.heartbeat = time.Duration(secs) * time.Second
		case "xfilesfactor", "xff":
			f, err := strconv.ParseFloat(value, 64)
			if err != nil || f < 0 || f > 1 {
				return nil, fmt.Errorf("line %d: xFilesFactor %q: want a fraction between 0 and 1", lineNo, value)
			}
			cur.xff = f
		default:
			return nil, fmt.Errorf("line %d: unknown key %q (want pattern, retentions, heartbeat, xFilesFactor)", lineNo, key)
		}
	}
	out := make([]Schema, 0, len(sections))
	for _, sec := range sections {
		if sec.pattern == "" {
			return nil, fmt.Errorf("line %d: [%s] has no pattern", sec.line, sec.name)
		}
		if sec.retentions == "" {
			return nil, fmt.Errorf("line %d: [%s] has no retentions", sec.line, sec.name)
		}
		s, err := NewSchema(sec.name, sec.pattern, sec.retentions, sec.heartbeat, sec.xff)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", sec.line, err)
		}
		out = append(out, s)
	}
	return out, nil
}
