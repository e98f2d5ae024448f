// Package tail follows log files and hands their lines, as events, to an
// Emitter that delivers them (to Kafka, stdout or a file) and marks each one
// done once delivered. Only offsets of delivered events are checkpointed, so
// a restart after kill -9 repeats at most what was in flight and loses
// nothing.
//
// Files come from path globs, re-scanned for new files; symlinks are
// followed. A file is known by device and inode plus a fingerprint of its
// first bytes (FingerprintBytes at most), so a reused inode is not taken
// for the old file. Rotation by rename-and-create keeps reading the old
// file (by its open descriptor) until its end before closing it; rotation
// by copytruncate is noticed when the file shrinks below the read
// position, and the copy, if the globs match it, is read from where the
// original was left (it has the same fingerprint). A file that disappears
// is read to its end before it is closed. Lines longer than the maximum
// are cut and marked truncated, never dropped.
package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/atomicfile"
)

// Input is one `logs.inputs` entry of the config file.
type Input struct {
	// Name labels the input's metrics (default: its first path).
	Name string `yaml:"name"`
	// Paths are globs (filepath.Match syntax), re-scanned for new files.
	Paths []string `yaml:"paths"`
	// Exclude are globs tested against the full path and the base name.
	Exclude []string `yaml:"exclude"`
	// Topic is the Kafka topic of the input's events.
	Topic string `yaml:"topic"`
	// Key is the Kafka record key: "host", "path", "field:NAME" (one of
	// Fields) or "none". Default "path", which keeps each file's events
	// in order on one partition.
	Key string `yaml:"key"`
	// Multiline, if set, joins lines into events.
	Multiline *Multiline `yaml:"multiline"`
	// Fields are added to every event.
	Fields map[string]string `yaml:"fields"`
	// StartAt is where files found at the first scan without a checkpoint
	// are read from: "beginning" (default) or "end". Files that appear
	// later are always read from the beginning: they are new logs.
	StartAt string `yaml:"start_at"`
	// Metrics count lines matching regular expressions (log to metrics).
	Metrics []LineMetric `yaml:"metrics"`
}

// LineMetric counts the lines of an input that match Pattern; with Value,
// it also sums the named (or first) capture group read as a number.
type LineMetric struct {
	Name    string `yaml:"name"`
	Pattern string `yaml:"pattern"`
	Value   string `yaml:"value"`
	// Aggregate of the captured values each interval: "sum" (default) or
	// "avg".
	Aggregate string `yaml:"aggregate"`
}

// Validate checks an input and fills its defaults.
func (in *Input) Validate() error {
	if len(in.Paths) == 0 {
		return errors.New("input without paths")
	}
	if in.Name == "" {
		in.Name = in.Paths[0]
	}
	for _, p := range append(append([]string(nil), in.Paths...), in.Exclude...) {
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("input %s: glob %q: %w", in.Name, p, err)
		}
	}
	switch in.StartAt {
	case "":
		in.StartAt = "beginning"
	case "beginning", "end":
	default:
		return fmt.Errorf("input %s: start_at %q: want beginning or end", in.Name, in.StartAt)
	}
	if in.Key == "" {
		in.Key = "path"
	}
	switch k := in.Key; {
	case k == "host", k == "path", k == "none":
	case len(k) > 6 && k[:6] == "field:":
		if _, ok := in.Fields[k[6:]]; !ok {
			return fmt.Errorf("input %s: key %q names no field of the input", in.Name, k)
		}
	default:
		return fmt.Errorf("input %s: key %q: want host, path, field:NAME or none", in.Name, k)
	}
	if in.Multiline != nil {
		if _, err := NewAssembler(*in.Multiline, 0); err != nil {
			return fmt.Errorf("input %s: %w", in.Name, err)
		}
	}
	return nil
}

// Event is one line (or multiline event) read from a file. The event and
// its Line (which points into the tailer's read buffer) are valid only
// during Emit: an Emitter that keeps them must copy them (Done works on a
// copy).
type Event struct {
	Input     *Input
	Path      string
	FileID    string
	Offset    int64 // of the event's first byte in the file
	Line      []byte
	Truncated bool
	Time      time.Time
	// OnDone, if set, is called by Done: for events made outside a
	// Tailer.
	OnDone func()

	stream *stream
	seq    uint64
}

