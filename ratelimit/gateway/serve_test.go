package gateway

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

var fastHTTP = flag.Bool("fast-http", true, "serve the tests' gateway with its own HTTP/1.1 loop (false: net/http's server)")

// serveProxy serves h as the daemon does: with the gateway's own loop
// (net/http's server with -fast-http=false).
func serveProxy(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv, _ := serveProxyConfig(t, h, ServerConfig{})
	return srv
}

func serveProxyConfig(t testing.TB, h http.Handler, cfg ServerConfig) (*httptest.Server, *Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if !*fastHTTP {
		srv.Start()
		t.Cleanup(srv.Close)
		return srv, nil
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	fs := NewServer(h, cfg)
	srv.URL = "http://" + srv.Listener.Addr().String()
	go fs.Serve(srv.Listener)
	t.Cleanup(func() {
		fs.Close()
		srv.Close()
	})
	return srv, fs
}

// rawConn is a client speaking HTTP/1.1 by hand.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, url string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// read reads one response to a request of method.
func (r *rawConn) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("reading a body: %v", err)
	}
	return resp, string(b)
}

// closed says whether the server closed the connection (EOF next).
func (r *rawConn) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := r.br.ReadByte()
	return err == io.EOF
}

// echoHandler answers with what it got: method, target, protocol, Host
// and the X-Test header; it counts requests per connection.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s x=%s body=%s", r.Method, r.RequestURI, r.Proto, r.Host, r.Header.Get("X-Test"), body)
	})
}

func TestServerPipelinedAndKeepAlive(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	srv := serveProxy(t, echoHandler())
	c := dialRaw(t, srv.URL)
	// Three requests in one write, one with a body: answered in order.
	c.send("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: 1\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /c?q=1 HTTP/1.1\r\nhost: h2\r\nx-test: 3\r\n\r\n")
	for _, want := range []string{
		"GET /a HTTP/1.1 host=h x=1 body=",
		"POST /b HTTP/1.1 host=h x= body=hello",
		"GET /c?q=1 HTTP/1.1 host=h2 x=3 body=",
	} {
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
		}
		if resp.Close || resp.Header.Get("Date") == "" || resp.ContentLength != int64(len(want)) {
			t.Errorf("framing: close %v, date %q, length %d", resp.Close, resp.Header.Get("Date"), resp.ContentLength)
		}
	}
	// The same connection serves on after a pause (keep-alive).
	time.Sleep(20 * time.Millisecond)
	c.send("HEAD /d HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read("HEAD"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	// Connection: close is answered, then the connection closes.
	c.send("GET /e HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if resp, _ := c.read("GET"); !resp.Close {
		t.Errorf("Connection: close not answered with close")
	}
	if !c.closed() {
		t.Errorf("the connection stayed open after Connection: close")
	}
}

func TestServerHTTP10(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	streamed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "one ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "two")
	})
	mux := http.NewServeMux()
	mux.Handle("/stream", streamed)
	mux.Handle("/", echoHandler())
	srv := serveProxy(t, mux)

	// HTTP/1.0 without keep-alive: answered as 1.0, then closed.
	c := dialRaw(t, srv.URL)
	c.send("GET /x HTTP/1.0\r\n\r\n")
	resp, body := c.read("GET")
	if resp.Proto != "HTTP/1.0" || body != "GET /x HTTP/1.0 host= x= body=" || !c.closed() {
		t.Fatalf("1.0: %s %q", resp.Proto, body)
	}
	// With keep-alive: the connection stays for a second request.
	c = dialRaw(t, srv.URL)
	c.send("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, _ := c.read("GET"); resp.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("keep-alive not answered: %v", resp.Header)
	}
	// A streamed answer has no length: HTTP/1.0 has no chunks, so the
	// close ends it.
	c.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, body := c.read("GET"); body != "one two" || !resp.Close {
		t.Fatalf("streamed over 1.0: %q close=%v", body, resp.Close)
	}
}

func TestServerRefusesBadInput(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	set := metrics.NewSet()
	srv, _ := serveProxyConfig(t, echoHandler(), ServerConfig{Metrics: set, MaxHeaderBytes: 4 << 10, MaxHeaderFields: 10})
	tests := []struct {
		name, req string
		code      int
	}{
		{"no version", "GET /\r\n\r\n", 400},
		{"bad method", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"empty line first", "\r\nGET / HTTP/1.1\r\n\r\n", 400},
		{"header without colon", "GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400},
		{"header too large", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431},
		{"too many headers", "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-A: b\r\n", 11) + "\r\n", 431},
		{"head over the read buffer", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv.URL)
			c.send(tt.req)
			resp, _ := c.read("GET")
			if resp.StatusCode != tt.code || !resp.Close {
				t.Fatalf("%d close=%v, want %d and close", resp.StatusCode, resp.Close, tt.code)
			}
			if !c.closed() {
				t.Fatal("the connection stayed open")
			}
		})
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, want := range []string{"opskit_ratelimit_proxy_bad_requests_total 5", "opskit_ratelimit_proxy_header_too_large_total 3"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, sb.String())
		}
	}
}

