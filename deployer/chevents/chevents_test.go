package chevents

import (
	"context"
	"testing"
	"time"

	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/internal/chconn"
	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestEventsReachClickHouse(t *testing.T) {
	ch := testkit.SharedClickHouse(t)
	st, err := store.Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sh, err := Open(st, Options{Target: chconn.Target{Addr: ch.NativeAddr(), Database: ch.Database()}})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	now := time.Date(2026, 11, 22, 1, 2, 3, 456, time.UTC)
	d := &store.Deploy{Kind: store.KindDeploy, App: "web", Env: "prod", Version: "1.0", SHA256: "x"}
	if err := st.Enqueue(d, now); err != nil {
		t.Fatal(err)
	}
	l, _ := st.Acquire("t", time.Minute, now)
	if _, err := st.Update(l.Token, d.ID, now, func(d *store.Deploy, tx *store.Tx) error {
		tx.Emit(store.Event{Kind: "dispatched", Host: "h1", Batch: 2, TaskID: d.ID + "-h1-1", Version: "1.0"})
		tx.Emit(store.Event{Kind: "failed", Host: "h1", Batch: 2, State: "failed", Detail: "health: exit 1"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	conn := ch.Conn(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+DefaultTable).Scan(&n); err == nil && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events not in ClickHouse")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var host, detail, app string
	var batch, nanos uint32
	var seq uint64
	if err := conn.QueryRow(ctx, "SELECT host, detail, app, batch, nanos, seq FROM "+DefaultTable+" WHERE kind = 'failed'").
		Scan(&host, &detail, &app, &batch, &nanos, &seq); err != nil {
		t.Fatal(err)
	}
	if host != "h1" || detail != "health: exit 1" || app != "web" || batch != 2 || nanos != 456 || seq != 3 {
		t.Errorf("row %s %q %s batch %d nanos %d seq %d", host, detail, app, batch, nanos, seq)
	}
	// Shipped events leave the log.
	for evs, _ := st.EventLog(10); len(evs) > 0; evs, _ = st.EventLog(10) {
		if time.Now().After(deadline) {
			t.Fatalf("shipped events still logged: %d", len(evs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
