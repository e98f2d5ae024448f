package cron

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps jobs and their runs in a bbolt file of its own
// (<data-dir>/cron.db), apart from the deploy store.
type Store struct {
	db *bolt.DB
	// KeepRuns is how many runs are kept per job (the oldest are dropped).
	KeepRuns int
}

var (
	jobsBucket = []byte("jobs")
	// runsBucket holds one nested bucket per job id; keys are big-endian
	// run numbers, so a cursor walks runs in order.
	runsBucket = []byte("runs")
)

// ErrNotFound is returned for an unknown job id.
var ErrNotFound = errors.New("no such job")

// OpenStore opens (or creates) the store at path.
func OpenStore(path string, keepRuns int) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("cron store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{jobsBucket, runsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cron store %s: %w", path, err)
	}
	if keepRuns <= 0 {
		keepRuns = 100
	}
	return &Store{db: db, KeepRuns: keepRuns}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Add stores a new job under a fresh id ("c1", "c2", ...) and returns it.
func (s *Store) Add(j Job) (Job, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(jobsBucket)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		j.ID = "c" + strconv.FormatUint(seq, 10)
		v, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return b.Put([]byte(j.ID), v)
	})
	if err != nil {
		return Job{}, fmt.Errorf("add job: %w", err)
	}
	return j, nil
}

// Job returns one job.
func (s *Store) Job(id string) (Job, error) {
	var j Job
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(jobsBucket).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &j)
	})
	return j, err
}

// Jobs returns every job, ordered by id number.
func (s *Store) Jobs() ([]Job, error) {
	jobs := []Job{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(jobsBucket).ForEach(func(k, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			jobs = append(jobs, j)
			return nil
		})
	})
	slices.SortFunc(jobs, func(a, b Job) int { return idNumber(a.ID) - idNumber(b.ID) })
	return jobs, err
}

func idNumber(id string) int {
	n, _ := strconv.Atoi(id[min(1, len(id)):])
	return n
}

// Remove deletes a job and its runs.
func (s *Store) Remove(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(jobsBucket)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(runsBucket).DeleteBucket([]byte(id)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		return nil
	})
}

// NextRun reserves the job's next run number (1, 2, ...).
func (s *Store) NextRun(id string) (uint64, error) {
	var seq uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(jobsBucket).Get([]byte(id)) == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		b, err := tx.Bucket(runsBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		seq, err = b.NextSequence()
		return err
	})
	return seq, err
}

// SaveRun records a finished run and drops the job's oldest runs beyond
// KeepRuns. A run of a job removed meanwhile is dropped.
func (s *Store) SaveRun(r Run) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(jobsBucket).Get([]byte(r.Job)) == nil {
			return fmt.Errorf("%s: %w", r.Job, ErrNotFound)
		}
		b, err := tx.Bucket(runsBucket).CreateBucketIfNotExists([]byte(r.Job))
		if err != nil {
			return err
		}
		if err := b.Put(runKey(r.Seq), v); err != nil {
			return err
		}
		n := 0
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		var old [][]byte
		for k, _ := c.First(); k != nil && len(old) < n-s.KeepRuns; k, _ = c.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func runKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// Runs returns the job's newest runs, newest first, at most limit (all
// kept runs when limit <= 0).
func (s *Store) Runs(id string, limit int) ([]Run, error) {
	runs := []Run{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(jobsBucket).Get([]byte(id)) == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		b := tx.Bucket(runsBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(runs) < limit); k, v = c.Prev() {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("run %s/%d: %w", id, binary.BigEndian.Uint64(k), err)
			}
			runs = append(runs, r)
		}
		return nil
	})
	return runs, err
}
