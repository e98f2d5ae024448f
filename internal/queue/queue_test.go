package queue

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func TestFIFOAndBatches(t *testing.T) {
	q := New[int](4, nil)
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		if err := q.Push(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	got, err := q.PopBatch(ctx, nil, 3)
	if err != nil || len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("PopBatch = %v, %v; want [1 2 3]", got, err)
	}
	q.Push(ctx, 5)
	got, _ = q.PopBatch(ctx, got, 10)
	if len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Fatalf("PopBatch after wrap = %v; want [4 5]", got)
	}
}

func TestTryPushDropsAndCounts(t *testing.T) {
	set := metrics.NewSet()
	c := set.NewCounter("dropped_total")
	q := New[string](2, c)
	if !q.TryPush("a") || !q.TryPush("b") {
		t.Fatal("TryPush refused with room left")
	}
	if q.TryPush("c") {
		t.Fatal("TryPush accepted into a full queue")
	}
	if q.Dropped() != 1 || c.Get() != 1 {
		t.Fatalf("dropped = %d, counter = %d; want 1, 1", q.Dropped(), c.Get())
	}
}

func TestPushBlocksUntilRoom(t *testing.T) {
	q := New[int](1, nil)
	ctx := context.Background()
	q.Push(ctx, 1)
	pushed := make(chan error)
	go func() { pushed <- q.Push(ctx, 2) }()
	select {
	case <-pushed:
		t.Fatal("Push into a full queue returned without waiting")
	case <-time.After(50 * time.Millisecond):
	}
	if got, _ := q.PopBatch(ctx, nil, 1); got[0] != 1 {
		t.Fatalf("got %v", got)
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if q.Len() != 1 {
		t.Fatalf("Len = %d; want 1", q.Len())
	}
}

func TestPushHonoursContext(t *testing.T) {
	q := New[int](1, nil)
	q.Push(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Push(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Push = %v; want deadline exceeded", err)
	}
}

func TestCloseDrainsThenErrClosed(t *testing.T) {
	q := New[int](3, nil)
	ctx := context.Background()
	q.Push(ctx, 1)
	q.Push(ctx, 2)
	q.Close()
	q.Close() // twice is harmless
	if err := q.Push(ctx, 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after Close = %v; want ErrClosed", err)
	}
	got, err := q.PopBatch(ctx, nil, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("drain = %v, %v", got, err)
	}
	if _, err := q.PopBatch(ctx, nil, 10); !errors.Is(err, ErrClosed) {
		t.Fatalf("PopBatch on drained closed queue = %v; want ErrClosed", err)
	}
}

func TestConcurrentProducersLoseNothing(t *testing.T) {
	q := New[int](16, nil)
	ctx := context.Background()
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := q.Push(ctx, 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); q.Close() }()
	total := 0
	var buf []int
	for {
		var err error
		buf, err = q.PopBatch(ctx, buf, 7)
		total += len(buf)
		if errors.Is(err, ErrClosed) {
			break
		}
	}
	if total != producers*each {
		t.Fatalf("consumed %d; want %d", total, producers*each)
	}
}
