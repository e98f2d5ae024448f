package graphite

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

type testServer struct {
	addr string
	app  *intaketest.Appender
	set  *metrics.Set
	stop func() error
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := intaketest.NewAppender()
	set := metrics.NewSet()
	srv := NewServer(app, intake.NewRecorder(set, nil), intake.Limits{}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	ts := &testServer{addr: ln.Addr().String(), app: app, set: set}
	stopped := false
	ts.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("Serve did not return within 5s of cancel")
		}
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Error(err)
		}
	})
	return ts
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func TestServerBatchesBySize(t *testing.T) {
	ts := startServer(t, Config{BatchSize: 3, FlushInterval: time.Hour})
	c := dial(t, ts.addr)
	write(t, c, "a 1 1699999999\nb 2 1699999999\nc 3 1699999999\nd 4 1699999999\n")
	pts := ts.app.WaitPoints(3, 5*time.Second)
	if len(pts) != 3 {
		t.Fatalf("got %d points, want a full batch of 3", len(pts))
	}
	time.Sleep(50 * time.Millisecond)
	if got := ts.app.Calls(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("append calls %v, want [3] (the 4th waits for its batch)", got)
	}
	// Closing the connection flushes the partial batch.
	c.Close()
	if pts := ts.app.WaitPoints(4, 5*time.Second); len(pts) != 4 || pts[3].Labels.Name() != "d" {
		t.Fatalf("after close got %d points", len(pts))
	}
}

func TestServerBatchesByTime(t *testing.T) {
	ts := startServer(t, Config{BatchSize: 1000, FlushInterval: 30 * time.Millisecond})
	c := dial(t, ts.addr)
	write(t, c, "a 1 1699999999\nb 2 1699999999\n")
	start := time.Now()
	pts := ts.app.WaitPoints(2, 5*time.Second)
	if len(pts) != 2 {
		t.Fatalf("got %d points, want 2 flushed by the timer with the connection open", len(pts))
	}
	if calls := ts.app.Calls(); len(calls) != 1 {
		t.Fatalf("append calls %v, want one batch of 2", calls)
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Fatalf("flushed after %v, before the flush interval", waited)
	}
}

