// Package store is abtest's embedded event store: one append-only log file
// per experiment under a directory (the file is the experiment's index, so
// a report reads only its own events). An append returns once its records
// are on disk (fsync, shared by concurrent appenders); a record cut short by
// a crash is found by its length and checksum and cut off at the next open.
package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/abtest/events"
)

// Record format: u32 payload length, u32 CRC-32C of the payload, payload:
// kind u8, flags u8, time i64 (Unix ns), value f64 bits, then unit, variant
// and name, each a uvarint length and bytes. Little endian.
const (
	headerLen   = 8
	fixedLen    = 1 + 1 + 8 + 8
	maxRecord   = fixedLen + 3*binary.MaxVarintLen32 + events.MaxUnitLen + 2*events.MaxNameLen
	flagForced  = 1
	logSuffix   = ".log"
	fileMode    = 0o644
	readBufSize = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is a stored event as a scan sees it; the byte slices are valid
// only during the callback.
type Record struct {
	Kind    events.Kind
	Forced  bool
	Time    int64 // Unix nanoseconds
	Value   float64
	Unit    []byte
	Variant []byte
	Name    []byte
}

// Store holds the open experiment logs.
type Store struct {
	dir string

	mu    sync.Mutex
	logs  map[string]*logFile
	close bool
}

type logFile struct {
	path string

	mu      sync.Mutex // serializes writes
	f       *os.File
	size    int64
	written uint64 // appends written

	syncMu sync.Mutex // one fsync at a time; waiters share it
	synced uint64
}

// Open opens (creating) the store in dir, repairing every log's tail.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open event store: %w", err)
	}
	s := &Store{dir: dir, logs: map[string]*logFile{}}
	names, err := s.Experiments()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, err := s.log(name); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Experiments lists the experiments that have events, sorted.
func (s *Store) Experiments() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list event store: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), logSuffix); ok {
			if name, err := url.PathUnescape(n); err == nil {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

func fileName(experiment string) string {
	// PathEscape leaves letters, digits and -._~ alone and escapes '/'.
	return url.PathEscape(experiment) + logSuffix
}

func (s *Store) log(experiment string) (*logFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.close {
		return nil, errors.New("event store closed")
	}
	if l, ok := s.logs[experiment]; ok {
		return l, nil
	}
	path := filepath.Join(s.dir, fileName(experiment))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	valid, err := validLength(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if st, err := f.Stat(); err == nil && st.Size() != valid {
		// A torn tail from a crash: nothing in it was acknowledged.
		if err := f.Truncate(valid); err != nil {
			f.Close()
			return nil, fmt.Errorf("repair %s: %w", path, err)
		}
	}
	l := &logFile{path: path, f: f, size: valid}
	s.logs[experiment] = l
	return l, nil
}

// validLength is the length of the file's prefix of whole, intact records.
func validLength(f *os.File) (int64, error) {
	var valid int64
	err := scanFile(f, math.MaxInt64, func(_ *Record, end int64) error {
		valid = end
		return nil
	})
	if errors.Is(err, errTorn) {
		err = nil
	}
	return valid, err
}

var errTorn = errors.New("torn record")

// Append stores events (grouped per experiment) and returns once they are
// durable. Events must be valid (events.Event.Validate).
func (s *Store) Append(evs []events.Event) error {
	groups := map[string][]int{}
	var order []string
	for i := range evs {
		name := evs[i].Experiment
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		groups[name] = append(groups[name], i)
	}
	for _, name := range order {
		l, err := s.log(name)
		if err != nil {
			return err
		}
		var buf []byte
		for _, i := range groups[name] {
			buf = appendRecord(buf, &evs[i])
		}
		if err := l.append(buf); err != nil {
			return err
		}
	}
	return nil
}

func (l *logFile) append(buf []byte) error {
	l.mu.Lock()
	if _, err := l.f.WriteAt(buf, l.size); err != nil {
		// Cut off whatever part was written so the log stays whole.
		_ = l.f.Truncate(l.size)
		l.mu.Unlock()
		return fmt.Errorf("append to %s: %w", l.path, err)
	}
	l.size += int64(len(buf))
	l.written++
	seq := l.written
	l.mu.Unlock()
	return l.syncTo(seq)
}

// syncTo returns once append number seq is on disk. Appenders arriving
// while an fsync runs wait for it and usually find their data covered by
// the next one: one fsync per group of concurrent appends.
func (l *logFile) syncTo(seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced >= seq {
		return nil
	}
	l.mu.Lock()
	target := l.written
	l.mu.Unlock()
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	l.synced = target
	return nil
}

func appendRecord(buf []byte, e *events.Event) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, headerLen)...)
	var flags byte
	if e.Forced {
		flags |= flagForced
	}
	buf = append(buf, byte(e.Kind), flags)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
	buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.Value))
	for _, s := range []string{e.Unit, e.Variant, e.Name} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	payload := buf[start+headerLen:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, castagnoli))
	return buf
}

