package ship

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// decodeFast parses the event shape the Encoder writes, without
// reflection. It reports false for anything else (unknown keys, nulls,
// odd numbers, invalid UTF-8, bad syntax), and Decode then falls back to
// encoding/json, so both always agree on what they both accept.
func decodeFast(data []byte, in Interner) (Message, bool) {
	var m Message
	p := scanner{b: data, in: in}
	p.ws()
	if !p.eat('{') {
		return m, false
	}
	for first := true; ; first = false {
		p.ws()
		if p.eat('}') {
			break
		}
		if !first {
			if !p.eat(',') {
				return m, false
			}
			p.ws()
		}
		key, ok := p.str()
		if !ok {
			return m, false
		}
		p.ws()
		if !p.eat(':') {
			return m, false
		}
		p.ws()
		switch key {
		case "time":
			s, ok := p.str()
			if !ok || m.Time.UnmarshalText([]byte(s)) != nil {
				return m, false
			}
		case "host":
			m.Host, ok = p.istr()
		case "path":
			m.Path, ok = p.istr()
		case "file":
			m.File, ok = p.istr()
		case "line":
			m.Line, ok = p.str()
		case "offset":
			m.Offset, ok = p.int()
		case "truncated":
			m.Truncated, ok = p.bool()
		case "raw":
			var s string
			s, ok = p.str()
			if ok {
				raw, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return m, false
				}
				m.Raw = raw
			}
		case "fields":
			ok = p.fields(&m)
		default:
			return m, false
		}
		if !ok {
			return m, false
		}
	}
	p.ws()
	return m, p.i == len(p.b)
}

type scanner struct {
	b  []byte
	i  int
	in Interner
}

// Interner keeps one copy of strings that repeat from event to event
// (hosts, paths, file ids, fields), so a batch holds each once. Make one
// per batch: it grows with the distinct strings it sees.
type Interner map[string]string

func (in Interner) get(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in) < 1<<14 {
		in[s] = s
	}
	return s
}

// istr is str with interning.
func (p *scanner) istr() (string, bool) {
	if p.in == nil {
		return p.str()
	}
	start := p.i
	if !p.eat('"') {
		return "", false
	}
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := p.b[start+1 : p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", false
			}
			return p.in.get(s), true
		}
		if c == '\\' || c < 0x20 {
			p.i = start
			return p.str()
		}
		p.i++
	}
	return "", false
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a JSON string. Escapes are decoded; control characters and
// invalid UTF-8 fail (encoding/json decides those).
func (p *scanner) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\':
			return p.strEscaped(start)
		case c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

func (p *scanner) strEscaped(start int) (string, bool) {
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(out) {
				return "", false
			}
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return "", false
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				// Only a well-formed pair; encoding/json handles the rest.
				if p.i+1 >= len(p.b) || p.b[p.i] != '\\' || p.b[p.i+1] != 'u' {
					return "", false
				}
				p.i += 2
				r2, ok := p.hex4()
				if !ok {
					return "", false
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", false
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (p *scanner) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

// int reads an integer without fraction or exponent, as JSON writes it.
func (p *scanner) int() (int64, bool) {
	start := p.i
	if p.eat('-') && p.i >= len(p.b) {
		return 0, false
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == digits || (p.b[digits] == '0' && p.i-digits > 1) {
		return 0, false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
	return v, err == nil
}

func (p *scanner) bool() (bool, bool) {
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, true
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// fields reads an object of strings into m.Fields.
func (p *scanner) fields(m *Message) bool {
	if !p.eat('{') {
		return false
	}
	if m.Fields == nil {
		m.Fields = map[string]string{}
	}
	for first := true; ; first = false {
		p.ws()
		if p.eat('}') {
			return true
		}
		if !first {
			if !p.eat(',') {
				return false
			}
			p.ws()
		}
		k, ok := p.istr()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		v, ok := p.istr()
		if !ok {
			return false
		}
		m.Fields[k] = v
	}
}

// DecodeRecord parses a Kafka record of either format: the line format
// (the value is the line; it has "path" and "offset" headers) or a JSON
// event.
func DecodeRecord(r *kgo.Record, in Interner) (Message, error) {
	if m, ok, err := decodeLineRecord(r.Value, r.Headers, r.Timestamp, in); ok {
		return m, err
	}
	return DecodeInterned(r.Value, in)
}

// decodeLineRecord builds the event of a line-format record; ok is false
// when the record is not one.
func decodeLineRecord(value []byte, headers []kgo.RecordHeader, ts time.Time, in Interner) (m Message, ok bool, err error) {
	var hasPath, hasOffset bool
	for _, h := range headers {
		switch h.Key {
		case HeaderPath:
			hasPath = true
		case HeaderOffset:
			hasOffset = true
		}
	}
	if !hasPath || !hasOffset {
		return Message{}, false, nil
	}
	if len(value) > maxMessage {
		return Message{}, true, fmt.Errorf("line of %d bytes, over the limit", len(value))
	}
	m = Message{Time: ts, Line: string(value)}
	for _, h := range headers {
		switch h.Key {
		case HeaderHost:
			m.Host = in.get(h.Value)
		case HeaderPath:
			m.Path = in.get(h.Value)
		case HeaderFile:
			m.File = in.get(h.Value)
		case HeaderOffset:
			off, perr := strconv.ParseInt(string(h.Value), 10, 64)
			if perr != nil || off < 0 {
				return Message{}, true, fmt.Errorf("line record: offset header %q is not an offset", h.Value)
			}
			m.Offset = off
		case HeaderTruncated:
			m.Truncated = string(h.Value) == "true"
		case HeaderFields:
			if err := json.Unmarshal(h.Value, &m.Fields); err != nil {
				return Message{}, true, fmt.Errorf("line record: fields header: %w", err)
			}
		}
	}
	if m.Time.IsZero() || m.Time.Unix() <= 0 {
		return Message{}, true, errors.New("line record without a time")
	}
	return m, true, nil
}
