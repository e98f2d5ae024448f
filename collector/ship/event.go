// Package ship delivers the tailer's events: to Kafka (franz-go, batched,
// compressed, idempotent, acks from all in-sync replicas) or as JSON lines
// to stdout or a file. Each output marks an event done only once it is
// delivered (acknowledged by Kafka, written and flushed), which is what
// lets the tailer checkpoint it.
//
// An event is one JSON object:
//
//	{"time":"2026-11-22T00:15:00.123456789Z","host":"web-1","path":"/var/log/app.log",
//	 "file":"803-1a2b-187a...","offset":4096,"line":"GET / 200","fields":{"app":"shop"}}
//
// "truncated":true marks a line cut at the maximum line length. A line
// that is not valid UTF-8 has each bad byte replaced by U+FFFD in "line"
// and its exact bytes in "raw" (base64), so nothing is lost.
package ship

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/tail"
)

// Message is an event as decoded from its JSON form (the sink's view).
type Message struct {
	Time      time.Time         `json:"time"`
	Host      string            `json:"host"`
	Path      string            `json:"path"`
	File      string            `json:"file"`
	Offset    int64             `json:"offset"`
	Line      string            `json:"line"`
	Truncated bool              `json:"truncated,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	Raw       []byte            `json:"raw,omitempty"`
}

// maxMessage bounds what Decode accepts.
const maxMessage = 64 << 20

// Decode parses one event. It rejects what is not an event object (no
// line, or no time) with the reason.
func Decode(data []byte) (Message, error) { return DecodeInterned(data, nil) }

// DecodeInterned is Decode sharing repeated strings through in (may be
// nil).
func DecodeInterned(data []byte, in Interner) (Message, error) {
	if len(data) > maxMessage {
		return Message{}, fmt.Errorf("event of %d bytes, over the limit", len(data))
	}
	m, ok := decodeFast(data, in)
	if !ok {
		m = Message{}
		if err := json.Unmarshal(data, &m); err != nil {
			return Message{}, fmt.Errorf("event: %w", err)
		}
	}
	if m.Time.IsZero() {
		return Message{}, fmt.Errorf("event without a time")
	}
	if len(m.Raw) > 0 {
		m.Line = string(m.Raw)
	}
	return m, nil
}

// Encoder writes events as JSON. It caches each input's encoded fields, so
// one Encoder serves one goroutine.
type Encoder struct {
	Host string
	// InvalidUTF8 counts lines that were not valid UTF-8 (may be nil).
	InvalidUTF8 *metrics.Counter

	fields map[*tail.Input][]byte
	// The events of one read share their time, and those of one file
	// their path: each is formatted once, not per line.
	lastTime time.Time
	timeJSON []byte
	hostJSON []byte
	hostFor  string
	lastPath string
	pathJSON []byte
	pathSet  bool
}

// Size is a close upper estimate of ev's encoded size, to size buffers.
func (e *Encoder) Size(ev *tail.Event) int {
	n := 120 + len(e.Host) + len(ev.Path) + len(ev.FileID) + len(ev.Line) + len(ev.Line)/8
	if ev.Input != nil && len(ev.Input.Fields) > 0 {
		n += len(e.encodedFields(ev.Input))
	}
	return n
}

// Append appends ev's JSON object (without a newline) to dst.
func (e *Encoder) Append(dst []byte, ev *tail.Event) []byte {
	if e.hostJSON == nil || e.hostFor != e.Host {
		e.hostFor, e.hostJSON = e.Host, appendString(nil, e.Host)
	}
	if !ev.Time.Equal(e.lastTime) || e.timeJSON == nil {
		e.lastTime = ev.Time
		e.timeJSON = ev.Time.UTC().AppendFormat(e.timeJSON[:0], time.RFC3339Nano)
	}
	if ev.Path != e.lastPath || !e.pathSet {
		e.lastPath, e.pathSet = ev.Path, true
		e.pathJSON = appendString(e.pathJSON[:0], ev.Path)
	}
	dst = append(dst, `{"time":"`...)
	dst = append(dst, e.timeJSON...)
	dst = append(dst, `","host":`...)
	dst = append(dst, e.hostJSON...)
	dst = append(dst, `,"path":`...)
	dst = append(dst, e.pathJSON...)
	dst = append(dst, `,"file":"`...)
	dst = append(dst, ev.FileID...)
	dst = append(dst, `","offset":`...)
	dst = strconv.AppendInt(dst, ev.Offset, 10)
	dst = append(dst, `,"line":`...)
	dst, valid := appendLine(dst, ev.Line)
	if ev.Truncated {
		dst = append(dst, `,"truncated":true`...)
	}
	if ev.Input != nil && len(ev.Input.Fields) > 0 {
		dst = append(dst, e.encodedFields(ev.Input)...)
	}
	if !valid {
		if e.InvalidUTF8 != nil {
			e.InvalidUTF8.Inc()
		}
		dst = append(dst, `,"raw":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, ev.Line)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func (e *Encoder) encodedFields(in *tail.Input) []byte {
	if b, ok := e.fields[in]; ok {
		return b
	}
	keys := make([]string, 0, len(in.Fields))
	for k := range in.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := []byte(`,"fields":{`)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, in.Fields[k])
	}
	b = append(b, '}')
	if e.fields == nil {
		e.fields = map[*tail.Input][]byte{}
	}
	e.fields[in] = b
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Bytes that are not valid UTF-8
// become U+FFFD (the event's "raw" keeps them).
func appendString(dst []byte, s string) []byte {
	return appendJSON(dst, s, utf8.ValidString(s))
}

// appendJSON escapes s, which valid says is valid UTF-8; the fast path
// looks at bytes only.
func appendJSON[T string | []byte](dst []byte, s T, valid bool) []byte {
	if !valid {
		return appendLossy(dst, string(s))
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		// Straight to the next byte that needs a look: log lines are
		// mostly plain ASCII.
		if i = skipPlain(s, i); i == len(s) {
			break
		}
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0xE2 {
			continue
		}
		if c == 0xE2 {
			// U+2028 and U+2029 (E2 80 A8/A9) are escaped, as
			// encoding/json does, for JavaScript readers.
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xf])
				i += 2
				start = i + 1
			}
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = appendEscape(dst, c)
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendLine appends a line as a JSON string, as appendJSON does, and
// reports whether it is valid UTF-8; an invalid line is appended as
// appendLossy does. The check starts at the first byte that is not ASCII
// (those before it are), so a plain ASCII line, the common case, is
// looked at once rather than checked first and escaped second. Words of
// eight bytes are stored whole, and the position moves on past their
// plain bytes only: no copy call for each run between two escapes (an
// access log line has six quotes).
func appendLine(dst, line []byte) ([]byte, bool) {
	mark := len(dst)
	dst = append(dst, '"')
	checked := false
	for i := 0; i < len(line); {
		if i+8 <= len(line) && cap(dst)-len(dst) >= 8 {
			w := load64(line, i)
			n := len(dst)
			binary.LittleEndian.PutUint64(dst[n:n+8], w)
			m := special(w)
			if m == 0 {
				dst, i = dst[:n+8], i+8
				continue
			}
			// The lowest byte marked is exact (a borrow only marks
			// bytes above a marked one): the bytes before it stay.
			k := bits.TrailingZeros64(m) >> 3
			dst, i = dst[:n+k], i+k
		}
		switch c := line[i]; {
		case c >= utf8.RuneSelf:
			if !checked {
				if !utf8.Valid(line[i:]) {
					return appendLossy(dst[:mark], string(line)), false
				}
				checked = true
			}
			if c == 0xE2 && i+2 < len(line) && line[i+1] == 0x80 && (line[i+2] == 0xA8 || line[i+2] == 0xA9) {
				// U+2028 and U+2029, escaped as appendJSON does.
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[line[i+2]&0xf])
				i += 3
				continue
			}
			dst = append(dst, c)
		case c < 0x20 || c == '"' || c == '\\':
			dst = appendEscape(dst, c)
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"'), true
}

const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// skipPlain returns the index of the first byte of s from i on that is a
// control byte, a quote, a backslash or not ASCII (possibly part of U+2028
// or U+2029), or where fewer than eight bytes are left; it looks at
// sixteen bytes at a time, then eight.
func skipPlain[T string | []byte](s T, i int) int {
	for i+16 <= len(s) {
		if special(load64(s, i))|special(load64(s, i+8)) != 0 {
			break
		}
		i += 16
	}
	for i+8 <= len(s) {
		if m := special(load64(s, i)); m != 0 {
			// The lowest byte marked is exact (a borrow only marks
			// bytes above a marked one): the first to look at.
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	return i
}

// load64 reads the eight bytes of s at i, little endian.
func load64[T string | []byte](s T, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

// special marks (high bit) each of w's bytes that is a control byte, a
// quote, a backslash or not ASCII; zero means the word is copied as it is.
func special(w uint64) uint64 {
	hasZero := func(v uint64) uint64 { return (v - lowBits) & ^v & highBits }
	control := (w - 0x20*lowBits) & ^w & highBits
	return control | hasZero(w^('"'*lowBits)) | hasZero(w^('\\'*lowBits)) | w&highBits
}

func appendEscape(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// appendLossy escapes a string that is not valid UTF-8, replacing each bad
// byte with U+FFFD.
func appendLossy(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = appendEscape(dst, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
