package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
