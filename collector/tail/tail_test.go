package tail

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// collect is an Emitter that keeps every event and marks it done at once,
// unless hold is set.
type collect struct {
	mu     sync.Mutex
	events []*Event
	hold   bool
}

func (c *collect) Emit(_ context.Context, e *Event) error {
	ev := new(Event)
	*ev = *e
	ev.Line = bytes.Clone(ev.Line)
	c.mu.Lock()
	c.events = append(c.events, ev)
	hold := c.hold
	c.mu.Unlock()
	if !hold {
		ev.Done()
	}
	return nil
}

func (c *collect) Flush(context.Context) error { return nil }

func (c *collect) snapshot() []*Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Event(nil), c.events...)
}

func (c *collect) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.events))
	for i, e := range c.events {
		out[i] = string(e.Line)
	}
	return out
}

type running struct {
	t      *Tailer
	out    *collect
	cancel context.CancelFunc
	done   chan error
}

func startTailer(t *testing.T, cfg Config, out *collect) *running {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.ScanInterval == 0 {
		cfg.ScanInterval = 20 * time.Millisecond
	}
	if cfg.CloseRemovedAfter == 0 {
		cfg.CloseRemovedAfter = 100 * time.Millisecond
	}
	if out == nil {
		out = &collect{}
	}
	tl, err := New(cfg, out, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: tl, out: out, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- tl.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.t.SaveCheckpoints()
	r.cancel = nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func TestFollowsAndResumesFromCheckpoint(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "one\ntwo\n")
	cfg := Config{Inputs: []*Input{{Paths: []string{filepath.Join(dir, "*.log")}}}, CheckpointPath: filepath.Join(dir, "cp.json")}
	r := startTailer(t, cfg, nil)
	waitFor(t, "two lines", func() bool { return len(r.out.lines()) == 2 })
	appendFile(t, log, "three\npartial")
	waitFor(t, "three lines", func() bool { return len(r.out.lines()) == 3 })
	r.stop()
	if got := strings.Join(r.out.lines(), ","); got != "one,two,three" {
		t.Fatalf("lines %s", got)
	}
	if ev := r.out.events[2]; ev.Offset != 8 || ev.Path != log {
		t.Errorf("third event at %s:%d", ev.Path, ev.Offset)
	}
	cps, err := ReadCheckpoints(cfg.CheckpointPath)
	if err != nil || len(cps) != 1 || cps[0].Offset != 14 {
		t.Fatalf("checkpoints %+v, %v", cps, err)
	}
	appendFile(t, log, " line\nfour\n")
	cfg.Inputs = []*Input{{Paths: []string{filepath.Join(dir, "*.log")}}}
	r = startTailer(t, cfg, nil)
	waitFor(t, "the rest", func() bool { return len(r.out.lines()) == 2 })
	if got := strings.Join(r.out.lines(), ","); got != "partial line,four" {
		t.Fatalf("after restart: %s", got)
	}
	if r.out.events[0].FileID == "" {
		t.Error("no file id")
	}
}

// TestOnlyDeliveredIsCheckpointed holds every event undelivered: the
// checkpoint must not move; delivering the first two moves it past them.
func TestOnlyDeliveredIsCheckpointed(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "a.log")
	appendFile(t, log, "aa\nbb\ncc\n")
	out := &collect{hold: true}
	r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{log}}}}, out)
	waitFor(t, "three events", func() bool { return len(out.lines()) == 3 })
	if cps := r.t.Checkpoints(); len(cps) != 1 || cps[0].Offset != 0 {
		t.Fatalf("checkpoint before delivery: %+v", cps)
	}
	out.events[1].Done() // out of order: nothing moves yet
	if cps := r.t.Checkpoints(); cps[0].Offset != 0 {
		t.Fatalf("checkpoint moved past an undelivered event: %+v", cps)
	}
	out.events[0].Done()
	if cps := r.t.Checkpoints(); cps[0].Offset != 6 {
		t.Fatalf("checkpoint after two: %+v", cps)
	}
	if n := r.t.InFlight(); n != 1 {
		t.Errorf("in flight %d", n)
	}
}

