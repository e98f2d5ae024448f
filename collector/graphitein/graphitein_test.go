package graphitein

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/internal/metric"
)

type collected struct {
	mu  sync.Mutex
	pts []metric.Point
}

func (c *collected) Write(_ context.Context, pts []metric.Point) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pts = append(c.pts, pts...)
	return nil
}

func (c *collected) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.pts {
		out = append(out, fmt.Sprintf("%s=%g@%d", p.Labels.String(), p.Value, p.Time))
	}
	return out
}

func setup(t *testing.T, cfg Config) (*Server, *collected, *metrics.Set, context.Context) {
	t.Helper()
	set := metrics.NewSet()
	counters := sink.NewCounters(set, nil)
	out := &collected{}
	tcp := sink.NewBatcher(out, ProtoTCP, counters, 1000, 10*time.Millisecond)
	udp := sink.NewBatcher(out, ProtoUDP, counters, 1000, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go tcp.Run(ctx)
	go udp.Run(ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return New(cfg, tcp, udp, counters, log), out, set, ctx
}

func waitLen(t *testing.T, c *collected, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.names()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func metricText(set *metrics.Set) string {
	var sb strings.Builder
	set.WritePrometheus(&sb)
	return sb.String()
}

func TestTCP(t *testing.T) {
	s, out, set, ctx := setup(t, Config{MaxLineBytes: 100, MaxConns: 1})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.ServeTCP(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "app.requests 12 1700000000\r\n\nbad line here now\napp.x;env=prod 1.5 1700000000\n%s 1 1\napp.last 3 1700000000", "a."+strings.Repeat("x", 200))
	// A second connection is over MaxConns: refused and counted.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err == nil {
		c2.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := bufio.NewReader(c2).ReadByte(); err == nil {
			t.Error("a connection over MaxConns was kept open")
		}
		c2.Close()
	}
	// Whole lines arrive without waiting for the connection to end.
	if got := waitLen(t, out, 2); len(got) != 2 {
		t.Fatalf("before close: %v", got)
	}
	c.Close() // the last line has no newline: it is read at EOF
	got := waitLen(t, out, 3)
	want := []string{`app.requests{}=12@1700000000`, `app.x{env="prod"}=1.5@1700000000`, `app.last{}=3@1700000000`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v\nwant %v", got, want)
	}
	text := metricText(set)
	for _, w := range []string{
		`opskit_collector_intake_points_received_total{proto="graphite_tcp"} 3`,
		`opskit_collector_intake_points_rejected_total{proto="graphite_tcp",reason="bad_line"} 1`,
		`opskit_collector_intake_points_rejected_total{proto="graphite_tcp",reason="too_long"} 1`,
		`opskit_collector_intake_points_rejected_total{proto="graphite_tcp",reason="too_many_connections"} 1`,
	} {
		if !strings.Contains(text, w) {
			t.Errorf("metrics lack %s:\n%s", w, text)
		}
	}
}

func TestUDP(t *testing.T) {
	s, out, set, ctx := setup(t, Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeUDP(ctx, pc)
	c, _ := net.Dial("udp", pc.LocalAddr().String())
	c.Write([]byte("u.a 1 1700000000\nu.b nan 1700000000\nu.c;endpoint=db-1 3 1700000000\n"))
	got := waitLen(t, out, 2)
	if len(got) != 2 || got[0] != "u.a{}=1@1700000000" || got[1] != `u.c{endpoint="db-1"}=3@1700000000` {
		t.Errorf("got %v", got)
	}
	if !strings.Contains(metricText(set), `opskit_collector_intake_points_rejected_total{proto="graphite_udp",reason="bad_value"} 1`) {
		t.Errorf("bad value not counted:\n%s", metricText(set))
	}
}
