package exposure

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
)

func exp(unit, experiment string) events.Event {
	return events.Event{Kind: events.Exposure, Unit: unit, Experiment: experiment, Variant: "v"}
}

func TestBufferDeduplicates(t *testing.T) {
	b := NewBuffer(1000, 1000)
	for _, c := range []struct {
		name string
		add  []events.Event
		want Result
	}{
		{"first pair", []events.Event{exp("u1", "e")}, Result{Added: 1}},
		{"same pair again", []events.Event{exp("u1", "e")}, Result{Duplicates: 1}},
		{"other experiment, other unit", []events.Event{exp("u1", "f"), exp("u2", "e")}, Result{Added: 2}},
		// Units and experiments do not run together: ("ab","c") != ("a","bc").
		{"pair boundaries", []events.Event{exp("ab", "c"), exp("a", "bc")}, Result{Added: 2}},
		{"a pair twice in one call", []events.Event{exp("u3", "e"), exp("u3", "e")}, Result{Added: 1, Duplicates: 1}},
	} {
		if got := b.Add(c.add); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	got := b.Drain(nil)
	if len(got) != 6 || b.Len() != 0 {
		t.Fatalf("drained %d exposures (%d left), want 6", len(got), b.Len())
	}
	// Order holds within a shard (a unit's exposures), not across shards.
	pairs := map[string]bool{}
	for _, e := range got {
		pairs[e.Unit+"/"+e.Experiment+"/"+e.Variant] = true
	}
	for _, want := range []string{"u1/e/v", "u1/f/v", "u2/e/v", "ab/c/v", "a/bc/v", "u3/e/v"} {
		if !pairs[want] {
			t.Errorf("%s not drained: %v", want, pairs)
		}
	}
	if more := b.Drain(nil); len(more) != 0 {
		t.Errorf("second drain took %d", len(more))
	}
}

func TestBufferDedupIsBounded(t *testing.T) {
	b := NewBuffer(1_000_000, 6400)
	for i := range 100_000 {
		b.Add([]events.Event{exp(fmt.Sprint("u", i), "e")})
	}
	slots := 0
	for i := range b.shards {
		slots += len(b.shards[i].pairs)
	}
	// Twice the capacity, rounded up to a power of two per shard.
	if slots < 2*6400 || slots > 4*6400 {
		t.Fatalf("%d pairs remembered, want between %d and %d", slots, 2*6400, 4*6400)
	}
	// The most recent pairs are still remembered.
	if r := b.Add([]events.Event{exp("u99999", "e")}); r.Duplicates != 1 {
		t.Fatal("recent pair forgotten")
	}
	remembered := 0
	for i := 100_000 - 6400; i < 100_000; i++ {
		remembered += b.Add([]events.Event{exp(fmt.Sprint("u", i), "e")}).Duplicates
	}
	// A set forgets early only when more than 8 of the recent pairs fall in
	// it: a few per cent at most.
	if remembered < 6400*95/100 {
		t.Fatalf("%d of the last 6,400 pairs remembered", remembered)
	}
}

// TestSetForgetsTheLeastRecent: a set keeps its 8 most recently seen pairs.
func TestSetForgetsTheLeastRecent(t *testing.T) {
	set := make([]uint64, setWays)
	for k := uint64(1); k <= setWays; k++ {
		remember(set, k)
	}
	if !seen(set, 1) { // 1 becomes the most recent
		t.Fatal("pair 1 forgotten")
	}
	remember(set, 100) // forgets 2, the least recent
	if seen(set, 2) {
		t.Fatal("pair 2 still remembered")
	}
	for _, k := range []uint64{1, 3, 4, 5, 6, 7, 8, 100} {
		if !seen(set, k) {
			t.Fatalf("pair %d forgotten", k)
		}
	}
}

// TestBufferFull: beyond its capacity the buffer drops new pairs without
// remembering them, so they are logged once there is room again.
func TestBufferFull(t *testing.T) {
	b := NewBuffer(shards, 1000) // one exposure per shard
	dropped := 0
	for i := range 1000 {
		dropped += b.Add([]events.Event{exp(fmt.Sprint("u", i), "e")}).Dropped
	}
	if n := b.Len(); n != shards || dropped != 1000-shards {
		t.Fatalf("%d waiting, %d dropped; want %d, %d", n, dropped, shards, 1000-shards)
	}
	b.Drain(nil)
	added := 0
	for i := range 1000 {
		added += b.Add([]events.Event{exp(fmt.Sprint("u", i), "e")}).Added
	}
	if added != shards {
		t.Fatalf("after a drain %d dropped pairs were taken, want %d", added, shards)
	}
}

func TestBufferWaitAndClose(t *testing.T) {
	b := NewBuffer(100, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an empty buffer: %v", err)
	}
	b.Add([]events.Event{exp("u1", "e")})
	if err := b.Wait(context.Background()); err != nil {
		t.Fatalf("Wait with an exposure waiting: %v", err)
	}
	b.Close()
	if err := b.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	if r := b.Add([]events.Event{exp("u2", "e")}); r.Dropped != 1 {
		t.Fatalf("Add after Close: %+v", r)
	}
	if got := b.Drain(nil); len(got) != 1 || got[0].Unit != "u1" {
		t.Fatalf("drain after Close: %+v", got)
	}
}

// TestBufferConcurrent: many producers and a draining writer; every new
// pair comes out exactly once (run with -race).
func TestBufferConcurrent(t *testing.T) {
	b := NewBuffer(1_000_000, 1_000_000)
	const producers, perProducer = 8, 5000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				// Every pair is offered by two producers.
				unit := fmt.Sprint("u", (p/2)*perProducer+i)
				b.Add([]events.Event{exp(unit, "e"), exp(unit, "f")})
			}
		}()
	}
	producing, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	seen := map[string]int{}
	go func() {
		defer close(done)
		var batch []events.Event
		for {
			err := b.Wait(producing)
			batch = b.Drain(batch[:0])
			for _, e := range batch {
				seen[e.Unit+"/"+e.Experiment]++
			}
			if err != nil {
				// The producers are done: take what is left.
				for _, e := range b.Drain(batch[:0]) {
					seen[e.Unit+"/"+e.Experiment]++
				}
				return
			}
		}
	}()
	wg.Wait()
	cancel()
	<-done
	if want := producers / 2 * perProducer * 2; len(seen) != want {
		t.Fatalf("%d distinct pairs drained, want %d", len(seen), want)
	}
	for pair, n := range seen {
		if n != 1 {
			t.Fatalf("pair %s drained %d times", pair, n)
		}
	}
}