// Done marks the event delivered; its bytes may then be checkpointed. Call
// it once, from any goroutine.
func (e *Event) Done() { e.Receipt().Done() }

// Receipt returns what marking the event done needs, for an emitter that
// keeps less than the whole event until it is delivered.
func (e *Event) Receipt() Receipt { return Receipt{stream: e.stream, seq: e.seq, onDone: e.OnDone} }

// Receipt marks one event delivered.
type Receipt struct {
	stream *stream
	seq    uint64
	onDone func()
}

// Done marks the receipt's event delivered. Call it once, from any
// goroutine.
func (r Receipt) Done() {
	if r.stream != nil {
		r.stream.t.ack(r.stream, r.seq)
	}
	if r.onDone != nil {
		r.onDone()
	}
}

// DoneAll marks the receipts' events delivered, as Done on each would,
// taking the tailer's lock once for each run of receipts of one file
// rather than once for each: an output answered for many events at once
// (a Kafka batch) hands them over together.
func DoneAll(rs []Receipt) {
	for i := 0; i < len(rs); {
		s, j := rs[i].stream, i+1
		for j < len(rs) && rs[j].stream == s {
			j++
		}
		if s != nil {
			s.t.ackAll(s, rs[i:j])
		}
		for _, r := range rs[i:j] {
			if r.onDone != nil {
				r.onDone()
			}
		}
		i = j
	}
}

// Emitter delivers events. Emit may block to apply backpressure: reading
// pauses meanwhile. Flush is called when the tailer has read what there
// was, so buffered output can go out.
type Emitter interface {
	Emit(ctx context.Context, ev *Event) error
	Flush(ctx context.Context) error
}

// Config configures a Tailer. Zero durations and sizes take the defaults.
type Config struct {
	Inputs []*Input
	// CheckpointPath is the checkpoint file; empty keeps no checkpoints.
	CheckpointPath string
	// MaxLineBytes bounds one line (default 1 MiB); longer ones are cut.
	MaxLineBytes int
	// MaxOpenFiles bounds open descriptors (default 1024); beyond it the
	// file idle longest is closed, or new files wait.
	MaxOpenFiles int
	// PollInterval is the wait when no file had anything new (250ms).
	PollInterval time.Duration
	// ScanInterval is the period of glob re-scans (10s).
	ScanInterval time.Duration
	// IdleTimeout closes a file that did not grow for this long (5m); it
	// is reopened when a scan sees it grow.
	IdleTimeout time.Duration
	// CloseRemovedAfter closes a file gone from the globs (renamed away
	// or deleted) once it has stayed at its end for this long (2s).
	CloseRemovedAfter time.Duration
	// StopAtEOF makes Run return once every file found by the first scan
	// is read to its end (for `collector tail --once`).
	StopAtEOF bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Tailer follows the files of its inputs.
type Tailer struct {
	cfg Config
	out Emitter
	log *slog.Logger
	now func() time.Time

	// Owned by the Run goroutine.
	live       map[fileKey]*stream
	open       int
	saved      map[fileKey]Checkpoint
	truncated  []Checkpoint // heads of files cut by copytruncate, for their copies
	lastScan   time.Time
	scannedYet bool
	// readAt is the time of the current read, the events' read time (one
	// clock reading per read, not per line).
	readAt time.Time
	event  Event
	// chunks holds the lines of one read before they are emitted.
	chunks []Chunk
	// atFirstScan holds files found by the first scan and not opened yet
	// (too many open): start_at applies to them.
	atFirstScan map[fileKey]bool

	// ackMu guards every stream's ack window, committed offset, path and
	// identity, and the list of streams, which the checkpointer reads.
	ackMu   sync.Mutex
	streams []*stream

	lines, bytesRead, truncatedLines, rotations *metrics.Counter
}

type fileKey struct{ dev, ino uint64 }

// stream is one file being read: its descriptor and read state (owned by
// the Run goroutine) and its delivery window (under ackMu).
type stream struct {
	t     *Tailer
	input *Input
	key   fileKey

	f         *os.File
	buf       []byte
	r, w      int
	off       int64 // file offset of buf[r]
	discard   bool  // inside a line already cut at MaxLineBytes
	asm       *Assembler
	atEOF     bool
	grewAt    time.Time
	gone      bool
	goneAt    time.Time
	closed    bool // for good; dormant streams have f == nil but are not closed
	readBytes int64

	// Under ackMu.
	path      string
	id        Identity
	fileID    string
	committed int64
	ends      []int64
	acked     []bool
	head      int
	base      uint64 // seq of ends[head]
	next      uint64 // seq of the next event
}

// New returns a tailer of cfg.Inputs into out. It reads the checkpoint
// file; Run starts the reading.
func New(cfg Config, out Emitter, set *metrics.Set, log *slog.Logger) (*Tailer, error) {
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = 1 << 20
	}
	if cfg.MaxOpenFiles <= 0 {
		cfg.MaxOpenFiles = 1024
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.ScanInterval <= 0 {
		cfg.ScanInterval = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.CloseRemovedAfter <= 0 {
		cfg.CloseRemovedAfter = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, in := range cfg.Inputs {
		if err := in.Validate(); err != nil {
			return nil, err
		}
	}
	if set == nil {
		set = metrics.NewSet()
	}
	t := &Tailer{cfg: cfg, out: out, log: log, now: cfg.Now,
		live: map[fileKey]*stream{}, saved: map[fileKey]Checkpoint{}, atFirstScan: map[fileKey]bool{},
		lines:          set.GetOrCreateCounter("opskit_collector_tail_lines_total"),
		bytesRead:      set.GetOrCreateCounter("opskit_collector_tail_read_bytes_total"),
		truncatedLines: set.GetOrCreateCounter("opskit_collector_tail_truncated_lines_total"),
		rotations:      set.GetOrCreateCounter(`opskit_collector_tail_truncations_total`),
	}
	set.GetOrCreateGauge("opskit_collector_tail_open_files", func() float64 {
		t.ackMu.Lock()
		defer t.ackMu.Unlock()
		n := 0
		for _, s := range t.streams {
			if !s.closed {
				n++
			}
		}
		return float64(n)
	})
	if cfg.CheckpointPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.CheckpointPath), 0o755); err != nil {
			return nil, fmt.Errorf("checkpoints: %w", err)
		}
		cps, err := ReadCheckpoints(cfg.CheckpointPath)
		if err != nil {
			return nil, err
		}
		for _, c := range cps {
			t.saved[fileKey{c.Dev, c.Inode}] = c
		}
	}
	return t, nil
}

