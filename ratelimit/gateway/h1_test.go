package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingUpstream is a test upstream that counts the connections made to
// it.
type countingUpstream struct {
	*httptest.Server
	conns atomic.Int64
}

func newCountingUpstream(t *testing.T, h http.HandlerFunc) *countingUpstream {
	u := &countingUpstream{}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func gatewayTo(t *testing.T, u *httptest.Server, upstreamExtra string) *httptest.Server {
	t.Helper()
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]%s}
routes:
  - {name: r, upstream: app}
`, strings.TrimPrefix(u.URL, "http://"), upstreamExtra), nil)
	return srv
}

// TestFastPathKeepsConnections: requests one after another share one
// upstream connection, whether their answers have a length, are chunked
// or have no body (HEAD, 204); an upstream's "Connection: close" is
// obeyed; a POST goes through the standard transport.
func TestFastPathKeepsConnections(t *testing.T) {
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(w, "one ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "two")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, r.Method+" "+r.URL.Path)
		}
	})
	srv := gatewayTo(t, u.Server, "")
	client := &http.Client{}
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := 0; i < 5; i++ {
		for _, tc := range []struct{ method, path, want string }{
			{"GET", "/a", "GET /a"},
			{"GET", "/chunked", "one two"},
			{"HEAD", "/a", ""},
			{"GET", "/empty", ""},
			{"DELETE", "/d", "DELETE /d"},
		} {
			if code, body := do(tc.method, tc.path); code >= 300 || body != tc.want {
				t.Fatalf("%s %s: %d %q, want %q", tc.method, tc.path, code, body, tc.want)
			}
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("25 requests in turn took %d upstream connections, want 1", n)
	}
	if _, body := do("GET", "/close"); body != "bye" {
		t.Fatalf("close: %q", body)
	}
	do("GET", "/a")
	if n := u.conns.Load(); n != 2 {
		t.Errorf("after an answer with Connection: close, %d upstream connections, want 2", n)
	}
	// POST (not idempotent) takes the standard transport's own connection.
	if code, body := do("POST", "/p"); code != 200 || body != "POST /p" {
		t.Fatalf("POST: %d %q", code, body)
	}
	if n := u.conns.Load(); n != 3 {
		t.Errorf("after a POST, %d upstream connections, want 3", n)
	}
}

// TestFastPathRetriesClosedConnection: an idle upstream connection the
// server has closed is noticed on use and the request sent again on a new
// one, so the client sees no error.
func TestFastPathRetriesClosedConnection(t *testing.T) {
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv := gatewayTo(t, u.Server, "")
	for i := 0; i < 3; i++ {
		if resp, body := get(t, srv.URL+"/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		u.CloseClientConnections() // the upstream drops its keep-alive connections
	}
	if n := u.conns.Load(); n != 3 {
		t.Errorf("%d upstream connections, want 3", n)
	}
}

// TestFastPathTrailersAndInterim: trailers of a chunked answer reach the
// client, and an interim 103 answer is not taken for the response.
func TestFastPathTrailersAndInterim(t *testing.T) {
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc")
	})
	srv := gatewayTo(t, u.Server, "")
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || body != "body" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
		t.Errorf("trailer X-Checksum %q, want abc", got)
	}
}

// TestFastPathTimeoutAndCancel: an upstream slower than the pool's
// timeout gets 504; a client that goes away mid-body has its upstream
// connection closed (not given back half read).
func TestFastPathTimeoutAndCancel(t *testing.T) {
	gone := make(chan struct{})
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "start\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(5 * time.Second):
		}
	})
	srv := gatewayTo(t, u.Server, ", timeout: 100ms")
	start := time.Now()
	if resp, _ := get(t, srv.URL+"/slow"); resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("slow upstream: %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the 100ms timeout took %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not ended when the client went away")
	}
}

// TestForwardSendsWhatReverseProxyDoes: the headers an upstream receives
// for a GET on the fast path are those httputil.ReverseProxy sends for a
// POST without a body (plus its Content-Length: 0): hop-by-hop headers and
// those Connection names dropped, Te: trailers kept, the client's
// forwarding headers replaced, no User-Agent added, repeated headers and
// the query kept. Hop-by-hop headers of the answer are dropped too.
func TestForwardSendsWhatReverseProxyDoes(t *testing.T) {
	type seen struct {
		uri, host string
		header    http.Header
	}
	got := make(chan seen, 2)
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.RequestURI, r.Host, r.Header.Clone()}
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, "ok")
	})
	srv := gatewayTo(t, u.Server, "")
	send := func(method string) (seen, *http.Response) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/p/a%20b?x=1&y=2", nil)
		req.Host = "app.example"
		req.Header["User-Agent"] = nil // the client sends none
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "gone")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Proxy-Authorization", "secret")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("Forwarded", "for=6.6.6.6")
		req.Header.Add("X-Multi", "1")
		req.Header.Add("X-Multi", "2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return <-got, resp
	}
	fast, fastResp := send("GET")
	slow, _ := send("POST")
	slow.header.Del("Content-Length")
	if fast.uri != "/p/a%20b?x=1&y=2" || fast.host != "app.example" || fast.uri != slow.uri || fast.host != slow.host {
		t.Errorf("request line and host: fast %q %q, ReverseProxy %q %q", fast.uri, fast.host, slow.uri, slow.host)
	}
	if fmt.Sprint(fast.header) != fmt.Sprint(slow.header) {
		t.Errorf("upstream saw\nfast path:    %v\nReverseProxy: %v", fast.header, slow.header)
	}
	if v := fast.header.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the peer alone", v)
	}
	for _, k := range []string{"X-Up-Hop", "Keep-Alive", "Connection"} {
		if v := fastResp.Header.Get(k); v != "" {
			t.Errorf("answer's hop-by-hop %s: %q reached the client", k, v)
		}
	}
	if v := fastResp.Header.Values("Set-Cookie"); len(v) != 2 {
		t.Errorf("Set-Cookie %q, want both", v)
	}
}

// TestForwardEarlyHintsAndCutBody: a 103 reaches the client before the
// response; a body the upstream cuts short is cut short for the client too
// (not ended cleanly), and the adaptive limiter gets its slot back.
func TestForwardEarlyHintsAndCutBody(t *testing.T) {
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cut" {
			conn, bw, _ := http.NewResponseController(w).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
			bw.Flush()
			conn.Close()
			return
		}
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	})
	g, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app:
    servers: [%s]
    adaptive: {algorithm: gradient2, initial_limit: 5, min_limit: 5, max_limit: 5}
routes:
  - {name: r, upstream: app}
`, strings.TrimPrefix(u.URL, "http://")), nil)
	var hints []int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if h.Get("Link") != "" {
				hints = append(hints, code)
			}
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" || len(hints) != 1 || hints[0] != 103 {
		t.Errorf("got %d %q, 1xx with Link %v; want 200 ok after one 103", resp.StatusCode, b, hints)
	}
	if resp.Header.Get("Link") != "" {
		t.Errorf("the 103's Link stayed on the response")
	}

	// The client's connection is aborted: before the buffered header went
	// out (no response) or after (a short body).
	if resp, err = http.Get(srv.URL + "/cut"); err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("a body cut short upstream read cleanly (%q)", b)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for g.Limits("", "").Upstreams[0].Servers[0].InFlight != 0 || fmt.Sprint(g.Limits("", "").Upstreams[0].Adaptive) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the cut request still counts as in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := fmt.Sprintf("%+v", g.Limits("", "").Upstreams[0].Adaptive); !strings.Contains(s, "InFlight:0") {
		t.Errorf("limiter after a cut body: %s", s)
	}
}

