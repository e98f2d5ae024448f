package hop

import (
	"sync"
	"time"
)

// Backlog remembers when the items waiting for a downstream arrived, in
// order, so that the latency of an acknowledged batch can be summed without
// reading the items again. It is kept beside a FIFO spool: Add when items
// are spooled, Take when the downstream acknowledges the oldest n, Drop when
// the spool discards the oldest n unsent.
//
// Memory is bounded: beyond maxEntries the newest entries are merged (their
// mean arrival time kept), which blurs only the latency of items spooled in
// a burst while the downstream was away.
type Backlog struct {
	mu      sync.Mutex
	entries []entry // oldest first; entries[head:] are live
	head    int
	max     int
}

type entry struct {
	n  int
	at int64 // mean arrival, Unix nanoseconds
}

// DefaultBacklogEntries bounds a Backlog made with NewBacklog.
const DefaultBacklogEntries = 4096

// NewBacklog returns a backlog holding pending items that were already
// waiting when it was made (in a spool recovered from disk): they count as
// arrived at since.
func NewBacklog(pending int, since time.Time) *Backlog {
	b := &Backlog{max: DefaultBacklogEntries}
	if pending > 0 {
		b.entries = append(b.entries, entry{n: pending, at: since.UnixNano()})
	}
	return b
}

// Add records n items that arrived at t, after every item already held.
func (b *Backlog) Add(n int, t time.Time) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	live := len(b.entries) - b.head
	if live >= b.max && live > 0 {
		last := &b.entries[len(b.entries)-1]
		last.at = mergeTimes(last.n, last.at, n, t.UnixNano())
		last.n += n
		return
	}
	if b.head > 0 && b.head >= len(b.entries)/2 {
		// Reclaim the consumed front before growing.
		b.entries = append(b.entries[:0], b.entries[b.head:]...)
		b.head = 0
	}
	b.entries = append(b.entries, entry{n: n, at: t.UnixNano()})
}

func mergeTimes(n1 int, t1 int64, n2 int, t2 int64) int64 {
	// Weighted mean without overflow: t1 + (t2-t1)*n2/(n1+n2).
	return t1 + int64(float64(t2-t1)*float64(n2)/float64(n1+n2))
}

// Take removes the oldest n items, acknowledged at now, and returns how
// many of them it held and the sum of their latencies. Items it did not
// hold (none were added for them) count with no latency.
func (b *Backlog) Take(n int, now time.Time) (held int, latencySum time.Duration) {
	if b == nil {
		return 0, 0
	}
	nowNs := now.UnixNano()
	var sum float64
	b.mu.Lock()
	for n > 0 && b.head < len(b.entries) {
		e := &b.entries[b.head]
		k := min(n, e.n)
		if d := nowNs - e.at; d > 0 {
			sum += float64(k) * float64(d)
		}
		held += k
		n -= k
		e.n -= k
		if e.n == 0 {
			b.head++
		}
	}
	b.mu.Unlock()
	return held, time.Duration(sum)
}

// Drop removes the oldest n items without counting them (the spool
// discarded them unsent).
func (b *Backlog) Drop(n int) {
	b.Take(n, time.Time{})
}

// Forget removes the newest n items (their spooling failed after Add).
func (b *Backlog) Forget(n int) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for n > 0 && len(b.entries) > b.head {
		e := &b.entries[len(b.entries)-1]
		k := min(n, e.n)
		e.n -= k
		n -= k
		if e.n == 0 {
			b.entries = b.entries[:len(b.entries)-1]
		}
	}
}

// Len is the number of items held.
func (b *Backlog) Len() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	total := 0
	for _, e := range b.entries[b.head:] {
		total += e.n
	}
	return total
}
