// Package wal is an append-only write-ahead log of opaque records with group
// commit: many writers append records to a shared buffer and one background
// goroutine writes and fsyncs them together, so a single fsync makes many
// concurrent appends durable.
//
// The log is a sequence of segment files named by an increasing number
// (00000001.wal, ...). Each record is framed as
//
//	length  uint32 little endian (payload bytes)
//	crc     uint32 little endian (CRC-32C of the payload)
//	payload
//
// A record whose frame is cut short or whose checksum does not match (a
// crash in the middle of a write) ends its segment: readers stop there and
// Open truncates the segment to its last whole record.
package wal

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HeaderSize is the frame overhead of one record.
const HeaderSize = 8

// MaxRecordSize bounds one record so a corrupt length cannot make a reader
// allocate gigabytes.
const MaxRecordSize = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrClosed is returned by Append and Wait after Close.
var ErrClosed = errors.New("wal: closed")

// ErrTorn reports a record cut short or failing its checksum.
var ErrTorn = errors.New("wal: torn or corrupt record")

// Options tune group commit.
type Options struct {
	// SyncInterval is how long the syncer lets records gather after the
	// first one before it writes and fsyncs them. 0 syncs as soon as the
	// previous fsync finished.
	SyncInterval time.Duration
	// SyncBytes makes the syncer start at once when this many bytes wait.
	SyncBytes int
	// MaxPendingBytes blocks Append (backpressure) while this many bytes wait
	// for the disk. Default 8 × SyncBytes.
	MaxPendingBytes int
}

// Log is an open write-ahead log. Append and Wait are safe for concurrent use.
type Log struct {
	dir  string
	opts Options

	mu        sync.Mutex
	cond      *sync.Cond // signalled when pending shrinks or the log closes
	pending   []byte     // framed records not yet handed to the syncer
	spare     []byte     // the other buffer, reused after a write
	appended  uint64     // sequence (total framed bytes) appended since Open
	durable   uint64     // sequence known fsynced
	syncedCh  chan struct{}
	kick      chan struct{}
	err       error // sticky write or sync error
	closed    bool
	segment   uint64 // number of the segment being written
	file      *os.File
	fileBytes int64
	oldBytes  int64 // bytes of the segments before the current one
	syncs     uint64
	firstAt   time.Time // when the oldest pending record was appended

	writeMu sync.Mutex // serialises file writes between the syncer and Cut
	done    chan struct{}
}

// SegmentName returns the file name of segment n.
func SegmentName(n uint64) string { return fmt.Sprintf("%08d.wal", n) }

// Segments lists the segment numbers in dir in increasing order.
func Segments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var out []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Create starts writing a new segment numbered after every existing one and
// returns the log. Existing segments are left for the caller to replay and
// remove (RemoveBefore).
func Create(dir string, opts Options) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if opts.SyncBytes <= 0 {
		opts.SyncBytes = 4 << 20
	}
	if opts.MaxPendingBytes <= 0 {
		opts.MaxPendingBytes = 8 * opts.SyncBytes
	}
	segs, err := Segments(dir)
	if err != nil {
		return nil, err
	}
	var next uint64 = 1
	var old int64
	for _, n := range segs {
		next = n + 1
		if fi, err := os.Stat(filepath.Join(dir, SegmentName(n))); err == nil {
			old += fi.Size()
		}
	}
	l := &Log{
		dir:      dir,
		opts:     opts,
		syncedCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		oldBytes: old,
	}
	l.cond = sync.NewCond(&l.mu)
	if err := l.openSegment(next); err != nil {
		return nil, err
	}
	go l.syncLoop()
	return l, nil
}

