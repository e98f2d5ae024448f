package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// whisperTool runs one of python3-whisper's commands.
func whisperTool(t *testing.T, name string, args ...string) {
	t.Helper()
	bin := testkit.RequireBinary(t, name, "python3-whisper")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// makeWhisper creates a whisper file with the given retentions through the
// real whisper tools and writes ts:value points into it.
func makeWhisper(t *testing.T, path string, retentions []string, points map[int64]float64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	whisperTool(t, "whisper-create", append([]string{path}, retentions...)...)
	if len(points) == 0 {
		return
	}
	args := []string{path}
	for ts, v := range points {
		args = append(args, fmt.Sprintf("%d:%g", ts, v))
	}
	whisperTool(t, "whisper-update", args...)
}

func TestWhisperHasAgainstRealFiles(t *testing.T) {
	now := time.Now().Unix()
	base := now - now%60 - 3600
	path := filepath.Join(t.TempDir(), "a.wsp")
	makeWhisper(t, path, []string{"60s:12h", "5m:2d"}, map[int64]float64{base: 1, base + 60: 2, base + 1200: 3})

	tests := []struct {
		ts   int64
		want bool
	}{
		{base, true},
		{base + 60, true},
		{base + 75, true}, // aligned down to base+60
		{base + 120, false},
		{base + 1200, true},
		{base + 1260, false},
		{base - 60*720, false}, // the same slot one archive length earlier
	}
	for _, tt := range tests {
		got, err := whisperFileHas(path, tt.ts)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("whisperFileHas(base%+d) = %v, want %v", tt.ts-base, got, tt.want)
		}
	}

	empty := filepath.Join(t.TempDir(), "empty.wsp")
	makeWhisper(t, empty, []string{"60s:1h"}, nil)
	if got, err := whisperFileHas(empty, base); err != nil || got {
		t.Fatalf("empty file: whisperFileHas = %v, %v; want false, nil", got, err)
	}
	if got, err := whisperFileHas(filepath.Join(t.TempDir(), "missing.wsp"), base); err != nil || got {
		t.Fatalf("missing file: whisperFileHas = %v, %v; want false, nil", got, err)
	}
}

