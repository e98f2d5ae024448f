package sink

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
)

func pts(n int) []metric.Point {
	out := make([]metric.Point, n)
	for i := range out {
		out[i] = metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "x"}), Time: int64(i + 1), Value: 1}
	}
	return out
}

func TestBatcher(t *testing.T) {
	var (
		mu     sync.Mutex
		sizes  []int
		failOn = -1
	)
	s := Func(func(_ context.Context, p []metric.Point) error {
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) == failOn {
			sizes = append(sizes, -len(p))
			return errors.New("disk full")
		}
		sizes = append(sizes, len(p))
		return nil
	})
	set := metrics.NewSet()
	b := NewBatcher(s, "test", NewCounters(set, nil), 10, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	b.Add(pts(12)...) // over MaxPoints: flushed without waiting for the hour
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(sizes)
		mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	failOn = 1
	mu.Unlock()
	b.Add(pts(3)...)
	cancel() // the stop flushes what is pending
	<-done
	if len(sizes) != 2 || sizes[0] != 12 || sizes[1] != -3 {
		t.Fatalf("writes %v", sizes)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, w := range []string{`opskit_collector_intake_points_received_total{proto="test"} 15`, `opskit_collector_intake_points_dropped_total{proto="test"} 3`} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("metrics lack %s:\n%s", w, sb.String())
		}
	}
	var nilCounters *Counters
	nilCounters.Received("x", 1) // a nil Counters counts nothing and does not panic
	nilCounters.Rejected("x", "r", "", "")
	nilCounters.RejectedN("x", "r", 2)
}
