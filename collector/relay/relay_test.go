package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/golang/snappy"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/spool"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// fakeTransfer serves transfer's real /api/push handler over an in-memory
// store; down makes it answer 503 as a transfer with failing storage does.
type fakeTransfer struct {
	mu       sync.Mutex
	values   []float64 // the "seq" values received, in order
	requests int
	sizes    []int
	down     atomic.Bool
	srv      *httptest.Server
}

func newFakeTransfer(t *testing.T, wrap func(http.Handler) http.Handler) *fakeTransfer {
	ft := &fakeTransfer{}
	app := intake.AppenderFunc(func(ctx context.Context, pts []metric.Point) error {
		if ft.down.Load() {
			return fmt.Errorf("disk on fire")
		}
		ft.mu.Lock()
		defer ft.mu.Unlock()
		ft.requests++
		ft.sizes = append(ft.sizes, len(pts))
		for _, p := range pts {
			if p.Labels.Name() == "seq" {
				ft.values = append(ft.values, p.Value)
			}
		}
		return nil
	})
	var h http.Handler = falcon.NewHandler(app, nil, intake.Limits{})
	if wrap != nil {
		h = wrap(h)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /api/push", h)
	ft.srv = httptest.NewServer(mux)
	t.Cleanup(ft.srv.Close)
	return ft
}

func (ft *fakeTransfer) got() []float64 {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]float64(nil), ft.values...)
}

func (ft *fakeTransfer) addr() string { return strings.TrimPrefix(ft.srv.URL, "http://") }

func seqPoints(from, n int) []metric.Point {
	pts := make([]metric.Point, n)
	for i := range pts {
		pts[i] = metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "seq"},
			metric.Label{Name: "i", Value: fmt.Sprint(from + i)}), Time: 1700000000, Value: float64(from + i)}
	}
	return pts
}

type harness struct {
	sp     *spool.Spool
	w      *Writer
	relay  *Relay
	set    *metrics.Set
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config, spoolDir string) *harness {
	t.Helper()
	if spoolDir == "" {
		spoolDir = t.TempDir()
	}
	sp, err := spool.Open(spool.Options{Dir: spoolDir})
	if err != nil {
		t.Fatal(err)
	}
	set := metrics.NewSet()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	}
	r, err := New(cfg, sp, set, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{sp: sp, set: set, relay: r, cancel: cancel, done: make(chan error, 1),
		w: &Writer{Spool: sp, Defaults: falconfmt.Defaults{Endpoint: "host-1", Step: 60}, BatchPoints: 100}}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.sp.Close()
	h.cancel = nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkSeq(t *testing.T, got []float64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("received %d points, want %d", len(got), n)
	}
	for i, v := range got {
		if v != float64(i) {
			t.Fatalf("point %d has seq %v: out of order or duplicated", i, v)
		}
	}
}

func TestDeliversInOrderInBatches(t *testing.T) {
	ft := newFakeTransfer(t, nil)
	h := start(t, Config{Targets: []string{ft.addr()}, BatchPoints: 250}, "")
	for i := 0; i < 1000; i += 50 {
		if err := h.w.Write(context.Background(), seqPoints(i, 50)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "1000 points", func() bool { return len(ft.got()) == 1000 })
	checkSeq(t, ft.got(), 1000)
	ft.mu.Lock()
	for _, s := range ft.sizes {
		if s > 250 {
			t.Errorf("a request of %d points, over the batch bound 250", s)
		}
	}
	ft.mu.Unlock()
	waitFor(t, "spool drained", func() bool { return h.sp.Stats().Count == 0 })
	if v := h.set; v == nil {
		t.Fatal("no metrics")
	}
	var sb strings.Builder
	h.set.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), "opskit_collector_relay_sent_points_total 1000") {
		t.Errorf("metrics:\n%s", sb.String())
	}
}

