// Package store is abtest's embedded event store: per experiment, an
// append-only log of events and an append-only dictionary of its units.
// The dictionary is the index: each unit gets a dense number when first
// seen, records carry that number, and a report aggregates by it with
// plain slices instead of hashing every event's unit id. An append returns
// once its records are on disk (fsync, shared by concurrent appenders); a
// record cut short by a crash is found by its length and checksum and cut
// off at the next open.
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
	"unsafe"

	"github.com/opskit/opskit/abtest/events"
)

// Both files hold records framed as u32 payload length, u32 CRC-32C of the
// payload, payload (little endian). A units record's payload is the unit
// id; its position in the file is the unit's number. An event record's
// payload is kind u8, flags u8, time i64 (Unix ns), value f64 bits, unit
// number uvarint, then variant and name, each a uvarint length and bytes.
const (
	headerLen    = 8
	fixedLen     = 1 + 1 + 8 + 8
	maxRecord    = fixedLen + 3*binary.MaxVarintLen32 + 2*events.MaxNameLen
	flagForced   = 1
	logSuffix    = ".log"
	unitsSuffix  = ".units"
	fileMode     = 0o644
	readBufSize  = 1 << 20
	maxUnitBytes = events.MaxUnitLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is a stored event as a scan sees it; the byte slices are valid
// only during the callback and must not be modified.
type Record struct {
	Kind    events.Kind
	Forced  bool
	Time    int64 // Unix nanoseconds
	Value   float64
	UnitID  uint32 // the unit's number in this experiment, from 0
	Unit    []byte
	Variant []byte
	Name    []byte
}

// Store holds the open experiments.
type Store struct {
	dir string

	mu     sync.Mutex
	logs   map[string]*logFile
	closed bool
}

type logFile struct {
	path string

	mu        sync.Mutex // serializes writes
	f         *os.File
	size      int64
	uf        *os.File // the units dictionary
	unitsSize int64
	units     unitDict
	// Encoding buffers reused by appends (under mu).
	unitsBuf, recsBuf []byte
	written           uint64 // appends written

	syncMu sync.Mutex // one fsync at a time; waiters share it
	synced uint64
}

// Open opens (creating) the store in dir, repairing every experiment's
// files. It keeps every experiment's unit dictionary in memory.
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

// basePath is the experiment's files' path without suffix; PathEscape
// leaves letters, digits and -._~ alone and escapes '/'.
func basePath(dir, experiment string) string {
	return filepath.Join(dir, url.PathEscape(experiment))
}

func (s *Store) log(experiment string) (*logFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("event store closed")
	}
	if l, ok := s.logs[experiment]; ok {
		return l, nil
	}
	l, err := openLog(basePath(s.dir, experiment))
	if err != nil {
		return nil, err
	}
	s.logs[experiment] = l
	return l, nil
}

func openLog(base string) (*logFile, error) {
	l := &logFile{path: base + logSuffix}
	uf, err := os.OpenFile(base+unitsSuffix, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open unit dictionary: %w", err)
	}
	l.uf = uf
	fail := func(err error) (*logFile, error) {
		uf.Close()
		if l.f != nil {
			l.f.Close()
		}
		return nil, err
	}
	names, valid, err := readUnits(uf)
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", base+unitsSuffix, err))
	}
	if err := truncateTo(uf, valid); err != nil {
		return fail(err)
	}
	l.units, l.unitsSize = newUnitDict(names), valid
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return fail(fmt.Errorf("open event log: %w", err))
	}
	l.f = f
	valid, err = validLength(f, len(names))
	if err != nil {
		return fail(fmt.Errorf("check %s: %w", l.path, err))
	}
	// A torn tail from a crash: nothing in it was acknowledged.
	if err := truncateTo(f, valid); err != nil {
		return fail(err)
	}
	l.size = valid
	return l, nil
}

func truncateTo(f *os.File, valid int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != valid {
		if err := f.Truncate(valid); err != nil {
			return fmt.Errorf("repair %s: %w", f.Name(), err)
		}
	}
	return nil
}

// readUnits reads a unit dictionary up to its first bad record.
func readUnits(f *os.File) (names []string, valid int64, err error) {
	err = frames(f, math.MaxInt64, maxUnitBytes, func(p []byte, end int64) error {
		names = append(names, string(p))
		valid = end
		return nil
	})
	if errors.Is(err, errTorn) {
		err = nil
	}
	return names, valid, err
}

