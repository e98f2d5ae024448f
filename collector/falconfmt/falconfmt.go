// Package falconfmt writes metric points as open-falcon push items, the JSON
// objects transfer's /api/push and `transfer push` read:
//
//	{"endpoint":"web1","metric":"cpu.idle","timestamp":1700000000,"step":60,"value":97.5,"counterType":"GAUGE","tags":"core=0"}
package falconfmt

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/opskit/opskit/internal/metric"
)

// Defaults fill what a point leaves open: the endpoint of a point without an
// "endpoint" label and the step of a point with Step 0.
type Defaults struct {
	Endpoint string
	Step     int32
}

// AppendItem appends p as one JSON object to dst. Callers should not pass
// NaN or infinite values; they are written as null, which transfer rejects
// for that item alone.
func AppendItem(dst []byte, p metric.Point, d Defaults) []byte {
	endpoint := p.Labels.Get(metric.EndpointLabel)
	if endpoint == "" {
		endpoint = d.Endpoint
	}
	step := p.Step
	if step <= 0 {
		step = d.Step
	}
	dst = append(dst, `{"endpoint":`...)
	dst = appendString(dst, endpoint)
	dst = append(dst, `,"metric":`...)
	dst = appendString(dst, p.Labels.Name())
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, p.Time, 10)
	dst = append(dst, `,"step":`...)
	dst = strconv.AppendInt(dst, int64(step), 10)
	dst = append(dst, `,"value":`...)
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		dst = append(dst, "null"...)
	} else {
		dst = strconv.AppendFloat(dst, p.Value, 'g', -1, 64)
	}
	dst = append(dst, `,"counterType":"`...)
	dst = append(dst, p.Type.String()...)
	dst = append(dst, `","tags":`...)
	dst = appendString(dst, p.Labels.FormatTags())
	return append(dst, '}')
}

// AppendArray appends pts as one JSON array.
func AppendArray(dst []byte, pts []metric.Point, d Defaults) []byte {
	dst = append(dst, '[')
	for i, p := range pts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendItem(dst, p, d)
	}
	return append(dst, ']')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