// Run reads until ctx ends, then returns nil after emitting what the
// multiline assemblers held. Files stay as they are for the next start.
func (t *Tailer) Run(ctx context.Context) error {
	defer t.closeAll()
	for {
		now := t.now()
		if !t.scannedYet || now.Sub(t.lastScan) >= t.cfg.ScanInterval {
			t.scan(ctx)
		}
		progressed := false
		for _, s := range t.readOrder() {
			n, err := t.readStream(ctx, s)
			if err != nil {
				if ctx.Err() != nil {
					return t.drain(context.WithoutCancel(ctx))
				}
				return err
			}
			progressed = progressed || n > 0
		}
		if err := t.housekeep(ctx); err != nil {
			if ctx.Err() != nil {
				return t.drain(context.WithoutCancel(ctx))
			}
			return err
		}
		if err := t.out.Flush(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		if ctx.Err() != nil {
			return t.drain(context.WithoutCancel(ctx))
		}
		if !progressed && t.cfg.StopAtEOF {
			return t.drain(ctx)
		}
		if !progressed {
			select {
			case <-ctx.Done():
				return t.drain(context.WithoutCancel(ctx))
			case <-time.After(t.cfg.PollInterval):
			}
		}
	}
}

// drain emits what multiline assemblers hold, so that a graceful stop
// ships every complete line read. It gives up after a few seconds (an
// output that cannot take more, e.g. Kafka down): what it held is read
// again after the restart.
func (t *Tailer) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, s := range t.live {
		if s.asm != nil {
			if c, ok := s.asm.Flush(); ok {
				if err := t.emit(ctx, s, c); err != nil {
					return err
				}
			}
		}
	}
	return t.out.Flush(ctx)
}

func (t *Tailer) readOrder() []*stream {
	out := make([]*stream, 0, len(t.live))
	for _, s := range t.live {
		if s.f != nil {
			out = append(out, s)
		}
	}
	return out
}

