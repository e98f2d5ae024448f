// Package store keeps deployer's state in bbolt (fsynced at each commit):
// deploys with their per-host steps and events, the per-app/env queue,
// the release catalog, the audit log, and the lease whose fencing token
// every state write must carry.
package store

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta     = []byte("meta")
	bucketDeploys  = []byte("deploys")
	bucketEvents   = []byte("events")
	bucketAudit    = []byte("audit")
	bucketReleases = []byte("releases")
	bucketTasks    = []byte("tasks")
	// bucketIndex holds each deploy's few fields that lists filter on, so
	// a list never decodes deploys it does not return.
	bucketIndex = []byte("index")
	// bucketEventLog holds every event in one order while events are
	// shipped elsewhere (ClickHouse), until the shipper trims them.
	bucketEventLog = []byte("eventlog")

	keyLease = []byte("lease")
	keySeq   = []byte("seq")
	keyNonce = []byte("nonce")
)

// Errors.
var (
	ErrNotFound = errors.New("not found")
	// ErrFenced refuses a write whose token is not the lease's: another
	// instance took over.
	ErrFenced = errors.New("fenced: this instance no longer holds the deployer lease")
	// ErrLeaseHeld says another instance holds an unexpired lease.
	ErrLeaseHeld = errors.New("the deployer lease is held by another instance")
	// ErrConflict is a request that does not fit the deploy's state.
	ErrConflict = errors.New("conflict")
)

// Store is deployer's database.
type Store struct {
	db    *bolt.DB
	nonce string
	// logEvents keeps events in bucketEventLog too, for a shipper.
	logEvents atomic.Bool

	mu      sync.Mutex
	changed chan struct{}
}

// Open opens (creating) <dir>/deployer.db. Another process holding it
// makes Open wait up to timeout.
func Open(dir string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, "deployer.db"), 0o640, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{db: db, changed: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketDeploys, bucketEvents, bucketAudit, bucketReleases, bucketTasks, bucketIndex, bucketEventLog} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := rebuildIndex(tx); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if n := meta.Get(keyNonce); n != nil {
			s.nonce = string(n)
			return nil
		}
		// The nonce keeps deploy ids (and so agent task ids) unique even
		// if this store is ever replaced by an empty one.
		var b [3]byte
		_, _ = rand.Read(b[:])
		s.nonce = hex.EncodeToString(b[:])
		return meta.Put(keyNonce, []byte(s.nonce))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Changed returns a channel closed at the next committed change of a
// deploy (for long polls).
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) broadcast() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func nextSeq(b *bolt.Bucket) (uint64, error) { return b.NextSequence() }

// Acquire takes the lease for holder if it is free, expired or already
// holder's. A new holder gets a token one above the last; holder renewing
// keeps its token.
func (s *Store) Acquire(holder string, ttl time.Duration, now time.Time) (Lease, error) {
	var l Lease
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if b := meta.Get(keyLease); b != nil {
			if err := json.Unmarshal(b, &l); err != nil {
				return fmt.Errorf("lease record: %w", err)
			}
		}
		if l.Holder != holder {
			if l.Holder != "" && now.Before(l.Expires) {
				return fmt.Errorf("%w (%s until %s)", ErrLeaseHeld, l.Holder, l.Expires.Format(time.RFC3339))
			}
			l.Holder = holder
			l.Token++
		}
		l.Expires = now.Add(ttl)
		b, _ := json.Marshal(l)
		return meta.Put(keyLease, b)
	})
	return l, err
}

// Renew extends holder's lease; ErrFenced if another took it.
func (s *Store) Renew(holder string, token uint64, ttl time.Duration, now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		l, err := checkLease(tx, token)
		if err != nil {
			return err
		}
		if l.Holder != holder {
			return ErrFenced
		}
		l.Expires = now.Add(ttl)
		b, _ := json.Marshal(l)
		return tx.Bucket(bucketMeta).Put(keyLease, b)
	})
}

// ReleaseLease gives the lease up (at a graceful stop) so another instance
// need not wait for it to expire.
func (s *Store) ReleaseLease(holder string, token uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		l, err := checkLease(tx, token)
		if err != nil || l.Holder != holder {
			return err
		}
		l.Expires = time.Time{}
		b, _ := json.Marshal(l)
		return tx.Bucket(bucketMeta).Put(keyLease, b)
	})
}

// CurrentLease reads the lease.
func (s *Store) CurrentLease() (Lease, error) {
	var l Lease
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta).Get(keyLease); b != nil {
			return json.Unmarshal(b, &l)
		}
		return nil
	})
	return l, err
}

func checkLease(tx *bolt.Tx, token uint64) (Lease, error) {
	var l Lease
	b := tx.Bucket(bucketMeta).Get(keyLease)
	if b == nil {
		return l, ErrFenced
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("lease record: %w", err)
	}
	if l.Token != token {
		return l, ErrFenced
	}
	return l, nil
}