// validLength is the length of the log's prefix of whole, intact records
// whose units are in the dictionary.
func validLength(f *os.File, units int) (int64, error) {
	var valid int64
	var r Record
	err := frames(f, math.MaxInt64, maxRecord, func(p []byte, end int64) error {
		if !decode(p, &r) || int(r.UnitID) >= units {
			return errTorn
		}
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
		if err := l.append(evs, groups[name]); err != nil {
			return err
		}
	}
	return nil
}

// maxKeptBuffer bounds the encoding buffers an experiment's log keeps
// between appends.
const maxKeptBuffer = 4 << 20

func (l *logFile) append(evs []events.Event, which []int) error {
	l.mu.Lock()
	units, recs := l.unitsBuf[:0], l.recsBuf[:0]
	firstNew := len(l.units.names)
	for _, i := range which {
		e := &evs[i]
		id, ok, slot := l.units.lookup(e.Unit)
		if !ok {
			// A copy: the caller's string may share memory with much
			// more (an exposure's unit is a piece of its request's URL).
			name := strings.Clone(e.Unit)
			id = l.units.add(name, slot)
			units = appendFrame(units, []byte(name))
		}
		recs = appendRecord(recs, e, id)
	}
	// Used only under mu, so the next append may reuse them.
	if cap(units) <= maxKeptBuffer && cap(recs) <= maxKeptBuffer {
		l.unitsBuf, l.recsBuf = units, recs
	}
	undo := func() {
		l.units.truncate(firstNew)
		_ = l.uf.Truncate(l.unitsSize)
		_ = l.f.Truncate(l.size)
	}
	// Units first: a record never refers to a unit not written before it.
	if len(units) > 0 {
		if _, err := l.uf.WriteAt(units, l.unitsSize); err != nil {
			undo()
			l.mu.Unlock()
			return fmt.Errorf("append to %s: %w", l.uf.Name(), err)
		}
	}
	if _, err := l.f.WriteAt(recs, l.size); err != nil {
		undo()
		l.mu.Unlock()
		return fmt.Errorf("append to %s: %w", l.path, err)
	}
	l.unitsSize += int64(len(units))
	l.size += int64(len(recs))
	l.written++
	seq := l.written
	l.mu.Unlock()
	return l.syncTo(seq)
}

// syncTo returns once append number seq is on disk. Appenders arriving
// while an fsync runs wait for it and usually find their data covered by
// the next one: one fsync per group of concurrent appends. The dictionary
// is synced before the log, so an acknowledged record's unit is on disk.
func (l *logFile) syncTo(seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced >= seq {
		return nil
	}
	l.mu.Lock()
	target := l.written
	l.mu.Unlock()
	if err := l.uf.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.uf.Name(), err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	l.synced = target
	return nil
}

func appendFrame(buf, payload []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(payload, castagnoli))
	return append(buf, payload...)
}

func appendRecord(buf []byte, e *events.Event, unit uint32) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, headerLen)...)
	var flags byte
	if e.Forced {
		flags |= flagForced
	}
	buf = append(buf, byte(e.Kind), flags)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
	buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(e.Value))
	buf = binary.AppendUvarint(buf, uint64(unit))
	buf = binary.AppendUvarint(buf, uint64(len(e.Variant)))
	buf = append(buf, e.Variant...)
	buf = binary.AppendUvarint(buf, uint64(len(e.Name)))
	buf = append(buf, e.Name...)
	payload := buf[start+headerLen:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, castagnoli))
	return buf
}

// Scan calls fn for each stored event of experiment, oldest first, up to
// the records complete when it started. An experiment without events scans
// nothing.
func (s *Store) Scan(experiment string, fn func(*Record) error) error {
	s.mu.Lock()
	l, ok := s.logs[experiment]
	s.mu.Unlock()
	if !ok {
		return ScanDir(s.dir, experiment, fn)
	}
	l.mu.Lock()
	limit, names := l.size, l.units.names // names[:len] never changes once written
	l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("scan events: %w", err)
	}
	defer f.Close()
	return scanRecords(f, limit, names, fn)
}

// ScanDir scans one experiment's log in dir without opening the store for
// writing (for reports next to a running daemon).
func ScanDir(dir, experiment string, fn func(*Record) error) error {
	base := basePath(dir, experiment)
	uf, err := os.Open(base + unitsSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan events: %w", err)
	}
	names, _, err := readUnits(uf)
	uf.Close()
	if err != nil {
		return fmt.Errorf("scan events: %w", err)
	}
	f, err := os.Open(base + logSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan events: %w", err)
	}
	defer f.Close()
	return scanRecords(f, math.MaxInt64, names, fn)
}

func scanRecords(f *os.File, limit int64, names []string, fn func(*Record) error) error {
	var r Record
	err := frames(f, limit, maxRecord, func(p []byte, _ int64) error {
		if !decode(p, &r) || int(r.UnitID) >= len(names) {
			return errTorn
		}
		name := names[r.UnitID]
		r.Unit = unsafe.Slice(unsafe.StringData(name), len(name))
		return fn(&r)
	})
	if errors.Is(err, errTorn) {
		err = nil // a write in progress by another process
	}
	return err
}

// DirScanner reads experiment logs in dir without opening them for
// writing, for reports beside a running daemon.
type DirScanner string

// Scan is Store.Scan on the directory.
func (d DirScanner) Scan(experiment string, fn func(*Record) error) error {
	return ScanDir(string(d), experiment, fn)
}

// frames calls fn with each framed payload of f up to limit bytes, parsed
// in place in the read buffer (maxPayload is far below its size). It
// returns errTorn at a partial or damaged frame.
func frames(f *os.File, limit int64, maxPayload int, fn func(p []byte, end int64) error) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReaderSize(f, readBufSize)
	var off int64
	for off < limit {
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
		if n > maxPayload {
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
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(whole[4:]) {
			return errTorn
		}
		off += int64(headerLen + n)
		if err := fn(p, off); err != nil {
			return err
		}
		if _, err := br.Discard(headerLen + n); err != nil {
			return err
		}
	}
	return nil
}

func decode(p []byte, r *Record) bool {
	if len(p) < fixedLen {
		return false
	}
	r.Kind = events.Kind(p[0])
	r.Forced = p[1]&flagForced != 0
	r.Time = int64(binary.LittleEndian.Uint64(p[2:]))
	r.Value = math.Float64frombits(binary.LittleEndian.Uint64(p[10:]))
	p = p[fixedLen:]
	unit, k := binary.Uvarint(p)
	if k <= 0 || unit > math.MaxUint32 {
		return false
	}
	r.UnitID = uint32(unit)
	p = p[k:]
	for _, dst := range [2]*[]byte{&r.Variant, &r.Name} {
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

// Close closes the files; later appends fail.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var first error
	for name, l := range s.logs {
		for _, f := range []*os.File{l.f, l.uf} {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
		delete(s.logs, name)
	}
	return first
}
