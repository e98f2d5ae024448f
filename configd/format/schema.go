package format

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Schema is the subset of JSON Schema that configd checks: type (object,
// array, string, number, integer, boolean, null), required, properties,
// additionalProperties (false only), items, enum, minimum and maximum.
type Schema struct {
	Type                 string             `json:"type,omitempty"`
	Required             []string           `json:"required,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	AdditionalProperties *bool              `json:"additionalProperties,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
}

// ParseSchema reads a schema from JSON. Unknown keywords are refused so a
// misspelt rule is not silently ignored.
func ParseSchema(text string) (*Schema, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	var s Schema
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return &s, nil
}

func (s *Schema) check() error {
	switch s.Type {
	case "", "object", "array", "string", "number", "integer", "boolean", "null":
	default:
		return fmt.Errorf("unknown type %q", s.Type)
	}
	for k, p := range s.Properties {
		if p == nil {
			return fmt.Errorf("property %q: empty schema", k)
		}
		if err := p.check(); err != nil {
			return fmt.Errorf("property %q: %w", k, err)
		}
	}
	if s.Items != nil {
		return s.Items.check()
	}
	return nil
}

// Validate checks a decoded document (maps, slices, strings, int64,
// float64, bools and nil).
func (s *Schema) Validate(doc any) error { return s.validate("$", doc) }

func (s *Schema) validate(at string, v any) error {
	if s.Type != "" && !hasType(v, s.Type) {
		return fmt.Errorf("%s: want %s, got %s", at, s.Type, typeName(v))
	}
	if len(s.Enum) > 0 && !inEnum(v, s.Enum) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, s.Enum)
	}
	if n, ok := number(v); ok {
		if s.Minimum != nil && n < *s.Minimum {
			return fmt.Errorf("%s: %v is below the minimum %v", at, n, *s.Minimum)
		}
		if s.Maximum != nil && n > *s.Maximum {
			return fmt.Errorf("%s: %v is above the maximum %v", at, n, *s.Maximum)
		}
	}
	switch t := v.(type) {
	case map[string]any:
		for _, k := range s.Required {
			if _, ok := t[k]; !ok {
				return fmt.Errorf("%s: required key %q is missing", at, k)
			}
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p, ok := s.Properties[k]
			if !ok {
				if s.AdditionalProperties != nil && !*s.AdditionalProperties {
					return fmt.Errorf("%s: key %q is not allowed", at, k)
				}
				continue
			}
			if err := p.validate(at+"."+k, t[k]); err != nil {
				return err
			}
		}
	case []any:
		if s.Items != nil {
			for i, e := range t {
				if err := s.Items.validate(fmt.Sprintf("%s[%d]", at, i), e); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func number(v any) (float64, bool) {
	switch t := v.(type) {
	case int64:
		return float64(t), true
	case float64:
		return t, true
	}
	return 0, false
}

func hasType(v any, want string) bool {
	switch want {
	case "integer":
		if _, ok := v.(int64); ok {
			return true
		}
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "number":
		_, ok := number(v)
		return ok
	}
	return typeName(v) == want
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, float64:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// inEnum compares by value: numbers numerically (the schema's are float64,
// the document's int64 or float64), everything else by type and text.
func inEnum(v any, enum []any) bool {
	for _, e := range enum {
		if en, ok := number(e); ok {
			if n, ok := number(v); ok && n == en {
				return true
			}
			continue
		}
		if typeName(e) == typeName(v) && fmt.Sprint(e) == fmt.Sprint(v) {
			return true
		}
	}
	return false
}
