package falcon

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file holds a small JSON scanner for the push hot path: it splits a
// body into array elements and reads the common shape of an item (string
// and number fields, no escapes) without reflection. Anything unusual
// makes fastItem give up, and encoding/json decides instead, so both paths
// accept exactly the same input with the same result (a fuzz target checks
// this).

// maxDepth bounds nesting inside one element, so a hostile body cannot make
// the scanner recurse deeply.
const maxDepth = 256

var errDepth = errors.New("JSON nested too deeply")

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the offset just past the JSON value starting at b[i],
// checking its syntax.
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, &syntaxError{i, "unexpected end"}
	}
	switch c := b[i]; {
	case c == '{':
		return skipObject(b, i, depth+1)
	case c == '[':
		return skipArray(b, i, depth+1)
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	default:
		return i, &syntaxError{i, fmt.Sprintf("unexpected %q", c)}
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, &syntaxError{i, "bad literal"}
	}
	return i + len(lit), nil
}

func skipObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, errDepth
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, &syntaxError{i, "want an object key"}
		}
		end, _, err := scanString(b, i)
		if err != nil {
			return end, err
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, &syntaxError{i, "want ':'"}
		}
		if i, err = skipValue(b, skipSpace(b, i+1), depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, &syntaxError{i, "unexpected end in object"}
		}
		if b[i] == '}' {
			return i + 1, nil
		}
		if b[i] != ',' {
			return i, &syntaxError{i, "want ',' or '}'"}
		}
		i = skipSpace(b, i+1)
	}
}

func skipArray(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, errDepth
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, &syntaxError{i, "unexpected end in array"}
		}
		if b[i] == ']' {
			return i + 1, nil
		}
		if b[i] != ',' {
			return i, &syntaxError{i, "want ',' or ']'"}
		}
		i = skipSpace(b, i+1)
	}
}

// scanString checks the string starting at b[i] (a '"') and returns the
// offset past its closing quote and whether its content is plain: no
// escapes and valid UTF-8, so the bytes between the quotes are its value.
func scanString(b []byte, i int) (end int, plain bool, err error) {
	plain = true
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[i+1:j]) {
				plain = false
			}
			return j + 1, plain, nil
		case c == '\\':
			plain = false
			j++
			if j >= len(b) {
				return j, false, &syntaxError{j, "unexpected end in string"}
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return j, false, &syntaxError{j, "bad \\u escape"}
				}
				j += 4
			default:
				return j, false, &syntaxError{j, "bad escape"}
			}
		case c < 0x20:
			return j, false, &syntaxError{j, "control character in string"}
		case c >= 0x80:
			ascii = false
		}
	}
	return len(b), false, &syntaxError{len(b), "unterminated string"}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanNumber checks the JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, error) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, &syntaxError{start, "bad number"}
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, &syntaxError{start, "bad number"}
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, &syntaxError{start, "bad number"}
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i, nil
}

// Known item keys, as encoding/json would match them to Item's fields.
var itemKeys = [...]string{"endpoint", "metric", "timestamp", "step", "value", "counterType", "tags"}

// fastItem reads an item of the common shape into it. It returns false,
// leaving the decision to encoding/json, for anything else: escapes,
// non-UTF-8 strings, keys matching a field only case-insensitively, a field
// of an unexpected JSON type, or a syntax error.
func fastItem(raw []byte, it *Item) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return false
		}
		kEnd, plain, err := scanString(raw, i)
		if err != nil || !plain {
			return false
		}
		key := raw[i+1 : kEnd-1]
		i = skipSpace(raw, kEnd)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		vStart := skipSpace(raw, i+1)
		vEnd, err := skipValue(raw, vStart, 0)
		if err != nil {
			return false
		}
		if !fastField(it, key, raw[vStart:vEnd]) {
			return false
		}
		i = skipSpace(raw, vEnd)
		if i >= len(raw) {
			return false
		}
		if raw[i] == '}' {
			return skipSpace(raw, i+1) == len(raw)
		}
		if raw[i] != ',' {
			return false
		}
		i = skipSpace(raw, i+1)
	}
}

// fastField stores one field; false means "let encoding/json decide".
func fastField(it *Item, key, v []byte) bool {
	isNull := string(v) == "null"
	var str *string
	switch string(key) {
	case "endpoint":
		str = &it.Endpoint
	case "metric":
		str = &it.Metric
	case "counterType":
		str = &it.CounterType
	case "tags":
		str = &it.Tags
	case "timestamp", "step":
		if isNull {
			return true // encoding/json leaves the field as it was
		}
		if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
			return false
		}
		if key[0] == 't' {
			it.Timestamp = jsonNumber(v)
		} else {
			it.Step = jsonNumber(v)
		}
		return true
	case "value":
		it.Value = v
		return true
	default:
		for _, k := range itemKeys {
			if strings.EqualFold(k, string(key)) {
				return false
			}
		}
		return true // an unknown field is ignored
	}
	if isNull {
		return true
	}
	if v[0] != '"' {
		return false
	}
	_, plain, err := scanString(v, 0)
	if err != nil || !plain {
		return false
	}
	*str = internString(v[1 : len(v)-1])
	return true
}

// internString avoids allocating for the counter types every item repeats.
func internString(b []byte) string {
	switch string(b) {
	case "GAUGE":
		return "GAUGE"
	case "COUNTER":
		return "COUNTER"
	case "DERIVE":
		return "DERIVE"
	case "":
		return ""
	}
	return string(b)
}

func jsonNumber(b []byte) json.Number { return json.Number(b) }
