package query

import (
	"encoding/json"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// The result of a range query can hold millions of points, so results are
// written by hand into one buffer rather than through encoding/json, in the
// exact form Prometheus uses: timestamps as seconds with up to three
// decimals, values as strings.

// appendTimestamp writes a millisecond timestamp as seconds.
func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, frac, 10)
		// As in Prometheus, 1.5 s prints as 1.500.
	}
	return b
}

// appendValue writes a sample value as a JSON string, as Prometheus does:
// "NaN", "+Inf", "-Inf", and exponent form only for very small or large values.
func appendValue(b []byte, f float64) []byte {
	b = append(b, '"')
	switch {
	case math.IsNaN(f):
		b = append(b, "NaN"...)
	case math.IsInf(f, 1):
		b = append(b, "+Inf"...)
	case math.IsInf(f, -1):
		b = append(b, "-Inf"...)
	default:
		b = appendFloat(b, f)
	}
	return append(b, '"')
}

// appendFloat writes f as strconv.AppendFloat(f, 'f', -1) would, with 'e'
// for very small or large magnitudes, as Prometheus does. Most metric values
// have at most three decimals; those take a fast path that gives the same
// digits: when f is the double nearest to n/1000, no other decimal with
// three or fewer decimals lies as near (below 1e12 a double's spacing is far
// finer than 0.001), so n/1000 is the shortest form.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	if abs < 1e12 {
		if n := math.Round(f * 1000); n/1000 == f {
			m := int64(n)
			if math.Signbit(f) { // also -0, which strconv prints as "-0"
				b = append(b, '-')
				m = -m
			}
			b = strconv.AppendInt(b, m/1000, 10)
			if frac := m % 1000; frac != 0 {
				digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
				k := 3
				for digits[k-1] == '0' {
					k--
				}
				b = append(b, '.')
				b = append(b, digits[:k]...)
			}
			return b
		}
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

// appendString writes s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				const hex = "0123456789abcdef"
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = append(b, '{')
	first := true
	ls.Range(func(l labels.Label) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, l.Name)
		b = append(b, ':')
		b = appendString(b, l.Value)
	})
	return append(b, '}')
}

func appendPoint(b []byte, t int64, v float64) []byte {
	b = append(b, '[')
	b = appendTimestamp(b, t)
	b = append(b, ',')
	b = appendValue(b, v)
	return append(b, ']')
}

// resultWriter streams a query result to the client through a small
// buffer, so a result of millions of points is never one allocation.
type resultWriter struct {
	w   io.Writer
	buf []byte
	err error
	// times, for a range query, holds its evaluation times already printed.
	times *stepTimes
}

// stepTimes prints the evaluation times of a range query once: every series
// of the result has its points at some of them, and printing a timestamp
// costs more than copying it.
type stepTimes struct {
	start, step int64
	text        []byte
	ends        []int
}

func newStepTimes(start, end, step int64) *stepTimes {
	if step <= 0 || end < start || (end-start)/step > maxPointsPerSeries {
		return nil
	}
	st := &stepTimes{start: start, step: step}
	for t := start; t <= end; t += step {
		st.text = appendTimestamp(st.text, t)
		st.ends = append(st.ends, len(st.text))
	}
	return st
}

func (st *stepTimes) appendTimestamp(b []byte, t int64) []byte {
	if st != nil && t >= st.start {
		if d := t - st.start; d%st.step == 0 && d/st.step < int64(len(st.ends)) {
			k := d / st.step
			lo := 0
			if k > 0 {
				lo = st.ends[k-1]
			}
			return append(b, st.text[lo:st.ends[k]]...)
		}
	}
	return appendTimestamp(b, t)
}

const flushAt = 32 << 10

func (rw *resultWriter) maybeFlush() {
	if len(rw.buf) >= flushAt {
		rw.flush()
	}
}

func (rw *resultWriter) flush() {
	if rw.err == nil && len(rw.buf) > 0 {
		_, rw.err = rw.w.Write(rw.buf)
	}
	rw.buf = rw.buf[:0]
}

// writeResult writes {"resultType":...,"result":...} for a query result.
// Native histograms never occur in this storage and are left out.
func (rw *resultWriter) writeResult(v parser.Value) {
	b := append(rw.buf, `{"resultType":`...)
	b = appendString(b, string(v.Type()))
	b = append(b, `,"result":`...)
	switch r := v.(type) {
	case promql.Matrix:
		b = append(b, '[')
		for i, s := range r {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			b = append(b, `,"values":[`...)
			for j, p := range s.Floats {
				if j > 0 {
					b = append(b, ',')
				}
				b = append(b, '[')
				b = rw.times.appendTimestamp(b, p.T)
				b = append(b, ',')
				b = appendValue(b, p.F)
				b = append(b, ']')
			}
			b = append(b, "]}"...)
			rw.buf = b
			rw.maybeFlush()
			b = rw.buf
		}
		b = append(b, ']')
	case promql.Vector:
		b = append(b, '[')
		for i, s := range r {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			b = append(b, `,"value":`...)
			b = appendPoint(b, s.T, s.F)
			b = append(b, '}')
			rw.buf = b
			rw.maybeFlush()
			b = rw.buf
		}
		b = append(b, ']')
	case promql.Scalar:
		b = appendPoint(b, r.T, r.V)
	case promql.String:
		b = append(b, '[')
		b = appendTimestamp(b, r.T)
		b = append(b, ',')
		b = appendString(b, r.V)
		b = append(b, ']')
	default:
		// Every value type the engine returns is handled above; this keeps
		// the document valid should a new one appear.
		raw, err := json.Marshal(r)
		if err != nil {
			raw = []byte("null")
		}
		b = append(b, raw...)
	}
	rw.buf = append(b, '}')
}

// appendStrings writes a JSON array of strings.
func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}
