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
