package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
)

type flaky struct {
	mu       sync.Mutex
	failures int
	got      []events.Event
}

func (d *flaky) Deliver(_ context.Context, evs []events.Event) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failures > 0 {
		d.failures--
		return errors.New("down")
	}
	d.got = append(d.got, evs...)
	return nil
}

func (d *flaky) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

func TestForwardRetriesAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	dest := &flaky{failures: 3}
	f, err := New(dest, Options{Name: "test", Dir: dir, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	for i := range 100 {
		evs = append(evs, events.Event{Kind: events.Metric, Unit: fmt.Sprint("u", i), Experiment: "e", Name: "n", Value: float64(i), Time: time.Unix(int64(i), 0)})
	}
	if err := f.Append(evs[:60]); err != nil {
		t.Fatal(err)
	}
	// Closed before delivery: the events wait on disk for the next start.
	f.Close()
	f, err = New(dest, Options{Name: "test", Dir: dir, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Pending() != 60 {
		t.Fatalf("%d pending after restart, want 60", f.Pending())
	}
	if err := f.Append(evs[60:]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for dest.count() < 100 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if dest.count() != 100 || f.Pending() != 0 {
		t.Fatalf("delivered %d, pending %d", dest.count(), f.Pending())
	}
	for i, e := range dest.got {
		if e.Unit != evs[i].Unit || e.Value != evs[i].Value || !e.Time.Equal(evs[i].Time) {
			t.Fatalf("event %d: %+v, want %+v", i, e, evs[i])
		}
	}
}
