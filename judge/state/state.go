// Package state persists judge's alert registry (pending timers, firing
// alerts, notification counts, last values, undelivered recoveries) so a
// restart or kill -9 neither re-alerts nor forgets a recovery.
//
// Two files in the data directory: alerts.json, a snapshot replaced
// atomically, and alerts.journal, JSON lines appended and fsynced with
// each batch of state changes since that snapshot (a put or a removal per
// alert). Loading reads the snapshot and replays the journal; a torn last
// line (a crash mid-write) is ignored. Compact writes a new snapshot and
// empties the journal, so a change costs one small append, not a rewrite
// of every alert. Records are numbered and the snapshot names the last one
// it holds, so a crash between the two steps replays nothing twice.
package state

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/opskit/opskit/internal/atomicfile"
	"github.com/opskit/opskit/judge/engine"
)

// Version is the snapshot format's version.
const Version = 1

// File names in the data directory.
const (
	SnapshotFile = "alerts.json"
	JournalFile  = "alerts.journal"
)

type snapshot struct {
	Version int `json:"version"`
	// Seq is the last journal record the snapshot holds: a crash between
	// writing it and emptying the journal leaves records it already has,
	// which replay skips.
	Seq    uint64         `json:"seq"`
	Alerts []engine.Alert `json:"alerts"`
}

type record struct {
	Seq   uint64       `json:"seq"`
	Op    string       `json:"op"` // put or del
	Alert engine.Alert `json:"alert"`
}

// Store is the alert state on disk. It is not safe for concurrent use.
type Store struct {
	dir     string
	journal *os.File
	size    int64
	seq     uint64 // the last record's sequence number
}

// Open loads the state in dir and opens the journal for appending.
func Open(dir string) (*Store, []engine.Alert, error) {
	alerts, seq, err := load(dir)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, JournalFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open alert journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open alert journal: %w", err)
	}
	return &Store{dir: dir, journal: f, size: fi.Size(), seq: seq}, alerts, nil
}

// load returns the alerts and the last sequence number used.
func load(dir string) ([]engine.Alert, uint64, error) {
	byKey := map[string]engine.Alert{}
	var snap snapshot
	b, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, 0, fmt.Errorf("load alert state: %w", err)
	default:
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, 0, fmt.Errorf("load alert state %s: %w", SnapshotFile, err)
		}
		if snap.Version != Version {
			return nil, 0, fmt.Errorf("load alert state %s: version %d, want %d", SnapshotFile, snap.Version, Version)
		}
		for _, a := range snap.Alerts {
			if k := a.Identity(); k != "" {
				byKey[k] = a
			}
		}
	}
	seq := snap.Seq
	j, err := os.Open(filepath.Join(dir, JournalFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("load alert journal: %w", err)
	}
	if err == nil {
		defer j.Close()
		if seq, err = replay(j, byKey, snap.Seq); err != nil {
			return nil, 0, err
		}
	}
	out := make([]engine.Alert, 0, len(byKey))
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out, seq, nil
}

// replay applies journal records newer than after, in order, and returns
// the last sequence number seen. Only a final line without its newline may
// be damaged (a crash mid-append); it is ignored.
func replay(r io.Reader, byKey map[string]engine.Alert, after uint64) (uint64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	last := after
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return last, nil // a torn or empty tail
		}
		if err != nil {
			return 0, fmt.Errorf("load alert journal: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil {
			return 0, fmt.Errorf("load alert journal line %d: %w", n, err)
		}
		last = max(last, rec.Seq)
		k := rec.Alert.Identity()
		if k == "" || rec.Seq <= after {
			continue // already in the snapshot
		}
		switch rec.Op {
		case "put":
			byKey[k] = rec.Alert
		case "del":
			delete(byKey, k)
		default:
			return 0, fmt.Errorf("load alert journal line %d: unknown op %q", n, rec.Op)
		}
	}
}

// Append journals state changes and syncs them to disk.
func (s *Store) Append(put, removed []engine.Alert) error {
	if len(put) == 0 && len(removed) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	seq := s.seq
	for _, a := range put {
		seq++
		if err := enc.Encode(record{Seq: seq, Op: "put", Alert: a}); err != nil {
			return fmt.Errorf("encode alert: %w", err)
		}
	}
	for _, a := range removed {
		seq++
		if err := enc.Encode(record{Seq: seq, Op: "del", Alert: a}); err != nil {
			return fmt.Errorf("encode alert: %w", err)
		}
	}
	s.seq = seq
	n, err := s.journal.Write(buf.Bytes())
	s.size += int64(n)
	if err != nil {
		return fmt.Errorf("append alert journal: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("sync alert journal: %w", err)
	}
	return nil
}

// JournalSize is the journal's length in bytes.
func (s *Store) JournalSize() int64 { return s.size }

// Compact replaces the snapshot with alerts (every alert held, including
// every change journaled so far) and empties the journal.
func (s *Store) Compact(alerts []engine.Alert) error {
	b, err := json.Marshal(snapshot{Version: Version, Seq: s.seq, Alerts: alerts})
	if err != nil {
		return fmt.Errorf("encode alert state: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, SnapshotFile), b, 0o640); err != nil {
		return fmt.Errorf("save alert state: %w", err)
	}
	// The snapshot holds everything the journal said: empty it.
	if err := s.journal.Truncate(0); err != nil {
		return fmt.Errorf("truncate alert journal: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("sync alert journal: %w", err)
	}
	s.size = 0
	return nil
}

// Close closes the journal.
func (s *Store) Close() error { return s.journal.Close() }
