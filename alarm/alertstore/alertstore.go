// Package alertstore holds the current alerts, in memory for reads and in
// an append-only log for durability: an alert is synced to disk before its
// POST is answered, so a kill -9 forgets no alert that was acknowledged
// (where Alertmanager keeps alerts in memory only).
package alertstore

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

// Store is the set of current alerts by fingerprint.
type Store struct {
	log       *alertLog
	now       func() time.Time
	retention time.Duration

	mu sync.RWMutex
	m  map[alert.Fingerprint]*alert.Alert
}

// DefaultLogBytes is the log size that triggers a compaction.
const DefaultLogBytes = 64 << 20

// Open loads the alerts kept in dir. Resolved alerts are kept for
// retention after they end, then dropped by GC. The log is compacted when
// it passes maxLogBytes (0 = DefaultLogBytes).
func Open(dir string, now func() time.Time, retention time.Duration, maxLogBytes int64) (*Store, error) {
	if maxLogBytes <= 0 {
		maxLogBytes = DefaultLogBytes
	}
	s := &Store{now: now, retention: retention, m: map[alert.Fingerprint]*alert.Alert{}}
	l, err := openLog(dir, maxLogBytes, func(r record) {
		if r.Alert != nil {
			s.m[r.Alert.Fingerprint()] = r.Alert
			return
		}
		if fp, err := alert.ParseFingerprint(r.Removed); err == nil {
			delete(s.m, fp)
		}
	}, s.all)
	if err != nil {
		return nil, fmt.Errorf("load alerts: %w", err)
	}
	s.log = l
	return s, nil
}

// Close stops the log writer.
func (s *Store) Close() error { return s.log.close() }

func (s *Store) all() []*alert.Alert {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*alert.Alert, 0, len(s.m))
	for _, a := range s.m {
		out = append(out, a)
	}
	return out
}

// Put merges each alert with the stored one of the same labels and stores
// the result durably. It returns the alerts as now stored, in input order.
func (s *Store) Put(alerts []*alert.Alert) ([]*alert.Alert, error) {
	now := s.now()
	out := make([]*alert.Alert, len(alerts))
	recs := make([][]byte, len(alerts))
	s.mu.Lock()
	for i, a := range alerts {
		fp := a.Fingerprint()
		if old := s.m[fp]; old != nil {
			a = alert.Merge(old, a, now)
		}
		// Encoded under the lock, with the map update: two reports of one
		// alert must reach the log in the order they changed the map.
		rec, err := json.Marshal(record{Alert: a})
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.m[fp] = a
		out[i] = a
		recs[i] = rec
	}
	// Queued under the lock: the log keeps the order of the map updates.
	done := s.log.enqueue(recs)
	s.mu.Unlock()
	if err := <-done; err != nil {
		return nil, fmt.Errorf("store alerts: %w", err)
	}
	return out, nil
}

// Get returns the alert with fingerprint fp.
func (s *Store) Get(fp alert.Fingerprint) (*alert.Alert, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.m[fp]
	return a, ok
}

// List returns every alert, sorted by labels. Alerts are never changed in
// place, so the caller may keep the pointers.
func (s *Store) List() []*alert.Alert {
	s.mu.RLock()
	out := make([]*alert.Alert, 0, len(s.m))
	for _, a := range s.m {
		out = append(out, a)
	}
	s.mu.RUnlock()
	keys := make(map[*alert.Alert]string, len(out))
	for _, a := range out {
		keys[a] = a.Labels.String()
	}
	sort.Slice(out, func(i, j int) bool { return keys[out[i]] < keys[out[j]] })
	return out
}

// Len is the number of alerts held.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// Counts returns how many alerts fire and how many are resolved.
func (s *Store) Counts() (firing, resolved int) {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, a := range s.m {
		if a.Resolved(now) {
			resolved++
		} else {
			firing++
		}
	}
	return firing, resolved
}

// GC drops alerts resolved for longer than the retention and returns them.
func (s *Store) GC() ([]*alert.Alert, error) {
	cutoff := s.now().Add(-s.retention)
	var gone []*alert.Alert
	var recs [][]byte
	s.mu.Lock()
	for fp, a := range s.m {
		if a.Resolved(cutoff) {
			gone = append(gone, a)
			rec, _ := json.Marshal(record{Removed: fp.String()})
			recs = append(recs, rec)
			delete(s.m, fp)
		}
	}
	var done <-chan error
	if len(recs) > 0 {
		done = s.log.enqueue(recs)
	}
	s.mu.Unlock()
	if done != nil {
		if err := <-done; err != nil {
			return nil, err
		}
	}
	return gone, nil
}
