package server

import (
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/opskit/opskit/abtest/sdk"
)

// The GET /v1/assign wire format written by hand: the handler runs tens of
// thousands of times a second, and url.Values, encoding/json's reflection
// and their allocations were a large part of its cost. Both functions give
// the same results as the standard library (checked by tests and fuzzing).

// assignQuery is a parsed GET /v1/assign query. Its strings point into the
// raw query unless they had to be unescaped.
type assignQuery struct {
	unit        string
	hasUnit     bool
	experiments []string
	attributes  map[string]any // nil when the query has no attr.* parameter
}

// maxQueryParams is net/url's default bound on a query's parameters: a
// longer query parses as empty there, and here.
const maxQueryParams = 10000

// parseAssignQuery reads unit (the first one), every experiment and the
// first value of each attr.NAME parameter from a raw query, as
// url.ParseQuery would: pairs split on '&', keys and values unescaped ('+'
// is a space), and a pair with a ';' or a bad escape skipped. attrs, if not
// nil, is an empty map to fill (the caller reuses it).
func parseAssignQuery(raw string, q *assignQuery, attrs map[string]any) {
	if strings.Count(raw, "&") >= maxQueryParams {
		return
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		key, value, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(key)
		if err != nil {
			continue
		}
		value, err = url.QueryUnescape(value)
		if err != nil {
			continue
		}
		switch {
		case key == "unit":
			if !q.hasUnit {
				q.unit, q.hasUnit = value, true
			}
		case key == "experiment":
			q.experiments = append(q.experiments, value)
		case strings.HasPrefix(key, "attr."):
			if q.attributes == nil {
				if attrs == nil {
					attrs = map[string]any{}
				}
				q.attributes = attrs
			}
			name := key[len("attr."):]
			if _, ok := q.attributes[name]; !ok {
				q.attributes[name] = QueryValue(value)
			}
		}
	}
}

// appendAssignResponse appends the JSON of an AssignResponse with these
// results, as json.Encoder would write it (newline included).
func appendAssignResponse(b []byte, unit string, results []sdk.Result) []byte {
	b = append(b, `{"unit":`...)
	b = appendJSONString(b, unit)
	b = append(b, `,"assignments":[`...)
	for i := range results {
		r := &results[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"experiment":`...)
		b = appendJSONString(b, r.Experiment)
		if r.Layer != "" {
			b = append(b, `,"layer":`...)
			b = appendJSONString(b, r.Layer)
		}
		b = append(b, `,"variant":`...)
		b = appendJSONString(b, r.Variant)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(r.Index), 10)
		if r.Forced {
			b = append(b, `,"forced":true`...)
		}
		b = append(b, `,"bucket":`...)
		b = appendJSONFloat(b, r.Bucket)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendJSONString appends s as encoding/json writes it (HTML characters
// escaped). Plain printable ASCII is copied; anything else takes the
// standard library's path.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONFloat appends f as encoding/json writes a float64 (buckets are
// finite).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 is written e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
