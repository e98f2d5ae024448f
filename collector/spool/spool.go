// Package spool is collector's bounded on-disk FIFO of point batches. Every
// batch bound for transfer is appended here (and synced) before anything
// acknowledges it, and leaves only when transfer has acknowledged it; so
// batches survive a kill -9 and a transfer outage, and go out in order.
//
// The spool is a directory of segment files named by a rising number, each
// a sequence of records:
//
//	uint32 length of payload | uint32 CRC-32C of count and payload | uint32 point count | payload
//
// (little endian). The payload is the batch, snappy-compressed. A file
// "cursor" holds the segment and offset of the first record not yet
// acknowledged. When the segments would exceed their byte bound, the
// oldest segment is deleted and its unacknowledged points counted as
// dropped: after a long outage the newest data is kept.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/golang/snappy"

	"github.com/opskit/opskit/internal/atomicfile"
)

const (
	headerSize = 12
	segSuffix  = ".seg"
	cursorFile = "cursor"
	// maxRecord bounds one record's payload so a corrupt length cannot make
	// us allocate much.
	maxRecord = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a spool.
type Options struct {
	// Dir holds the segment files; it is created if missing.
	Dir string
	// MaxBytes bounds the segment files together (default 256 MiB).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment is started (default
	// MaxBytes/16, at least 64 KiB). Dropping happens a segment at a time.
	SegmentBytes int64
	// OnDrop, if set, is told of points dropped to respect MaxBytes, and of
	// points lost in corrupt records found when opening.
	OnDrop func(points int, reason string)
}

// Record is one batch to append: its encoded points and how many there are.
type Record struct {
	Points int
	Data   []byte
}

// Position is a place in the spool.
type Position struct {
	Segment uint64
	Offset  int64
}

// Batch is what Peek returns: consecutive records of one segment.
type Batch struct {
	Records []Record
	Points  int
	start   Position
	end     Position
}

// Stats describe what the spool holds.
type Stats struct {
	Records  int   `json:"records"` // not yet acknowledged
	Points   int   `json:"points"`  // in those records
	Bytes    int64 `json:"bytes"`   // size of the segment files
	Segments int   `json:"segments"`
}

type segment struct {
	id      uint64
	size    int64
	records int // not yet acknowledged
	points  int
}

// Spool is safe for concurrent use by one appender and one reader.
type Spool struct {
	opts Options

	mu      sync.Mutex
	segs    []*segment // oldest first; the last is the one appended to
	active  *os.File
	cursor  Position
	notify  chan struct{}
	closed  bool
	scratch []byte
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("spool closed")

// Open opens or creates the spool in opts.Dir, checks every record after the
// cursor and cuts a torn tail (a record half written when the process died).
func Open(opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 20
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = max(opts.MaxBytes/16, 64<<10)
	}
	if opts.OnDrop == nil {
		opts.OnDrop = func(int, string) {}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{opts: opts, notify: make(chan struct{}, 1)}
	ids, err := s.listSegments()
	if err != nil {
		return nil, err
	}
	s.cursor, err = s.readCursor()
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		if id < s.cursor.Segment {
			// Fully acknowledged; Ack died before deleting it.
			os.Remove(s.segPath(id))
			continue
		}
		seg, err := s.scan(id, i == len(ids)-1)
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, seg)
	}
	if len(s.segs) == 0 || s.segs[0].id != s.cursor.Segment {
		// The cursor's segment is gone (dropped, or never written): start at
		// the oldest segment there is.
		s.cursor = Position{}
		if len(s.segs) > 0 {
			s.cursor.Segment = s.segs[0].id
		}
	}
	if len(s.segs) > 0 {
		// A torn tail may have been cut below the cursor.
		s.cursor.Offset = min(s.cursor.Offset, s.segs[0].size)
	}
	if len(s.segs) == 0 {
		next := s.cursor.Segment
		if len(ids) > 0 {
			next = max(next, ids[len(ids)-1]+1)
		}
		if err := s.startSegment(max(next, 1)); err != nil {
			return nil, err
		}
		s.cursor = Position{Segment: s.segs[0].id}
	} else {
		last := s.segs[len(s.segs)-1]
		f, err := os.OpenFile(s.segPath(last.id), os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.active = f
	}
	return s, nil
}

func (s *Spool) segPath(id uint64) string {
	return filepath.Join(s.opts.Dir, fmt.Sprintf("%016d%s", id, segSuffix))
}

func (s *Spool) listSegments() ([]uint64, error) {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

func (s *Spool) readCursor() (Position, error) {
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, cursorFile))
	if errors.Is(err, os.ErrNotExist) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("spool cursor: %w", err)
	}
	var p Position
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.Segment, &p.Offset); err != nil || p.Offset < 0 {
		// A cursor that does not parse cannot have been written by us
		// (atomic replacement); start from the oldest segment.
		return Position{}, nil
	}
	return p, nil
}