// TestFastPathUnderChurn: many clients at once, some giving up mid-request,
// an upstream that now and then closes its connections and answers some
// requests slowly. Every answer must be the one for its own request (a
// connection handed to two requests would mix them up) and nothing may
// hang.
func TestFastPathUnderChurn(t *testing.T) {
	var n atomic.Int64
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch k := n.Add(1); {
		case k%7 == 0:
			time.Sleep(20 * time.Millisecond) // outlasts some clients
		case k%11 == 0:
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, r.URL.Path)
	})
	srv := gatewayTo(t, u.Server, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	done := make(chan error, 32)
	for c := 0; c < 32; c++ {
		go func() {
			for i := 0; i < 40; i++ {
				path := fmt.Sprintf("/c%d/r%d", c, i)
				timeout := time.Second
				if i%5 == 0 {
					timeout = 5 * time.Millisecond // gives up on slow answers
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if ctx.Err() != nil {
						continue
					}
					done <- fmt.Errorf("%s: %w", path, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err == nil && (resp.StatusCode != 200 || string(b) != path) {
					done <- fmt.Errorf("%s answered %d %q", path, resp.StatusCode, b)
					return
				}
			}
			done <- nil
		}()
	}
	timeout := time.After(20 * time.Second)
	for c := 0; c < 32; c++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("requests hang")
		}
	}
	u.CloseClientConnections()
	if resp, body := get(t, srv.URL+"/after"); resp.StatusCode != 200 || body != "/after" {
		t.Fatalf("after the churn: %d %q", resp.StatusCode, body)
	}
}

// TestIdleUpstreamTimeout: an upstream connection idle longer than the
// transport's idle timeout is not used again, whether its idle time counts
// from a reading of the clock when it went back or from the time its
// answer came (the attempt's reading, given to the body).
func TestIdleUpstreamTimeout(t *testing.T) {
	u := newCountingUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr := strings.TrimPrefix(u.URL, "http://")
	const idle = 150 * time.Millisecond
	tests := []struct {
		name      string
		idleFrom  func() time.Time // the time given to the body; nil gives none
		wait      time.Duration
		wantConns int64
	}{
		{"clock read, used at once", nil, 0, 1},
		{"clock read, idle too long", nil, 2 * idle, 2},
		{"answer's time, used at once", time.Now, 0, 1},
		{"answer's time, idle too long", time.Now, 2 * idle, 2},
		{"answer's time already past the timeout", func() time.Time { return time.Now().Add(-2 * idle) }, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newH1Transport(&net.Dialer{}, time.Second, 4, idle)
			before := u.conns.Load()
			for i := 0; i < 2; i++ {
				if i == 1 {
					time.Sleep(tc.wait)
				}
				req, _ := http.NewRequest(http.MethodGet, u.URL+"/", nil)
				resp, err := tr.roundTrip(context.Background(), addr, req, plainRequest{req}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if b, ok := resp.Body.(*h1Body); ok && tc.idleFrom != nil {
					b.idleFrom = tc.idleFrom()
				}
				if body, _ := io.ReadAll(resp.Body); string(body) != "ok" {
					t.Fatalf("body %q", body)
				}
				resp.Body.Close()
			}
			if got := u.conns.Load() - before; got != tc.wantConns {
				t.Fatalf("%d connections, want %d", got, tc.wantConns)
			}
			tr.closeIdle(true)
		})
	}
}