// TestDoneAll: receipts handed over together, of two files interleaved
// and out of order, move each file's checkpoint as Done on each would, and
// call the OnDone of events made outside a tailer.
func TestDoneAll(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	appendFile(t, a, "aa\nbb\ncc\ndd\n")
	appendFile(t, b, "xxx\nyyy\n")
	out := &collect{hold: true}
	r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{a, b}}}}, out)
	waitFor(t, "six events", func() bool { return len(out.lines()) == 6 })
	receipts := map[string]Receipt{}
	for _, ev := range out.snapshot() {
		receipts[string(ev.Line)] = ev.Receipt()
	}
	offsets := func() map[string]int64 {
		got := map[string]int64{}
		for _, cp := range r.t.Checkpoints() {
			got[filepath.Base(cp.Path)] = cp.Offset
		}
		return got
	}
	outside := 0
	steps := []struct {
		done []string
		want map[string]int64
	}{
		{[]string{"bb", "yyy", "dd"}, map[string]int64{"a.log": 0, "b.log": 0}},
		{[]string{"aa", "outside", "xxx"}, map[string]int64{"a.log": 6, "b.log": 8}},
		{[]string{"cc"}, map[string]int64{"a.log": 12, "b.log": 8}},
	}
	for i, step := range steps {
		var rs []Receipt
		for _, l := range step.done {
			if l == "outside" {
				rs = append(rs, (&Event{OnDone: func() { outside++ }}).Receipt())
				continue
			}
			rs = append(rs, receipts[l])
		}
		DoneAll(rs)
		if got := offsets(); got["a.log"] != step.want["a.log"] || got["b.log"] != step.want["b.log"] {
			t.Fatalf("step %d: checkpoints %v, want %v", i, got, step.want)
		}
	}
	if outside != 1 {
		t.Errorf("OnDone called %d times, want 1", outside)
	}
	if n := r.t.InFlight(); n != 0 {
		t.Errorf("in flight %d, want 0", n)
	}
}

// seqWriter writes numbered lines; rotate is called under its lock every
// `every` lines, as a logging library that rotates between writes.
type seqWriter struct {
	path string
	f    *os.File
}

func (w *seqWriter) open(t *testing.T) {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w.f = f
}

// line is long enough that a file holds a full fingerprint after a few.
func seqLine(i int) string {
	return fmt.Sprintf("%08d %s\n", i, strings.Repeat("x", 90))
}

// checkAllSeq checks that every numbered line 0..n-1 is among the events
// and, with inOrder, that each file's lines came in order.
func checkAllSeq(t *testing.T, events []*Event, n int, inOrder bool) {
	t.Helper()
	seen := make([]int, n)
	last := map[string]int{}
	for _, ev := range events {
		l := string(ev.Line)
		i, err := strconv.Atoi(strings.Fields(l)[0])
		if err != nil || i < 0 || i >= n {
			t.Fatalf("bad line %q", l)
		}
		if prev, ok := last[ev.FileID]; inOrder && ok && i <= prev {
			t.Fatalf("line %d after %d in the same file", i, prev)
		}
		last[ev.FileID] = i
		seen[i]++
	}
	missing := 0
	for i, c := range seen {
		if c == 0 {
			missing++
			if missing < 5 {
				t.Errorf("line %d never delivered", i)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d lines missing", missing, n)
	}
}

func TestRotationUnderContinuousWriting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		glob   string
		rotate func(t *testing.T, w *seqWriter, gen int)
		// inOrder: each line once and in order. Copytruncate may repeat
		// what the copy and the live file both held when the copy was
		// found.
		inOrder bool
	}{
		{"rename-and-create, old name outside the glob", "app.log", func(t *testing.T, w *seqWriter, gen int) {
			os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, gen))
			w.f.Close()
			w.open(t)
		}, true},
		{"rename-and-create, old name inside the glob", "app.log*", func(t *testing.T, w *seqWriter, gen int) {
			os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, gen))
			w.f.Close()
			w.open(t)
		}, false},
		{"copytruncate", "app.log*", func(t *testing.T, w *seqWriter, gen int) {
			data, err := os.ReadFile(w.path)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(fmt.Sprintf("%s.%d", w.path, gen), data, 0o644)
			w.f.Truncate(0)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := &seqWriter{path: filepath.Join(dir, "app.log")}
			w.open(t)
			r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{filepath.Join(dir, tc.glob)}}}}, nil)
			const n, every = 3000, 400
			for i := range n {
				if i > 0 && i%every == 0 {
					tc.rotate(t, w, i/every)
				}
				w.f.WriteString(seqLine(i))
				// A generation lives several scan intervals: a file created
				// and rotated away between two scans is never seen.
				if i%5 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			w.f.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				seen := map[string]bool{}
				for _, l := range r.out.lines() {
					seen[l] = true
				}
				if len(seen) == n {
					break
				}
				if time.Now().After(deadline) {
					checkAllSeq(t, r.out.snapshot(), n, false)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			lines := r.out.lines()
			checkAllSeq(t, r.out.snapshot(), n, tc.inOrder)
			if tc.inOrder && len(lines) != n {
				t.Errorf("%d lines delivered for %d written", len(lines), n)
			}
			t.Logf("%d lines delivered for %d written", len(lines), n)
		})
	}
}