// Enqueue stores a new deploy as queued, giving it its id and place, and
// records its package in the release catalog. A version already known
// with another sha256 is refused: a version names one package (as on the
// agents).
func (s *Store) Enqueue(d *Deploy, now time.Time) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if d.Kind == KindDeploy {
			rel := tx.Bucket(bucketReleases)
			key := []byte(d.App + "\x00" + d.Version)
			if b := rel.Get(key); b != nil {
				var r Release
				if err := json.Unmarshal(b, &r); err == nil && r.SHA256 != d.SHA256 {
					return fmt.Errorf("%w: %s %s was submitted before with sha256 %s: a version names one package", ErrConflict, d.App, d.Version, r.SHA256)
				}
			}
			b, _ := json.Marshal(Release{App: d.App, Version: d.Version, Artifact: d.Artifact, SHA256: d.SHA256, Signature: d.Signature, Added: now})
			if err := rel.Put(key, b); err != nil {
				return err
			}
		}
		seq, err := nextSeq(tx.Bucket(bucketDeploys))
		if err != nil {
			return err
		}
		d.Seq = int64(seq)
		d.ID = fmt.Sprintf("d%d-%s", seq, s.nonce)
		d.State = Queued
		d.Created = now
		if d.Attempt == 0 {
			d.Attempt = 1
		}
		d.EventSeq = 1
		if err := s.putEvent(tx, d, Event{Seq: 1, Time: now, Deploy: d.ID, Kind: "state", State: Queued, Version: d.Version}); err != nil {
			return err
		}
		return putDeploy(tx, d)
	})
	if err == nil {
		s.broadcast()
	}
	return err
}

func putDeploy(tx *bolt.Tx, d *Deploy) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := putIndex(tx, d); err != nil {
		return err
	}
	return tx.Bucket(bucketDeploys).Put([]byte(d.ID), b)
}

// indexEntry is what lists filter and sort on.
type indexEntry struct {
	ID       string `json:"id"`
	Seq      int64  `json:"seq"`
	App      string `json:"app"`
	Env      string `json:"env"`
	State    string `json:"state"`
	Priority bool   `json:"priority,omitempty"`
}

func putIndex(tx *bolt.Tx, d *Deploy) error {
	b, _ := json.Marshal(indexEntry{ID: d.ID, Seq: d.Seq, App: d.App, Env: d.Env, State: d.State, Priority: d.Priority})
	return tx.Bucket(bucketIndex).Put([]byte(d.ID), b)
}

// rebuildIndex fills the index of a store written before it existed.
func rebuildIndex(tx *bolt.Tx) error {
	if tx.Bucket(bucketIndex).Stats().KeyN > 0 || tx.Bucket(bucketDeploys).Stats().KeyN == 0 {
		return nil
	}
	return tx.Bucket(bucketDeploys).ForEach(func(_, v []byte) error {
		var d Deploy
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		return putIndex(tx, &d)
	})
}

func getDeploy(tx *bolt.Tx, id string) (*Deploy, error) {
	b := tx.Bucket(bucketDeploys).Get([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("deploy %s: %w", id, ErrNotFound)
	}
	var d Deploy
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("deploy %s record: %w", id, err)
	}
	return &d, nil
}

func (s *Store) putEvent(tx *bolt.Tx, d *Deploy, e Event) error {
	b, _ := json.Marshal(e)
	if err := tx.Bucket(bucketEvents).Put(append([]byte(e.Deploy+"\x00"), u64(uint64(e.Seq))...), b); err != nil {
		return err
	}
	if !s.logEvents.Load() {
		return nil
	}
	log := tx.Bucket(bucketEventLog)
	seq, err := log.NextSequence()
	if err != nil {
		return err
	}
	b, _ = json.Marshal(LoggedEvent{App: d.App, Env: d.Env, Event: e})
	return log.Put(u64(seq), b)
}

// LoggedEvent is an event in the shipping log, with its deploy's app and
// environment.
type LoggedEvent struct {
	Pos   uint64 `json:"-"`
	App   string `json:"app"`
	Env   string `json:"env"`
	Event Event  `json:"event"`
}

// LogEvents makes every event from now on also go to the shipping log,
// read by EventLog and emptied by TrimEventLog.
func (s *Store) LogEvents() { s.logEvents.Store(true) }

// EventLog returns up to limit of the oldest events not yet trimmed.
func (s *Store) EventLog(limit int) ([]LoggedEvent, error) {
	var out []LoggedEvent
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEventLog).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			var e LoggedEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event log record: %w", err)
			}
			e.Pos = binary.BigEndian.Uint64(k)
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// TrimEventLog drops the shipped events up to pos.
func (s *Store) TrimEventLog(pos uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEventLog).Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= pos; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// State reads a deploy's state from the index, without decoding the
// deploy (for long polls woken at every change).
func (s *Store) State(id string) (string, error) {
	var e indexEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIndex).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("deploy %s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(b, &e)
	})
	return e.State, err
}

