package gateway

import (
	"fmt"
	"io"
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
	g, srv := newGateway(b, fmt.Sprintf(`
zones:
  q: {rate: 1000000r/s, key: ip, memory: 10MB}
upstreams:
  app: {servers: [%s]}
routes:
  - {name: all, upstream: app, limits: [{zone: q, burst: 1000, nodelay: true}]}
`, strings.TrimPrefix(up.URL, "http://")), nil)
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