func (l *Log) openSegment(n uint64) error {
	f, err := os.OpenFile(filepath.Join(l.dir, SegmentName(n)), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("wal: create segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	l.file, l.segment, l.fileBytes = f, n, 0
	return nil
}

// AppendFrame frames payload into dst (length, checksum, payload).
func AppendFrame(dst, payload []byte) []byte {
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(payload, castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// Append adds one record and returns its sequence number, to pass to Wait.
// It does not wait for the disk, but blocks while too much is pending.
func (l *Log) Append(payload []byte) (uint64, error) {
	if len(payload) > MaxRecordSize {
		return 0, fmt.Errorf("wal: record of %d bytes exceeds %d", len(payload), MaxRecordSize)
	}
	// The checksum is computed before taking the lock, so writers appending
	// in parallel only serialise on the copy.
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(payload, castagnoli))
	l.mu.Lock()
	for len(l.pending) >= l.opts.MaxPendingBytes && !l.closed && l.err == nil {
		l.cond.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return 0, err
	}
	wasEmpty := len(l.pending) == 0
	if wasEmpty {
		l.firstAt = time.Now()
	}
	l.pending = append(append(l.pending, h[:]...), payload...)
	l.appended += uint64(HeaderSize + len(payload))
	seq := l.appended
	big := len(l.pending) >= l.opts.SyncBytes
	l.mu.Unlock()
	if wasEmpty || big {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return seq, nil
}

// Wait blocks until the record with sequence seq is fsynced, ctx ends or the
// log fails.
func (l *Log) Wait(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		durable, err, ch, closed := l.durable, l.err, l.syncedCh, l.closed
		l.mu.Unlock()
		if durable >= seq {
			return nil
		}
		if err != nil {
			return err
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *Log) syncLoop() {
	defer close(l.done)
	for {
		_, ok := <-l.kick
		if !ok {
			return
		}
		if l.opts.SyncInterval > 0 {
			// Wait out what is left of the interval of the oldest pending
			// record: records that gathered during the previous fsync have
			// waited already.
			l.mu.Lock()
			small := len(l.pending) < l.opts.SyncBytes
			wait := l.opts.SyncInterval - time.Since(l.firstAt)
			l.mu.Unlock()
			if small && wait > 0 {
				timer := time.NewTimer(wait)
				select {
				case <-timer.C:
				case _, ok = <-l.kick: // enough bytes, or Close
					timer.Stop()
				}
			}
		}
		l.flush()
		if !ok {
			return
		}
	}
}

// flush writes and fsyncs everything pending, then wakes the waiters.
func (l *Log) flush() {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	buf := l.pending
	seq := l.appended
	l.pending = l.spare[:0]
	l.spare = nil
	l.cond.Broadcast()
	l.mu.Unlock()

	var err error
	if len(buf) > 0 {
		if _, err = l.file.Write(buf); err == nil {
			err = l.file.Sync()
		}
	}

	l.mu.Lock()
	l.fileBytes += int64(len(buf))
	if l.spare == nil {
		l.spare = buf[:0]
	}
	if err != nil && l.err == nil {
		l.err = fmt.Errorf("wal: write: %w", err)
	}
	if err == nil && seq > l.durable {
		l.durable = seq
		l.syncs++
	}
	close(l.syncedCh)
	l.syncedCh = make(chan struct{})
	l.cond.Broadcast()
	l.mu.Unlock()
}

// Cut makes everything appended so far durable in the current segment and
// starts a new one, whose number it returns: every record appended before
// Cut is in a segment numbered below it.
func (l *Log) Cut() (uint64, error) {
	l.flush()
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	if len(l.pending) > 0 {
		// Records appended between flush and here belong to the old segment.
		if _, err := l.file.Write(l.pending); err != nil {
			l.err = fmt.Errorf("wal: write: %w", err)
			return 0, l.err
		}
		if err := l.file.Sync(); err != nil {
			l.err = fmt.Errorf("wal: sync: %w", err)
			return 0, l.err
		}
		l.fileBytes += int64(len(l.pending))
		l.durable = l.appended
		l.pending = l.pending[:0]
		close(l.syncedCh)
		l.syncedCh = make(chan struct{})
		l.cond.Broadcast()
	}
	if err := l.file.Close(); err != nil {
		l.err = fmt.Errorf("wal: close segment: %w", err)
		return 0, l.err
	}
	l.oldBytes += l.fileBytes
	if err := l.openSegment(l.segment + 1); err != nil {
		l.err = err
		return 0, err
	}
	return l.segment, nil
}

// RemoveBefore deletes the segments numbered below n.
func (l *Log) RemoveBefore(n uint64) error {
	segs, err := Segments(l.dir)
	if err != nil {
		return err
	}
	var removed int64
	for _, s := range segs {
		if s >= n {
			break
		}
		path := filepath.Join(l.dir, SegmentName(s))
		fi, err := os.Stat(path)
		if err == nil {
			removed += fi.Size()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal: remove: %w", err)
		}
	}
	l.mu.Lock()
	l.oldBytes -= removed
	if l.oldBytes < 0 {
		l.oldBytes = 0
	}
	l.mu.Unlock()
	return syncDir(l.dir)
}

// Size returns the bytes in all segments plus those pending.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oldBytes + l.fileBytes + int64(len(l.pending))
}

// Syncs returns how many fsyncs made records durable.
func (l *Log) Syncs() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncs
}

// Close writes and fsyncs what is pending and closes the segment.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	l.flush()
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	err := l.err
	l.mu.Unlock()
	close(l.kick)
	<-l.done
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if cerr := l.file.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: close: %w", cerr)
	}
	return err
}

// DecodeFrame reads one record from the front of buf. It returns the payload
// (aliasing buf) and the number of bytes consumed, or ErrTorn when buf does
// not start with a whole, intact record. It never panics.
func DecodeFrame(buf []byte) (payload []byte, n int, err error) {
	if len(buf) < HeaderSize {
		return nil, 0, ErrTorn
	}
	size := binary.LittleEndian.Uint32(buf[0:4])
	sum := binary.LittleEndian.Uint32(buf[4:8])
	if size > MaxRecordSize || uint64(len(buf)-HeaderSize) < uint64(size) {
		return nil, 0, ErrTorn
	}
	payload = buf[HeaderSize : HeaderSize+int(size)]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, ErrTorn
	}
	return payload, HeaderSize + int(size), nil
}

