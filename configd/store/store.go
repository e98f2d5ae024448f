// Package store keeps configd's namespaces, their immutable numbered
// releases, history, the audit log and the membership record in one bbolt
// file. Every mutation is one transaction fsynced before it returns, so a
// release the server has acknowledged survives kill -9.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/format"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
	ErrConflict = errors.New("conflict")
)

var (
	bucketMeta     = []byte("meta")
	bucketNS       = []byte("namespaces")
	bucketReleases = []byte("releases")
	bucketHistory  = []byte("history")
	bucketAudit    = []byte("audit")
	bucketHosts    = []byte("hosts")
	bucketEvents   = []byte("member_events")
	keyRev         = []byte("rev")
)

// Store is the server's database. It is safe for concurrent use.
type Store struct {
	db  *bolt.DB
	now func() time.Time
}

// Open opens (creating if needed) the database file in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "configd.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketNS, bucketReleases, bucketHistory, bucketAudit, bucketHosts, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init: %w", err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getJSON(b *bolt.Bucket, key []byte, out any) (bool, error) {
	v := b.Get(key)
	if v == nil {
		return false, nil
	}
	if err := json.Unmarshal(v, out); err != nil {
		return true, fmt.Errorf("store: decode %q: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// Rev is the server-wide change counter: it grows with every change of any
// namespace's head.
func (s *Store) Rev() (int64, error) {
	var rev int64
	err := s.db.View(func(tx *bolt.Tx) error {
		rev = readRev(tx)
		return nil
	})
	return rev, err
}

func readRev(tx *bolt.Tx) int64 {
	v := tx.Bucket(bucketMeta).Get(keyRev)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func bumpRev(tx *bolt.Tx, atLeast int64) (int64, error) {
	rev := readRev(tx) + 1
	if atLeast > rev {
		rev = atLeast
	}
	return rev, tx.Bucket(bucketMeta).Put(keyRev, be64(uint64(rev)))
}

// Namespace returns a namespace's head.
func (s *Store) Namespace(name string) (api.Namespace, error) {
	var ns api.Namespace
	err := s.db.View(func(tx *bolt.Tx) error {
		found, err := getJSON(tx.Bucket(bucketNS), []byte(name), &ns)
		if err == nil && !found {
			err = fmt.Errorf("namespace %s: %w", name, ErrNotFound)
		}
		return err
	})
	return ns, err
}

// Namespaces lists every namespace's head, by name.
func (s *Store) Namespaces() ([]api.Namespace, error) {
	var out []api.Namespace
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNS).ForEach(func(k, v []byte) error {
			var ns api.Namespace
			if err := json.Unmarshal(v, &ns); err != nil {
				return fmt.Errorf("store: decode namespace %s: %w", k, err)
			}
			out = append(out, ns)
			return nil
		})
	})
	return out, err
}

// ChangedSince lists the namespaces whose head changed after rev.
func (s *Store) ChangedSince(rev int64) (int64, []string, error) {
	var names []string
	var now int64
	err := s.db.View(func(tx *bolt.Tx) error {
		now = readRev(tx)
		return tx.Bucket(bucketNS).ForEach(func(k, v []byte) error {
			var ns api.Namespace
			if err := json.Unmarshal(v, &ns); err != nil {
				return err
			}
			if ns.Rev > rev {
				names = append(names, ns.Name)
			}
			return nil
		})
	})
	return now, names, err
}

