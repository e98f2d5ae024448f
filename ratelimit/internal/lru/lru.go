// Package lru is the key table under every limiter zone: a map from key to a
// slot in one slice, the slots linked in least-recently-used order. Slots
// are addressed by int32 so that a million keys cost a few tens of bytes
// each beyond the value and the key's own bytes.
package lru

const none = -1

// chunkBits sizes the chunks slots live in: chunks never move, so a value's
// address stays valid while its key is held, even as the table grows.
const chunkBits = 10

// Table holds at most Max keys, each with a value of type V. It is not safe
// for concurrent use: the zone that owns it holds its lock. A pointer to a
// value stays valid until its key is removed.
type Table[V any] struct {
	index  map[string]int32
	chunks [][]slot[V]
	used   int32 // slots ever handed out
	free   []int32
	head   int32 // most recently used
	tail   int32 // least recently used
	max    int
}

type slot[V any] struct {
	key        string
	prev, next int32
	val        V
}

// New returns a table for at most max keys (max >= 1).
func New[V any](max int) *Table[V] {
	if max < 1 {
		max = 1
	}
	return &Table[V]{index: make(map[string]int32), head: none, tail: none, max: max}
}

// Len is the number of keys held.
func (t *Table[V]) Len() int { return len(t.index) }

// Max is the most keys the table holds.
func (t *Table[V]) Max() int { return t.max }

// Full reports whether an Insert would exceed Max.
func (t *Table[V]) Full() bool { return len(t.index) >= t.max }

// Get returns the key's value and marks it most recently used.
func (t *Table[V]) Get(key string) (*V, bool) {
	i, ok := t.index[key]
	if !ok {
		return nil, false
	}
	t.unlink(i)
	t.pushFront(i)
	return &t.slot(i).val, true
}

// Peek returns the key's value without touching its recency.
func (t *Table[V]) Peek(key string) (*V, bool) {
	i, ok := t.index[key]
	if !ok {
		return nil, false
	}
	return &t.slot(i).val, true
}

// Insert adds key (which must be absent) as most recently used with a zero
// value and returns that value. The caller makes room first: Insert on a
// full table returns nil.
func (t *Table[V]) Insert(key string) *V {
	if t.Full() {
		return nil
	}
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		i = t.used
		t.used++
		if int(i>>chunkBits) == len(t.chunks) {
			t.chunks = append(t.chunks, make([]slot[V], 1<<chunkBits))
		}
	}
	s := t.slot(i)
	// Clone the key: callers often pass a view into a larger buffer.
	*s = slot[V]{key: cloneString(key)}
	t.index[s.key] = i
	t.pushFront(i)
	return &s.val
}

func (t *Table[V]) slot(i int32) *slot[V] { return &t.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

// Oldest returns the least recently used key and its value.
func (t *Table[V]) Oldest() (string, *V, bool) {
	if t.tail == none {
		return "", nil, false
	}
	s := t.slot(t.tail)
	return s.key, &s.val, true
}

// RemoveOldest drops the least recently used key.
func (t *Table[V]) RemoveOldest() {
	if t.tail == none {
		return
	}
	t.remove(t.tail)
}

// Remove drops key if present.
func (t *Table[V]) Remove(key string) {
	if i, ok := t.index[key]; ok {
		t.remove(i)
	}
}

// Range calls fn from most to least recently used until it returns false.
func (t *Table[V]) Range(fn func(key string, v *V) bool) {
	for i := t.head; i != none; {
		s := t.slot(i)
		next := s.next
		if !fn(s.key, &s.val) {
			return
		}
		i = next
	}
}

func (t *Table[V]) remove(i int32) {
	t.unlink(i)
	s := t.slot(i)
	delete(t.index, s.key)
	*s = slot[V]{}
	t.free = append(t.free, i)
}

func (t *Table[V]) unlink(i int32) {
	s := t.slot(i)
	if s.prev != none {
		t.slot(s.prev).next = s.next
	} else {
		t.head = s.next
	}
	if s.next != none {
		t.slot(s.next).prev = s.prev
	} else {
		t.tail = s.prev
	}
	s.prev, s.next = none, none
}

func (t *Table[V]) pushFront(i int32) {
	s := t.slot(i)
	s.prev = none
	s.next = t.head
	if t.head != none {
		t.slot(t.head).prev = i
	}
	t.head = i
	if t.tail == none {
		t.tail = i
	}
}

func cloneString(s string) string { return string([]byte(s)) }
