// Package format validates namespace files by their kind (JSON, YAML,
// Java-style properties, plain text) and parses properties files.
package format

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Kind is how a file's content is interpreted, chosen by its extension.
type Kind string

// The file kinds.
const (
	JSON       Kind = "json"
	YAML       Kind = "yaml"
	Properties Kind = "properties"
	Text       Kind = "text"
)

// KindOf returns the kind of a file by its name's extension.
func KindOf(name string) Kind {
	switch strings.ToLower(path.Ext(name)) {
	case ".json":
		return JSON
	case ".yaml", ".yml":
		return YAML
	case ".properties":
		return Properties
	}
	return Text
}

// Rules are the per-namespace checks applied to each file.
type Rules struct {
	AllowEmpty bool
	// Schema is parsed with ParseSchema; nil means none.
	Schema *Schema
}

// ErrEmpty is returned for an empty file in a namespace that forbids them.
var ErrEmpty = errors.New("file is empty and the namespace does not allow empty files")

// Check validates one file: UTF-8 text, not empty unless allowed, and
// parseable as its kind; JSON and YAML documents must satisfy the schema.
func Check(name string, content []byte, rules Rules) error {
	if len(bytes.TrimSpace(content)) == 0 {
		if !rules.AllowEmpty {
			return fmt.Errorf("%s: %w", name, ErrEmpty)
		}
		return nil
	}
	if !utf8.Valid(content) {
		return fmt.Errorf("%s: not UTF-8 text", name)
	}
	var doc any
	switch KindOf(name) {
	case JSON:
		dec := json.NewDecoder(bytes.NewReader(content))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return fmt.Errorf("%s: invalid JSON: %w", name, err)
		}
		if dec.More() {
			return fmt.Errorf("%s: invalid JSON: data after the document", name)
		}
		doc = normalizeJSON(doc)
	case YAML:
		if err := yaml.Unmarshal(content, &doc); err != nil {
			return fmt.Errorf("%s: invalid YAML: %w", name, err)
		}
		doc = normalizeYAML(doc)
	case Properties:
		if _, err := ParseProperties(content); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	default:
		return nil
	}
	if rules.Schema != nil {
		if err := rules.Schema.Validate(doc); err != nil {
			return fmt.Errorf("%s: schema: %w", name, err)
		}
	}
	return nil
}

// ParseProperties reads a Java-style properties file: `key=value`,
// `key: value` or `key value`; `#` and `!` start comments; a line ending in
// an odd number of backslashes continues on the next. Escapes \t \n \r \\
// and \uXXXX are decoded. A later key overrides an earlier one.
func ParseProperties(content []byte) (map[string]string, error) {
	out := map[string]string{}
	lines := strings.Split(strings.ReplaceAll(string(content), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := strings.TrimLeft(lines[i], " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		for endsInContinuation(line) && i+1 < len(lines) {
			i++
			line = line[:len(line)-1] + strings.TrimLeft(lines[i], " \t\f")
		}
		if endsInContinuation(line) {
			line = line[:len(line)-1]
		}
		key, value := splitProperty(line)
		k, err := unescape(key)
		if err != nil {
			return nil, fmt.Errorf("line %d: key: %w", lineNo, err)
		}
		if k == "" {
			return nil, fmt.Errorf("line %d: empty key", lineNo)
		}
		v, err := unescape(value)
		if err != nil {
			return nil, fmt.Errorf("line %d: value: %w", lineNo, err)
		}
		out[k] = v
	}
	return out, nil
}

func endsInContinuation(line string) bool {
	n := 0
	for i := len(line) - 1; i >= 0 && line[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// splitProperty cuts at the first unescaped '=', ':' or whitespace.
func splitProperty(line string) (string, string) {
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '=', ':':
			return line[:i], strings.TrimLeft(line[i+1:], " \t\f")
		case ' ', '\t', '\f':
			rest := strings.TrimLeft(line[i:], " \t\f")
			if rest != "" && (rest[0] == '=' || rest[0] == ':') {
				rest = strings.TrimLeft(rest[1:], " \t\f")
			}
			return line[:i], rest
		}
	}
	return line, ""
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", fmt.Errorf(`truncated \u escape`)
			}
			var r rune
			for _, h := range s[i+1 : i+5] {
				r <<= 4
				switch {
				case h >= '0' && h <= '9':
					r |= h - '0'
				case h >= 'a' && h <= 'f':
					r |= h - 'a' + 10
				case h >= 'A' && h <= 'F':
					r |= h - 'A' + 10
				default:
					return "", fmt.Errorf(`bad \u escape %q`, s[i-1:i+5])
				}
			}
			b.WriteRune(r)
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}

// normalizeJSON turns json.Number into float64 or int64 for schema checks.
func normalizeJSON(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = normalizeJSON(e)
		}
	case []any:
		for i, e := range t {
			t[i] = normalizeJSON(e)
		}
	}
	return v
}

// normalizeYAML turns YAML's ints and non-string-keyed maps into the
// shapes the schema checker expects.
func normalizeYAML(v any) any {
	switch t := v.(type) {
	case int:
		return int64(t)
	case uint64:
		return float64(t)
	case map[string]any:
		for k, e := range t {
			t[k] = normalizeYAML(e)
		}
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = normalizeYAML(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = normalizeYAML(e)
		}
	}
	return v
}
