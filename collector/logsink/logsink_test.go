package logsink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/ship"
	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// produce writes n events of host h into topic "logs".
func produce(t testing.TB, kc *testkit.KafkaCluster, n int, base time.Time) {
	t.Helper()
	cl := kc.Client(t)
	enc := &ship.Encoder{Host: "web-1"}
	in := &tail.Input{Fields: map[string]string{"app": "shop", "env": "prod"}}
	var recs []*kgo.Record
	flush := func() {
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
	}
	for i := range n {
		if len(recs) == 10000 {
			flush()
		}
		path := fmt.Sprintf("/var/log/app-%d.log", i%2)
		ev := &tail.Event{Input: in, Path: path, FileID: fmt.Sprintf("f%d", i%2), Offset: int64(i * 100),
			Line: []byte(fmt.Sprintf("line %05d level=%s", i, map[bool]string{true: "ERROR", false: "INFO"}[i%10 == 0])),
			Time: base.Add(time.Duration(i) * time.Millisecond)}
		recs = append(recs, &kgo.Record{Topic: "logs", Key: []byte(path), Value: enc.Append(nil, ev)})
	}
	recs = append(recs, &kgo.Record{Topic: "logs", Value: []byte("not an event")})
	flush()
}

func runSink(t *testing.T, cfg Config, set *metrics.Set) (*Sink, func()) {
	t.Helper()
	s, err := New(cfg, set, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	}
	return s, stop
}

func count(t *testing.T, chs *testkit.ClickHouseServer, query string) uint64 {
	t.Helper()
	var n uint64
	if err := chs.Conn(t).QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSinkCommitsOnlyAfterInsert: with ClickHouse down the sink keeps
// retrying and commits nothing, so a new sink inserts everything once
// ClickHouse is back; after that, offsets are committed and a restart
// inserts nothing again. Then grep finds the lines.
func TestSinkCommitsOnlyAfterInsert(t *testing.T) {
	chs := testkit.SharedClickHouse(t)
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 2))
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	produce(t, kc, 1000, base)
	proxy := testkit.NewCutProxy(t, chs.NativeAddr())
	proxy.SetCut(true)
	cfg := Config{Brokers: kc.Addrs(), Topics: []string{"logs"}, Group: "sink-test", BatchRows: 300, BatchWait: 50 * time.Millisecond,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		ClickHouse: ClickHouse{Addr: proxy.Addr(), Database: chs.Database(), Table: "logs"}}
	set := metrics.NewSet()
	_, stop := runSink(t, cfg, set)
	waitFor(t, "failed inserts", func() bool { return set.GetOrCreateCounter("opskit_collector_sink_failed_inserts_total").Get() >= 3 })
	stop()
	if gi := kc.Fake().GroupInfo("sink-test"); gi != nil && len(gi.Commits["logs"]) > 0 {
		t.Fatalf("offsets committed while ClickHouse was down: %+v", gi.Commits)
	}

	// ClickHouse is back: a new member of the group starts from the
	// beginning, as nothing was committed.
	proxy.SetCut(false)
	s, stop := runSink(t, cfg, metrics.NewSet())
	waitFor(t, "1000 rows", func() bool { return s.Inserted() >= 1000 })
	stop()
	if n := count(t, chs, "SELECT count() FROM logs"); n != 1000 {
		t.Fatalf("%d rows, want 1000", n)
	}
	s, stop = runSink(t, cfg, metrics.NewSet())
	time.Sleep(500 * time.Millisecond)
	stop()
	if s.Inserted() != 0 {
		t.Fatalf("a restart inserted %d rows again: offsets were not committed", s.Inserted())
	}

	conn, err := Open(ClickHouse{Addr: chs.NativeAddr(), Database: chs.Database(), Table: "logs"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		q     Query
		count int
		last  string
	}{
		{Query{Pattern: "ERROR", Limit: 1000}, 100, "line 00990 level=ERROR"},
		{Query{Pattern: "ERROR", Path: "/var/log/app-0.log", Limit: 3}, 3, "line 00990 level=ERROR"},
		{Query{Path: "/var/log/app-1%", Limit: 1000}, 500, "line 00999 level=INFO"},
		{Query{Host: "other"}, 0, ""},
		{Query{Since: base.Add(time.Second), Limit: 1000}, 0, ""},
		{Query{Since: base, Limit: 5}, 5, "line 00999 level=INFO"},
	} {
		lines, err := Grep(context.Background(), conn, "logs", tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != tc.count || (tc.count > 0 && lines[len(lines)-1].Line != tc.last) {
			t.Errorf("%+v: %d lines, last %v", tc.q, len(lines), lines[max(0, len(lines)-1):])
		}
	}
}

// TestRepeatsAreHarmless inserts the same rows twice (a batch repeated
// after a crash): searches see each line once.
func TestRepeatsAreHarmless(t *testing.T) {
	chs := testkit.SharedClickHouse(t)
	s, err := New(Config{Brokers: []string{"x"}, Topics: []string{"x"}, ClickHouse: ClickHouse{Addr: chs.NativeAddr(), Database: chs.Database()}}, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	rows := &columns{}
	rows.add(ship.Message{Time: time.Now(), Host: "h", Path: "/p", File: "f1", Offset: 0, Line: "one"})
	rows.add(ship.Message{Time: time.Now(), Host: "h", Path: "/p", File: "f1", Offset: 4, Line: "two", Truncated: true, Fields: map[string]string{"a": "b"}})
	for range 2 {
		if err := s.insert(context.Background(), rows); err != nil {
			t.Fatal(err)
		}
	}
	lines, err := Grep(context.Background(), s.conn, "logs", Query{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, l.Line)
	}
	if strings.Join(got, ",") != "one,two" {
		t.Fatalf("grep after a repeated batch: %v", got)
	}
}
