// Package queue is a bounded in-memory FIFO shared by opskit's pipelines.
// Producers choose per call between backpressure (Push blocks while the
// queue is full) and shedding (TryPush drops and counts); consumers take
// batches. Nothing is dropped without being counted.
package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// ErrClosed is returned by Push and PopBatch after Close (PopBatch only
// once the queue is drained).
var ErrClosed = errors.New("queue closed")

// Queue is a bounded FIFO of T, safe for concurrent use.
type Queue[T any] struct {
	mu       sync.Mutex
	buf      []T // ring buffer of len == capacity
	head     int // index of the oldest item
	n        int // number of items
	closed   bool
	notEmpty chan struct{}
	notFull  chan struct{}
	done     chan struct{} // closed by Close
	dropped  atomic.Uint64
	onDrop   *metrics.Counter
}

// New returns a queue holding at most capacity items. dropped, if not nil,
// is increased for every item TryPush sheds.
func New[T any](capacity int, dropped *metrics.Counter) *Queue[T] {
	if capacity < 1 {
		capacity = 1
	}
	return &Queue[T]{
		buf:      make([]T, capacity),
		notEmpty: make(chan struct{}, 1),
		notFull:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		onDrop:   dropped,
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Push appends item, waiting while the queue is full (backpressure).
func (q *Queue[T]) Push(ctx context.Context, item T) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return ErrClosed
		}
		if q.n < len(q.buf) {
			q.put(item)
			q.mu.Unlock()
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.notFull:
		case <-q.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TryPush appends item if there is room; otherwise it drops the item, counts
// it, and returns false.
func (q *Queue[T]) TryPush(item T) bool {
	q.mu.Lock()
	if q.closed || q.n == len(q.buf) {
		q.mu.Unlock()
		q.dropped.Add(1)
		if q.onDrop != nil {
			q.onDrop.Inc()
		}
		return false
	}
	q.put(item)
	q.mu.Unlock()
	return true
}

// put adds an item; q.mu is held and there is room.
func (q *Queue[T]) put(item T) {
	q.buf[(q.head+q.n)%len(q.buf)] = item
	q.n++
	signal(q.notEmpty)
	if q.n < len(q.buf) {
		signal(q.notFull)
	}
}

// PopBatch waits for at least one item and returns up to max of them,
// appended to dst[:0]. After Close it drains what is left, then returns
// ErrClosed.
func (q *Queue[T]) PopBatch(ctx context.Context, dst []T, max int) ([]T, error) {
	dst = dst[:0]
	if max < 1 {
		max = 1
	}
	for {
		q.mu.Lock()
		if q.n > 0 {
			var zero T
			for q.n > 0 && len(dst) < max {
				dst = append(dst, q.buf[q.head])
				q.buf[q.head] = zero // let the GC have it
				q.head = (q.head + 1) % len(q.buf)
				q.n--
			}
			if q.n > 0 {
				signal(q.notEmpty)
			}
			signal(q.notFull)
			q.mu.Unlock()
			return dst, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return dst, ErrClosed
		}
		select {
		case <-q.notEmpty:
		case <-q.done:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
}

// Close stops further pushes and wakes waiting producers and consumers.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

// Len is the number of queued items.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Cap is the capacity.
func (q *Queue[T]) Cap() int { return len(q.buf) }

// Dropped is the number of items TryPush has shed.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }
