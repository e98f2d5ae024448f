// Package exposure holds the exposures that assignments log until they are
// written: the first of each (unit, experiment) pair, remembered in bounded
// memory, kept in bounded memory until the writer takes them.
package exposure

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/opskit/opskit/abtest/events"
)

// shards splits the buffer so that concurrent requests rarely share a lock;
// a request's exposures usually share one unit and so one shard.
const shards = 64

// ErrClosed is returned by Wait once the buffer is closed.
var ErrClosed = errors.New("exposure buffer closed")

// Buffer deduplicates exposures and holds them for the writer. Exposures are
// sharded by unit: Add takes one shard lock for a unit's exposures, checks
// each against the pairs already logged and appends the new ones; Drain
// swaps each shard's slice for an empty one, so the writer holds a lock for
// a few instructions only.
//
// Each shard remembers pairs in two generations: when the current one is
// full it becomes the old one and the older is forgotten. Memory stays
// bounded; a pair forgotten that way may be logged again, which reports
// tolerate (they count distinct units).
type Buffer struct {
	seed       maphash.Seed
	dedupLimit int // pairs per generation per shard
	capacity   int // exposures waiting per shard
	closed     atomic.Bool
	ready      chan struct{} // a shard went from empty to not empty
	drainMu    sync.Mutex    // one drainer at a time: it owns the spares
	shards     [shards]shard
}

type shard struct {
	mu       sync.Mutex
	cur, old map[uint64]struct{}
	pending  []events.Event
	spare    []events.Event // the drainer's, swapped in under mu
	// Padding keeps neighbouring shards' locks off one cache line.
	_ [64]byte
}

// NewBuffer holds up to about capacity exposures waiting to be written and
// remembers at least dedupCapacity (unit, experiment) pairs (up to twice
// that).
func NewBuffer(capacity, dedupCapacity int) *Buffer {
	b := &Buffer{
		seed:       maphash.MakeSeed(),
		dedupLimit: max(dedupCapacity/shards, 1),
		capacity:   max((capacity+shards-1)/shards, 1),
		ready:      make(chan struct{}, 1),
	}
	for i := range b.shards {
		b.shards[i].cur = map[uint64]struct{}{}
	}
	return b
}

// Result counts what Add did with the exposures offered.
type Result struct {
	Added      int // new pairs, now waiting to be written
	Duplicates int // pairs logged before
	Dropped    int // new pairs refused: the buffer is full or closed
}

// Add offers exposures (Kind, Unit, Experiment, Variant, Time, Forced set).
// A pair already logged is skipped; a new pair is kept unless the buffer
// is full or closed, in which case it is dropped and not remembered, so a
// later assignment can log it.
func (b *Buffer) Add(exposures []events.Event) Result {
	var res Result
	var locked *shard
	for i := range exposures {
		e := &exposures[i]
		s := &b.shards[maphash.String(b.seed, e.Unit)%shards]
		if s != locked {
			if locked != nil {
				locked.mu.Unlock()
			}
			s.mu.Lock()
			locked = s
		}
		key := b.pairKey(e.Unit, e.Experiment)
		switch {
		case s.seen(key):
			res.Duplicates++
		case len(s.pending) >= b.capacity || b.closed.Load():
			res.Dropped++
		default:
			s.remember(key, b.dedupLimit)
			if len(s.pending) == 0 {
				select {
				case b.ready <- struct{}{}:
				default:
				}
			}
			s.pending = append(s.pending, *e)
			res.Added++
		}
	}
	if locked != nil {
		locked.mu.Unlock()
	}
	return res
}

// pairKey is a 64-bit hash of (unit, experiment): a collision (about 1 in
// 10^19 per pair) would skip one exposure.
func (b *Buffer) pairKey(unit, experiment string) uint64 {
	var h maphash.Hash
	h.SetSeed(b.seed)
	h.WriteString(experiment)
	h.WriteByte(0)
	h.WriteString(unit)
	return h.Sum64()
}

// seen reports whether key was remembered; s.mu is held.
func (s *shard) seen(key uint64) bool {
	if _, ok := s.cur[key]; ok {
		return true
	}
	if _, ok := s.old[key]; ok {
		s.cur[key] = struct{}{}
		return true
	}
	return false
}

// remember adds key to the current generation; s.mu is held.
func (s *shard) remember(key uint64, limit int) {
	if len(s.cur) >= limit {
		s.old, s.cur = s.cur, make(map[uint64]struct{}, limit)
	}
	s.cur[key] = struct{}{}
}

// Wait returns when exposures may be waiting (nil), when ctx ends (its
// error), or, once the buffer is closed, at once with ErrClosed.
func (b *Buffer) Wait(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Drain appends every waiting exposure to dst and returns it.
func (b *Buffer) Drain(dst []events.Event) []events.Event {
	b.drainMu.Lock()
	defer b.drainMu.Unlock()
	for i := range b.shards {
		s := &b.shards[i]
		spare := s.spare[:0]
		s.mu.Lock()
		taken := s.pending
		s.pending = spare
		s.mu.Unlock()
		dst = append(dst, taken...)
		clear(taken) // let the GC have the strings
		s.spare = taken[:0]
	}
	return dst
}

// Len is the number of exposures waiting.
func (b *Buffer) Len() int {
	n := 0
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		n += len(s.pending)
		s.mu.Unlock()
	}
	return n
}

// Close makes Add drop new exposures and Wait return ErrClosed; what is
// waiting can still be drained.
func (b *Buffer) Close() { b.closed.Store(true) }