func TestFailsOverToTheNextTransfer(t *testing.T) {
	ft := newFakeTransfer(t, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := strings.TrimPrefix(dead.URL, "http://")
	dead.Close() // a port nobody listens on
	// A server that is not a transfer (404) is a failed target, not a
	// reason to drop the batch.
	notTransfer := httptest.NewServer(http.NotFoundHandler())
	defer notTransfer.Close()
	h := start(t, Config{Targets: []string{deadAddr, notTransfer.URL, ft.addr()}}, "")
	h.w.Write(context.Background(), seqPoints(0, 30))
	waitFor(t, "points through the second transfer", func() bool { return len(ft.got()) == 30 })
	checkSeq(t, ft.got(), 30)
	if h.relay.current != 2 {
		t.Errorf("relay did not stay on the transfer that answered")
	}
	if h.relay.dropped.Get() != 0 {
		t.Errorf("%d points dropped", h.relay.dropped.Get())
	}
}

// TestOutageThenRecovery keeps the only transfer failing while points are
// written, then brings it back: every point arrives, in order.
func TestOutageThenRecovery(t *testing.T) {
	ft := newFakeTransfer(t, nil)
	ft.down.Store(true)
	spoolDir := t.TempDir()
	h := start(t, Config{Targets: []string{ft.addr()}}, spoolDir)
	for i := 0; i < 500; i += 100 {
		h.w.Write(context.Background(), seqPoints(i, 100))
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(ft.got()); n != 0 {
		t.Fatalf("%d points stored while transfer was down", n)
	}
	if st := h.sp.Stats(); st.Count != 500 {
		t.Fatalf("spool holds %d points during the outage, want 500", st.Count)
	}
	// The collector restarts during the outage: the spool carries over.
	h.stop()
	h = start(t, Config{Targets: []string{ft.addr()}}, spoolDir)
	h.w.Write(context.Background(), seqPoints(500, 100))
	ft.down.Store(false)
	waitFor(t, "600 points after recovery", func() bool { return len(distinct(ft.got())) >= 600 })
	// Delivery is at least once: a batch whose answer went astray around
	// the recovery may come again, but nothing is lost or reordered.
	checkSeq(t, distinct(ft.got()), 600)
}

// distinct keeps each value's first arrival, in order.
func distinct(got []float64) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, v := range got {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func TestRejectedAndTooLarge(t *testing.T) {
	var limit atomic.Int64
	limit.Store(1 << 30)
	ft := newFakeTransfer(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit.Load() {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	h := start(t, Config{Targets: []string{ft.addr()}, BatchPoints: 10000}, "")
	// An item transfer refuses (NaN) beside good ones, and a batch of only
	// bad items (answered 400): neither blocks what follows.
	bad := seqPoints(0, 1)
	bad[0].Value = math.Inf(1)
	h.w.Write(context.Background(), append(seqPoints(0, 2), bad...))
	h.w.Write(context.Background(), bad)
	waitFor(t, "rejections counted", func() bool {
		return h.set.GetOrCreateCounter(`opskit_collector_relay_rejected_points_total{reason="bad_value"}`).Get() == 2
	})
	if got := ft.got(); len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	// Many records, each small enough, a request of all of them too large:
	// the relay sends fewer records at a time.
	h.stop()
	ft.mu.Lock()
	ft.values = nil
	ft.mu.Unlock()
	dir := t.TempDir()
	sp, _ := spool.Open(spool.Options{Dir: dir})
	w := &Writer{Spool: sp, Defaults: falconfmt.Defaults{Endpoint: "h", Step: 60}, BatchPoints: 10}
	for i := 0; i < 100; i += 10 {
		w.Write(context.Background(), seqPoints(i, 10))
	}
	sp.Close()
	limit.Store(3000) // about 20 points
	h = start(t, Config{Targets: []string{ft.addr()}}, dir)
	waitFor(t, "100 points in small requests", func() bool { return len(ft.got()) == 100 })
	checkSeq(t, ft.got(), 100)
}

func TestGzipBodies(t *testing.T) {
	var gz atomic.Int32
	ft := newFakeTransfer(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// transfer's handler decompresses the body itself.
			if r.Header.Get("Content-Encoding") == "gzip" {
				gz.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	})
	h := start(t, Config{Targets: []string{ft.addr()}, Gzip: true}, "")
	h.w.Write(context.Background(), seqPoints(0, 40))
	waitFor(t, "gzip points", func() bool { return len(ft.got()) == 40 })
	if gz.Load() == 0 {
		t.Error("no gzip request")
	}
}

func TestConfigErrors(t *testing.T) {
	sp, _ := spool.Open(spool.Options{Dir: t.TempDir()})
	defer sp.Close()
	if _, err := New(Config{Targets: []string{" ", ""}}, sp, metrics.NewSet(), slog.Default()); err == nil {
		t.Error("no error without a target")
	}
}

func TestJoinArrays(t *testing.T) {
	rec := func(s string) spool.Record { return spool.Record{Data: snappy.Encode(nil, []byte(s))} }
	got, err := joinArrays([]spool.Record{rec(`[{"a":1}]`), rec(`[]`), rec(` [{"b":2},{"c":3}] `)})
	if err != nil || string(got) != `[{"a":1},{"b":2},{"c":3}]` {
		t.Errorf("joined %s, %v", got, err)
	}
	if got, err := joinArrays([]spool.Record{rec(`[]`), rec(`[{"a":1}]`)}); err != nil || string(got) != `[{"a":1}]` {
		t.Errorf("joined %s, %v", got, err)
	}
	if _, err := joinArrays([]spool.Record{{Data: []byte("not snappy")}}); err == nil {
		t.Error("undecodable record joined")
	}
}