// scan counts the records of a segment after the cursor. A bad record ends
// the segment: in the last segment it is a torn write and is cut off; in an
// older one the rest of that segment is lost and counted.
func (s *Spool) scan(id uint64, last bool) (*segment, error) {
	path := s.segPath(id)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	seg := &segment{id: id, size: fi.Size()}
	off := int64(0)
	if id == s.cursor.Segment {
		off = min(s.cursor.Offset, seg.size)
	}
	for off < seg.size {
		rec, n, err := readRecord(f, off, &s.scratch)
		if err != nil {
			if last {
				if err := os.Truncate(path, off); err != nil {
					return nil, fmt.Errorf("spool: cutting torn tail: %w", err)
				}
				seg.size = off
			}
			// In an older segment the rest is lost; its points are unknown.
			break
		}
		seg.records++
		seg.points += rec.Points
		off += n
	}
	return seg, nil
}

// readRecord reads the record at off. Its Data is decoded into a new slice.
func readRecord(f *os.File, off int64, scratch *[]byte) (Record, int64, error) {
	var h [headerSize]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return Record{}, 0, fmt.Errorf("record header at %d: %w", off, err)
	}
	n := binary.LittleEndian.Uint32(h[0:])
	sum := binary.LittleEndian.Uint32(h[4:])
	if n > maxRecord {
		return Record{}, 0, fmt.Errorf("record at %d: length %d over the limit", off, n)
	}
	if cap(*scratch) < int(n)+4 {
		*scratch = make([]byte, int(n)+4)
	}
	buf := (*scratch)[:int(n)+4]
	copy(buf, h[8:12])
	if _, err := f.ReadAt(buf[4:], off+headerSize); err != nil {
		return Record{}, 0, fmt.Errorf("record at %d: %w", off, err)
	}
	if crc32.Checksum(buf, castagnoli) != sum {
		return Record{}, 0, fmt.Errorf("record at %d: checksum mismatch", off)
	}
	data, err := snappy.Decode(nil, buf[4:])
	if err != nil {
		return Record{}, 0, fmt.Errorf("record at %d: %w", off, err)
	}
	return Record{Points: int(binary.LittleEndian.Uint32(h[8:])), Data: data}, headerSize + int64(n), nil
}