// update runs fn on a namespace's head inside one transaction, creating the
// namespace when create is set, then stores it with a new rev and appends
// the history entry fn returns (if any).
func (s *Store) update(name string, create bool, fn func(tx *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error)) (api.Namespace, error) {
	if err := api.ValidateNamespace(name); err != nil {
		return api.Namespace{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var ns api.Namespace
	err := s.db.Update(func(tx *bolt.Tx) error {
		found, err := getJSON(tx.Bucket(bucketNS), []byte(name), &ns)
		if err != nil {
			return err
		}
		if !found {
			if !create {
				return fmt.Errorf("namespace %s: %w", name, ErrNotFound)
			}
			ns = api.Namespace{Name: name}
		}
		h, err := fn(tx, &ns)
		if err != nil {
			return err
		}
		if ns.Rev, err = bumpRev(tx, 0); err != nil {
			return err
		}
		ns.Updated = s.now().UTC()
		if h != nil {
			hb, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			seq, _ := hb.NextSequence()
			h.Time = ns.Updated
			if err := putJSON(hb, be64(seq), h); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketNS), []byte(name), ns)
	})
	return ns, err
}

// PutDraft sets one file of a namespace's draft (the working copy the next
// publish takes), creating the namespace if needed.
func (s *Store) PutDraft(name, file string, content []byte) (api.Namespace, error) {
	if err := api.ValidateFileName(file); err != nil {
		return api.Namespace{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return s.update(name, true, func(_ *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		f := api.NewFile(file, string(content))
		for i := range ns.Draft {
			if ns.Draft[i].Name == file {
				ns.Draft[i] = f
				return nil, nil
			}
		}
		ns.Draft = append(ns.Draft, f)
		api.SortFiles(ns.Draft)
		return nil, nil
	})
}

// DeleteDraft removes one file from the draft.
func (s *Store) DeleteDraft(name, file string) (api.Namespace, error) {
	return s.update(name, false, func(_ *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		for i := range ns.Draft {
			if ns.Draft[i].Name == file {
				ns.Draft = append(ns.Draft[:i], ns.Draft[i+1:]...)
				return nil, nil
			}
		}
		return nil, fmt.Errorf("draft file %s/%s: %w", name, file, ErrNotFound)
	})
}

// SetSettings replaces a namespace's publish rules.
func (s *Store) SetSettings(name string, st api.Settings, author string) (api.Namespace, error) {
	if _, err := format.ParseSchema(st.Schema); err != nil {
		return api.Namespace{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return s.update(name, true, func(_ *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		ns.Settings = st
		return &api.HistoryEntry{Action: "settings", Author: author}, nil
	})
}

// PublishInput describes a publish.
type PublishInput struct {
	Author  string
	Comment string
	// Files to publish; nil publishes the draft.
	Files []api.File
	// Gray, when set, offers the release only to the hosts it selects
	// (Version, Author and Started are filled in).
	Gray *api.Gray
}

// Publish validates the files and stores them as the namespace's next
// release. A full publish makes it current and ends any gray release; a
// gray publish leaves current alone.
func (s *Store) Publish(name string, in PublishInput) (api.Release, api.Namespace, error) {
	var rel api.Release
	ns, err := s.update(name, true, func(tx *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		files := in.Files
		if files == nil {
			files = ns.Draft
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%w: namespace %s: nothing to publish (put files first or give them)", ErrInvalid, name)
		}
		checked, err := checkFiles(files, ns.Settings)
		if err != nil {
			return nil, err
		}
		if in.Gray != nil && ns.Current == 0 {
			return nil, fmt.Errorf("%w: namespace %s: a gray release needs a current release for the other hosts", ErrConflict, name)
		}
		rel = api.Release{Namespace: name, Version: ns.Latest + 1, Author: in.Author, Comment: in.Comment, Time: s.now().UTC(), Files: checked}
		if err := putRelease(tx, rel); err != nil {
			return nil, err
		}
		ns.Latest = rel.Version
		ns.Draft = checked
		action := "publish"
		if in.Gray != nil {
			g := *in.Gray
			g.Version, g.Author, g.Started = rel.Version, in.Author, rel.Time
			ns.Gray = &g
			action = "gray"
		} else {
			ns.Current = rel.Version
			ns.Gray = nil
		}
		return &api.HistoryEntry{Action: action, Version: rel.Version, Author: in.Author, Comment: in.Comment}, nil
	})
	return rel, ns, err
}

func checkFiles(files []api.File, st api.Settings) ([]api.File, error) {
	schema, err := format.ParseSchema(st.Schema)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	rules := format.Rules{AllowEmpty: st.AllowEmpty, Schema: schema}
	seen := map[string]bool{}
	out := make([]api.File, 0, len(files))
	for _, f := range files {
		if err := api.ValidateFileName(f.Name); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("%w: file %s given twice", ErrInvalid, f.Name)
		}
		seen[f.Name] = true
		if err := format.Check(f.Name, []byte(f.Content), rules); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out = append(out, api.NewFile(f.Name, f.Content))
	}
	api.SortFiles(out)
	return out, nil
}

func putRelease(tx *bolt.Tx, rel api.Release) error {
	rb, err := tx.Bucket(bucketReleases).CreateBucketIfNotExists([]byte(rel.Namespace))
	if err != nil {
		return err
	}
	return putJSON(rb, be64(uint64(rel.Version)), rel)
}

// Rollback publishes a copy of an earlier release as the next one.
func (s *Store) Rollback(name string, to int64, author, comment string) (api.Release, api.Namespace, error) {
	var rel api.Release
	ns, err := s.update(name, false, func(tx *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		old, err := getRelease(tx, name, to)
		if err != nil {
			return nil, err
		}
		if comment == "" {
			comment = fmt.Sprintf("rollback to %d", to)
		}
		rel = api.Release{Namespace: name, Version: ns.Latest + 1, Author: author, Comment: comment, Time: s.now().UTC(), RollbackOf: to, Files: old.Files}
		if err := putRelease(tx, rel); err != nil {
			return nil, err
		}
		ns.Latest, ns.Current, ns.Gray, ns.Draft = rel.Version, rel.Version, nil, old.Files
		return &api.HistoryEntry{Action: "rollback", Version: rel.Version, Author: author, Comment: comment}, nil
	})
	return rel, ns, err
}

// Promote makes the gray release current for every host.
func (s *Store) Promote(name, author string) (api.Namespace, error) {
	return s.update(name, false, func(_ *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		if ns.Gray == nil {
			return nil, fmt.Errorf("%w: namespace %s has no gray release", ErrConflict, name)
		}
		v := ns.Gray.Version
		ns.Current, ns.Gray = v, nil
		return &api.HistoryEntry{Action: "promote", Version: v, Author: author}, nil
	})
}

// Abandon ends the gray release; its hosts go back to current.
func (s *Store) Abandon(name, author string) (api.Namespace, error) {
	return s.update(name, false, func(tx *bolt.Tx, ns *api.Namespace) (*api.HistoryEntry, error) {
		if ns.Gray == nil {
			return nil, fmt.Errorf("%w: namespace %s has no gray release", ErrConflict, name)
		}
		v := ns.Gray.Version
		ns.Gray = nil
		// The working copy returns to what is in force.
		if cur, err := getRelease(tx, name, ns.Current); err == nil {
			ns.Draft = cur.Files
		}
		return &api.HistoryEntry{Action: "abandon", Version: v, Author: author}, nil
	})
}

func getRelease(tx *bolt.Tx, name string, v int64) (api.Release, error) {
	var rel api.Release
	rb := tx.Bucket(bucketReleases).Bucket([]byte(name))
	if rb == nil {
		return rel, fmt.Errorf("namespace %s: %w", name, ErrNotFound)
	}
	found, err := getJSON(rb, be64(uint64(v)), &rel)
	if err == nil && !found {
		err = fmt.Errorf("release %s@%d: %w", name, v, ErrNotFound)
	}
	return rel, err
}

// Release returns one release with its files.
func (s *Store) Release(name string, v int64) (api.Release, error) {
	var rel api.Release
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rel, err = getRelease(tx, name, v)
		return err
	})
	return rel, err
}

// Releases lists a namespace's releases after version `after`, oldest
// first, at most limit (0 = all); withContent keeps file contents.
func (s *Store) Releases(name string, after int64, limit int, withContent bool) ([]api.Release, error) {
	var out []api.Release
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNS).Get([]byte(name)) == nil {
			return fmt.Errorf("namespace %s: %w", name, ErrNotFound)
		}
		rb := tx.Bucket(bucketReleases).Bucket([]byte(name))
		if rb == nil {
			return nil
		}
		c := rb.Cursor()
		for k, v := c.Seek(be64(uint64(after + 1))); k != nil; k, v = c.Next() {
			var rel api.Release
			if err := json.Unmarshal(v, &rel); err != nil {
				return fmt.Errorf("store: decode release: %w", err)
			}
			if !withContent {
				rel = rel.Summary()
			}
			out = append(out, rel)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// History lists the changes of a namespace's head, oldest first.
func (s *Store) History(name string) ([]api.HistoryEntry, error) {
	var out []api.HistoryEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNS).Get([]byte(name)) == nil {
			return fmt.Errorf("namespace %s: %w", name, ErrNotFound)
		}
		hb := tx.Bucket(bucketHistory).Bucket([]byte(name))
		if hb == nil {
			return nil
		}
		return hb.ForEach(func(_, v []byte) error {
			var h api.HistoryEntry
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			out = append(out, h)
			return nil
		})
	})
	return out, err
}

