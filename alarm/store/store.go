// Package store is alarm's on-disk state besides the alert log: one bbolt
// file holding silences, the notification log, the outbox of notifications not yet
// delivered, dead letters and history. Every write is fsynced before it
// returns, so whatever alarm acknowledged survives kill -9; concurrent
// writers share fsyncs (bbolt's Batch).
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names.
const (
	Silences    = "silences"
	NotifyLog   = "nflog"
	Outbox      = "outbox"
	DeadLetters = "deadletters"
	History     = "history"
	Merge       = "merge"
)

var buckets = []string{Silences, NotifyLog, Outbox, DeadLetters, History, Merge}

// DB is the open state file.
type DB struct {
	bolt *bolt.DB
}

// Open opens (or creates) dir/alarm.db.
func Open(dir string) (*DB, error) {
	path := filepath.Join(dir, "alarm.db")
	b, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 5 * time.Second,
		// The free list is rebuilt at open instead of written at every
		// commit: commits in a notification storm stay small.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Group commit: up to this many concurrent writes share one fsync.
	b.MaxBatchSize = 1000
	b.MaxBatchDelay = 5 * time.Millisecond
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &DB{bolt: b}, nil
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// KV is one key and value; a nil Value deletes the key.
type KV struct {
	Key   []byte
	Value []byte
}

// Write applies puts and deletes to one bucket in one durable transaction
// shared with concurrent writers.
func (db *DB) Write(bucket string, kvs []KV) error {
	if len(kvs) == 0 {
		return nil
	}
	return db.Batch(func(tx *Tx) error { return tx.Write(bucket, kvs) })
}

// Tx is a write transaction over several buckets.
type Tx struct{ tx *bolt.Tx }

// Write applies kvs to bucket.
func (t *Tx) Write(bucket string, kvs []KV) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return fmt.Errorf("no bucket %q", bucket)
	}
	for _, kv := range kvs {
		var err error
		if kv.Value == nil {
			err = b.Delete(kv.Key)
		} else {
			err = b.Put(kv.Key, kv.Value)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", bucket, err)
		}
	}
	return nil
}

// Get returns a copy of the value of key, or nil.
func (t *Tx) Get(bucket string, key []byte) []byte {
	v := t.tx.Bucket([]byte(bucket)).Get(key)
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

// NextSeq returns the bucket's next sequence number.
func (t *Tx) NextSeq(bucket string) (uint64, error) {
	return t.tx.Bucket([]byte(bucket)).NextSequence()
}

// Batch runs fn in a durable transaction that may be shared with concurrent
// callers; fn may run more than once and must be idempotent.
func (db *DB) Batch(fn func(*Tx) error) error {
	return db.bolt.Batch(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Update runs fn in its own durable transaction.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Get returns a copy of the value of key in bucket, or nil.
func (db *DB) Get(bucket string, key []byte) ([]byte, error) {
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(bucket)).Get(key); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// ErrStop ends a ForEach early without error.
var ErrStop = errors.New("stop")

// ForEach calls fn for every key of bucket from `from` on (nil = the
// start), in key order. k and v are only valid during the call.
func (db *DB) ForEach(bucket string, from []byte, fn func(k, v []byte) error) error {
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucket)).Cursor()
		var k, v []byte
		if from == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(from)
		}
		for ; k != nil; k, v = c.Next() {
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// Count returns the number of keys in bucket.
func (db *DB) Count(bucket string) (int, error) {
	n := 0
	err := db.bolt.View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(bucket)).Stats().KeyN
		return nil
	})
	return n, err
}

// TimeKey is a key that sorts by time: big-endian nanoseconds then a
// sequence number to keep equal times apart.
func TimeKey(t time.Time, seq uint64) []byte {
	k := make([]byte, 16)
	ns := t.UnixNano()
	if t.Before(time.Unix(0, 0)) {
		ns = 0 // before 1970 (or the zero time): the start of the keys
	}
	binary.BigEndian.PutUint64(k, uint64(ns))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

// KeyTime reads the time of a TimeKey.
func KeyTime(k []byte) time.Time {
	if len(k) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)))
}
