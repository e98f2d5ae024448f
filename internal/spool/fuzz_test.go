package spool

import (
	"bytes"
	"testing"
)

// FuzzReadRecord feeds arbitrary segment bytes to the record reader: it must
// return an error or a record whose checksum held, never panic or allocate
// beyond MaxRecordBytes.
func FuzzReadRecord(f *testing.F) {
	f.Add(AppendRecord(nil, Record{Count: 3, Data: []byte("abc")}))
	f.Add(AppendRecord(AppendRecord(nil, Record{Count: 1, Data: nil}), Record{Count: 2, Data: []byte("xy")}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var scratch []byte
		r := bytes.NewReader(data)
		off := int64(0)
		for off < int64(len(data)) {
			rec, n, err := ReadRecord(r, off, &scratch)
			if err != nil {
				return
			}
			if n != headerSize+int64(len(rec.Data)) {
				t.Fatalf("size %d for %d data bytes", n, len(rec.Data))
			}
			if again := AppendRecord(nil, rec); !bytes.Equal(again, data[off:off+n]) {
				t.Fatal("re-encoding differs from the bytes read")
			}
			off += n
		}
	})
}

// FuzzParseAck feeds arbitrary ack files to the parser: it accepts only
// what formatAck writes.
func FuzzParseAck(f *testing.F) {
	f.Add(formatAck(Position{Segment: 3, Offset: 99}))
	f.Add([]byte("3 99\n"))
	f.Add([]byte("00000000000000000001 -0000000000000000001 00000000\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseAck(b)
		if !ok {
			return
		}
		if p.Offset < 0 {
			t.Fatalf("negative offset %d accepted", p.Offset)
		}
		if !bytes.Equal(formatAck(p), b[:len(formatAck(p))]) {
			t.Fatalf("accepted %q, which formatAck would write as %q", b, formatAck(p))
		}
	})
}
