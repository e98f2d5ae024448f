package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/golang/snappy"

	"github.com/opskit/opskit/internal/metric"
)

// The forwarding wire format, used both in the spools and in the body of
// POST /cluster/v1/write. A body is a sequence of frames:
//
//	uvarint block length | block
//
// and a block is a snappy-compressed (block format) sequence of points:
//
//	uvarint point count
//	per point: uvarint label count, then per label uvarint name length,
//	name, uvarint value length, value; varint time (Unix seconds);
//	uint64 little-endian IEEE-754 value bits; varint step; byte counter type.
//
// Labels are written in their sorted order and must decode sorted and
// unique. Consecutive points of one series repeat their labels; snappy
// takes most of that back.

// WireVersion is sent as the X-Opskit-Cluster-Wire header; a receiver
// refuses versions it does not know.
const WireVersion = "1"

// Limits a decoder enforces so hostile input cannot make it allocate much.
const (
	maxBlockBytes    = 64 << 20
	maxPointsInBlock = 1 << 20
	maxLabelsInPoint = 256
	maxStringBytes   = 1 << 16
)

var errTruncated = errors.New("truncated")

// EncodeBlock returns the compressed block of pts.
func EncodeBlock(pts []metric.Point) []byte {
	raw := make([]byte, 0, 64*len(pts))
	raw = binary.AppendUvarint(raw, uint64(len(pts)))
	for i := range pts {
		p := &pts[i]
		raw = binary.AppendUvarint(raw, uint64(len(p.Labels)))
		for _, l := range p.Labels {
			raw = binary.AppendUvarint(raw, uint64(len(l.Name)))
			raw = append(raw, l.Name...)
			raw = binary.AppendUvarint(raw, uint64(len(l.Value)))
			raw = append(raw, l.Value...)
		}
		raw = binary.AppendVarint(raw, p.Time)
		raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(p.Value))
		raw = binary.AppendVarint(raw, int64(p.Step))
		raw = append(raw, byte(p.Type))
	}
	return snappy.Encode(nil, raw)
}

// AppendFrame appends one framed block to a body.
func AppendFrame(body, block []byte) []byte {
	body = binary.AppendUvarint(body, uint64(len(block)))
	return append(body, block...)
}

// DecodeBlock appends the points of one block to dst.
func DecodeBlock(dst []metric.Point, block []byte) ([]metric.Point, error) {
	n, err := snappy.DecodedLen(block)
	if err != nil {
		return dst, fmt.Errorf("block: %w", err)
	}
	if n > maxBlockBytes {
		return dst, fmt.Errorf("block of %d bytes over the limit", n)
	}
	raw, err := snappy.Decode(nil, block)
	if err != nil {
		return dst, fmt.Errorf("block: %w", err)
	}
	d := decoder{b: raw, interned: map[string]string{}}
	count := d.uvarint()
	if count > maxPointsInBlock {
		return dst, fmt.Errorf("block of %d points over the limit", count)
	}
	var prev metric.Labels
	for i := uint64(0); i < count && d.err == nil; i++ {
		nl := d.uvarint()
		if nl > maxLabelsInPoint {
			return dst, fmt.Errorf("point %d: %d labels over the limit", i, nl)
		}
		ls := make(metric.Labels, 0, nl)
		for j := uint64(0); j < nl && d.err == nil; j++ {
			l := metric.Label{Name: d.str(), Value: d.str()}
			if j > 0 && ls[j-1].Name >= l.Name {
				return dst, fmt.Errorf("point %d: labels not sorted and unique", i)
			}
			ls = append(ls, l)
		}
		// Share the label set with the previous point of the same series.
		if prev.Equal(ls) {
			ls = prev
		}
		prev = ls
		p := metric.Point{Labels: ls, Time: d.varint()}
		p.Value = math.Float64frombits(d.uint64())
		step := d.varint()
		if step < math.MinInt32 || step > math.MaxInt32 {
			return dst, fmt.Errorf("point %d: step %d out of range", i, step)
		}
		p.Step = int32(step)
		p.Type = metric.CounterType(d.byte())
		if p.Type > metric.Derive {
			return dst, fmt.Errorf("point %d: unknown counter type %d", i, p.Type)
		}
		if d.err == nil {
			dst = append(dst, p)
		}
	}
	if d.err != nil {
		return dst, fmt.Errorf("block: %w", d.err)
	}
	if len(d.b) != 0 {
		return dst, fmt.Errorf("block: %d bytes after the points", len(d.b))
	}
	return dst, nil
}

// DecodeBody appends the points of every frame of a body to dst.
func DecodeBody(dst []metric.Point, body []byte) ([]metric.Point, error) {
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			return dst, errors.New("body: bad frame length")
		}
		var err error
		if dst, err = DecodeBlock(dst, body[k:k+int(n)]); err != nil {
			return dst, err
		}
		body = body[k+int(n):]
	}
	return dst, nil
}

type decoder struct {
	b   []byte
	err error
	// interned holds the label names and values seen in this block: they
	// repeat across points, and looking them up does not allocate.
	interned map[string]string
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxStringBytes || n > uint64(len(d.b)) {
		d.err = errTruncated
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if s, ok := d.interned[string(raw)]; ok {
		return s
	}
	s := string(raw)
	if len(d.interned) < 1<<16 {
		d.interned[s] = s
	}
	return s
}

func (d *decoder) uint64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.err = errTruncated
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errTruncated
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}