func (s *Spool) startSegment(id uint64) error {
	f, err := os.OpenFile(s.segPath(id), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if s.active != nil {
		s.active.Close()
	}
	s.active = f
	s.segs = append(s.segs, &segment{id: id})
	return syncDir(s.opts.Dir)
}

// Append writes recs at the end of the spool and syncs them to disk; when
// it returns nil they survive a crash. Records without points are skipped.
func (s *Spool) Append(recs ...Record) error {
	var buf []byte
	points, n := 0, 0
	for _, r := range recs {
		if r.Points <= 0 {
			continue
		}
		buf = appendRecord(buf, r)
		points += r.Points
		n++
	}
	if n == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if int64(len(buf)) > s.opts.MaxBytes {
		s.opts.OnDrop(points, "too_large")
		return fmt.Errorf("spool: a write of %d bytes is over the spool's bound of %d", len(buf), s.opts.MaxBytes)
	}
	if act := s.segs[len(s.segs)-1]; act.size > 0 && act.size+int64(len(buf)) > s.opts.SegmentBytes {
		if err := s.startSegment(act.id + 1); err != nil {
			return err
		}
	}
	s.makeRoom(int64(len(buf)))
	if _, err := s.active.Write(buf); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := s.active.Sync(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	act := s.segs[len(s.segs)-1]
	act.size += int64(len(buf))
	act.records += n
	act.points += points
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// makeRoom deletes the oldest segments until need more bytes fit. The
// segment appended to is never deleted.
func (s *Spool) makeRoom(need int64) {
	for len(s.segs) > 1 && s.bytes()+need > s.opts.MaxBytes {
		old := s.segs[0]
		s.segs = s.segs[1:]
		os.Remove(s.segPath(old.id))
		if old.points > 0 {
			s.opts.OnDrop(old.points, "spool_full")
		}
		s.cursor = Position{Segment: s.segs[0].id}
	}
}

func (s *Spool) bytes() int64 {
	var n int64
	for _, g := range s.segs {
		n += g.size
	}
	return n
}

func appendRecord(dst []byte, r Record) []byte {
	enc := snappy.Encode(nil, r.Data)
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(enc)))
	binary.LittleEndian.PutUint32(h[8:], uint32(r.Points))
	crc := crc32.Update(crc32.Checksum(h[8:12], castagnoli), castagnoli, enc)
	binary.LittleEndian.PutUint32(h[4:], crc)
	dst = append(dst, h[:]...)
	return append(dst, enc...)
}

// Notify is signalled after an Append; a reader waits on it when Peek
// found nothing.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Peek returns the oldest unacknowledged records, at most maxRecords of
// them and, past the first, at most maxPoints points, all from one segment.
// It returns an empty batch when the spool is empty.
func (s *Spool) Peek(maxRecords, maxPoints int) (Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Batch{}, ErrClosed
	}
	// Move past segments that are fully read, except the one appended to.
	for len(s.segs) > 1 && s.cursor.Offset >= s.segs[0].size {
		old := s.segs[0]
		s.segs = s.segs[1:]
		s.cursor = Position{Segment: s.segs[0].id}
		if err := s.writeCursor(); err != nil {
			return Batch{}, err
		}
		os.Remove(s.segPath(old.id))
	}
	seg := s.segs[0]
	b := Batch{start: s.cursor, end: s.cursor}
	if s.cursor.Offset >= seg.size {
		return b, nil
	}
	f, err := os.Open(s.segPath(seg.id))
	if err != nil {
		return Batch{}, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	for len(b.Records) < maxRecords && b.end.Offset < seg.size {
		rec, n, err := readRecord(f, b.end.Offset, &s.scratch)
		if err != nil {
			// Written and synced by us, so this is disk damage: lose the
			// rest of the segment rather than stall forever.
			s.opts.OnDrop(seg.points-b.Points, "corrupt")
			seg.points, seg.records = b.Points, len(b.Records)
			seg.size = b.end.Offset
			break
		}
		if len(b.Records) > 0 && b.Points+rec.Points > maxPoints {
			break
		}
		b.Records = append(b.Records, rec)
		b.Points += rec.Points
		b.end.Offset += n
	}
	return b, nil
}

// Ack marks a batch from Peek as delivered and persists the cursor. A batch
// whose records were dropped meanwhile (the spool overflowed) is ignored.
func (s *Spool) Ack(b Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if len(b.Records) == 0 || b.start != s.cursor {
		return nil
	}
	seg := s.segs[0]
	seg.records -= len(b.Records)
	seg.points -= b.Points
	s.cursor = b.end
	return s.writeCursor()
}

func (s *Spool) writeCursor() error {
	data := fmt.Sprintf("%d %d\n", s.cursor.Segment, s.cursor.Offset)
	if err := atomicfile.WriteFile(filepath.Join(s.opts.Dir, cursorFile), []byte(data), 0o644); err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	return nil
}

// Stats reports what the spool holds.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Segments: len(s.segs)}
	for _, g := range s.segs {
		st.Records += g.records
		st.Points += g.points
		st.Bytes += g.size
	}
	return st
}

// Close closes the segment appended to. Records stay on disk for the next
// Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.active.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("spool: syncing %s: %w", dir, err)
	}
	return nil
}
