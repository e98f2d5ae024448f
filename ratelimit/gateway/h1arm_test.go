package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// scriptedUpstream answers each request by its path with bytes written in
// pieces, pausing between them, so that the transport's reads find an
// answer whole, in part or not yet. "/hang" sends part of a body and then
// waits for the gateway to close the connection, reported on closed.
type scriptedUpstream struct {
	*rawUpstream
	closed chan struct{}
}

func newScriptedUpstream(t *testing.T, pause time.Duration) *scriptedUpstream {
	scripts := map[string][]string{
		"/whole":       {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole"},
		"/late-head":   {"HTTP/1.1 200 OK\r\nContent-Le", "ngth: 4\r\n\r\nlate"},
		"/late-body":   {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow ", "", "", "body!"},
		"/stalls-head": {"HTTP/1.1 200 OK\r\nContent-Le"},
		"/hang":        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"},
	}
	u := &scriptedUpstream{closed: make(chan struct{}, 1)}
	u.rawUpstream = newRawUpstream(t, func(c net.Conn, req *http.Request) bool {
		for i, piece := range scripts[req.URL.Path] {
			if i > 0 {
				time.Sleep(pause)
			}
			io.WriteString(c, piece)
		}
		switch req.URL.Path {
		case "/stalls-head", "/hang":
			io.Copy(io.Discard, c) // until the gateway closes it
			u.closed <- struct{}{}
			return false
		}
		return true
	})
	return u
}

// TestFastPathArmsOnlyWhenAReadWaits: the transport hooks a request's
// cancellation and header deadline to the upstream connection only when a
// read would wait. Whether an answer is there whole, comes in pieces or
// stalls, the header timeout still cuts a stalled head, does not cut a
// slow body, leaves nothing behind for the connection's next request, and
// a client going away still closes the upstream connection.
func TestFastPathArmsOnlyWhenAReadWaits(t *testing.T) {
	const timeout = 150 * time.Millisecond
	u := newScriptedUpstream(t, 60*time.Millisecond) // a slow body: 3 pauses, past the timeout
	_, srv := newGateway(t, `
upstreams:
  app: {servers: [`+u.addr+`], timeout: 150ms}
routes:
  - {name: r, upstream: app}
`, nil)
	// One after another on one upstream connection: an armed exchange
	// must leave neither deadline nor hook to the next.
	for _, tc := range []struct{ path, body string }{
		{"/whole", "whole"},
		{"/late-head", "late"},
		{"/whole", "whole"},
		{"/late-body", "slow body!"},
		{"/late-head", "late"},
		{"/late-body", "slow body!"},
		{"/whole", "whole"},
	} {
		resp, body := get(t, srv.URL+tc.path)
		if resp.StatusCode != http.StatusOK || body != tc.body {
			t.Errorf("%s: %d %q, want 200 %q", tc.path, resp.StatusCode, body, tc.body)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for answers read whole, want 1", n)
	}

	start := time.Now()
	if resp, _ := get(t, srv.URL+"/stalls-head"); resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("a head that stalls half way: %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d < timeout || d > time.Second {
		t.Errorf("a head that stalls half way was cut after %v, want about %v", d, timeout)
	}
	select {
	case <-u.closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream connection of a timed-out head was not closed")
	}

	// Half a body of known length: the gateway holds it unsent until the
	// rest comes, and the client gives up waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/hang", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	select {
	case <-u.closed:
	case <-time.After(2 * time.Second):
		t.Fatal("a client gone in the middle of a body did not close the upstream connection")
	}
}

func TestRemoveHopByHop(t *testing.T) {
	for _, tc := range []struct {
		name       string
		connection []string
		kept       []string
	}{
		{"keep-alive named", []string{"keep-alive"}, []string{"X-App", "Close"}},
		{"names in any case and spacing", []string{" Keep-Alive ,x-app"}, []string{"Close"}},
		{"close named", []string{"close"}, []string{"X-App"}},
		{"several values", []string{"CLOSE", "x-APP, ,"}, nil},
		{"none", nil, []string{"X-App", "Close"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"X-App": {"1"}, "Close": {"2"}, "Keep-Alive": {"timeout=5"}, "Te": {"x"}, "Upgrade": {"y"}}
			if tc.connection != nil {
				h["Connection"] = tc.connection
			}
			removeHopByHop(h)
			var got []string
			for k := range h {
				got = append(got, k)
			}
			want := slices.Clone(tc.kept)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
		})
	}
}
