package alertstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

func mk(i int, now time.Time) *alert.Alert {
	return &alert.Alert{Labels: alert.Labels{"alertname": "A", "instance": fmt.Sprint(i)}, Annotations: alert.Labels{},
		StartsAt: now, EndsAt: now.Add(time.Hour), UpdatedAt: now}
}

func TestPutReopenAndGC(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := Open(dir, clock, time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := s.Put([]*alert.Alert{mk(w*50+i, now)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	// A later report of alert 0 extends it; alert 1 resolves.
	upd := mk(0, now.Add(time.Minute))
	upd.EndsAt = now.Add(3 * time.Hour)
	res := mk(1, now)
	res.EndsAt = now.Add(-time.Second)
	s.Put([]*alert.Alert{upd, res})
	s.Close()

	s, err = Open(dir, clock, time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 400 {
		t.Fatalf("%d alerts after reopen, want 400", s.Len())
	}
	a, _ := s.Get(mk(0, now).Fingerprint())
	if !a.EndsAt.Equal(now.Add(3*time.Hour)) || !a.StartsAt.Equal(now) {
		t.Fatalf("merged alert after reopen: %+v", a)
	}
	if f, r := s.Counts(); f != 399 || r != 1 {
		t.Fatalf("counts %d firing %d resolved", f, r)
	}
	now = now.Add(time.Hour) // alert 1 ended over an hour ago, the others end now
	gone, err := s.GC()
	if err != nil || len(gone) != 1 {
		t.Fatalf("GC removed %d, %v", len(gone), err)
	}
	s.Close()
	s, _ = Open(dir, clock, time.Hour, 0)
	defer s.Close()
	if s.Len() != 399 {
		t.Fatalf("GC not durable: %d", s.Len())
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s, _ := Open(dir, time.Now, time.Hour, 0)
	s.Put([]*alert.Alert{mk(1, now), mk(2, now)})
	s.Close()
	path := filepath.Join(dir, segmentName(1))
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, '{', '"'}) // a record cut mid-write
	f.Close()
	s, err := Open(dir, time.Now, time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 {
		t.Fatalf("%d alerts", s.Len())
	}
	s.Put([]*alert.Alert{mk(3, now)})
	s.Close()
	s, _ = Open(dir, time.Now, time.Hour, 0)
	defer s.Close()
	if s.Len() != 3 {
		t.Fatalf("write after a cut tail lost: %d alerts", s.Len())
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s, _ := Open(dir, time.Now, time.Hour, 4096)
	for round := range 5 {
		for i := range 100 {
			a := mk(i, now)
			a.Annotations["round"] = fmt.Sprint(round)
			if _, err := s.Put([]*alert.Alert{a}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.Close()
	segs, _ := segments(dir)
	if _, err := os.Stat(filepath.Join(dir, snapshotName)); err != nil || len(segs) > 2 {
		t.Fatalf("no compaction: snapshot %v, segments %v", err, segs)
	}
	s, err := Open(dir, time.Now, time.Hour, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != 100 {
		t.Fatalf("%d alerts after compaction", s.Len())
	}
	for _, a := range s.List() {
		if a.Annotations["round"] != "4" {
			t.Fatalf("stale state after compaction: %+v", a)
		}
	}
}
