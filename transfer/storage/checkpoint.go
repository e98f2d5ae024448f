package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// The checkpoint file (index.ckpt) is the persisted index and series state:
//
//	magic      "opskit-rrd-ckpt1"
//	uvarint    first WAL segment to replay
//	uvarint    next series id
//	entries    uvarint length + entry, ended by a zero length; an entry is
//	           the series definition (as in a WAL create record), its slab,
//	           slot and last-seen time, then a copy of its state block
//	crc32c     of everything before, little endian
//
// It is written to a temporary file, fsynced and renamed over the old one.

const checkpointMagic = "opskit-rrd-ckpt1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Checkpoint makes the data files durable, persists the index and the state
// of every series, and removes the WAL segments this covers. It runs every
// Options.CheckpointInterval and at Close.
func (e *Engine) Checkpoint() error {
	e.checkpointMu.Lock()
	defer e.checkpointMu.Unlock()
	if e.closed.Load() {
		return ErrClosed
	}
	// Every record in a segment before seg was applied before Cut returned,
	// because applying and logging happen together under a shard lock, inside
	// applyMu held shared, and this holds it exclusively.
	e.applyMu.Lock()
	seg, err := e.wal.Cut()
	nextID := e.nextID
	e.applyMu.Unlock()
	if err != nil {
		return fmt.Errorf("storage: checkpoint: %w", err)
	}

	e.idMu.RLock()
	all := make([]*series, 0, len(e.byID))
	for _, s := range e.byID {
		all = append(all, s)
	}
	e.idMu.RUnlock()
	slices.SortFunc(all, func(a, b *series) int {
		if a.id < b.id {
			return -1
		}
		if a.id > b.id {
			return 1
		}
		return 0
	})

	path := filepath.Join(e.dir, checkpointFile)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	defer os.Remove(tmp) // no-op after the rename
	h := crc32.New(crcTable)
	bw := bufio.NewWriterSize(f, 1<<20)
	w := io.MultiWriter(bw, h)
	head := []byte(checkpointMagic)
	head = binary.AppendUvarint(head, seg)
	head = binary.AppendUvarint(head, nextID)
	if _, err := w.Write(head); err != nil {
		f.Close()
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	var chunk, entry []byte
	for len(all) > 0 {
		part := all[:min(len(all), 1024)]
		all = all[len(part):]
		chunk = chunk[:0]
		e.applyMu.Lock()
		for _, s := range part {
			if s.dead {
				continue
			}
			entry = appendSeriesDef(entry[:0], &createRecord{ID: s.id, Start: s.start, Layout: *s.lay, Labels: s.labels})
			entry = binary.AppendUvarint(entry, uint64(s.ref.Slab))
			entry = binary.AppendUvarint(entry, uint64(s.ref.Slot))
			entry = binary.AppendVarint(entry, s.lastSeen.Load())
			entry = append(entry, s.view.buf[:stateBlockSize(s.lay)]...)
			chunk = binary.AppendUvarint(chunk, uint64(len(entry)))
			chunk = append(chunk, entry...)
		}
		e.applyMu.Unlock()
		if _, err := w.Write(chunk); err != nil {
			f.Close()
			return fmt.Errorf("storage: checkpoint: %w", err)
		}
	}
	if _, err := w.Write([]byte{0}); err != nil {
		f.Close()
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	if _, err := bw.Write(binary.LittleEndian.AppendUint32(nil, h.Sum32())); err != nil {
		f.Close()
		return fmt.Errorf("storage: checkpoint: %w", err)
	}

	// The rows behind the copied states must be on disk before the
	// checkpoint that relies on them.
	e.createMu.Lock()
	slabs := e.slabList()
	e.createMu.Unlock()
	for _, s := range slabs {
		if err := s.sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := syncDir(e.slabs.dir); err != nil { // slab files created since the last checkpoint
		f.Close()
		return err
	}

	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	if err := syncDir(e.dir); err != nil {
		return err
	}
	if err := e.wal.RemoveBefore(seg); err != nil {
		return fmt.Errorf("storage: checkpoint: %w", err)
	}
	e.checkpoints.Add(1)
	return nil
}

func (e *Engine) slabList() []*slab {
	var out []*slab
	for _, c := range e.slabs.classes {
		out = append(out, c.slabs...)
	}
	return out
}

func stateBlockSize(l *layout) int64 { return stateSize + cdpSize*int64(len(l.archives)) }

// loadCheckpoint restores the index and series states and returns the first
// WAL segment to replay (0 when there is no checkpoint).
func (e *Engine) loadCheckpoint() (uint64, error) {
	path := filepath.Join(e.dir, checkpointFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("storage: open checkpoint: %w", err)
	}
	defer f.Close()
	fail := func(what string, err error) (uint64, error) {
		return 0, fmt.Errorf("storage: checkpoint %s: %s: %w", path, what, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail("stat", err)
	}
	body := fi.Size() - 4
	if body < int64(len(checkpointMagic)) {
		return fail("size", errCorrupt)
	}
	// First pass: the checksum, so a damaged file is refused before any
	// state is restored from it.
	h := crc32.New(crcTable)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, body)); err != nil {
		return fail("read", err)
	}
	var tail [4]byte
	if _, err := f.ReadAt(tail[:], body); err != nil {
		return fail("read", err)
	}
	if binary.LittleEndian.Uint32(tail[:]) != h.Sum32() {
		return fail("checksum", errCorrupt)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, body), 1<<20)
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != checkpointMagic {
		return fail("header", errCorrupt)
	}
	seg, err := binary.ReadUvarint(r)
	if err != nil {
		return fail("header", err)
	}
	nextID, err := binary.ReadUvarint(r)
	if err != nil {
		return fail("header", err)
	}
	e.nextID = max(nextID, 1)
	var entry []byte
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return fail("entry", err)
		}
		if n == 0 {
			break
		}
		if n > 1<<26 {
			return fail("entry", errCorrupt)
		}
		entry = slices.Grow(entry[:0], int(n))[:n]
		if _, err := io.ReadFull(r, entry); err != nil {
			return fail("entry", err)
		}
		if err := e.loadEntry(entry); err != nil {
			return fail("entry", err)
		}
	}
	return seg, nil
}

func (e *Engine) loadEntry(entry []byte) error {
	d := decoder{buf: entry}
	c := d.seriesDef()
	slab := d.uvarint()
	slot := d.uvarint()
	lastSeen := d.varint()
	if d.err != nil {
		return d.err
	}
	lay := e.internLayout(c.Layout)
	block := d.bytes(uint64(stateBlockSize(lay)))
	if d.err != nil || len(d.buf) != 0 || slab > 1<<30 || slot > 1<<30 {
		return errCorrupt
	}
	if _, dup := e.byID[c.ID]; dup {
		return fmt.Errorf("series %d twice: %w", c.ID, errCorrupt)
	}
	size := SlotSize(lay.archives)
	ref := slotRef{Slab: int32(slab), Slot: int32(slot)}
	if err := e.slabs.markUsed(size, ref); err != nil {
		return err
	}
	buf := e.slabs.slot(size, ref)
	copy(buf, block)
	s := &series{
		id:     c.ID,
		key:    c.Labels.Key(),
		labels: c.Labels,
		lay:    lay,
		size:   size,
		start:  c.Start,
		ref:    ref,
		view:   rrdView{lay: lay, owner: uint32(c.ID), buf: buf},
		shard:  e.applyShardOf(ref),
	}
	s.lastSeen.Store(lastSeen)
	e.register(s)
	e.nextID = max(e.nextID, c.ID+1)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: sync dir: %w", err)
	}
	return nil
}
