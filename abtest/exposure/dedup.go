// Package exposure decides which assignments to log as exposures: the first
// of each (unit, experiment) pair, remembered in bounded memory.
package exposure

import (
	"hash/maphash"
	"sync"
)

const shards = 64

// Dedup remembers recently logged (unit, experiment) pairs in two
// generations per shard: when the current generation of a shard is full it
// becomes the old one and the older is forgotten. Memory stays bounded; a
// pair forgotten that way may be logged again, which reports tolerate
// (they count distinct units).
type Dedup struct {
	seed   maphash.Seed
	limit  int // pairs per generation per shard
	shards [shards]shard
}

type shard struct {
	mu       sync.Mutex
	cur, old map[uint64]struct{}
}

// NewDedup remembers at least capacity pairs (up to twice that).
func NewDedup(capacity int) *Dedup {
	d := &Dedup{seed: maphash.MakeSeed(), limit: max(capacity/shards, 1)}
	for i := range d.shards {
		d.shards[i].cur = map[uint64]struct{}{}
	}
	return d
}

// First reports whether (unit, experiment) is new, remembering it. Pairs
// are kept as 64-bit hashes: a collision (about 1 in 10^19 per pair) would
// skip one exposure.
func (d *Dedup) First(unit, experiment string) bool {
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.WriteString(experiment)
	h.WriteByte(0)
	h.WriteString(unit)
	key := h.Sum64()
	s := &d.shards[key%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cur[key]; ok {
		return false
	}
	if _, ok := s.old[key]; ok {
		s.cur[key] = struct{}{}
		return false
	}
	if len(s.cur) >= d.limit {
		s.old, s.cur = s.cur, make(map[uint64]struct{}, d.limit)
	}
	s.cur[key] = struct{}{}
	return true
}
