// Package alertstore holds the current alerts, in memory for reads and in
// the state file for durability: an alert is on disk before its POST is
// answered, so a kill -9 forgets no alert that was acknowledged (where
// Alertmanager keeps alerts in memory only).
package alertstore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

// Store is the set of current alerts by fingerprint.
type Store struct {
	db        *store.DB
	now       func() time.Time
	retention time.Duration

	mu sync.RWMutex
	m  map[alert.Fingerprint]*alert.Alert
}

// Open loads the alerts kept in db. Resolved alerts are kept for
// retention after they end, then dropped by GC.
func Open(db *store.DB, now func() time.Time, retention time.Duration) (*Store, error) {
	s := &Store{db: db, now: now, retention: retention, m: map[alert.Fingerprint]*alert.Alert{}}
	err := db.ForEach(store.Alerts, nil, func(k, v []byte) error {
		a := &alert.Alert{}
		if err := json.Unmarshal(v, a); err != nil {
			return fmt.Errorf("alert %x: %w", k, err)
		}
		s.m[a.Fingerprint()] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load alerts: %w", err)
	}
	return s, nil
}

func key(fp alert.Fingerprint) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(fp))
	return k[:]
}

// Put merges each alert with the stored one of the same labels and stores
// the result durably. It returns the alerts as now stored, in input order.
func (s *Store) Put(alerts []*alert.Alert) ([]*alert.Alert, error) {
	now := s.now()
	out := make([]*alert.Alert, len(alerts))
	kvs := make([]store.KV, len(alerts))
	s.mu.Lock()
	for i, a := range alerts {
		fp := a.Fingerprint()
		if old := s.m[fp]; old != nil {
			a = alert.Merge(old, a, now)
		}
		s.m[fp] = a
		out[i] = a
		v, err := json.Marshal(a)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		kvs[i] = store.KV{Key: key(fp), Value: v}
	}
	s.mu.Unlock()
	if err := s.db.Write(store.Alerts, kvs); err != nil {
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
	var kvs []store.KV
	s.mu.Lock()
	for fp, a := range s.m {
		if a.Resolved(cutoff) {
			gone = append(gone, a)
			kvs = append(kvs, store.KV{Key: key(fp)})
			delete(s.m, fp)
		}
	}
	s.mu.Unlock()
	if err := s.db.Write(store.Alerts, kvs); err != nil {
		return nil, err
	}
	return gone, nil
}