// Replicate stores a namespace head and releases copied from a primary,
// keeping the primary's rev so replicas of replicas stay in step.
func (s *Store) Replicate(ns api.Namespace, releases []api.Release) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, rel := range releases {
			if err := putRelease(tx, rel); err != nil {
				return err
			}
		}
		if _, err := bumpRev(tx, ns.Rev); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketNS), []byte(ns.Name), ns)
	})
}

// Audit appends an audit entry.
func (s *Store) Audit(e api.AuditEntry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		seq, _ := b.NextSequence()
		e.Seq = int64(seq)
		if e.Time.IsZero() {
			e.Time = s.now().UTC()
		}
		return putJSON(b, be64(seq), e)
	})
}

// AuditLog returns the last `limit` audit entries, oldest first.
func (s *Store) AuditLog(limit int) ([]api.AuditEntry, error) {
	var out []api.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var e api.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// SaveHost stores a host's membership record, and the event if one is given.
func (s *Store) SaveHost(h api.Host, events []api.MemberEvent) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketHosts), []byte(h.Host), h); err != nil {
			return err
		}
		eb := tx.Bucket(bucketEvents)
		for _, e := range events {
			if err := putJSON(eb, be64(uint64(e.Seq)), e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Hosts loads every membership record.
func (s *Store) Hosts() ([]api.Host, error) {
	var out []api.Host
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHosts).ForEach(func(_, v []byte) error {
			var h api.Host
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			out = append(out, h)
			return nil
		})
	})
	return out, err
}

// MemberEvents loads the last `limit` membership events, oldest first.
func (s *Store) MemberEvents(limit int) ([]api.MemberEvent, error) {
	var out []api.MemberEvent
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e api.MemberEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// PruneMemberEvents keeps only the newest `keep` events.
func (s *Store) PruneMemberEvents(keep int) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		n := b.Stats().KeyN
		c := b.Cursor()
		for k, _ := c.First(); k != nil && n > keep; k, _ = c.First() {
			if err := b.Delete(k); err != nil {
				return err
			}
			n--
		}
		return nil
	})
}
