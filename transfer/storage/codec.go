package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/opskit/opskit/internal/metric"
)

// WAL record payloads. The first byte is the kind.
const (
	recCreate byte = 'C' // a new series: id, layout, creation time, labels
	recPoints byte = 'P' // accepted points: count, then id, time, raw value each
	recLate   byte = 'L' // late points merged into past slots: as recPoints
	recExpire byte = 'X' // a series removed by expiry: id
)

// maxLabels and maxLabelBytes bound what a decoder accepts, so corrupt input
// cannot make it allocate without limit (intake enforces the real limits).
const (
	maxLabels     = 1024
	maxLabelBytes = 1 << 16
	maxArchives   = 16
)

var errCorrupt = errors.New("corrupt record")

// createRecord is the content of a recCreate record and of a checkpoint entry.
type createRecord struct {
	ID     uint64
	Start  int64 // the "rrdtool create --start" time of the series
	Layout layout
	Labels metric.Labels
}

func appendCreate(dst []byte, c *createRecord) []byte {
	dst = append(dst, recCreate)
	return appendSeriesDef(dst, c)
}

func appendSeriesDef(dst []byte, c *createRecord) []byte {
	dst = binary.AppendUvarint(dst, c.ID)
	dst = binary.AppendVarint(dst, c.Start)
	dst = append(dst, byte(c.Layout.kind))
	dst = binary.AppendVarint(dst, c.Layout.heartbeat)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(c.Layout.xff))
	dst = binary.AppendUvarint(dst, uint64(len(c.Layout.archives)))
	for _, a := range c.Layout.archives {
		dst = binary.AppendUvarint(dst, uint64(a.Step))
		dst = binary.AppendUvarint(dst, uint64(a.Rows))
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Labels)))
	for _, l := range c.Labels {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	}
	return dst
}

// decoder reads fields from a byte slice; the first error sticks and every
// later read returns zero values, so callers check err once.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail()
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) float() float64 {
	if len(d.buf) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.buf))
	d.buf = d.buf[8:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if uint64(len(d.buf)) < n {
		d.fail()
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string(limit uint64) string {
	n := d.uvarint()
	if n > limit {
		d.fail()
		return ""
	}
	return string(d.bytes(n))
}

func (d *decoder) seriesDef() createRecord {
	var c createRecord
	c.ID = d.uvarint()
	c.Start = d.varint()
	kind := metric.CounterType(d.byte())
	if kind > metric.Derive {
		d.fail()
	}
	c.Layout.kind = kind
	c.Layout.heartbeat = d.varint()
	c.Layout.xff = d.float()
	n := d.uvarint()
	if n == 0 || n > maxArchives {
		d.fail()
		return c
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		step, rows := d.uvarint(), d.uvarint()
		if step == 0 || step > 1<<40 || rows == 0 || rows > maxRows {
			d.fail()
			break
		}
		c.Layout.archives = append(c.Layout.archives, Retention{Step: int64(step), Rows: int64(rows)})
	}
	if d.err == nil {
		if err := checkArchives(c.Layout.archives); err != nil || c.Layout.heartbeat <= 0 || !(c.Layout.xff >= 0 && c.Layout.xff <= 1) {
			d.fail()
		}
	}
	nl := d.uvarint()
	if nl > maxLabels {
		d.fail()
		return c
	}
	labels := make(metric.Labels, 0, nl)
	for i := uint64(0); i < nl && d.err == nil; i++ {
		name := d.string(maxLabelBytes)
		value := d.string(maxLabelBytes)
		labels = append(labels, metric.Label{Name: name, Value: value})
	}
	for i := 1; i < len(labels); i++ {
		if labels[i-1].Name >= labels[i].Name {
			d.fail() // labels are stored sorted and unique
		}
	}
	c.Labels = labels
	return c
}

// checkArchives applies the rules ParseRetentions enforces to a decoded list.
func checkArchives(rs []Retention) error {
	for i := 1; i < len(rs); i++ {
		if rs[i].Step <= rs[i-1].Step || rs[i].Step%rs[0].Step != 0 {
			return fmt.Errorf("archive %d: step %d does not follow %d", i, rs[i].Step, rs[i-1].Step)
		}
	}
	return nil
}

// walPoint is one point of a recPoints or recLate record.
type walPoint struct {
	ID    uint64
	Time  int64
	Value float64
}

// pointsHeader starts a recPoints or recLate record; the count is patched
// by finishPoints once the batch is known.
func pointsHeader(dst []byte, kind byte) []byte {
	return append(dst, kind, 0, 0, 0, 0)
}

func appendPoint(dst []byte, id uint64, t int64, v float64) []byte {
	dst = binary.AppendUvarint(dst, id)
	dst = binary.AppendVarint(dst, t)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

func finishPoints(rec []byte, n int) {
	binary.LittleEndian.PutUint32(rec[1:5], uint32(n))
}

func appendExpire(dst []byte, id uint64) []byte {
	dst = append(dst, recExpire)
	return binary.AppendUvarint(dst, id)
}

// walRecord is a decoded WAL payload.
type walRecord struct {
	Kind   byte
	Create createRecord
	Points []walPoint
	Expire uint64
}

// decodeRecord parses a WAL payload; points are appended to buf's Points to
// reuse its memory. It returns an error, never panics, on any malformed input.
func decodeRecord(payload []byte, rec *walRecord) error {
	d := decoder{buf: payload}
	rec.Kind = d.byte()
	rec.Points = rec.Points[:0]
	switch rec.Kind {
	case recCreate:
		rec.Create = d.seriesDef()
	case recPoints, recLate:
		b := d.bytes(4)
		if d.err != nil {
			break
		}
		n := binary.LittleEndian.Uint32(b)
		// Each point takes at least 10 bytes: refuse counts the payload cannot hold.
		if uint64(n)*10 > uint64(len(d.buf)) {
			d.fail()
			break
		}
		for i := uint32(0); i < n && d.err == nil; i++ {
			p := walPoint{ID: d.uvarint(), Time: d.varint(), Value: d.float()}
			rec.Points = append(rec.Points, p)
		}
	case recExpire:
		rec.Expire = d.uvarint()
	default:
		d.fail()
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail() // trailing bytes
	}
	if d.err != nil {
		return fmt.Errorf("storage: wal record kind %q: %w", rec.Kind, d.err)
	}
	return nil
}