func (t *Tailer) closeAll() {
	for _, s := range t.live {
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
	}
}

// scan expands the globs, opens new files and notes the ones gone.
func (t *Tailer) scan(ctx context.Context) {
	first := !t.scannedYet
	t.scannedYet, t.lastScan = true, t.now()
	seen := map[fileKey]bool{}
	for _, in := range t.cfg.Inputs {
		for _, pattern := range in.Paths {
			matches, _ := filepath.Glob(pattern)
			for _, path := range matches {
				if excluded(in, path) {
					continue
				}
				fi, err := os.Stat(path)
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				key := keyOf(fi)
				if seen[key] {
					continue
				}
				seen[key] = true
				if s := t.live[key]; s != nil {
					t.rename(s, path)
					s.gone = false
					if s.f == nil && fi.Size() != s.readBytes {
						t.reopen(s)
					}
					continue
				}
				t.discover(in, path, fi, first)
			}
		}
	}
	now := t.now()
	for key, s := range t.live {
		if seen[key] {
			continue
		}
		if s.f == nil {
			// Dormant and gone: it was read to its end when it went idle.
			t.finish(s)
			continue
		}
		if !s.gone {
			s.gone, s.goneAt = true, now
		}
	}
	if first {
		t.recoverRotated(seen)
		t.saved = nil // only a first sight resumes from the checkpoint file
	}
	_ = ctx
}

// recoverRotated finds the checkpointed files the globs no longer match
// (rotated away while the collector was down: app.log became app.log.1)
// in their directory by device and inode, and reads the rest of them.
func (t *Tailer) recoverRotated(seen map[fileKey]bool) {
	for key, cp := range t.saved {
		if seen[key] {
			continue
		}
		entries, err := os.ReadDir(filepath.Dir(cp.Path))
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := filepath.Join(filepath.Dir(cp.Path), e.Name())
			fi, err := os.Stat(path)
			if err != nil || !fi.Mode().IsRegular() || keyOf(fi) != key || fi.Size() <= cp.Offset {
				continue
			}
			in := t.inputOf(cp.Path)
			if in == nil {
				break
			}
			if s := t.open1(in, path, fi, &cp); s != nil {
				s.gone, s.goneAt = true, t.now()
				t.log.Info("reading the rest of a file rotated while stopped", "path", path, "was", cp.Path, "offset", cp.Offset)
			}
			break
		}
	}
}

// inputOf returns the input whose globs match path.
func (t *Tailer) inputOf(path string) *Input {
	for _, in := range t.cfg.Inputs {
		for _, p := range in.Paths {
			if ok, _ := filepath.Match(p, path); ok {
				return in
			}
		}
	}
	return nil
}

func excluded(in *Input, path string) bool {
	for _, ex := range in.Exclude {
		if ok, _ := filepath.Match(ex, path); ok {
			return true
		}
		if ok, _ := filepath.Match(ex, filepath.Base(path)); ok {
			return true
		}
	}
	return false
}

func keyOf(fi os.FileInfo) fileKey {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}
	}
	return fileKey{dev: uint64(st.Dev), ino: st.Ino}
}

func (t *Tailer) rename(s *stream, path string) {
	t.ackMu.Lock()
	defer t.ackMu.Unlock()
	s.path = path
}

// makeRoom closes the open file idle longest when MaxOpenFiles are open.
// It reports whether a descriptor is free.
func (t *Tailer) makeRoom() bool {
	if t.open < t.cfg.MaxOpenFiles {
		return true
	}
	var idlest *stream
	for _, s := range t.live {
		if s.f != nil && s.atEOF && !s.gone && (s.asm == nil || !s.asm.Pending()) && (idlest == nil || s.grewAt.Before(idlest.grewAt)) {
			idlest = s
		}
	}
	if idlest == nil {
		return false
	}
	t.sleep(idlest)
	return true
}

// discover starts reading a file not seen before.
func (t *Tailer) discover(in *Input, path string, fi os.FileInfo, first bool) {
	key := keyOf(fi)
	if first {
		t.atFirstScan[key] = true
	}
	if !t.makeRoom() {
		return // a later scan tries again
	}
	var cp *Checkpoint
	if c, ok := t.saved[key]; ok {
		cp = &c
	}
	t.open1(in, path, fi, cp)
}

