package ship

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/testkit"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := &tail.Input{Name: "app", Fields: map[string]string{"app": "shop", "env": "prod \"eu\""}}
	at := time.Date(2026, 11, 22, 0, 15, 0, 123456789, time.UTC)
	for _, line := range []string{
		"plain",
		"quotes \" and \\ backslashes",
		"tabs\tand control \x01\x1f chars",
		"unicode: héllo → 日本 \u2028",
		"bad utf-8: \xff\xfe end",
		"",
	} {
		enc := &Encoder{Host: "web-1", InvalidUTF8: metrics.NewSet().NewCounter("x")}
		ev := &tail.Event{Input: in, Path: "/var/log/a.log", FileID: "1-2-3", Offset: 42, Line: []byte(line), Time: at, Truncated: line == ""}
		data := enc.Append(nil, ev)
		if !json.Valid(data) {
			t.Fatalf("%q: invalid JSON %s", line, data)
		}
		m, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		want := Message{Time: at, Host: "web-1", Path: "/var/log/a.log", File: "1-2-3", Offset: 42, Line: line, Truncated: line == "", Fields: in.Fields}
		m.Raw = nil
		if fmt.Sprint(m) != fmt.Sprint(want) {
			t.Errorf("decoded %+v\nwant    %+v", m, want)
		}
		if bad := enc.InvalidUTF8.Get(); (bad == 1) != (line == "bad utf-8: \xff\xfe end") {
			t.Errorf("%q: invalid UTF-8 counted %d", line, bad)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"line":"x"}`, `{"time":"yesterday"}`, `{"time":"2026-01-01T00:00:00Z","offset":"x"}`} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

// TestKafkaKeysAreShared: the emitter's keys are Key's, and a run of
// records with the same key shares one copy of it while a new key leaves
// the earlier records' keys as they were.
func TestKafkaKeysAreShared(t *testing.T) {
	k, err := NewKafka(KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Host: "h"}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		k.Close(ctx)
	}()
	byPath := &tail.Input{Key: "path"}
	byField := &tail.Input{Key: "field:app", Fields: map[string]string{"app": "shop"}}
	events := []struct {
		ev     *tail.Event
		shared bool // with the previous event's key
	}{
		{&tail.Event{Input: byPath, Path: "/var/log/a.log"}, false},
		{&tail.Event{Input: byPath, Path: "/var/log/a.log"}, true},
		{&tail.Event{Input: byPath, Path: "/var/log/b.log"}, false},
		{&tail.Event{Input: &tail.Input{Key: "host"}, Path: "/var/log/b.log"}, false},
		{&tail.Event{Input: &tail.Input{Key: "host"}, Path: "/var/log/c.log"}, true},
		{&tail.Event{Input: byField, Path: "/var/log/c.log"}, false},
		{&tail.Event{Input: nil, Path: "/var/log/c.log"}, false},
		{&tail.Event{Input: &tail.Input{Key: "none"}, Path: "/var/log/c.log"}, false},
	}
	var keys [][]byte
	for i, e := range events {
		got, want := k.key(e.ev), Key(e.ev, "h")
		if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Fatalf("event %d: key %q, want %q", i, got, want)
		}
		if i > 0 && len(got) > 0 && len(keys[i-1]) > 0 && (&got[0] == &keys[i-1][0]) != e.shared {
			t.Errorf("event %d: shares the previous key's bytes: %v, want %v", i, !e.shared, e.shared)
		}
		keys = append(keys, got)
	}
	for i, e := range events {
		if want := Key(e.ev, "h"); !bytes.Equal(keys[i], want) {
			t.Errorf("event %d's key became %q, want %q", i, keys[i], want)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		key, want string
	}{{"host", "h"}, {"path", "/p"}, {"field:app", "shop"}, {"none", ""}} {
		ev := &tail.Event{Input: &tail.Input{Key: tc.key, Fields: map[string]string{"app": "shop"}}, Path: "/p"}
		if got := string(Key(ev, "h")); got != tc.want {
			t.Errorf("%s: %q", tc.key, got)
		}
	}
}

func TestWriterMarksDoneOnFlush(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, "h")
	acks := newAckCounter(t)
	for i := range 3 {
		w.Emit(context.Background(), acks.event(&tail.Input{}, "/p", fmt.Sprint(i)))
	}
	if buf.Len() != 0 || acks.done() != 0 {
		t.Fatal("written or done before Flush")
	}
	w.Flush(context.Background())
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 3 || acks.done() != 3 {
		t.Fatalf("%d lines, %d done", n, acks.done())
	}
}

// TestKafkaDeliversAndRidesOutAnOutage produces into kfake, makes every
// Produce fail for a while (the broker "down"), and checks that nothing is
// marked delivered meanwhile, that Emit blocks once the buffer is full,
// and that every event arrives after the broker returns.
func TestKafkaDeliversAndRidesOutAnOutage(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatLine} {
		// Three producers over two partitions: keys share partitions
		// across clients, and each key still keeps its order.
		for _, producers := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/producers=%d", format, producers), func(t *testing.T) { testOutage(t, format, producers) })
		}
	}
}

func testOutage(t *testing.T, format string, producers int) {
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 2))
	var down atomic.Bool
	kc.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake().KeepControl()
		if down.Load() {
			return nil, errors.New("broker down"), true
		}
		return nil, nil, false
	})
	set := metrics.NewSet()
	k := newTestKafka(t, KafkaConfig{Brokers: kc.Addrs(), Host: "h", BufferBytes: 64 << 10, BatchBytes: 16 << 10, Linger: time.Millisecond, Format: format, Producers: producers}, set)
	tl := newAckCounter(t)
	in := &tail.Input{Topic: "logs", Key: "path"}
	emit := func(from, n int) {
		for i := from; i < from+n; i++ {
			ev := tl.event(in, fmt.Sprintf("/var/log/%d.log", i%3), fmt.Sprintf("line %05d %s", i, bytes.Repeat([]byte("p"), 200)))
			if err := k.Emit(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit(0, 100)
	waitFor(t, "100 acks", func() bool { return tl.done() == 100 })

	down.Store(true)
	blocked := make(chan struct{})
	go func() {
		emit(100, 3000) // ~700 KiB: more than the 64 KiB buffer and the queue before it
		close(blocked)
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-blocked:
		t.Fatal("Emit did not block with the buffer full and the broker down")
	default:
	}
	if n := tl.done(); n != 100 {
		t.Fatalf("%d events marked delivered during the outage", n)
	}
	if b := k.Buffered(); b > 1000 {
		t.Errorf("%d records buffered", b)
	}
	down.Store(false)
	<-blocked
	waitFor(t, "3100 acks", func() bool { return tl.done() == 3100 })
	recs := kc.ReadTopic(t, "logs", 3100, 10*time.Second)
	perPath := map[string]int{}
	for _, r := range recs {
		m, err := DecodeRecord(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != m.Path {
			t.Fatalf("key %q for path %q", r.Key, m.Path)
		}
		var seq int
		fmt.Sscanf(m.Line, "line %d", &seq)
		if seq <= perPath[m.Path]-1 {
			t.Fatalf("%s: line %d after %d", m.Path, seq, perPath[m.Path]-1)
		}
		perPath[m.Path] = seq + 1
	}
}

type ackCounter struct{ n atomic.Int64 }

func newAckCounter(*testing.T) *ackCounter { return &ackCounter{} }

// event returns an event whose Done is counted.
func (a *ackCounter) event(in *tail.Input, path, line string) *tail.Event {
	return &tail.Event{Input: in, Path: path, Line: []byte(line), Time: time.Now(), OnDone: func() { a.n.Add(1) }}
}

func (a *ackCounter) done() int64 { return a.n.Load() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
