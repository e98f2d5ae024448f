package history

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/store"
	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

type memSink struct{ got []Event }

func (s *memSink) Write(_ context.Context, es []Event) error {
	s.got = append(s.got, es...)
	return nil
}

func TestRecordQueryGC(t *testing.T) {
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	sink := &memSink{}
	l := New(db, 24*time.Hour, clock, sink, slog.New(slog.DiscardHandler), metrics.NewSet())
	web01 := &alert.Alert{Labels: alert.Labels{"alertname": "Disk", "endpoint": "web01"}}
	web02 := &alert.Alert{Labels: alert.Labels{"alertname": "Disk", "endpoint": "web02"}}
	l.RecordAlert("firing", web01, "", "", "")
	now = now.Add(time.Hour)
	l.RecordAlert("firing", web02, "", "", "")
	l.Record("notified", &notify.Notification{ID: "n1", Receiver: "team", GroupKey: "g", GroupLabels: alert.Labels{"alertname": "Disk"}}, "")
	l.RecordSilence("silence_set", alert.Labels{"endpoint": "web01"}, "maint")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	cancel()
	<-done // Run writes what was queued before it returns

	ms, _ := matcher.Parse("endpoint=web01")
	got, err := l.Query(now.Add(-48*time.Hour), ms, 0)
	if err != nil || len(got) != 2 || got[0].Kind != "firing" || got[1].Kind != "silence_set" {
		t.Fatalf("query endpoint=web01: %+v %v", got, err)
	}
	all, _ := l.Query(now.Add(-48*time.Hour), nil, 0)
	if len(all) != 4 || len(sink.got) != 4 {
		t.Fatalf("all events %d, sink %d", len(all), len(sink.got))
	}
	last, _ := l.Query(now.Add(-48*time.Hour), nil, 1)
	if len(last) != 1 || last[0].Kind != "silence_set" {
		t.Fatalf("limit 1 keeps the newest: %+v", last)
	}
	recent, _ := l.Query(now.Add(-30*time.Minute), nil, 0)
	if len(recent) != 3 {
		t.Fatalf("since 30m: %d", len(recent))
	}
	now = now.Add(23*time.Hour + 30*time.Minute) // the first event is now 24.5h old
	if err := l.GC(); err != nil {
		t.Fatal(err)
	}
	if all, _ := l.Query(time.Time{}, nil, 0); len(all) != 3 {
		t.Fatalf("after GC %d events", len(all))
	}
}

func TestClickHouseSink(t *testing.T) {
	ch := testkit.SharedClickHouse(t)
	ctx := context.Background()
	sink, err := OpenClickHouse(ctx, ClickHouseOptions{Addr: ch.NativeAddr(), Database: ch.Database()})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// Opening again finds the table.
	again, err := OpenClickHouse(ctx, ClickHouseOptions{Addr: ch.NativeAddr(), Database: ch.Database()})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err = sink.Write(ctx, []Event{
		{Time: at, Kind: "firing", Fingerprint: "00000000000000aa", Labels: alert.Labels{"alertname": "Disk", "endpoint": "web01"}},
		{Time: at.Add(time.Second), Kind: "notified", Labels: alert.Labels{"alertname": "Disk"}, Receiver: "team", Notification: "n1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ch.Conn(t).Query(ctx, "SELECT kind, alertname, label_values[indexOf(label_names, 'endpoint')], receiver, toUnixTimestamp(time) FROM alert_events ORDER BY time")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var kind, name, endpoint, receiver string
		var ts uint32
		if err := rows.Scan(&kind, &name, &endpoint, &receiver, &ts); err != nil {
			t.Fatal(err)
		}
		got = append(got, kind+" "+name+" "+endpoint+" "+receiver+" "+time.Unix(int64(ts), 0).UTC().Format(time.RFC3339))
	}
	want := []string{"firing Disk web01  2026-01-02T03:04:05Z", "notified Disk  team 2026-01-02T03:04:06Z"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("rows %q, want %q", got, want)
	}
	if _, err := OpenClickHouse(ctx, ClickHouseOptions{Addr: ch.NativeAddr(), Table: "bad-name"}); err == nil {
		t.Fatal("bad table name accepted")
	}
}
