package alertstore

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/internal/atomicfile"
)

// The alert log is an append-only file of framed records, written with
// group commit: concurrent Puts share one fdatasync. Alerts arrive with
// random fingerprints, which a B+tree would scatter over many pages per
// commit; an append costs one sequential write. When the log grows past
// its limit it is compacted: a snapshot of every current alert is written
// atomically and the log starts over.
//
// Frame: uint32 length, uint32 CRC-32C of the payload, payload. In a log
// segment the payload is a uint64 sequence number and the record's JSON;
// in the snapshot, JSON (a header, then one alert per frame).
// A torn or corrupt tail (a crash mid-write) ends the replay and is cut off.
//
// Files: alerts-NNNNNNNN.log segments and alerts.snapshot. A compaction
// starts a new segment, snapshots the alerts in the background (writes go
// on into the new segment meanwhile), then deletes the older segments.
// Records carry increasing sequence numbers; the snapshot names the last
// one it includes, and replay skips records at or below it.

const snapshotName = "alerts.snapshot"

func segmentName(n int) string { return fmt.Sprintf("alerts-%08d.log", n) }

// segments lists the segment numbers in dir, ascending.
func segments(dir string) ([]int, error) {
	names, err := filepath.Glob(filepath.Join(dir, "alerts-*.log"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, name := range names {
		var n int
		if _, err := fmt.Sscanf(filepath.Base(name), "alerts-%08d.log", &n); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// record is one log entry: the full state of an alert, or its removal.
type record struct {
	Alert   *alert.Alert `json:"alert,omitempty"`
	Removed string       `json:"removed,omitempty"` // fingerprint
}

type snapshotHeader struct {
	Seq uint64 `json:"seq"` // every record up to Seq is in the snapshot
}

type appendReq struct {
	recs [][]byte // JSON records
	done chan error
}

// alertLog is the durable side of the Store.
type alertLog struct {
	dir      string
	maxBytes int64
	// snapshot returns the current alerts for compaction.
	snapshot func() []*alert.Alert

	reqs chan appendReq
	stop chan struct{}
	wg   sync.WaitGroup

	f          *os.File
	segment    int
	size       int64
	seq        uint64
	compacting bool
	compacted  chan error
}

func frame(buf []byte, payload []byte) []byte {
	var h [8]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, crcTable))
	buf = append(buf, h[:]...)
	return append(buf, payload...)
}

// frameRecord appends a log frame holding seq and the record's JSON.
func frameRecord(buf []byte, seq uint64, rec []byte) []byte {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(8+len(rec)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	crc := crc32.Update(crc32.Checksum(h[8:], crcTable), crcTable, rec)
	binary.LittleEndian.PutUint32(h[4:8], crc)
	buf = append(buf, h[:]...)
	return append(buf, rec...)
}

// readFrames calls fn for each intact frame of r and returns the offset
// after the last one.
func readFrames(r io.Reader, fn func(payload []byte) error) (int64, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var off int64
	var h [8]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return off, nil // end, or a torn header
		}
		n := binary.LittleEndian.Uint32(h[:4])
		if n > 64<<20 {
			return off, nil // garbage length: a torn tail
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return off, nil
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(h[4:]) {
			return off, nil
		}
		if err := fn(payload); err != nil {
			return off, err
		}
		off += 8 + int64(n)
	}
}

// openLog replays snapshot and log into apply, cuts a torn tail and starts
// the writer.
func openLog(dir string, maxBytes int64, apply func(record), snapshot func() []*alert.Alert) (*alertLog, error) {
	l := &alertLog{dir: dir, maxBytes: maxBytes, snapshot: snapshot, reqs: make(chan appendReq, 1024), stop: make(chan struct{})}
	var snapSeq uint64
	if f, err := os.Open(filepath.Join(dir, snapshotName)); err == nil {
		first := true
		_, err = readFrames(f, func(p []byte) error {
			if first {
				first = false
				var h snapshotHeader
				if err := json.Unmarshal(p, &h); err != nil {
					return fmt.Errorf("snapshot header: %w", err)
				}
				snapSeq = h.Seq
				return nil
			}
			a := &alert.Alert{}
			if err := json.Unmarshal(p, a); err != nil {
				return fmt.Errorf("snapshot alert: %w", err)
			}
			apply(record{Alert: a})
			return nil
		})
		f.Close()
		if err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l.seq = snapSeq
	segs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		segs = []int{1}
	}
	for i, n := range segs {
		last := i == len(segs)-1
		f, err := os.OpenFile(filepath.Join(dir, segmentName(n)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		end, err := readFrames(f, func(p []byte) error {
			if len(p) < 8 {
				return fmt.Errorf("log record of %d bytes", len(p))
			}
			seq := binary.LittleEndian.Uint64(p)
			if seq <= l.seq {
				return nil // already in the snapshot (or replayed)
			}
			var r record
			if err := json.Unmarshal(p[8:], &r); err != nil {
				return fmt.Errorf("log record: %w", err)
			}
			l.seq = seq
			apply(r)
			return nil
		})
		if err == nil && last {
			// Only the newest segment can have a torn tail: cut it off.
			if err = f.Truncate(end); err == nil {
				_, err = f.Seek(end, io.SeekStart)
			}
		}
		if err != nil || !last {
			f.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", segmentName(n), err)
		}
		if last {
			l.f, l.segment, l.size = f, n, end
		}
	}
	l.wg.Add(1)
	go l.writer()
	return l, nil
}

// enqueue queues recs for the writer and returns the channel that gets the
// result once they are synced. Records are written in enqueue order, so a
// caller holding its own lock across enqueue keeps the log in its order.
func (l *alertLog) enqueue(recs [][]byte) <-chan error {
	req := appendReq{recs: recs, done: make(chan error, 1)}
	select {
	case l.reqs <- req:
	case <-l.stop:
		req.done <- errors.New("alert log closed")
	}
	return req.done
}

func (l *alertLog) writer() {
	defer l.wg.Done()
	var buf []byte
	for {
		var batch []appendReq
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.stop:
			// Nobody waits unanswered: late requests get an error.
			for {
				select {
				case r := <-l.reqs:
					r.done <- errors.New("alert log closed")
				default:
					return
				}
			}
		}
		// Take whatever else is waiting: one sync for all of it.
	more:
		for len(batch) < 4096 {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		buf = buf[:0]
		for _, req := range batch {
			for _, rec := range req.recs {
				l.seq++
				buf = frameRecord(buf, l.seq, rec)
			}
		}
		_, err := l.f.Write(buf)
		if err == nil {
			err = l.f.Sync()
		}
		l.size += int64(len(buf))
		for _, req := range batch {
			req.done <- err
		}
		l.maybeCompact()
	}
}

// maybeCompact starts a compaction when the segment is over the limit and
// none runs; it also collects the result of a finished one.
func (l *alertLog) maybeCompact() {
	if l.compacting {
		select {
		case <-l.compacted:
			l.compacting = false
		default:
			return
		}
	}
	if l.size <= l.maxBytes {
		return
	}
	// New records go to a new segment; the snapshot covers up to seq.
	next, err := os.OpenFile(filepath.Join(l.dir, segmentName(l.segment+1)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	atomicfile.SyncDir(l.dir)
	l.f.Close()
	l.f, l.segment, l.size = next, l.segment+1, 0
	seq, keepFrom := l.seq, l.segment
	l.compacting = true
	l.compacted = make(chan error, 1)
	go func() { l.compacted <- l.compact(seq, keepFrom) }()
}

// compact writes a snapshot of every current alert, covering the records
// up to seq, then deletes the segments before keepFrom.
func (l *alertLog) compact(seq uint64, keepFrom int) error {
	alerts := l.snapshot()
	w, err := atomicfile.Create(filepath.Join(l.dir, snapshotName), 0o600)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	h, _ := json.Marshal(snapshotHeader{Seq: seq})
	var buf []byte
	buf = frame(buf[:0], h)
	bw.Write(buf)
	for _, a := range alerts {
		p, err := json.Marshal(a)
		if err != nil {
			w.Abort()
			return err
		}
		buf = frame(buf[:0], p)
		bw.Write(buf)
	}
	if err := bw.Flush(); err != nil {
		w.Abort()
		return err
	}
	if err := w.Commit(); err != nil {
		return err
	}
	// The snapshot holds every record up to seq: older segments can go.
	segs, err := segments(l.dir)
	if err != nil {
		return err
	}
	for _, n := range segs {
		if n < keepFrom {
			if err := os.Remove(filepath.Join(l.dir, segmentName(n))); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *alertLog) close() error {
	close(l.stop)
	l.wg.Wait()
	if l.compacting {
		<-l.compacted
	}
	return l.f.Close()
}
