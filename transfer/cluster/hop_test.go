package cluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/metric"
)

func TestOutboxHopStatisticsAndDyeTrace(t *testing.T) {
	set := metrics.NewSet()
	tr := dye.New(dye.Options{Daemon: "transfer"})
	m, _ := dye.ParseMatch("endpoint=web01,metric=cpu.idle")
	if err := tr.Set(dye.Rule{ID: "d1", Match: m, Until: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	var calls, delivered atomic.Int32
	d := DelivererFunc(func(ctx context.Context, blocks [][]byte, points int) error {
		if calls.Add(1) == 1 {
			return errors.New("judge away") // one failed attempt first
		}
		time.Sleep(30 * time.Millisecond)
		delivered.Add(int32(points))
		return nil
	})
	o, err := OpenOutbox(OutboxOptions{Kind: "judge", Name: "j1", Dir: t.TempDir(), To: "127.0.0.1:7130", Dye: tr,
		Metrics: set, MinBackoff: time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	pts := []metric.Point{
		{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: "web01"}), Time: 1, Value: 5},
		{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: "web02"}), Time: 1, Value: 6},
	}
	if err := o.Add(context.Background(), EncodeBlock(pts), len(pts)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- o.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for o.Pending() > 0 || delivered.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done

	var sb strings.Builder
	set.WritePrometheus(&sb)
	out := sb.String()
	for _, want := range []string{`opskit_hop_items_total{to="127.0.0.1:7130"} 2`, `opskit_hop_errors_total{to="127.0.0.1:7130"} 1`} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("lacks %s:\n%s", want, out)
		}
	}
	var latency float64
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, `opskit_hop_latency_seconds_total{to="127.0.0.1:7130"} `); ok {
			latency, _ = strconv.ParseFloat(v, 64)
		}
	}
	if latency < 0.06 {
		t.Errorf("latency sum %v s of two points that waited 30ms or more each:\n%s", latency, out)
	}
	recs := tr.Trace("d1")
	if len(recs) != 1 || recs[0].Hop != "send judge 127.0.0.1:7130" || !strings.Contains(recs[0].Item, "web01") || recs[0].Duration < 0.03 {
		t.Fatalf("trace = %+v", recs)
	}
}
