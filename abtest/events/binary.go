package events

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// AppendBinary appends e in a compact binary form (kind, flags, Unix
// nanoseconds, value bits, then unit, experiment, variant and name as
// uvarint length and bytes), for spools and other internal queues.
func AppendBinary(buf []byte, e *Event) []byte {
	var flags byte
	if e.Forced {
		flags = 1
	}
	buf = append(buf, byte(e.Kind), flags)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
	buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.Value))
	for _, s := range [4]string{e.Unit, e.Experiment, e.Variant, e.Name} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return buf
}

var errShort = errors.New("truncated binary event")

// DecodeBinary reads one event written by AppendBinary from the start of b
// and returns the rest. It checks the event with Validate.
func DecodeBinary(b []byte, e *Event) ([]byte, error) {
	if len(b) < 18 {
		return nil, errShort
	}
	*e = Event{Kind: Kind(b[0]), Forced: b[1]&1 != 0, Time: time.Unix(0, int64(binary.LittleEndian.Uint64(b[2:]))),
		Value: math.Float64frombits(binary.LittleEndian.Uint64(b[10:]))}
	b = b[18:]
	for _, dst := range [4]*string{&e.Unit, &e.Experiment, &e.Variant, &e.Name} {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errShort
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return b, e.Validate()
}