// Get reads a deploy.
func (s *Store) Get(id string) (*Deploy, error) {
	var d *Deploy
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		d, err = getDeploy(tx, id)
		return err
	})
	return d, err
}

// Tx is what an update function may do besides changing the deploy.
type Tx struct {
	s   *Store
	tx  *bolt.Tx
	d   *Deploy
	now time.Time
}

// Emit appends an event to the deploy.
func (t *Tx) Emit(e Event) {
	t.d.EventSeq++
	e.Seq = t.d.EventSeq
	e.Deploy = t.d.ID
	if e.Time.IsZero() {
		e.Time = t.now
	}
	_ = t.s.putEvent(t.tx, t.d, e)
}

// IndexTask makes a task id findable by TaskRef.
func (t *Tx) IndexTask(taskID string, ref TaskRef) error {
	b, _ := json.Marshal(ref)
	return t.tx.Bucket(bucketTasks).Put([]byte(taskID), b)
}

// Release looks a version's package up in the same transaction.
func (t *Tx) Release(app, version string) (Release, bool) {
	return getRelease(t.tx, app, version)
}

// Update changes one deploy in a transaction that first checks token
// against the lease (ErrFenced if another instance holds it). fn's error
// aborts the whole change.
func (s *Store) Update(token uint64, id string, now time.Time, fn func(d *Deploy, tx *Tx) error) (*Deploy, error) {
	var out *Deploy
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := checkLease(tx, token); err != nil {
			return err
		}
		before := tx.Bucket(bucketDeploys).Get([]byte(id))
		d, err := getDeploy(tx, id)
		if err != nil {
			return err
		}
		if err := fn(d, &Tx{s: s, tx: tx, d: d, now: now}); err != nil {
			return err
		}
		out = d
		after, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if bytes.Equal(before, after) {
			return errUnchanged // nothing to write: no commit, no fsync
		}
		if err := putIndex(tx, d); err != nil {
			return err
		}
		return tx.Bucket(bucketDeploys).Put([]byte(d.ID), after)
	})
	if errors.Is(err, errUnchanged) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	s.broadcast()
	return out, nil
}

var errUnchanged = errors.New("unchanged")

// Filter selects deploys; empty fields match all.
type Filter struct {
	App    string
	Env    string
	States []string
	Limit  int
}

// List returns the deploys matching f, newest first.
func (s *Store) List(f Filter) ([]*Deploy, error) {
	var out []*Deploy
	err := s.db.View(func(tx *bolt.Tx) error {
		var match []indexEntry
		err := tx.Bucket(bucketIndex).ForEach(func(_, v []byte) error {
			var e indexEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if (f.App == "" || f.App == e.App) && (f.Env == "" || f.Env == e.Env) &&
				(len(f.States) == 0 || slices.Contains(f.States, e.State)) {
				match = append(match, e)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(match, func(a, b indexEntry) int { return cmp.Compare(b.Seq, a.Seq) })
		if f.Limit > 0 && len(match) > f.Limit {
			match = match[:f.Limit]
		}
		for _, e := range match {
			d, err := getDeploy(tx, e.ID)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// Queue returns the queued deploys in the order they will start: per app
// and environment, priority ones (rollbacks) first, then by submission.
func (s *Store) Queue() ([]*Deploy, error) {
	ds, err := s.List(Filter{States: []string{Queued}})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ds, func(a, b *Deploy) int {
		if a.Priority != b.Priority {
			if a.Priority {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	return ds, nil
}

// Task finds a task id's deploy and host.
func (s *Store) Task(taskID string) (TaskRef, error) {
	var ref TaskRef
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks).Get([]byte(taskID))
		if b == nil {
			return fmt.Errorf("task %s: %w", taskID, ErrNotFound)
		}
		return json.Unmarshal(b, &ref)
	})
	return ref, err
}

// Events returns a deploy's events after seq (at most limit).
func (s *Store) Events(id string, after int64, limit int) ([]Event, error) {
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(id + "\x00")
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(append(slices.Clone(prefix), u64(uint64(after+1))...)); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

func getRelease(tx *bolt.Tx, app, version string) (Release, bool) {
	var r Release
	b := tx.Bucket(bucketReleases).Get([]byte(app + "\x00" + version))
	if b == nil || json.Unmarshal(b, &r) != nil {
		return Release{}, false
	}
	return r, true
}

// Release looks a version's package up in the catalog.
func (s *Store) Release(app, version string) (Release, bool) {
	var r Release
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		r, ok = getRelease(tx, app, version)
		return nil
	})
	return r, ok
}

// Audit appends an audit entry.
func (s *Store) Audit(e AuditEntry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		seq, err := nextSeq(b)
		if err != nil {
			return err
		}
		e.Seq = int64(seq)
		v, _ := json.Marshal(e)
		return b.Put(u64(seq), v)
	})
}

// AuditLog returns the newest limit audit entries of app ("" = all),
// newest first.
func (s *Store) AuditLog(app string, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if app == "" || e.App == app {
				out = append(out, e)
			}
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}
