package agents

import (
	"context"
	"testing"
	"time"

	"github.com/opskit/opskit/deploy/release"
)

func TestHubLongPoll(t *testing.T) {
	h := NewHub()
	ctx := context.Background()
	got := make(chan []release.Task, 1)
	go func() { got <- h.Poll(ctx, "h1", "", 5*time.Second) }()
	for h.Parked() != 1 {
		time.Sleep(time.Millisecond)
	}
	h.Send(ctx, "h2", release.Task{ID: "other"})
	h.Send(ctx, "h1", release.Task{ID: "t1"})
	select {
	case ts := <-got:
		if len(ts) != 1 || ts[0].ID != "t1" {
			t.Fatalf("poll got %v", ts)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a parked poll was not woken by a task")
	}
	// Resent until withdrawn; sending again keeps one copy.
	h.Send(ctx, "h1", release.Task{ID: "t1"})
	h.Send(ctx, "h1", release.Task{ID: "t2"})
	if ts := h.Poll(ctx, "h1", "", time.Millisecond); len(ts) != 2 {
		t.Fatalf("again: %v", ts)
	}
	if ts := h.Poll(ctx, "h1", "t1", time.Millisecond); len(ts) != 1 || ts[0].ID != "t2" {
		t.Fatalf("after t1: %v", ts)
	}
	h.Withdraw("h1", "t1")
	h.Withdraw("h1", "t2")
	start := time.Now()
	if ts := h.Poll(ctx, "h1", "", 50*time.Millisecond); ts != nil || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("empty poll answered %v after %v", ts, time.Since(start))
	}
	if h.Parked() != 0 || h.Pending() != 1 {
		t.Errorf("parked %d pending %d", h.Parked(), h.Pending())
	}
	h.Withdraw("h2", "other")
	if len(h.hosts) != 0 {
		t.Errorf("idle hosts kept: %d", len(h.hosts))
	}
}

func BenchmarkIdlePolls(b *testing.B) {
	h := NewHub()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 1000 {
		go h.Poll(ctx, "h"+string(rune('a'+i%26))+time.Duration(i).String(), "", time.Hour)
	}
	for h.Parked() != 1000 {
		time.Sleep(time.Millisecond)
	}
	b.ResetTimer()
	for range b.N {
		h.Send(ctx, "busy", release.Task{ID: "t"})
		h.Poll(ctx, "busy", "", 0)
		h.Withdraw("busy", "t")
	}
}