// TestServerHandsOver: what the loop does not serve goes to net/http on
// the same connection, bytes already read included, even after requests
// the loop served; a long header within MaxHeaderBytes is served too.
func TestServerHandsOver(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	set := metrics.NewSet()
	srv, _ := serveProxyConfig(t, echoHandler(), ServerConfig{Metrics: set})
	c := dialRaw(t, srv.URL)
	c.send("GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := c.read("GET"); body != "GET /fast HTTP/1.1 host=h x= body=" {
		t.Fatalf("first: %q", body)
	}
	// A chunked body, pipelined with a plain request behind it.
	c.send("POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
		"GET /after HTTP/1.1\r\nHost: h\r\nX-Test: 2\r\n\r\n")
	if resp, body := c.read("POST"); resp.StatusCode != 200 || body != "POST /chunked HTTP/1.1 host=h x= body=hello" {
		t.Fatalf("chunked: %d %q", resp.StatusCode, body)
	}
	if _, body := c.read("GET"); body != "GET /after HTTP/1.1 host=h x=2 body=" {
		t.Fatalf("after the hand-over: %q", body)
	}
	// net/http's own answers to what it refuses: no Host in 1.1.
	c2 := dialRaw(t, srv.URL)
	c2.send("GET / HTTP/1.1\r\n\r\n")
	if resp, _ := c2.read("GET"); resp.StatusCode != 400 {
		t.Fatalf("no Host: %d", resp.StatusCode)
	}
	// Absolute form and a 20 KiB header.
	c3 := dialRaw(t, srv.URL)
	c3.send("GET http://other/abs HTTP/1.1\r\nHost: h\r\nX-Test: " + strings.Repeat("v", 20<<10) + "\r\n\r\n")
	if resp, body := c3.read("GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET http://other/abs HTTP/1.1 host=other x=vvv") {
		t.Fatalf("absolute form: %d %.60q", resp.StatusCode, body)
	}
	// HTTP/2 with prior knowledge.
	h2 := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}()}}
	resp, err := h2.Get(srv.URL + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "GET /h2 HTTP/2.0 host="+strings.TrimPrefix(srv.URL, "http://")+" x= body=" {
		t.Fatalf("h2c: %s %q", resp.Proto, b)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), "opskit_ratelimit_proxy_handed_over_connections_total 4") {
		t.Errorf("hand-overs not counted:\n%s", sb.String())
	}
}

// TestServerTimeouts: a client that sends its header too slowly, or stays
// idle too long, is disconnected.
func TestServerTimeouts(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	srv, _ := serveProxyConfig(t, echoHandler(), ServerConfig{ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	slow := dialRaw(t, srv.URL)
	slow.send("GET / HTTP/1.1\r\n")
	start := time.Now()
	if !slow.closed() {
		t.Fatal("a half-sent header kept the connection")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("closed after %v", d)
	}

	idle := dialRaw(t, srv.URL)
	idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.read("GET")
	time.Sleep(150 * time.Millisecond) // past the header timeout, within the idle one
	idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _ := idle.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("second request: %d", resp.StatusCode)
	}
	start = time.Now()
	if !idle.closed() {
		t.Fatal("an idle connection was kept")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the idle timeout", d)
	}
}

// TestServerNoticesClientGone: a request in flight has its context
// cancelled when the client closes.
func TestServerNoticesClientGone(t *testing.T) {
	cancelled := make(chan struct{})
	srv := serveProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(5 * time.Second):
		}
	}))
	c := dialRaw(t, srv.URL)
	c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	c.c.Close()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
}

