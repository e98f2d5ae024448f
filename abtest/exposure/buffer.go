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
// Pairs are remembered as 64-bit hashes in a fixed table per shard, in sets
// of 8 (one cache line, so a lookup costs one memory access where a map
// costs several): a set keeps its 8 most recently seen pairs and forgets the
// least recent. Memory stays bounded; a pair forgotten that way may be
// logged again, which reports tolerate (they count distinct units).
type Buffer struct {
	seed     maphash.Seed
	sets     uint64 // sets per shard, a power of two
	capacity int    // exposures waiting per shard
	closed   atomic.Bool
	ready    chan struct{} // a shard went from empty to not empty
	drainMu  sync.Mutex    // one drainer at a time: it owns the spares
	shards   [shards]shard
}

// setWays is the number of pairs in a set: 8 hashes fill a cache line.
const setWays = 8

type shard struct {
	mu      sync.Mutex
	pairs   []uint64 // sets × setWays hashes, most recent first; 0 is empty
	pending []events.Event
	spare   []events.Event // the drainer's, swapped in under mu
	// Padding keeps neighbouring shards' locks off one cache line.
	_ [64]byte
}

// NewBuffer holds up to about capacity exposures waiting to be written and
// remembers about dedupCapacity (unit, experiment) pairs at least: it has
// room for twice as many (and more, rounded up to a power of two), so the
// most recent dedupCapacity pairs are forgotten only where many of them
// fall in one set. A shard's table (16 bytes per pair of dedupCapacity) is
// allocated when the shard first sees an exposure.
func NewBuffer(capacity, dedupCapacity int) *Buffer {
	perShard := max(2*dedupCapacity/shards, setWays)
	sets := uint64(1)
	for sets*setWays < uint64(perShard) {
		sets *= 2
	}
	return &Buffer{
		seed:     maphash.MakeSeed(),
		sets:     sets,
		capacity: max((capacity+shards-1)/shards, 1),
		ready:    make(chan struct{}, 1),
	}
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
		if s.pairs == nil {
			s.pairs = make([]uint64, b.sets*setWays)
		}
		key := b.pairKey(e.Unit, e.Experiment)
		set := s.pairs[(key&(b.sets-1))*setWays:][:setWays]
		switch {
		case seen(set, key):
			res.Duplicates++
		case len(s.pending) >= b.capacity || b.closed.Load():
			res.Dropped++
		default:
			remember(set, key)
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

// pairKey is a 64-bit hash of (unit, experiment), never 0 (an empty slot):
// a collision (about 1 in 10^19 per pair) would skip one exposure.
func (b *Buffer) pairKey(unit, experiment string) uint64 {
	var h maphash.Hash
	h.SetSeed(b.seed)
	h.WriteString(experiment)
	h.WriteByte(0)
	h.WriteString(unit)
	return max(h.Sum64(), 1)
}

// seen reports whether key is in set, moving it to the front (the most
// recently seen); the shard's lock is held.
func seen(set []uint64, key uint64) bool {
	for i, k := range set {
		if k == key {
			copy(set[1:i+1], set[:i])
			set[0] = key
			return true
		}
	}
	return false
}

// remember puts key at the front of set, forgetting the least recently
// seen pair; the shard's lock is held.
func remember(set []uint64, key uint64) {
	copy(set[1:], set[:len(set)-1])
	set[0] = key
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