func TestServerBadLineKeepsConnection(t *testing.T) {
	ts := startServer(t, Config{MaxLineBytes: 100, FlushInterval: 10 * time.Millisecond})
	c := dial(t, ts.addr)
	write(t, c, "good.one 1 1699999999\nthis is not graphite\r\n"+strings.Repeat("x", 300)+" 1 1\n\ngood.two 2 1699999999\r\n")
	// The last line has no newline: it counts when the client closes.
	write(t, c, "good.three 3 1699999999")
	time.Sleep(30 * time.Millisecond)
	c.(*net.TCPConn).CloseWrite()
	pts := ts.app.WaitPoints(3, 5*time.Second)
	if len(pts) != 3 {
		t.Fatalf("got %d points, want 3", len(pts))
	}
	for i, want := range []string{"good.one", "good.two", "good.three"} {
		if pts[i].Labels.Name() != want {
			t.Fatalf("point %d is %v, want %s", i, pts[i].Labels, want)
		}
	}
	for name, want := range map[string]float64{
		`opskit_transfer_points_rejected_total{proto="graphite",reason="bad_line"}`: 1,
		`opskit_transfer_points_rejected_total{proto="graphite",reason="too_long"}`: 1,
		`opskit_transfer_points_received_total{proto="graphite"}`:                   3,
	} {
		if got := intaketest.WaitCounter(ts.set, name, want, 5*time.Second); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestServerOverlongLineAcrossReads(t *testing.T) {
	ts := startServer(t, Config{MaxLineBytes: 1000, FlushInterval: 10 * time.Millisecond})
	c := dial(t, ts.addr)
	// Longer than the 64 KiB read buffer, so it is dropped while streaming.
	long := strings.Repeat("y", 200<<10)
	write(t, c, "a 1 1699999999\n"+long+"\nb 2 1699999999\n")
	pts := ts.app.WaitPoints(2, 5*time.Second)
	if len(pts) != 2 || pts[1].Labels.Name() != "b" {
		t.Fatalf("got %d points, want a and b around the overlong line", len(pts))
	}
	if got := intaketest.Counter(ts.set, `opskit_transfer_points_rejected_total{proto="graphite",reason="too_long"}`); got != 1 {
		t.Fatalf("too_long = %v, want 1", got)
	}
}

func TestServerConnectionLimit(t *testing.T) {
	ts := startServer(t, Config{MaxConns: 1, FlushInterval: 10 * time.Millisecond})
	c1 := dial(t, ts.addr)
	write(t, c1, "one 1 1699999999\n")
	if pts := ts.app.WaitPoints(1, 5*time.Second); len(pts) != 1 {
		t.Fatal("first connection not served")
	}
	c2 := dial(t, ts.addr)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("second connection was not closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("second connection stayed open beyond the limit")
	}
	if got := intaketest.Counter(ts.set, `opskit_transfer_graphite_connections_refused_total`); got != 1 {
		t.Fatalf("refused = %v, want 1", got)
	}
	// Once the first leaves, a new connection is served.
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c3 := dial(t, ts.addr)
		write(t, c3, "three 3 1699999999\n")
		c3.(*net.TCPConn).CloseWrite()
		if pts := ts.app.WaitPoints(2, 200*time.Millisecond); len(pts) == 2 {
			return
		}
	}
	t.Fatal("a connection after the first closed was never served")
}

func TestServerIdleTimeout(t *testing.T) {
	ts := startServer(t, Config{IdleTimeout: 50 * time.Millisecond})
	c := dial(t, ts.addr)
	write(t, c, "x 1 1699999999\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("idle connection not closed by the server: %v", err)
	}
	if pts := ts.app.Points(); len(pts) != 1 {
		t.Fatalf("got %d points, want the line read before going idle", len(pts))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestServerShutdownFlushes(t *testing.T) {
	ts := startServer(t, Config{BatchSize: 1000, FlushInterval: time.Hour})
	c := dial(t, ts.addr)
	write(t, c, "a 1 1699999999\nb 2 1699999999\n")
	// Wait until the server has read the lines: the connection is counted
	// by then; there is no other signal since nothing is flushed.
	time.Sleep(100 * time.Millisecond)
	if n := len(ts.app.Points()); n != 0 {
		t.Fatalf("flushed %d points before shutdown with an hour-long interval", n)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	if pts := ts.app.Points(); len(pts) != 2 {
		t.Fatalf("after shutdown got %d points, want the 2 read", len(pts))
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection still open after shutdown: %v", err)
	}
}

func TestServerAppendFailureClosesConnection(t *testing.T) {
	ts := startServer(t, Config{BatchSize: 1})
	ts.app.SetErr(errors.New("disk full"))
	c := dial(t, ts.addr)
	write(t, c, "a 1 1699999999\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection kept open after a failed append: %v", err)
	}
	if got := intaketest.Counter(ts.set, `opskit_transfer_append_errors_total{proto="graphite"}`); got != 1 {
		t.Fatalf("append errors = %v, want 1", got)
	}
}

func TestHTTPHandler(t *testing.T) {
	app := intaketest.NewAppender()
	set := metrics.NewSet()
	h := NewHTTPHandler(app, intake.NewRecorder(set, nil), intake.Limits{MaxBodyBytes: 1 << 10})
	post := func(body string) *httptest.ResponseRecorder {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/graphite", strings.NewReader(body)))
		return rw
	}
	if rw := post("a 1 1699999999\nbroken\nb 2 -1\n"); rw.Code != 200 || !strings.Contains(rw.Body.String(), `"accepted":2`) ||
		!strings.Contains(rw.Body.String(), `{"index":2,"reason":"bad_line"`) {
		t.Fatalf("mixed body: %d %s", rw.Code, rw.Body)
	}
	if rw := post("broken\n"); rw.Code != 400 {
		t.Fatalf("all bad: %d %s", rw.Code, rw.Body)
	}
	if rw := post(strings.Repeat("a 1 1699999999\n", 100)); rw.Code != 413 {
		t.Fatalf("over the limit: %d %s", rw.Code, rw.Body)
	}
	app.SetErr(errors.New("disk full"))
	if rw := post("a 1 1699999999\n"); rw.Code != 503 || !strings.Contains(rw.Body.String(), "disk full") {
		t.Fatalf("append failure: %d %s", rw.Code, rw.Body)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_received_total{proto="graphite_http"}`); got != 2 {
		t.Fatalf("received = %v, want 2", got)
	}
}

func TestServerStorageRefusesSome(t *testing.T) {
	ts := startServer(t, Config{BatchSize: 3})
	ts.app.SetRefuse(func(p metric.Point) bool { return p.Labels.Name() == "old" })
	c := dial(t, ts.addr)
	write(t, c, "a 1 1699999999\nold 2 1699999999\nb 3 1699999999\nc 4 1699999999\n")
	if pts := ts.app.WaitPoints(2, 5*time.Second); len(pts) != 2 {
		t.Fatalf("stored %d, want 2", len(pts))
	}
	// The connection stays open: a refused point is not a storage failure.
	c.(*net.TCPConn).CloseWrite()
	if pts := ts.app.WaitPoints(3, 5*time.Second); len(pts) != 3 {
		t.Fatalf("stored %d, want 3", len(pts))
	}
	if got := intaketest.WaitCounter(ts.set, `opskit_transfer_points_rejected_total{proto="graphite",reason="out_of_order"}`, 1, 5*time.Second); got != 1 {
		t.Fatalf("out_of_order = %v", got)
	}
	if got := intaketest.WaitCounter(ts.set, `opskit_transfer_points_received_total{proto="graphite"}`, 3, 5*time.Second); got != 3 {
		t.Fatalf("received = %v, want 3", got)
	}
}

func TestHTTPHandlerStorageRefusesSome(t *testing.T) {
	app := intaketest.NewAppender()
	app.SetRefuse(func(p metric.Point) bool { return p.Labels.Name() == "old" })
	h := NewHTTPHandler(app, nil, intake.Limits{})
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/graphite", strings.NewReader("a 1 1699999999\n\nold 1 1699999999\n")))
	if rw.Code != 200 || !strings.Contains(rw.Body.String(), `"accepted":1`) || !strings.Contains(rw.Body.String(), `{"index":3,"reason":"out_of_order"`) {
		t.Fatalf("%d %s", rw.Code, rw.Body)
	}
}