// ReplaySegment calls fn for each intact record of segment n in order,
// streaming the file. At the first torn record it truncates the file there
// (so the next crash does not meet it again) and returns the bytes cut off.
// An error from fn stops the replay and is returned. The payload passed to fn
// is only valid during the call.
func ReplaySegment(dir string, n uint64, fn func(payload []byte) error) (cut int64, err error) {
	path := filepath.Join(dir, SegmentName(n))
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("wal: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("wal: stat segment: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var (
		off     int64
		header  [HeaderSize]byte
		payload []byte
	)
	for off < fi.Size() {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			break
		}
		size := binary.LittleEndian.Uint32(header[0:4])
		if size > MaxRecordSize || int64(size) > fi.Size()-off-HeaderSize {
			break
		}
		if cap(payload) < int(size) {
			payload = make([]byte, size)
		}
		payload = payload[:size]
		if _, err := io.ReadFull(r, payload); err != nil {
			break
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(header[4:8]) {
			break
		}
		if err := fn(payload); err != nil {
			return 0, err
		}
		off += HeaderSize + int64(size)
	}
	if off == fi.Size() {
		return 0, nil
	}
	if err := os.Truncate(path, off); err != nil {
		return 0, fmt.Errorf("wal: cut torn tail: %w", err)
	}
	return fi.Size() - off, nil
}

// Reader iterates the records of one segment image in memory; used by tools
// and tests.
type Reader struct {
	data []byte
	off  int
}

// NewReader reads records from data.
func NewReader(data []byte) *Reader { return &Reader{data: data} }

// Next returns the next record, io.EOF at a clean end or ErrTorn.
func (r *Reader) Next() ([]byte, error) {
	if r.off == len(r.data) {
		return nil, io.EOF
	}
	payload, n, err := DecodeFrame(r.data[r.off:])
	if err != nil {
		return nil, err
	}
	r.off += n
	return payload, nil
}

// Offset is the position after the last record returned.
func (r *Reader) Offset() int { return r.off }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("wal: sync dir: %w", err)
	}
	return nil
}
