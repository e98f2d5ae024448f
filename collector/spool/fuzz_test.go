package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen writes arbitrary bytes as a segment file and a cursor, then opens
// and drains the spool: a damaged spool must never panic or stall.
func FuzzOpen(f *testing.F) {
	valid := appendRecord(appendRecord(nil, rec(1)), rec(2))
	f.Add(valid, []byte("1 0\n"))
	f.Add(valid[:len(valid)-3], []byte("1 12\n"))
	f.Add([]byte{}, []byte("garbage"))
	f.Fuzz(func(t *testing.T, segment, cursor []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), segment, 0o644)
		os.WriteFile(filepath.Join(dir, cursorFile), cursor, 0o644)
		s, err := Open(Options{Dir: dir, OnDrop: func(int, string) {}})
		if err != nil {
			return
		}
		defer s.Close()
		for range 100 {
			b, err := s.Peek(10, 100)
			if err != nil || len(b.Records) == 0 {
				return
			}
			if err := s.Ack(b); err != nil {
				return
			}
		}
		t.Fatal("spool did not drain in 100 peeks")
	})
}
