// Package matcher parses label matchers in Alertmanager's syntax, as amtool,
// routing trees and inhibition rules write them:
//
//	{alertname="DiskFull", severity=~"warn|crit"}
//	alertname=DiskFull,instance!="web01"
//
// Braces are optional, values may be double-quoted (with \" \\ \n escapes)
// or bare, and a label name may be quoted to hold any UTF-8 text. Regular
// expressions are anchored at both ends. The result is the shared
// metric.Matcher.
package matcher

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/opskit/opskit/internal/metric"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("bad matcher syntax")

// Parse reads a list of matchers, with or without braces. An empty input
// (or "{}") is an empty list.
func Parse(s string) ([]*metric.Matcher, error) {
	p := &parser{in: s}
	p.skipSpace()
	braced := p.accept('{')
	var out []*metric.Matcher
	for {
		p.skipSpace()
		if p.eof() || (braced && p.peek() == '}') {
			break
		}
		m, err := p.matcher(braced)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
		p.skipSpace()
		if !p.accept(',') {
			break
		}
	}
	p.skipSpace()
	if braced && !p.accept('}') {
		return nil, p.errorf("missing closing '}'")
	}
	p.skipSpace()
	if !p.eof() {
		return nil, p.errorf("unexpected %q", p.in[p.pos:])
	}
	return out, nil
}

// ParseOne reads exactly one matcher, e.g. `severity="critical"`.
func ParseOne(s string) (*metric.Matcher, error) {
	ms, err := Parse(s)
	if err != nil {
		return nil, err
	}
	if len(ms) != 1 {
		return nil, fmt.Errorf("%w: %q holds %d matchers, want one", ErrSyntax, s, len(ms))
	}
	return ms[0], nil
}

// Format writes matchers so that Parse reads them back unchanged:
// {name="value", ...}, quoting names that are not plain identifiers.
func Format(ms []*metric.Matcher) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(FormatOne(m))
	}
	b.WriteByte('}')
	return b.String()
}

// FormatOne writes one matcher as name<op>"value".
func FormatOne(m *metric.Matcher) string {
	name := m.Name
	if !IsIdentifier(name) {
		name = quote(name)
	}
	return name + m.Type.String() + quote(m.Value)
}

// IsIdentifier reports whether s is a classic label name:
// [a-zA-Z_][a-zA-Z0-9_]*.
func IsIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

type parser struct {
	in  string
	pos int
}

func (p *parser) eof() bool  { return p.pos >= len(p.in) }
func (p *parser) peek() byte { return p.in[p.pos] }

func (p *parser) accept(c byte) bool {
	if !p.eof() && p.in[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *parser) skipSpace() {
	for !p.eof() && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t' || p.in[p.pos] == '\n' || p.in[p.pos] == '\r') {
		p.pos++
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d of %q: %s", ErrSyntax, p.pos, p.in, fmt.Sprintf(format, args...))
}

func (p *parser) matcher(braced bool) (*metric.Matcher, error) {
	name, err := p.name()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	typ, err := p.operator()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	value, err := p.value(braced)
	if err != nil {
		return nil, err
	}
	m, err := metric.NewMatcher(typ, name, value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return m, nil
}

func (p *parser) name() (string, error) {
	if p.eof() {
		return "", p.errorf("want a label name")
	}
	if p.peek() == '"' {
		name, err := p.quoted()
		if err != nil {
			return "", err
		}
		if name == "" {
			return "", p.errorf("empty label name")
		}
		return name, nil
	}
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (p.pos > start && c >= '0' && c <= '9') {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		return "", p.errorf("want a label name")
	}
	return p.in[start:p.pos], nil
}

func (p *parser) operator() (metric.MatchType, error) {
	rest := p.in[p.pos:]
	switch {
	case strings.HasPrefix(rest, "=~"):
		p.pos += 2
		return metric.MatchRegexp, nil
	case strings.HasPrefix(rest, "!~"):
		p.pos += 2
		return metric.MatchNotRegexp, nil
	case strings.HasPrefix(rest, "!="):
		p.pos += 2
		return metric.MatchNotEqual, nil
	case strings.HasPrefix(rest, "="):
		p.pos++
		return metric.MatchEqual, nil
	}
	return 0, p.errorf("want one of = != =~ !~")
}

// value reads a quoted string, or a bare value up to the next ',' (or '}'
// inside braces) with surrounding spaces trimmed.
func (p *parser) value(braced bool) (string, error) {
	if !p.eof() && p.peek() == '"' {
		return p.quoted()
	}
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if c == ',' || (braced && c == '}') {
			break
		}
		if c == '"' {
			return "", p.errorf("quote inside a bare value (quote the whole value)")
		}
		p.pos++
	}
	v := strings.TrimRight(p.in[start:p.pos], " \t\r\n")
	if !utf8.ValidString(v) {
		return "", p.errorf("value is not valid UTF-8")
	}
	return v, nil
}

func (p *parser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		switch c {
		case '"':
			p.pos++
			s := b.String()
			if !utf8.ValidString(s) {
				return "", p.errorf("quoted text is not valid UTF-8")
			}
			return s, nil
		case '\\':
			p.pos++
			if p.eof() {
				return "", p.errorf("unfinished escape")
			}
			switch e := p.peek(); e {
			case '"', '\\':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			default:
				return "", p.errorf("unknown escape \\%c (only \\\" \\\\ \\n)", e)
			}
			p.pos++
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", p.errorf("unterminated quoted string")
}
