package kafkaintake

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/internal/testkit"
)

type memIngester struct {
	mu  sync.Mutex
	got []*alert.Alert
}

func (m *memIngester) Ingest(_ context.Context, as []*alert.Alert) error {
	m.mu.Lock()
	m.got = append(m.got, as...)
	m.mu.Unlock()
	return nil
}

func (m *memIngester) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.got)
}

func decode(body []byte) ([]*alert.Alert, []*alert.ItemError, error) {
	return alert.Decode(body, time.Now(), time.Minute, alert.DefaultLimits)
}

func consume(t *testing.T, addrs []string, ing *memIngester) context.CancelFunc {
	t.Helper()
	c, err := New(Options{Brokers: addrs, Topic: "alerts", Group: "alarm"}, ing, decode, slog.New(slog.DiscardHandler), metrics.NewSet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestConsumeAndCommit(t *testing.T) {
	k := testkit.Kafka(t, testkit.KafkaTopic("alerts", 2))
	prod := k.Client(t)
	ctx := context.Background()
	for _, v := range []string{
		`[{"labels":{"alertname":"A","instance":"1"}},{"labels":{"alertname":"A","instance":"2"}}]`,
		`{"labels":{"alertname":"B"}}`,
		`not json`,
		`[{"labels":{}},{"labels":{"alertname":"C"}}]`,
	} {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "alerts", Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ing := &memIngester{}
	stop := consume(t, k.Addrs(), ing)
	deadline := time.Now().Add(20 * time.Second)
	for ing.count() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d alerts consumed, want 4", ing.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	if ing.count() != 4 {
		t.Fatalf("%d alerts, want 4 (A/1, A/2, B, C)", ing.count())
	}
	// Committed: a new member of the group reads only what comes next.
	prod.ProduceSync(ctx, &kgo.Record{Topic: "alerts", Value: []byte(`{"labels":{"alertname":"D"}}`)})
	again := &memIngester{}
	stop = consume(t, k.Addrs(), again)
	defer stop()
	deadline = time.Now().Add(20 * time.Second)
	for again.count() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the new record was not consumed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if again.count() != 1 || again.got[0].Labels["alertname"] != "D" {
		t.Fatalf("after restart: %d alerts, first %v", again.count(), again.got[0].Labels)
	}
}

func TestOptionsChecked(t *testing.T) {
	if _, err := New(Options{Topic: "x", Group: "g"}, &memIngester{}, decode, slog.New(slog.DiscardHandler), metrics.NewSet()); err == nil {
		t.Fatal("no brokers accepted")
	}
}