// TestServerResponseFraming: what a handler writes is framed as net/http
// frames it: a length for short answers, chunks (with trailers) for long
// or flushed ones, no body for HEAD / 204 / 304, interim 1xx passed on,
// a sniffed Content-Type, and a handler's Connection: close obeyed.
func TestServerResponseFraming(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hi</html>") })
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("x", 10000)) })
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "7")
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
		io.WriteString(w, "ignored")
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	srv := serveProxy(t, mux)
	var hints atomic.Int32
	client := &http.Client{}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	if resp, body := get("/short"); body != "<html>hi</html>" || resp.ContentLength != 15 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("short: %q %d %q", body, resp.ContentLength, resp.Header.Get("Content-Type"))
	}
	if resp, body := get("/long"); len(body) != 10000 || resp.ContentLength != -1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("long: %d %d %v", len(body), resp.ContentLength, resp.TransferEncoding)
	}
	if resp, body := get("/trailer"); body != "body" || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "7" {
		t.Errorf("trailer: %q %v", body, resp.Trailer)
	}
	if resp, body := get("/nocontent"); resp.StatusCode != 204 || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	if resp, body := get("/close"); body != "bye" || !resp.Close {
		t.Errorf("close: %q %v", body, resp.Close)
	}
	c := dialRaw(t, srv.URL)
	c.send("GET /hints HTTP/1.1\r\nHost: h\r\n\r\n")
	tp, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(tp, "HTTP/1.1 103") {
		t.Fatalf("interim: %q %v", tp, err)
	}
	hints.Add(1)
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "final" || resp.Header.Get("Link") != "" {
		t.Errorf("after 103: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestServerShutdown: Shutdown closes idle connections, lets a request in
// flight finish (answered with Connection: close) and returns when it has.
func TestServerShutdown(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	srv, fs := serveProxyConfig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done")
	}), ServerConfig{})
	idle := dialRaw(t, srv.URL)
	idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.read("GET")
	busy := dialRaw(t, srv.URL)
	busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- fs.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Error("the idle connection was not closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with a request in flight: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if resp, body := busy.read("GET"); body != "done" || !resp.Close {
		t.Errorf("in flight: %q close=%v", body, resp.Close)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestGatewayIdleTimeout: through the gateway, a client connection idle
// for the idle timeout after an answer is closed, and one that sends its
// next request sooner is served, whether the answer's body came with its
// head (the idle time then counts from the upstream answer's clock
// reading) or came later (the clock is read as the wait starts).
func TestGatewayIdleTimeout(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	big := strings.Repeat("x", 256<<10)
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "ok")
	})
	cfg, err := Parse("test.yaml", []byte(fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: r, upstream: app}
`, strings.TrimPrefix(u.URL, "http://"))))
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := g.Load(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	const idle = 300 * time.Millisecond
	srv, _ := serveProxyConfig(t, g, ServerConfig{ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: idle})
	for _, tc := range []struct{ path, body string }{{"/small", "ok"}, {"/big", big}} {
		t.Run(tc.path, func(t *testing.T) {
			c := dialRaw(t, srv.URL)
			for i := 0; i < 2; i++ {
				if i == 1 {
					time.Sleep(idle / 2) // within the idle timeout
				}
				c.send("GET " + tc.path + " HTTP/1.1\r\nHost: h\r\n\r\n")
				if resp, body := c.read("GET"); resp.StatusCode != 200 || body != tc.body {
					t.Fatalf("request %d: %d, %d bytes", i+1, resp.StatusCode, len(body))
				}
			}
			start := time.Now()
			if !c.closed() {
				t.Fatal("an idle connection was kept")
			}
			if d := time.Since(start); d < idle*2/3 {
				t.Errorf("idle connection closed after %v, before the idle timeout", d)
			}
		})
	}
}

// TestServerNoticesClientGoneAfterQuickRequests: on a keep-alive
// connection whose earlier quick requests left the watcher's timer set, a
// later request in flight still has its context cancelled when the client
// closes, whether it starts at once, while the timer still has more than
// half its period to run, or with less left.
func TestServerNoticesClientGoneAfterQuickRequests(t *testing.T) {
	if !*fastHTTP {
		t.Skip("tests the gateway's own loop")
	}
	const after = 200 * time.Millisecond
	for _, gap := range []time.Duration{0, after / 4, after * 3 / 4, 2 * after} {
		t.Run(gap.String(), func(t *testing.T) {
			cancelled := make(chan struct{})
			srv, _ := serveProxyConfig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/quick" {
					io.WriteString(w, "ok")
					return
				}
				select {
				case <-r.Context().Done():
					close(cancelled)
				case <-time.After(5 * time.Second):
				}
			}), ServerConfig{WatchAfter: after})
			c := dialRaw(t, srv.URL)
			for i := 0; i < 3; i++ {
				c.send("GET /quick HTTP/1.1\r\nHost: h\r\n\r\n")
				c.read("GET")
			}
			time.Sleep(gap)
			c.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
			time.Sleep(after + after/2) // the watch has started
			closed := time.Now()
			c.c.Close()
			select {
			case <-cancelled:
				if d := time.Since(closed); d > time.Second {
					t.Errorf("cancelled %v after the client closed", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the request's context was not cancelled")
			}
		})
	}
}