func TestDeletedFileIsReadToItsEnd(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "gone.log")
	appendFile(t, log, "a\n")
	r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{log}}}, CloseRemovedAfter: 200 * time.Millisecond}, nil)
	waitFor(t, "first line", func() bool { return len(r.out.lines()) == 1 })
	f, _ := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	os.Remove(log)
	f.WriteString("b\nno newline")
	f.Close()
	waitFor(t, "the rest of the deleted file", func() bool { return len(r.out.lines()) == 3 })
	if got := strings.Join(r.out.lines(), ","); got != "a,b,no newline" {
		t.Fatalf("lines %s", got)
	}
	waitFor(t, "file closed", func() bool { return len(r.t.Checkpoints()) == 0 })
}

func TestInodeReuseIsANewFile(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "a.log")
	appendFile(t, log, "fresh content\nsecond\n")
	fi, _ := os.Stat(log)
	key := keyOf(fi)
	// A checkpoint for the same device and inode but another file's head.
	cp := Checkpoint{Identity: Identity{Dev: key.dev, Inode: key.ino, FPLen: 10, FP: 12345}, Path: log, Offset: 14}
	cpPath := filepath.Join(dir, "cp.json")
	if err := WriteCheckpoints(cpPath, []Checkpoint{cp}); err != nil {
		t.Fatal(err)
	}
	r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{log}}}, CheckpointPath: cpPath}, nil)
	waitFor(t, "both lines", func() bool { return len(r.out.lines()) == 2 })
	// The same file's real fingerprint resumes.
	r.stop()
	appendFile(t, log, "third\n")
	r = startTailer(t, Config{Inputs: []*Input{{Paths: []string{log}}}, CheckpointPath: cpPath}, nil)
	waitFor(t, "third", func() bool { return len(r.out.lines()) == 1 })
	if got := r.out.lines()[0]; got != "third" {
		t.Fatalf("resumed with %q", got)
	}
}

func TestLongLinesAreCutAndMarked(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "a.log")
	appendFile(t, log, "short\n"+strings.Repeat("L", 300)+"\nafter\n")
	r := startTailer(t, Config{Inputs: []*Input{{Paths: []string{log}}}, MaxLineBytes: 100}, nil)
	waitFor(t, "three lines", func() bool { return len(r.out.lines()) == 3 })
	ev := r.out.events[1]
	if len(ev.Line) != 100 || !ev.Truncated || r.out.events[0].Truncated || r.out.events[2].Truncated {
		t.Fatalf("long line: %d bytes, truncated %v", len(ev.Line), ev.Truncated)
	}
	if string(r.out.events[2].Line) != "after" || r.out.events[2].Offset != 307 {
		t.Fatalf("after the long line: %q at %d", r.out.events[2].Line, r.out.events[2].Offset)
	}
}