// open1 opens a file and starts a stream for it: from the checkpoint cp if
// it is this file, else from where a file it copies was left, else per
// the input's start_at if this is the first scan, else from its start.
func (t *Tailer) open1(in *Input, path string, fi os.FileInfo, cp *Checkpoint) *stream {
	f, err := os.Open(path)
	if err != nil {
		t.log.Warn("cannot open log file", "path", path, "err", err)
		return nil
	}
	fi, err = f.Stat()
	if err != nil {
		f.Close()
		return nil
	}
	key := keyOf(fi)
	size := fi.Size()
	fpLen, fp, err := fingerprint(f, int(min(size, FingerprintBytes)))
	if err != nil {
		f.Close()
		return nil
	}
	id := Identity{Dev: key.dev, Inode: key.ino, FPLen: fpLen, FP: fp, Born: t.now().UnixNano()}
	offset := int64(0)
	how := "beginning"
	if cp != nil && matches(f, size, *cp) {
		offset, id, how = cp.Offset, cp.Identity, "checkpoint"
	} else if off, ok := t.copyOf(f, size, key); ok {
		offset, how = off, "copy"
	} else if t.atFirstScan[key] && in.StartAt == "end" {
		offset, how = size, "end"
	}
	delete(t.atFirstScan, key)
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil
	}
	s := &stream{t: t, input: in, key: key, f: f, off: offset, readBytes: offset, grewAt: t.now(),
		path: path, id: id, committed: offset, buf: make([]byte, 64<<10)}
	if in.Multiline != nil {
		s.asm, _ = NewAssembler(*in.Multiline, t.cfg.MaxLineBytes)
	}
	t.live[key] = s
	t.open++
	t.ackMu.Lock()
	t.streams = append(t.streams, s)
	t.ackMu.Unlock()
	t.log.Debug("following log file", "path", path, "from", how, "offset", offset)
	return s
}

// minCopyFingerprint is the least fingerprint length trusted to recognize
// a copy of another file: files that merely begin alike (a header, a
// banner) must not be taken for copies.
const minCopyFingerprint = FingerprintBytes

// matches reports whether f (of size) is the file of checkpoint cp.
func matches(f *os.File, size int64, cp Checkpoint) bool {
	if int64(cp.FPLen) > size || cp.Offset > size {
		return false
	}
	n, fp, err := fingerprint(f, cp.FPLen)
	return err == nil && n == cp.FPLen && fp == cp.FP
}

// copyOf looks for a known file whose head f repeats (the copy made by
// copytruncate, or a file moved across devices) and returns where that
// file was read up to.
func (t *Tailer) copyOf(f *os.File, size int64, key fileKey) (int64, bool) {
	var cands []Checkpoint
	cands = append(cands, t.truncated...)
	for _, c := range t.saved {
		cands = append(cands, c)
	}
	t.ackMu.Lock()
	for _, s := range t.live {
		if s.key != key {
			cands = append(cands, Checkpoint{Identity: s.id, Offset: s.readBytes})
		}
	}
	t.ackMu.Unlock()
	for _, c := range cands {
		if c.FPLen >= minCopyFingerprint && (c.Inode != key.ino || c.Dev != key.dev) {
			c.Offset = min(c.Offset, size)
			if matches(f, size, c) {
				return c.Offset, true
			}
		}
	}
	return 0, false
}

// sleep closes an idle file's descriptor; the stream keeps its place.
func (t *Tailer) sleep(s *stream) {
	s.f.Close()
	s.f = nil
	t.open--
	if s.r == s.w {
		s.buf, s.r, s.w = nil, 0, 0
	}
}

// reopen opens a dormant file again, checking it is still the same file.
func (t *Tailer) reopen(s *stream) {
	if !t.makeRoom() {
		return
	}
	t.ackMu.Lock()
	path, id := s.path, s.id
	t.ackMu.Unlock()
	f, err := os.Open(path)
	if err != nil {
		return
	}
	fi, err := f.Stat()
	if err != nil || keyOf(fi) != s.key || !matches(f, fi.Size(), Checkpoint{Identity: id}) || fi.Size() < s.readBytes {
		// Replaced or truncated while closed: start it over as a new file.
		f.Close()
		t.finish(s)
		if err == nil {
			t.discover(s.input, path, fi, false)
		}
		return
	}
	if _, err := f.Seek(s.readBytes, io.SeekStart); err != nil {
		f.Close()
		return
	}
	s.f, s.atEOF, s.grewAt = f, false, t.now()
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	t.open++
}

