// Package graphite is transfer's Graphite plaintext intake: lines of
// "path value timestamp" or tagged "path;tag=value;... value timestamp",
// over TCP (Server) or as an HTTP body with a per-line answer (HTTPHandler).
package graphite

import (
	"bytes"
	"math"
	"strconv"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// Proto is the "proto" label value of this intake's metrics.
const Proto = "graphite"

// DefaultCacheSize is how many distinct paths a Parser remembers.
const DefaultCacheSize = 8192

// Parser parses Graphite plaintext lines. It remembers the validated label
// set of each path it has seen, so a repeated path costs one map lookup and
// no allocation. A Parser is not safe for concurrent use: give each
// connection its own.
type Parser struct {
	lim      intake.Limits
	cache    map[string]metric.Labels
	maxCache int
	pairs    []metric.Label
}

// NewParser returns a parser enforcing lim (zero fields take defaults) that
// remembers up to cacheSize paths (DefaultCacheSize when <= 0).
func NewParser(lim intake.Limits, cacheSize int) *Parser {
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	return &Parser{lim: lim.WithDefaults(), cache: make(map[string]metric.Labels), maxCache: cacheSize}
}

// IsBlank reports whether a line holds nothing but spaces, tabs or a CR;
// such lines are skipped, not rejected.
func IsBlank(line []byte) bool {
	for _, c := range line {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// ParseLine parses one line without its "\n" (a trailing "\r" is ignored).
// Fields are separated by runs of spaces or tabs. A missing timestamp, or
// -1, means now (Unix seconds). The returned point's Labels are shared with
// other points of the same path and must not be modified.
func (p *Parser) ParseLine(line []byte, now int64) (metric.Point, *intake.Reject) {
	line = trimSpace(line)
	path, rest := nextField(line)
	valField, rest := nextField(rest)
	tsField, rest := nextField(rest)
	if len(path) == 0 || len(valField) == 0 {
		return metric.Point{}, intake.Rejectf(intake.ReasonBadLine, "want \"path value [timestamp]\", got %q", intake.Truncate(string(line)))
	}
	if len(rest) != 0 {
		return metric.Point{}, intake.Rejectf(intake.ReasonBadLine, "more than three fields in %q", intake.Truncate(string(line)))
	}
	ls, rej := p.labels(path)
	if rej != nil {
		return metric.Point{}, rej
	}
	v, err := strconv.ParseFloat(string(valField), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return metric.Point{}, intake.Rejectf(intake.ReasonBadValue, "value %q is not a finite number", intake.Truncate(string(valField)))
	}
	ts, rej := parseTimestamp(tsField, now)
	if rej != nil {
		return metric.Point{}, rej
	}
	pt := metric.Point{Labels: ls, Time: ts, Value: v, Type: metric.Gauge}
	if rej := intake.ValidateSample(pt.Time, pt.Value); rej != nil {
		return metric.Point{}, rej
	}
	return pt, nil
}

// labels returns the validated label set of a path, from the cache when it
// was seen before.
func (p *Parser) labels(path []byte) (metric.Labels, *intake.Reject) {
	if ls, ok := p.cache[string(path)]; ok {
		return ls, nil
	}
	ls, rej := p.parsePath(path)
	if rej != nil {
		return nil, rej
	}
	if len(p.cache) >= p.maxCache {
		// A simple bound: start over rather than track recency.
		clear(p.cache)
	}
	p.cache[string(path)] = ls
	return ls, nil
}

// parsePath turns "name" or "name;k=v;k2=v2" into labels, following
// Graphite's tag rules: tag names are non-empty and hold none of ";!^=",
// tag values are non-empty, hold no ";" and do not start with "~".
func (p *Parser) parsePath(path []byte) (metric.Labels, *intake.Reject) {
	for _, c := range path {
		if c < 0x20 || c == 0x7f {
			return nil, intake.Rejectf(intake.ReasonBadLabel, "path %q holds a control character", intake.Truncate(string(path)))
		}
	}
	name, tags, tagged := bytes.Cut(path, []byte{';'})
	if len(name) == 0 || len(bytes.TrimLeft(name, "~")) == 0 {
		return nil, intake.Rejectf(intake.ReasonEmptyMetric, "path %q has no metric name", intake.Truncate(string(path)))
	}
	pairs := append(p.pairs[:0], metric.Label{Name: metric.NameLabel, Value: string(name)})
	for tagged {
		var tag []byte
		tag, tags, tagged = bytes.Cut(tags, []byte{';'})
		k, v, ok := bytes.Cut(tag, []byte{'='})
		switch {
		case !ok || len(k) == 0 || len(v) == 0:
			return nil, intake.Rejectf(intake.ReasonBadTags, "tag %q is not name=value with both parts non-empty", intake.Truncate(string(tag)))
		case bytes.ContainsAny(k, "!^"):
			return nil, intake.Rejectf(intake.ReasonBadTags, "tag name %q holds one of ;!^=", intake.Truncate(string(k)))
		case v[0] == '~':
			return nil, intake.Rejectf(intake.ReasonBadTags, "value of tag %q starts with ~", intake.Truncate(string(k)))
		case string(k) == metric.NameLabel:
			return nil, intake.Rejectf(intake.ReasonBadTags, "tag name %s is reserved", metric.NameLabel)
		}
		pairs = append(pairs, metric.Label{Name: string(k), Value: string(v)})
	}
	p.pairs = pairs[:0]
	if len(pairs) > p.lim.MaxLabelsPerSeries {
		// Checked before sorting so a hostile line cannot make us sort much.
		return nil, intake.Rejectf(intake.ReasonTooManyLabels, "series has %d labels, over the limit of %d", len(pairs), p.lim.MaxLabelsPerSeries)
	}
	ls := metric.New(pairs...)
	if len(ls) != len(pairs) {
		return nil, intake.Rejectf(intake.ReasonDuplicateLabel, "a tag name appears twice in %q", intake.Truncate(string(path)))
	}
	if rej := p.lim.ValidateLabels(ls); rej != nil {
		return nil, rej
	}
	return ls, nil
}

// parseTimestamp reads Unix seconds; an empty field or -1 means now, and a
// fractional timestamp is truncated as carbon does.
func parseTimestamp(b []byte, now int64) (int64, *intake.Reject) {
	if len(b) == 0 || (len(b) == 2 && b[0] == '-' && b[1] == '1') {
		return now, nil
	}
	if ts, ok := parseUint(b); ok {
		return ts, nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || !(f >= 1 && f < 1<<62) {
		return 0, intake.Rejectf(intake.ReasonBadTimestamp, "timestamp %q is not a positive number of seconds (or -1 for now)", intake.Truncate(string(b)))
	}
	return int64(f), nil
}

// parseUint parses a plain decimal of up to 18 digits, the common case,
// without allocating.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextField returns the first space-separated field of b and what follows
// it, leading spaces removed.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && !isSpace(b[i]) {
		i++
	}
	field, rest = b[:i], b[i:]
	for len(rest) > 0 && isSpace(rest[0]) {
		rest = rest[1:]
	}
	return field, rest
}
