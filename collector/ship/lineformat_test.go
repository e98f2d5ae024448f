package ship

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/testkit"
)

// TestKafkaLineFormat ships events in the line format and reads them back
// as the sink does: the value is the line's exact bytes, the headers and
// the record's time give back the rest of the event.
func TestKafkaLineFormat(t *testing.T) {
	const batch = 16 << 10
	at := time.Date(2026, 11, 22, 1, 2, 3, 456_000_000, time.UTC)
	plain := &tail.Input{Topic: "logs", Key: "path"}
	withFields := &tail.Input{Topic: "logs", Key: "host", Fields: map[string]string{"app": "shop", "env": "prod \"eu\""}}
	cases := []struct {
		name      string
		in        *tail.Input
		line      string
		truncated bool
		want      string // the line as shipped
		cut       bool   // shipped marked truncated
	}{
		{"plain", plain, `10.0.0.1 - - "GET / HTTP/1.1" 200`, false, `10.0.0.1 - - "GET / HTTP/1.1" 200`, false},
		{"fields", withFields, "ERROR boom", false, "ERROR boom", false},
		{"invalid utf-8 kept as bytes", plain, "ab\xff\xfe\x01c", false, "ab\xff\xfe\x01c", false},
		{"cut by the tailer", plain, "long", true, "long", true},
		{"empty", plain, "", false, "", false},
		{"larger than a batch", plain, strings.Repeat("x", 40<<10), false, "", true},
	}
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 1))
	set := metrics.NewSet()
	k := newTestKafka(t, KafkaConfig{Brokers: kc.Addrs(), Host: "web-1", BatchBytes: batch, Linger: time.Millisecond, Format: FormatLine}, set)
	acks := newAckCounter(t)
	for i, tc := range cases {
		ev := acks.event(tc.in, "/var/log/app.log", tc.line)
		ev.FileID, ev.Offset, ev.Time, ev.Truncated = "803-1a-2b", int64(1000*i), at, tc.truncated
		if err := k.Emit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "acks", func() bool { return acks.done() == int64(len(cases)) })
	recs := kc.ReadTopic(t, "logs", len(cases), 10*time.Second)
	for i, tc := range cases {
		r := recs[i]
		m, err := DecodeRecord(r, Interner{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want == "" && tc.cut {
			if len(r.Value) == 0 || len(r.Value) > batch || strings.Trim(m.Line, "x") != "" {
				t.Errorf("%s: cut to %d bytes", tc.name, len(r.Value))
			}
		} else if m.Line != tc.want {
			t.Errorf("%s: line %q, want %q", tc.name, m.Line, tc.want)
		}
		if m.Truncated != tc.cut {
			t.Errorf("%s: truncated %v, want %v", tc.name, m.Truncated, tc.cut)
		}
		if m.Host != "web-1" || m.Path != "/var/log/app.log" || m.File != "803-1a-2b" || m.Offset != int64(1000*i) || !m.Time.Equal(at) {
			t.Errorf("%s: decoded %+v", tc.name, m)
		}
		if tc.in == withFields && (len(m.Fields) != 2 || m.Fields["env"] != `prod "eu"`) {
			t.Errorf("%s: fields %v", tc.name, m.Fields)
		}
		if tc.in == plain && m.Fields != nil {
			t.Errorf("%s: fields %v on an input without", tc.name, m.Fields)
		}
	}
	// Counted in bursts, exact once nothing is in flight.
	if got := set.GetOrCreateCounter("opskit_collector_logs_kafka_acked_events_total").Get(); got != uint64(len(cases)) {
		t.Errorf("%d events counted as acknowledged, want %d", got, len(cases))
	}
	if got := set.GetOrCreateCounter("opskit_collector_logs_kafka_cut_lines_total").Get(); got != 1 {
		t.Errorf("%d lines counted as cut, want 1", got)
	}
}

// TestDecodeRecordFormats: a record is read as a line-format record only
// when it has path and offset headers, and bad headers are refused.
func TestDecodeRecordFormats(t *testing.T) {
	at := time.UnixMilli(1_790_000_000_000)
	json := []byte(`{"time":"2026-11-22T00:15:00Z","host":"h","path":"/p","file":"f","offset":7,"line":"{\"a\":1}"}`)
	cases := []struct {
		name    string
		rec     *kgo.Record
		line    string
		wantErr bool
	}{
		{"json event", &kgo.Record{Value: json, Timestamp: at}, `{"a":1}`, false},
		{"json line in the line format", &kgo.Record{Value: []byte(`{"a":1}`), Timestamp: at, Headers: []kgo.RecordHeader{
			{Key: HeaderPath, Value: []byte("/p")}, {Key: HeaderOffset, Value: []byte("7")}}}, `{"a":1}`, false},
		{"only a path header: not the line format", &kgo.Record{Value: []byte("plain"), Timestamp: at, Headers: []kgo.RecordHeader{
			{Key: HeaderPath, Value: []byte("/p")}}}, "", true},
		{"bad offset", &kgo.Record{Value: []byte("x"), Timestamp: at, Headers: []kgo.RecordHeader{
			{Key: HeaderPath, Value: []byte("/p")}, {Key: HeaderOffset, Value: []byte("-1")}}}, "", true},
		{"bad fields", &kgo.Record{Value: []byte("x"), Timestamp: at, Headers: []kgo.RecordHeader{
			{Key: HeaderPath, Value: []byte("/p")}, {Key: HeaderOffset, Value: []byte("1")}, {Key: HeaderFields, Value: []byte("{")}}}, "", true},
		{"no time", &kgo.Record{Value: []byte("x"), Headers: []kgo.RecordHeader{
			{Key: HeaderPath, Value: []byte("/p")}, {Key: HeaderOffset, Value: []byte("1")}}}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeRecord(tc.rec, nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (m.Line != tc.line || m.Offset != 7) {
				t.Errorf("decoded %+v", m)
			}
		})
	}
}

// FuzzDecodeLineRecord feeds arbitrary values and headers to the
// line-format decoder: it must never panic, and what it accepts keeps the
// value as the line and a non-negative offset.
func FuzzDecodeLineRecord(f *testing.F) {
	f.Add([]byte("GET / 200"), []byte("/var/log/a.log"), []byte("4096"), []byte(`{"app":"shop"}`), []byte("true"))
	f.Add([]byte{0xff, 0}, []byte(""), []byte("-1"), []byte(`{`), []byte(""))
	f.Add([]byte(""), []byte("p"), []byte("99999999999999999999"), []byte(`null`), []byte("false"))
	f.Fuzz(func(t *testing.T, value, path, offset, fields, truncated []byte) {
		headers := []kgo.RecordHeader{{Key: HeaderPath, Value: path}, {Key: HeaderOffset, Value: offset},
			{Key: HeaderFields, Value: fields}, {Key: HeaderTruncated, Value: truncated}}
		m, ok, err := decodeLineRecord(value, headers, time.UnixMilli(1), Interner{})
		if !ok {
			t.Fatal("a record with path and offset headers not taken for the line format")
		}
		if err == nil && (m.Line != string(value) || m.Offset < 0 || m.Path != string(path)) {
			t.Fatalf("accepted %+v", m)
		}
	})
}

// TestKafkaDyedLineIsTracedToTheAck: a line matched by a dye rule gets its
// intake and send hops, although the event (and the line's bytes) are
// reused by the tailer as soon as Emit returns.
func TestKafkaDyedLineIsTracedToTheAck(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatLine} {
		t.Run(format, func(t *testing.T) {
			kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 1))
			tracer := dye.New(dye.Options{Daemon: "collector"})
			if err := tracer.Set(dye.Rule{ID: "d1", Match: dye.Match{Contains: "order 42 "}, Until: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			k, err := NewKafka(KafkaConfig{Brokers: kc.Addrs(), Host: "h", Linger: time.Millisecond, Format: format, Dye: tracer},
				metrics.NewSet(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close(context.Background())
			acks := newAckCounter(t)
			ev := acks.event(&tail.Input{Topic: "logs"}, "/var/log/app.log", "")
			buf := []byte("GET /order 42 took 3ms")
			for _, line := range []string{"GET /order 41 took 2ms", "GET /order 42 took 3ms", "GET /order 43 took 4ms"} {
				copy(buf, line)
				ev.Line = buf
				if err := k.Emit(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
			copy(buf, "XXXXXXXXXXXXXXXXXXXXXX") // the reader's buffer moves on
			waitFor(t, "acks", func() bool { return acks.done() == 3 })
			recs := tracer.Trace("d1")
			hops := map[string]bool{}
			for _, r := range recs {
				hops[strings.Fields(r.Hop)[0]] = true
				if !strings.Contains(r.Item, "order 42 ") {
					t.Errorf("hop %s item %q", r.Hop, r.Item)
				}
			}
			if len(recs) != 2 || !hops["intake"] || !hops["send"] {
				t.Fatalf("trace %+v", recs)
			}
		})
	}
}