// finish closes a stream for good; it leaves the checkpoint once all its
// events are delivered.
func (t *Tailer) finish(s *stream) {
	if s.f != nil {
		s.f.Close()
		s.f = nil
		t.open--
	}
	delete(t.live, s.key)
	t.ackMu.Lock()
	s.closed = true
	t.ackMu.Unlock()
}

// readStream reads what the file has (up to a few buffers, so other files
// get their turn) and emits its complete lines.
func (t *Tailer) readStream(ctx context.Context, s *stream) (int, error) {
	total := 0
	for range 16 {
		if s.w == len(s.buf) {
			if s.r > 0 {
				s.w = copy(s.buf, s.buf[s.r:s.w])
				s.r = 0
			} else {
				s.buf = append(s.buf, make([]byte, len(s.buf))...)[:2*len(s.buf)]
			}
		}
		n, err := s.f.Read(s.buf[s.w:])
		t.readAt = t.now()
		if n > 0 {
			s.w += n
			s.readBytes += int64(n)
			total += n
			s.atEOF = false
			if err := t.splitLines(ctx, s); err != nil {
				return total, err
			}
		}
		if err != nil || n == 0 {
			if errors.Is(err, io.EOF) || n == 0 {
				s.atEOF = true
				break
			}
			return total, fmt.Errorf("reading %s: %w", s.path, err)
		}
	}
	if total > 0 {
		s.grewAt = t.now()
		t.bytesRead.Add(total)
	}
	return total, nil
}

// splitLines emits the complete lines in the buffer and cuts a line that
// grew past MaxLineBytes.
func (t *Tailer) splitLines(ctx context.Context, s *stream) error {
	chunks := t.chunks[:0]
	for {
		i := bytes.IndexByte(s.buf[s.r:s.w], '\n')
		if i < 0 {
			break
		}
		start, end := s.off, s.off+int64(i)+1
		line := s.buf[s.r : s.r+i]
		s.r += i + 1
		s.off = end
		if s.discard {
			s.discard = false
			continue
		}
		cut := len(line) > t.cfg.MaxLineBytes
		if cut {
			line = line[:t.cfg.MaxLineBytes]
			t.truncatedLines.Inc()
		}
		chunks = append(chunks, Chunk{Text: line, Start: start, End: end, Truncated: cut})
	}
	if held := s.w - s.r; held > t.cfg.MaxLineBytes {
		start := s.off
		s.off += int64(held)
		text := s.buf[s.r : s.r+t.cfg.MaxLineBytes]
		s.r = s.w
		if !s.discard {
			s.discard = true
			t.truncatedLines.Inc()
			chunks = append(chunks, Chunk{Text: text, Start: start, End: s.off, Truncated: true})
		}
	}
	if s.r == s.w {
		// The chunks still point into buf: it is not written before the
		// next read.
		s.r, s.w = 0, 0
	}
	err := t.lineChunks(ctx, s, chunks)
	clear(chunks) // they point into a buffer that may be dropped
	t.chunks = chunks[:0]
	return err
}