func TestWhisperIncompleteFileIsNotAnError(t *testing.T) {
	now := time.Now().Unix()
	ts := now - now%60 - 120
	path := filepath.Join(t.TempDir(), "a.wsp")
	makeWhisper(t, path, []string{"60s:12h"}, map[int64]float64{ts: 1})
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 10, whisperHeaderSize + 5, len(full) / 2} {
		cut := filepath.Join(t.TempDir(), "cut.wsp")
		if err := os.WriteFile(cut, full[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := whisperFileHas(cut, ts); err != nil || got {
			t.Errorf("file cut to %d bytes: whisperFileHas = %v, %v; want false, nil", size, got, err)
		}
	}
}

func TestWhisperCorruptHeader(t *testing.T) {
	head := make([]byte, whisperHeaderSize+whisperArchiveSize)
	binary.BigEndian.PutUint32(head[12:], 1)                   // one archive
	binary.BigEndian.PutUint32(head[whisperHeaderSize:], 4)    // offset inside the header
	binary.BigEndian.PutUint32(head[whisperHeaderSize+4:], 60) // seconds per point
	binary.BigEndian.PutUint32(head[whisperHeaderSize+8:], 10) // points
	_, err := readWhisperArchives(bytes.NewReader(head), int64(len(head)))
	if err == nil || errors.Is(err, errWhisperIncomplete) {
		t.Fatalf("offset inside the header: err = %v, want a corruption error", err)
	}
	binary.BigEndian.PutUint32(head[12:], 1000)
	if _, err := readWhisperArchives(bytes.NewReader(head), int64(len(head))); err == nil {
		t.Fatal("1000 archives accepted")
	}
}

func TestWaitWhisperWritten(t *testing.T) {
	now := time.Now().Unix()
	w := Workload{Series: 3, Points: 2, Step: 60, Start: now - now%60 - 600}
	dir := t.TempDir()
	// Series 0 and 1 are complete, series 2 only has its first point.
	for i := range w.Series {
		pts := map[int64]float64{w.Time(0): 1}
		if i < 2 {
			pts[w.Time(1)] = 2
		}
		makeWhisper(t, whisperPathOf(dir, GraphitePath(i)), []string{"60s:12h"}, pts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := waitWhisperWritten(ctx, dir, w, 10*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "1 of 3") || !strings.Contains(err.Error(), GraphitePath(2)) {
		t.Fatalf("waitWhisperWritten with one series short = %v, want an error naming %s", err, GraphitePath(2))
	}
	whisperTool(t, "whisper-update", whisperPathOf(dir, GraphitePath(2)), fmt.Sprintf("%d:2", w.Time(1)))
	if err := waitWhisperWritten(context.Background(), dir, w, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestCarbonReceived(t *testing.T) {
	now := time.Now().Unix() - 100
	dir := t.TempDir()
	// Two carbon instances count what they received, one point per second.
	makeWhisper(t, filepath.Join(dir, "carbon/agents/vm-a/metricsReceived.wsp"), []string{"1s:1h"},
		map[int64]float64{now - 5: 1000, now: 300, now + 1: 400, now + 3: 500, now + 4: 0})
	makeWhisper(t, filepath.Join(dir, "carbon/agents/vm-b/metricsReceived.wsp"), []string{"1s:1h"},
		map[int64]float64{now + 1: 100, now + 2: 50})
	tests := []struct {
		want int64
		at   int64
	}{
		{300, now},
		{800, now + 1}, // 300 + 400 + 100
		{850, now + 2},
		{1350, now + 3},
		{5000, now + 3}, // never reached: the last non-zero recording
	}
	for _, tt := range tests {
		got, at, err := carbonReceived(dir, now, tt.want)
		if err != nil {
			t.Fatal(err)
		}
		if got != 1350 || at != tt.at {
			t.Errorf("carbonReceived(want %d) = %d, now%+d; want 1350, now%+d", tt.want, got, at-now, tt.at-now)
		}
	}
	got, _, err := carbonReceived(t.TempDir(), now, 1)
	if err != nil || got != 0 {
		t.Fatalf("no instrumentation: carbonReceived = %d, %v; want 0, nil", got, err)
	}
}

// FuzzWhisper reads arbitrary bytes as a whisper file: a corrupt or
// truncated file gives an error, never a panic or a huge allocation.
func FuzzWhisper(f *testing.F) {
	f.Add(validWhisper(1_700_000_040, 4), int64(1_700_000_100))
	f.Add([]byte{0, 0, 0, 1}, int64(60))
	f.Fuzz(func(t *testing.T, data []byte, ts int64) {
		r := bytes.NewReader(data)
		if ts < 0 || ts > 1<<32 {
			return
		}
		_, _ = whisperHas(r, int64(len(data)), ts)
		_, _ = whisperSamples(r, int64(len(data)), 0)
	})
}

// validWhisper builds a file of one archive of 60 s slots, every slot
// written, the first at base.
func validWhisper(base int64, points int) []byte {
	size := whisperHeaderSize + whisperArchiveSize + points*whisperPointSize
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[0:], 1)
	binary.BigEndian.PutUint32(b[4:], uint32(60*points))
	binary.BigEndian.PutUint32(b[12:], 1)
	binary.BigEndian.PutUint32(b[16:], whisperHeaderSize+whisperArchiveSize)
	binary.BigEndian.PutUint32(b[20:], 60)
	binary.BigEndian.PutUint32(b[24:], uint32(points))
	for k := range points {
		off := whisperHeaderSize + whisperArchiveSize + k*whisperPointSize
		binary.BigEndian.PutUint32(b[off:], uint32(base+int64(k)*60))
		binary.BigEndian.PutUint64(b[off+4:], 0x3ff0000000000000) // 1.0
	}
	return b
}
