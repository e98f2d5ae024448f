package store

import "hash/maphash"

// unitDict numbers an experiment's units in order of first appearance. It
// finds a unit by a 64-bit hash of its id: a map without pointers is
// cheaper to probe and to grow than one keyed by strings, and the garbage
// collector skips it. The first unit with a hash owns it; a later unit
// whose hash collides (about n²/2^65 for n units) is kept in a map by name.
type unitDict struct {
	hash     func(string) uint64
	byHash   map[uint64]uint32
	collided map[string]uint32
	names    []string
}

func newUnitDict(names []string) unitDict {
	seed := maphash.MakeSeed()
	d := unitDict{
		hash:     func(s string) uint64 { return maphash.String(seed, s) },
		byHash:   make(map[uint64]uint32, len(names)),
		collided: map[string]uint32{},
	}
	for _, name := range names {
		_, _, slot := d.lookup(name)
		d.add(name, slot)
	}
	return d
}

// unitSlot is where lookup would have found a unit: add puts it there.
type unitSlot struct {
	hash  uint64
	taken bool // by another unit with the same hash
}

// lookup returns the unit's number if it has one.
func (d *unitDict) lookup(unit string) (id uint32, ok bool, slot unitSlot) {
	h := d.hash(unit)
	id, taken := d.byHash[h]
	if !taken {
		return 0, false, unitSlot{hash: h}
	}
	if d.names[id] == unit {
		return id, true, unitSlot{}
	}
	id, ok = d.collided[unit]
	return id, ok, unitSlot{hash: h, taken: true}
}

// add numbers a unit lookup did not find; slot is what lookup returned.
func (d *unitDict) add(name string, slot unitSlot) uint32 {
	id := uint32(len(d.names))
	d.names = append(d.names, name)
	if slot.taken {
		d.collided[name] = id
	} else {
		d.byHash[slot.hash] = id
	}
	return id
}

// truncate forgets the units numbered n and above (a failed append).
func (d *unitDict) truncate(n int) {
	for id := len(d.names) - 1; id >= n; id-- {
		name := d.names[id]
		if _, ok := d.collided[name]; ok {
			delete(d.collided, name)
		} else {
			delete(d.byHash, d.hash(name))
		}
	}
	d.names = d.names[:n]
}