func TestMultilineStackTraces(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "java.log")
	appendFile(t, log, "2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n2026-01-01 INFO ok\n")
	in := &Input{Paths: []string{log}, Multiline: &Multiline{Pattern: `^\d{4}-`, Match: "start", FlushTimeout: 50 * time.Millisecond}}
	r := startTailer(t, Config{Inputs: []*Input{in}}, nil)
	waitFor(t, "two events", func() bool { return len(r.out.lines()) == 2 })
	if got := r.out.lines(); got[0] != "2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)" || got[1] != "2026-01-01 INFO ok" {
		t.Fatalf("events %q", got)
	}
	if cps := r.t.Checkpoints(); cps[0].Offset != int64(len("2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n2026-01-01 INFO ok\n")) {
		t.Errorf("checkpoint %d", cps[0].Offset)
	}
}

func TestStartAtEndSymlinksExcludeAndIdleReopen(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.log")
	appendFile(t, old, "before start\n")
	real := filepath.Join(dir, "real", "x.txt")
	os.Mkdir(filepath.Dir(real), 0o755)
	appendFile(t, real, "via link\n")
	os.Symlink(real, filepath.Join(dir, "link.log"))
	appendFile(t, filepath.Join(dir, "skip.log"), "excluded\n")
	in := &Input{Paths: []string{filepath.Join(dir, "*.log")}, Exclude: []string{"skip.*"}, StartAt: "end"}
	r := startTailer(t, Config{Inputs: []*Input{in}, IdleTimeout: 50 * time.Millisecond, MaxOpenFiles: 1}, nil)
	time.Sleep(100 * time.Millisecond)
	appendFile(t, old, "after start\n")
	appendFile(t, real, "more via link\n")
	appendFile(t, filepath.Join(dir, "new.log"), "new file\n")
	waitFor(t, "three lines", func() bool { return len(r.out.lines()) >= 3 })
	time.Sleep(100 * time.Millisecond)
	got := map[string]bool{}
	for _, l := range r.out.lines() {
		got[l] = true
	}
	want := map[string]bool{"after start": true, "more via link": true, "new file": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lines %v, want %v", got, want)
	}
}

func TestInputValidation(t *testing.T) {
	for _, in := range []Input{
		{},
		{Paths: []string{"["}},
		{Paths: []string{"a"}, StartAt: "middle"},
		{Paths: []string{"a"}, Key: "field:x"},
		{Paths: []string{"a"}, Key: "random"},
		{Paths: []string{"a"}, Multiline: &Multiline{Pattern: "("}},
		{Paths: []string{"a"}, Multiline: &Multiline{Pattern: "x", Match: "maybe"}},
	} {
		if err := in.Validate(); err == nil {
			t.Errorf("%+v: no error", in)
		}
	}
	in := Input{Paths: []string{"a"}, Key: "field:app", Fields: map[string]string{"app": "shop"}}
	if err := in.Validate(); err != nil || in.StartAt != "beginning" || in.Name != "a" {
		t.Errorf("%+v: %v", in, err)
	}
}

// TestRotatedWhileStopped: lines appended, then the file rotated away
// from the glob while the collector was down; the restart reads the rest
// of the rotated file (found by its inode) and the new one.
func TestRotatedWhileStopped(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "one\n")
	cfg := func() Config {
		return Config{Inputs: []*Input{{Paths: []string{log}}}, CheckpointPath: filepath.Join(dir, "cp", "checkpoints.json")}
	}
	r := startTailer(t, cfg(), nil)
	waitFor(t, "one", func() bool { return len(r.out.lines()) == 1 })
	r.stop()
	appendFile(t, log, "two\n")
	os.Rename(log, log+".1")
	appendFile(t, log, "three\n")
	r = startTailer(t, cfg(), nil)
	waitFor(t, "two and three", func() bool { return len(r.out.lines()) == 2 })
	got := r.out.lines()
	if !(got[0] == "two" && got[1] == "three" || got[0] == "three" && got[1] == "two") {
		t.Fatalf("after restart: %q", got)
	}
	waitFor(t, "the rotated file closed", func() bool { return len(r.t.Checkpoints()) == 1 })
}