// lineChunks emits the lines of one read: through the multiline
// assembler, or all at once.
func (t *Tailer) lineChunks(ctx context.Context, s *stream, chunks []Chunk) error {
	if len(chunks) == 0 {
		return nil
	}
	t.lines.Add(len(chunks))
	if s.asm == nil {
		return t.emitAll(ctx, s, chunks)
	}
	for _, c := range chunks {
		if out, ok := s.asm.Add(c, t.readAt); ok {
			if err := t.emit(ctx, s, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Tailer) line(ctx context.Context, s *stream, c Chunk) error {
	return t.lineChunks(ctx, s, []Chunk{c})
}

// emit hands one chunk to the emitter as an event.
func (t *Tailer) emit(ctx context.Context, s *stream, c Chunk) error {
	return t.emitAll(ctx, s, []Chunk{c})
}

// emitAll opens the places of chunks in the ack window, all under one
// lock (the acknowledgements take the same lock, one by one, from the
// output's goroutine), then hands them to the emitter as events. Should
// an Emit fail, the places left open keep the checkpoint before them.
func (t *Tailer) emitAll(ctx context.Context, s *stream, chunks []Chunk) error {
	if t.readAt.IsZero() {
		t.readAt = t.now()
	}
	t.ackMu.Lock()
	if s.fileID == "" {
		s.fileID = s.id.ID() // device, inode and birth never change
	}
	path, fileID, seq := s.path, s.fileID, s.next
	for _, c := range chunks {
		s.ends = append(s.ends, c.End)
		s.acked = append(s.acked, false)
	}
	s.next += uint64(len(chunks))
	t.ackMu.Unlock()
	// One event serves every Emit: the emitter copies what it keeps.
	ev := &t.event
	for _, c := range chunks {
		*ev = Event{Input: s.input, Path: path, FileID: fileID, Offset: c.Start, Line: c.Text, Truncated: c.Truncated,
			Time: t.readAt, stream: s, seq: seq}
		seq++
		if err := t.out.Emit(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tailer) ack(s *stream, seq uint64) {
	t.ackMu.Lock()
	defer t.ackMu.Unlock()
	if s.mark(seq) {
		s.advance()
	}
}

// ackAll marks the events of receipts rs, all of stream s, delivered.
func (t *Tailer) ackAll(s *stream, rs []Receipt) {
	t.ackMu.Lock()
	defer t.ackMu.Unlock()
	for _, r := range rs {
		s.mark(r.seq)
	}
	s.advance()
}

// mark notes event seq delivered, under the tailer's ackMu; it reports
// whether seq was in the window.
func (s *stream) mark(seq uint64) bool {
	i := s.head + int(seq-s.base)
	if i < s.head || i >= len(s.acked) {
		return false
	}
	s.acked[i] = true
	return true
}

// advance moves the committed offset past the delivered events at the
// head of the window, under the tailer's ackMu.
func (s *stream) advance() {
	for s.head < len(s.acked) && s.acked[s.head] {
		s.committed = s.ends[s.head]
		s.head++
		s.base++
	}
	if s.head > 1024 && s.head*2 > len(s.acked) {
		n := copy(s.ends, s.ends[s.head:])
		copy(s.acked, s.acked[s.head:])
		s.ends, s.acked, s.head = s.ends[:n], s.acked[:n], 0
	}
}

// housekeep runs after a round of reads: multiline timeouts, truncation,
// fingerprint widening, closing files gone or idle.
func (t *Tailer) housekeep(ctx context.Context) error {
	now := t.now()
	t.readAt = now
	for _, s := range t.live {
		if s.asm != nil && s.asm.Due(now) {
			if c, ok := s.asm.Flush(); ok {
				if err := t.emit(ctx, s, c); err != nil {
					return err
				}
			}
		}
		if s.f == nil || !s.atEOF {
			continue
		}
		fi, err := s.f.Stat()
		if err != nil {
			continue
		}
		if fi.Size() < s.readBytes {
			if err := t.truncate(ctx, s); err != nil {
				return err
			}
			continue
		}
		t.widen(s)
		switch {
		case s.gone && now.Sub(s.goneAt) >= t.cfg.CloseRemovedAfter && now.Sub(s.grewAt) >= t.cfg.CloseRemovedAfter:
			if err := t.flushTail(ctx, s); err != nil {
				return err
			}
			t.finish(s)
		case !s.gone && now.Sub(s.grewAt) >= t.cfg.IdleTimeout && (s.asm == nil || !s.asm.Pending()):
			t.sleep(s)
		}
	}
	return nil
}

// flushTail emits what is left of a file that is being closed: the
// multiline event and a last line without its newline.
func (t *Tailer) flushTail(ctx context.Context, s *stream) error {
	if held := s.w - s.r; held > 0 && !s.discard {
		c := Chunk{Text: s.buf[s.r:s.w], Start: s.off, End: s.off + int64(held)}
		s.off, s.r, s.w = c.End, 0, 0
		if err := t.line(ctx, s, c); err != nil {
			return err
		}
	}
	if s.asm != nil {
		if c, ok := s.asm.Flush(); ok {
			return t.emit(ctx, s, c)
		}
	}
	return nil
}

// truncate handles a file cut below the read position (copytruncate): what
// was read is finished as one stream, and the file is read again from its
// start as a new one. The old head is remembered so the copy, if the globs
// match it, resumes where the original was left.
func (t *Tailer) truncate(ctx context.Context, s *stream) error {
	t.rotations.Inc()
	if err := t.flushTail(ctx, s); err != nil {
		return err
	}
	t.ackMu.Lock()
	path, old := s.path, Checkpoint{Identity: s.id, Offset: s.readBytes}
	s.closed = true
	t.ackMu.Unlock()
	t.truncated = append(t.truncated, old)
	if len(t.truncated) > 64 {
		t.truncated = t.truncated[1:]
	}
	t.log.Info("log file truncated; reading it again from the start", "path", path, "was_at", old.Offset)
	f := s.f
	s.f = nil
	delete(t.live, s.key)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		t.open--
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		t.open--
		return nil
	}
	fpLen, fp, _ := fingerprint(f, int(min(fi.Size(), FingerprintBytes)))
	ns := &stream{t: t, input: s.input, key: s.key, f: f, grewAt: t.now(), buf: s.buf[:cap(s.buf)], asm: s.asm,
		path: path, id: Identity{Dev: s.key.dev, Inode: s.key.ino, FPLen: fpLen, FP: fp, Born: t.now().UnixNano()}}
	s.buf = nil
	if ns.asm != nil {
		ns.asm, _ = NewAssembler(*s.input.Multiline, t.cfg.MaxLineBytes)
	}
	t.live[s.key] = ns
	t.ackMu.Lock()
	t.streams = append(t.streams, ns)
	t.ackMu.Unlock()
	return nil
}

// widen extends a short fingerprint as the file grows, up to
// FingerprintBytes.
func (t *Tailer) widen(s *stream) {
	t.ackMu.Lock()
	short := s.id.FPLen < FingerprintBytes && s.readBytes > int64(s.id.FPLen)
	t.ackMu.Unlock()
	if !short {
		return
	}
	n, fp, err := fingerprint(s.f, int(min(s.readBytes, FingerprintBytes)))
	if err != nil {
		return
	}
	t.ackMu.Lock()
	s.id.FPLen, s.id.FP = n, fp
	t.ackMu.Unlock()
}

// Checkpoints returns the delivered position of every file followed, and
// forgets files closed for good whose events are all delivered.
func (t *Tailer) Checkpoints() []Checkpoint {
	t.ackMu.Lock()
	defer t.ackMu.Unlock()
	var out []Checkpoint
	keep := t.streams[:0]
	for _, s := range t.streams {
		if s.closed && s.head == len(s.acked) {
			continue
		}
		keep = append(keep, s)
		if s.closed {
			// Superseded (truncated) or gone: its file is not this
			// identity any more; only the live stream speaks for it.
			continue
		}
		out = append(out, Checkpoint{Identity: s.id, Path: s.path, Offset: s.committed})
	}
	clear(t.streams[len(keep):])
	t.streams = keep
	return out
}

// InFlight returns how many events were emitted and not yet done.
func (t *Tailer) InFlight() int {
	t.ackMu.Lock()
	defer t.ackMu.Unlock()
	n := 0
	for _, s := range t.streams {
		n += len(s.acked) - s.head
	}
	return n
}

// SaveCheckpoints writes the checkpoint file.
func (t *Tailer) SaveCheckpoints() error {
	if t.cfg.CheckpointPath == "" {
		return nil
	}
	return WriteCheckpoints(t.cfg.CheckpointPath, t.Checkpoints())
}

// RunCheckpoints writes the checkpoint file every interval until ctx ends
// (the caller writes the last one after the emitter has flushed).
func (t *Tailer) RunCheckpoints(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if t.cfg.CheckpointPath == "" {
			continue
		}
		data := FormatCheckpoints(t.Checkpoints())
		if bytes.Equal(data, last) {
			continue
		}
		if err := atomicfile.WriteFile(t.cfg.CheckpointPath, data, 0o644); err != nil {
			t.log.Error("cannot write checkpoints", "err", err)
			continue
		}
		last = data
	}
}
