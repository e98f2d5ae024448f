package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkProxy: one request through the gateway's handler, with an
// nginx-mode quota, to a loopback upstream; the fast path (GET) against
// httputil.ReverseProxy (POST without a body). It counts the handler's
// and the upstream's work together: compare the two, and allocs/op.
//
//	go test -run XXX -bench Proxy -benchtime 20000x ./ratelimit/gateway/
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer up.Close()
	g, srv := newGateway(b, benchRoutes(strings.TrimPrefix(up.URL, "http://")), nil)
	srv.Close() // the handler is called directly
	for _, method := range []string{"GET", "POST"} {
		b.Run(method, func(b *testing.B) {
			req := httptest.NewRequest(method, "http://app.example/x", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				g.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkServerProxy: requests over one keep-alive connection through
// the proxy listener (the gateway's own loop, or net/http's server with
// -fast-http=false) and the gateway, with an nginx-mode quota, to an
// upstream that answers a canned response from a raw socket (so its cost
// stays small). Client, gateway and upstream share the process: compare
// allocs/op and the profile, not ns/op with nginx.
//
//	go test -run XXX -bench ServerProxy -benchtime 20000x ./ratelimit/gateway/ [-fast-http=false]
func BenchmarkServerProxy(b *testing.B) {
	up := newRawUpstream(b, func(c net.Conn, req *http.Request) bool {
		req.Body.Close()
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
		return err == nil
	})
	_, srv := newGateway(b, benchRoutes(up.addr), nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /x HTTP/1.1\r\nHost: app.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// benchRoutes is the benchmarks' route table: one route to upstream with a
// quota that is computed for every request and refuses none, as in
// bench/ratelimit-proxy.sh.
func benchRoutes(upstream string) string {
	return fmt.Sprintf(`
zones:
  q: {rate: 1000000r/s, key: ip, memory: 10MB}
upstreams:
  app: {servers: [%s]}
routes:
  - {name: all, upstream: app, limits: [{zone: q, burst: 1000, nodelay: true}]}
`, upstream)
}
