package remotewrite

import (
	"encoding/binary"
	"math"

	"github.com/prometheus/prometheus/prompb"

	"github.com/opskit/opskit/internal/metric"
)

// This file reads a WriteRequest straight from the protobuf wire format,
// the hot path: no intermediate structs, and a series whose labels were
// seen before is found by the bytes of its label fields. Anything unusual
// (exemplars, histograms, metadata, groups, a known field with another wire
// type, malformed varints) makes walk give up, and the generated decoder
// (decodeStd) judges the body instead; a fuzz target checks both agree.

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// protoKey reads a field key at b[i].
func protoKey(b []byte, i int) (field uint64, wireType int, next int, ok bool) {
	k, n := binary.Uvarint(b[i:])
	if n <= 0 || k>>3 == 0 || k>>3 > math.MaxInt32 {
		return 0, 0, i, false
	}
	return k >> 3, int(k & 7), i + n, true
}

// protoBytes reads a length-delimited field's content at b[i].
func protoBytes(b []byte, i int) (content []byte, next int, ok bool) {
	l, n := binary.Uvarint(b[i:])
	if n <= 0 || l > uint64(len(b)-i-n) {
		return nil, i, false
	}
	start := i + n
	return b[start : start+int(l)], start + int(l), true
}

// protoSkip skips a field's content of the given wire type at b[i].
func protoSkip(b []byte, i, wireType int) (int, bool) {
	switch wireType {
	case wireVarint:
		_, n := binary.Uvarint(b[i:])
		return i + n, n > 0
	case wireFixed64:
		return i + 8, len(b)-i >= 8
	case wireBytes:
		_, next, ok := protoBytes(b, i)
		return next, ok
	case wireFixed32:
		return i + 4, len(b)-i >= 4
	}
	return i, false
}

// walk converts a WriteRequest read from the wire; false means "let the
// generated decoder judge this body".
func (d *Decoder) walk(raw []byte) (Result, bool) {
	var res Result
	idx := 0
	for i := 0; i < len(raw); {
		field, wt, next, ok := protoKey(raw, i)
		if !ok {
			return Result{}, false
		}
		switch field {
		case 1: // timeseries
			if wt != wireBytes {
				return Result{}, false
			}
			var msg []byte
			if msg, next, ok = protoBytes(raw, next); !ok || !d.walkSeries(&res, msg, idx) {
				return Result{}, false
			}
			idx++
		case 3: // metadata: rare, left to the generated decoder
			return Result{}, false
		default:
			if next, ok = protoSkip(raw, next, wt); !ok {
				return Result{}, false
			}
		}
		i = next
	}
	return res, true
}

// walkSeries reads one TimeSeries message and converts it.
func (d *Decoder) walkSeries(res *Result, msg []byte, idx int) bool {
	d.key, d.labelMsgs, d.samples = d.key[:0], d.labelMsgs[:0], d.samples[:0]
	for i := 0; i < len(msg); {
		field, wt, next, ok := protoKey(msg, i)
		if !ok {
			return false
		}
		switch field {
		case 1: // labels
			var lm []byte
			if wt != wireBytes {
				return false
			}
			if lm, next, ok = protoBytes(msg, next); !ok {
				return false
			}
			d.key = append(d.key, msg[i:next]...)
			d.labelMsgs = append(d.labelMsgs, lm)
		case 2: // samples
			var sm []byte
			if wt != wireBytes {
				return false
			}
			if sm, next, ok = protoBytes(msg, next); !ok {
				return false
			}
			s, ok := readSample(sm)
			if !ok {
				return false
			}
			d.samples = append(d.samples, s)
		case 3, 4: // exemplars, histograms: rare, left to the generated decoder
			return false
		default:
			if next, ok = protoSkip(msg, next, wt); !ok {
				return false
			}
		}
		i = next
	}
	ls, cached := d.cache[string(d.key)]
	if cached {
		d.addSeries(res, idx, ls, nil, 0, d.samples)
		return true
	}
	d.pairs = d.pairs[:0]
	for _, lm := range d.labelMsgs {
		name, value, ok := readLabel(lm)
		if !ok {
			return false
		}
		d.pairs = append(d.pairs, metric.Label{Name: name, Value: value})
	}
	ls, rej := d.buildLabels(d.pairs)
	if rej == nil {
		if len(d.cache) >= d.maxCache {
			clear(d.cache) // a simple bound: start over rather than track recency
		}
		d.cache[string(d.key)] = ls
	}
	d.addSeries(res, idx, ls, rej, 0, d.samples)
	return true
}

// readLabel reads a Label message; a repeated field keeps its last value,
// as the generated decoder does.
func readLabel(b []byte) (name, value string, ok bool) {
	for i := 0; i < len(b); {
		field, wt, next, ok := protoKey(b, i)
		if !ok {
			return "", "", false
		}
		switch field {
		case 1, 2:
			var s []byte
			if wt != wireBytes {
				return "", "", false
			}
			if s, next, ok = protoBytes(b, next); !ok {
				return "", "", false
			}
			if field == 1 {
				name = string(s)
			} else {
				value = string(s)
			}
		default:
			if next, ok = protoSkip(b, next, wt); !ok {
				return "", "", false
			}
		}
		i = next
	}
	return name, value, true
}

// readSample reads a Sample message.
func readSample(b []byte) (prompb.Sample, bool) {
	var s prompb.Sample
	for i := 0; i < len(b); {
		field, wt, next, ok := protoKey(b, i)
		if !ok {
			return s, false
		}
		switch field {
		case 1: // value, fixed64
			if wt != wireFixed64 || len(b)-next < 8 {
				return s, false
			}
			s.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[next:]))
			next += 8
		case 2: // timestamp, varint
			if wt != wireVarint {
				return s, false
			}
			v, n := binary.Uvarint(b[next:])
			if n <= 0 {
				return s, false
			}
			s.Timestamp = int64(v)
			next += n
		default:
			if next, ok = protoSkip(b, next, wt); !ok {
				return s, false
			}
		}
		i = next
	}
	return s, true
}
