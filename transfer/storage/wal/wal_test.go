package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestAppendWaitReplay(t *testing.T) {
	dir := t.TempDir()
	l, err := Create(dir, Options{SyncInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				seq, err := l.Append([]byte(fmt.Sprintf("g%d-%d", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Wait(context.Background(), seq); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if s := l.Syncs(); s == 0 || s >= 400 {
		t.Errorf("%d fsyncs for 400 waited appends: group commit should share them", s)
	}
	n, err := l.Cut()
	if err != nil || n != 2 {
		t.Fatalf("cut: %d %v", n, err)
	}
	if _, err := l.Append([]byte("after-cut")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}

	segs, _ := Segments(dir)
	if len(segs) != 2 {
		t.Fatalf("segments %v", segs)
	}
	var got []string
	for _, s := range segs {
		if _, err := ReplaySegment(dir, s, func(p []byte) error { got = append(got, string(p)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 401 || got[400] != "after-cut" {
		t.Errorf("replayed %d records, last %q", len(got), got[len(got)-1])
	}

	l, err = Create(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.RemoveBefore(3); err != nil {
		t.Fatal(err)
	}
	if segs, _ := Segments(dir); len(segs) != 1 || segs[0] != 3 {
		t.Errorf("after RemoveBefore(3): %v", segs)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	l, err := Create(t.TempDir(), Options{SyncInterval: time.Hour, SyncBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seq, _ := l.Append([]byte("x"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, seq); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait: %v", err)
	}
}

func TestTornTail(t *testing.T) {
	whole := AppendFrame(nil, []byte("first"))
	whole = AppendFrame(whole, []byte("second"))
	third := AppendFrame(nil, []byte("third"))
	flipped := bytes.Clone(third)
	flipped[len(flipped)-1] ^= 1
	cases := []struct {
		name string
		tail []byte
	}{
		{"half a header", third[:5]},
		{"short payload", third[:len(third)-2]},
		{"bad checksum", flipped},
		{"huge length", []byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, SegmentName(1))
			if err := os.WriteFile(path, append(bytes.Clone(whole), tc.tail...), 0o644); err != nil {
				t.Fatal(err)
			}
			var got []string
			cut, err := ReplaySegment(dir, 1, func(p []byte) error { got = append(got, string(p)); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || cut != int64(len(tc.tail)) {
				t.Errorf("records %v, cut %d", got, cut)
			}
			if fi, _ := os.Stat(path); fi.Size() != int64(len(whole)) {
				t.Errorf("file not truncated to %d: %d", len(whole), fi.Size())
			}
		})
	}
}

func TestReader(t *testing.T) {
	data := AppendFrame(nil, []byte("a"))
	data = AppendFrame(data, nil)
	r := NewReader(data)
	for _, want := range []string{"a", ""} {
		p, err := r.Next()
		if err != nil || string(p) != want {
			t.Fatalf("next: %q %v", p, err)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
}

// FuzzDecodeFrame checks the frame decoder never panics and only accepts
// frames that re-encode to the same bytes.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(AppendFrame(nil, []byte("hello")))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		payload, n, err := DecodeFrame(data)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendFrame(nil, payload), data[:n]) {
			t.Fatalf("accepted a frame that does not re-encode: %x", data[:n])
		}
	})
}
