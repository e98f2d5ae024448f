package ship

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/testkit"
)

// TestKafkaCutsLinesLargerThanABatch: the client refuses a record larger
// than a batch on every try, so such a line must be cut (and marked) rather
// than retried for ever.
func TestKafkaCutsLinesLargerThanABatch(t *testing.T) {
	const batch = 64 << 10
	cases := []struct {
		name string
		line string
		cut  bool
	}{
		{"fits", strings.Repeat("a", batch/2), false},
		{"ascii", strings.Repeat("GET / 200 ", 20<<10), true},
		{"multibyte", strings.Repeat("héllo wörld €", 10<<10), true},
		{"control bytes", strings.Repeat("\x01", 100<<10), true},
		{"invalid utf-8", strings.Repeat("ab\xff", 50<<10), true},
	}
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 1))
	set := metrics.NewSet()
	k := newTestKafka(t, KafkaConfig{Brokers: kc.Addrs(), Host: "h", BatchBytes: batch, Linger: time.Millisecond}, set)
	acks := newAckCounter(t)
	in := &tail.Input{Topic: "logs", Key: "path"}
	for _, c := range cases {
		if err := k.Emit(context.Background(), acks.event(in, "/var/log/"+c.name, c.line)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every event acknowledged", func() bool { return acks.done() == int64(len(cases)) })
	recs := kc.ReadTopic(t, "logs", len(cases), 10*time.Second)
	for i, r := range recs {
		c := cases[i]
		m, err := Decode(r.Value)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(r.Value) > batch {
			t.Errorf("%s: record value of %d bytes, over the %d byte batch", c.name, len(r.Value), batch)
		}
		if m.Truncated != c.cut {
			t.Errorf("%s: truncated %v, want %v", c.name, m.Truncated, c.cut)
		}
		if !strings.HasPrefix(c.line, m.Line) || (c.cut && len(m.Line) < batch/8) {
			t.Errorf("%s: shipped %d bytes of the line, not a long enough prefix", c.name, len(m.Line))
		}
	}
	if n := k.cut.Get(); n != 4 {
		t.Errorf("%d lines counted as cut, want 4", n)
	}
}
