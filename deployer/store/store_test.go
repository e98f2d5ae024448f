package store

import (
	"errors"
	bolt "go.etcd.io/bbolt"
	"testing"
	"time"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestLeaseFencing(t *testing.T) {
	s, _ := open(t)
	now := time.Now()
	a, err := s.Acquire("a", 10*time.Second, now)
	if err != nil || a.Token != 1 {
		t.Fatalf("first acquire: %+v %v", a, err)
	}
	if _, err := s.Acquire("b", 10*time.Second, now.Add(time.Second)); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("b took a held lease: %v", err)
	}
	d := &Deploy{Kind: KindDeploy, App: "web", Env: "prod", Version: "1", SHA256: "x"}
	if err := s.Enqueue(d, now); err != nil {
		t.Fatal(err)
	}
	write := func(token uint64) error {
		_, err := s.Update(token, d.ID, now, func(d *Deploy, tx *Tx) error { d.State = Running; return nil })
		return err
	}
	if err := write(a.Token); err != nil {
		t.Fatalf("holder's write: %v", err)
	}
	// a's lease expires; b takes over with a higher token.
	b, err := s.Acquire("b", 10*time.Second, now.Add(11*time.Second))
	if err != nil || b.Token != 2 {
		t.Fatalf("b after expiry: %+v %v", b, err)
	}
	if err := write(a.Token); !errors.Is(err, ErrFenced) {
		t.Errorf("a's write after b took over: %v, want ErrFenced", err)
	}
	if err := s.Renew("a", a.Token, time.Second, now.Add(12*time.Second)); !errors.Is(err, ErrFenced) {
		t.Errorf("a renewed: %v", err)
	}
	if err := write(b.Token); err != nil {
		t.Errorf("b's write: %v", err)
	}
	// b renewing keeps its token; a graceful release lets a in at once.
	if again, err := s.Acquire("b", 10*time.Second, now.Add(12*time.Second)); err != nil || again.Token != 2 {
		t.Errorf("b again: %+v %v", again, err)
	}
	if err := s.ReleaseLease("b", b.Token); err != nil {
		t.Fatal(err)
	}
	if a2, err := s.Acquire("a", 10*time.Second, now.Add(13*time.Second)); err != nil || a2.Token != 3 {
		t.Errorf("a after release: %+v %v", a2, err)
	}
}

func TestQueueOrderAndPersistence(t *testing.T) {
	s, dir := open(t)
	now := time.Now()
	var ids []string
	for i, v := range []string{"1", "2", "3"} {
		d := &Deploy{Kind: KindDeploy, App: "web", Env: "prod", Version: v, SHA256: "sha" + v, Artifact: "http://x/" + v}
		if i == 2 {
			d.Kind, d.Priority = KindRollback, true
		}
		if err := s.Enqueue(d, now); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	q, err := s.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 3 || q[0].ID != ids[2] || q[1].ID != ids[0] || q[2].ID != ids[1] {
		t.Errorf("queue order %v, want the rollback first then by submission (%v)", q, ids)
	}
	// A version names one package.
	if err := s.Enqueue(&Deploy{Kind: KindDeploy, App: "web", Version: "1", SHA256: "other"}, now); !errors.Is(err, ErrConflict) {
		t.Errorf("reused version: %v", err)
	}
	if r, ok := s.Release("web", "2"); !ok || r.Artifact != "http://x/2" {
		t.Errorf("catalog: %+v %v", r, ok)
	}
	l, _ := s.Acquire("a", time.Minute, now)
	_, err = s.Update(l.Token, ids[0], now, func(d *Deploy, tx *Tx) error {
		d.State = Running
		tx.Emit(Event{Kind: "state", State: Running})
		tx.Emit(Event{Kind: "dispatched", Host: "h1", TaskID: d.ID + "-h1-1"})
		return tx.IndexTask(d.ID+"-h1-1", TaskRef{Deploy: d.ID, Host: "h1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(AuditEntry{Time: now, User: "ci", Action: "submit", App: "web", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	evs, err := s2.Events(ids[0], 1, 0)
	if err != nil || len(evs) != 2 || evs[0].Seq != 2 || evs[1].Host != "h1" {
		t.Errorf("events after 1: %+v %v", evs, err)
	}
	if ref, err := s2.Task(ids[0] + "-h1-1"); err != nil || ref.Host != "h1" || ref.Deploy != ids[0] {
		t.Errorf("task ref %+v %v", ref, err)
	}
	if list, _ := s2.List(Filter{App: "web", States: []string{Running}}); len(list) != 1 || list[0].ID != ids[0] {
		t.Errorf("running list %v", list)
	}
	if a, _ := s2.AuditLog("web", 10); len(a) != 1 || a[0].User != "ci" {
		t.Errorf("audit %+v", a)
	}
	// Other deploys' events are not mixed in.
	if evs, _ := s2.Events(ids[1], 0, 0); len(evs) != 1 || evs[0].Deploy != ids[1] {
		t.Errorf("events of %s: %+v", ids[1], evs)
	}
}

func TestListIndexIsRebuiltForAnOlderStore(t *testing.T) {
	s, dir := open(t)
	now := time.Now()
	for _, v := range []string{"1", "2"} {
		if err := s.Enqueue(&Deploy{Kind: KindDeploy, App: "web", Env: "prod", Version: v, SHA256: v}, now); err != nil {
			t.Fatal(err)
		}
	}
	// A store written before the index existed.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketIndex) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.List(Filter{App: "web", States: []string{Queued}, Limit: 1})
	if err != nil || len(got) != 1 || got[0].Version != "2" {
		t.Fatalf("list after reopen: %v %v", got, err)
	}
}

func TestEventLogOnlyWhenShipping(t *testing.T) {
	s, _ := open(t)
	now := time.Now()
	if err := s.Enqueue(&Deploy{Kind: KindDeploy, App: "web", Version: "1", SHA256: "1"}, now); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.EventLog(10); len(evs) != 0 {
		t.Fatalf("logged without a shipper: %v", evs)
	}
	s.LogEvents()
	for _, v := range []string{"2", "3", "4"} {
		if err := s.Enqueue(&Deploy{Kind: KindDeploy, App: "web", Env: "prod", Version: v, SHA256: v}, now); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.EventLog(2)
	if err != nil || len(evs) != 2 || evs[0].App != "web" || evs[0].Env != "prod" || evs[0].Pos >= evs[1].Pos {
		t.Fatalf("log %+v %v", evs, err)
	}
	if err := s.TrimEventLog(evs[1].Pos); err != nil {
		t.Fatal(err)
	}
	if rest, _ := s.EventLog(10); len(rest) != 1 || rest[0].Pos <= evs[1].Pos {
		t.Errorf("after trim: %+v", rest)
	}
}
