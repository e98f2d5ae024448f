package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/hostmetrics"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/collector/statsd"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

func TestOnceUsage(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--window", "0s"}, {"--step", "10ms"}, {"--nope"}} {
		var out, errs bytes.Buffer
		if code := Once(context.Background(), args, &out, &errs); code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs.String())
		}
	}
	var out, errs bytes.Buffer
	if code := Once(context.Background(), []string{"--help"}, &out, &errs); code != exitOK || !strings.Contains(errs.String(), "--window") {
		t.Errorf("--help: exit %d %s", code, errs.String())
	}
}

// TestOnceItemsParseInTransfer runs once on the live host and reads every
// line back with transfer's open-falcon parser.
func TestOnceItemsParseInTransfer(t *testing.T) {
	var out, errs bytes.Buffer
	code := Once(context.Background(), []string{"--hostname", "h1", "--step", "30s", "--window", "50ms"}, &out, &errs)
	if code != exitOK && code != exitFailure {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		p, rej := falcon.ParseItem([]byte(line), time.Now().Unix(), intake.DefaultLimits())
		if rej != nil {
			t.Fatalf("transfer refuses %s: %v", line, rej)
		}
		if p.Labels.Get(metric.EndpointLabel) != "h1" || p.Step != 30 {
			t.Fatalf("item %s", line)
		}
		names[p.Labels.Name()] = true
	}
	for _, n := range []string{"cpu.idle", "load.1min", "mem.memtotal", "agent.alive"} {
		if !names[n] {
			t.Errorf("%s missing", n)
		}
	}
	// Captured files of another kernel read the same way; statfs of their
	// mount points may fail here, which is exit 1 with the rest printed.
	out.Reset()
	errs.Reset()
	proc := filepath.Join("..", "hostmetrics", "testdata", "linux-4.19", "t0", "proc")
	code = Once(context.Background(), []string{"--proc", proc, "--sys", filepath.Join(proc, "..", "sys"), "--window", "10ms"}, &out, &errs)
	if code == exitUsage || !strings.Contains(out.String(), `"metric":"load.1min","timestamp":`) {
		t.Errorf("captured proc: exit %d, %s", code, errs.String())
	}
}

type recordingSink struct {
	mu     sync.Mutex
	writes [][]metric.Point
}

func (r *recordingSink) Write(_ context.Context, pts []metric.Point) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]metric.Point(nil), pts...))
	return nil
}

func (r *recordingSink) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

func TestEveryIsAligned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	defer cancel()
	var ticks []time.Time
	Every(ctx, 100*time.Millisecond, func(now time.Time) { ticks = append(ticks, now) })
	if len(ticks) < 3 {
		t.Fatalf("%d ticks in 450ms", len(ticks))
	}
	for _, tk := range ticks {
		if tk.UnixNano()%int64(100*time.Millisecond) != 0 {
			t.Errorf("tick %v not on a multiple of the interval", tk)
		}
	}
}

func TestHostMetricsRounds(t *testing.T) {
	out := &recordingSink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- HostMetrics(ctx, hostmetrics.New(hostmetrics.Config{}), time.Second, out, metrics.NewSet(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for out.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if out.count() < 1 {
		t.Fatal("no round written")
	}
	rates := false
	for _, p := range out.writes[0] {
		if p.Time <= 0 {
			t.Errorf("point time %d", p.Time)
		}
		if p.Labels.Name() == "cpu.idle" {
			rates = true
		}
	}
	if !rates {
		t.Error("the first round written lacks rates although a priming round ran")
	}
}

func TestStatsDFlusherKeepsThePartialInterval(t *testing.T) {
	agg := statsd.New(statsd.Config{}, 1)
	out := &recordingSink{}
	set := metrics.NewSet()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- StatsDFlusher(ctx, agg, time.Hour, out, sink.NewCounters(set, nil), set, slog.New(slog.DiscardHandler))
	}()
	agg.Shard(0).AddDatagram([]byte("hits:2|c\nbad"), 0)
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	if out.count() != 1 || len(out.writes[0]) != 2 {
		t.Fatalf("writes at stop: %v", out.writes)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, w := range []string{"opskit_collector_statsd_datagrams_total 1", `opskit_collector_intake_points_received_total{proto="statsd"} 1`, `opskit_collector_intake_points_rejected_total{proto="statsd",reason="bad_line"} 1`} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("metrics lack %s:\n%s", w, sb.String())
		}
	}
}