// Scan calls fn for each stored event of experiment, oldest first, up to
// the records complete when it started. An experiment without events scans
// nothing.
func (s *Store) Scan(experiment string, fn func(*Record) error) error {
	f, err := os.Open(filepath.Join(s.dir, fileName(experiment)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan events: %w", err)
	}
	defer f.Close()
	limit := int64(math.MaxInt64)
	s.mu.Lock()
	if l, ok := s.logs[experiment]; ok {
		l.mu.Lock()
		limit = l.size
		l.mu.Unlock()
	}
	s.mu.Unlock()
	err = scanFile(f, limit, func(r *Record, _ int64) error { return fn(r) })
	if errors.Is(err, errTorn) {
		err = nil // a write in progress by another process
	}
	return err
}

// ScanDir scans one experiment's log in dir without opening the store for
// writing (for reports next to a running daemon).
func ScanDir(dir, experiment string, fn func(*Record) error) error {
	s := &Store{dir: dir, logs: map[string]*logFile{}}
	return s.Scan(experiment, fn)
}

func scanFile(f *os.File, limit int64, fn func(r *Record, end int64) error) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReaderSize(f, readBufSize)
	var off int64
	var r Record
	for off < limit {
		// Records are parsed in place in the read buffer (Peek), without
		// copying; maxRecord is far below the buffer's size.
		header, err := br.Peek(headerLen)
		if err != nil {
			if err == io.EOF && len(header) == 0 {
				return nil
			}
			if err == io.EOF {
				return errTorn
			}
			return err
		}
		n := int(binary.LittleEndian.Uint32(header[:4]))
		if n < fixedLen || n > maxRecord {
			return errTorn
		}
		whole, err := br.Peek(headerLen + n)
		if err != nil {
			if err == io.EOF {
				return errTorn
			}
			return err
		}
		p := whole[headerLen:]
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(whole[4:]) || !decode(p, &r) {
			return errTorn
		}
		off += int64(headerLen + n)
		if err := fn(&r, off); err != nil {
			return err
		}
		if _, err := br.Discard(headerLen + n); err != nil {
			return err
		}
	}
	return nil
}

func decode(p []byte, r *Record) bool {
	r.Kind = events.Kind(p[0])
	r.Forced = p[1]&flagForced != 0
	r.Time = int64(binary.LittleEndian.Uint64(p[2:]))
	r.Value = math.Float64frombits(binary.LittleEndian.Uint64(p[10:]))
	p = p[fixedLen:]
	for _, dst := range []*[]byte{&r.Unit, &r.Variant, &r.Name} {
		n, k := binary.Uvarint(p)
		if k <= 0 || uint64(len(p)-k) < n {
			return false
		}
		*dst = p[k : k+int(n)]
		p = p[k+int(n):]
	}
	return len(p) == 0
}

// Event converts a record to an Event of experiment.
func (r *Record) Event(experiment string) events.Event {
	return events.Event{Kind: r.Kind, Unit: string(r.Unit), Experiment: experiment, Variant: string(r.Variant),
		Name: string(r.Name), Value: r.Value, Time: time.Unix(0, r.Time), Forced: r.Forced}
}

// Close closes the logs; later appends fail.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.close = true
	var first error
	for name, l := range s.logs {
		if err := l.f.Close(); err != nil && first == nil {
			first = err
		}
		delete(s.logs, name)
	}
	return first
}

// DirScanner reads experiment logs in dir without opening them for
// writing, for reports beside a running daemon.
type DirScanner string

// Scan is Store.Scan on the directory.
func (d DirScanner) Scan(experiment string, fn func(*Record) error) error {
	return ScanDir(string(d), experiment, fn)
}
