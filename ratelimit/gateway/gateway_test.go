package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a test upstream that says who it is and what it was sent.
type backend struct {
	*httptest.Server
	name string
	hits atomic.Int64
	mu   sync.Mutex
	last http.Header
	sick atomic.Bool
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if b.sick.Load() {
				w.WriteHeader(500)
			}
			return
		}
		b.hits.Add(1)
		b.mu.Lock()
		b.last = r.Header.Clone()
		b.mu.Unlock()
		fmt.Fprintf(w, "%s %s %s", name, r.Host, r.URL.Path)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

func (b *backend) header(k string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last.Get(k)
}

type clock struct{ ms atomic.Uint64 }

func (c *clock) read() uint64 { return c.ms.Load() }

func newGateway(t testing.TB, yaml string, c *clock) (*Gateway, *httptest.Server) {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if c != nil {
		opts.NginxClock = c.read
	}
	g := New(opts)
	if err := g.Load(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, serveProxy(t, g)
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestLimitsHeadersAndReload(t *testing.T) {
	b := newBackend(t, "b1")
	conf := fmt.Sprintf(`
zones:
  perip: {rate: 1r/s, key: ip, memory: 1MB}
upstreams:
  app: {servers: [%s]}
routes:
  - name: api
    path_prefix: /api
    upstream: app
    limits: [{zone: perip, burst: 2, nodelay: true}]
`, b.addr())
	c := &clock{}
	c.ms.Store(100_000)
	g, srv := newGateway(t, conf, c)
	for i, want := range []string{"2", "1", "0"} {
		resp, body := get(t, srv.URL+"/api/x")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "b1 ") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-RateLimit-Remaining"); got != want {
			t.Errorf("request %d: remaining %s, want %s", i, got, want)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"perip";q=1;w=1` {
			t.Errorf("policy %q", got)
		}
	}
	resp, _ := get(t, srv.URL+"/api/x")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("RateLimit") != `"perip";r=0;t=3` {
		t.Fatalf("4th: %d %v", resp.StatusCode, resp.Header)
	}
	if b.header("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", b.header("X-Forwarded-For"))
	}
	if resp, _ := get(t, srv.URL+"/other"); resp.StatusCode != 404 {
		t.Errorf("unrouted: %d", resp.StatusCode)
	}

	// A reload with the zone unchanged keeps its state: still refused.
	dir := t.TempDir()
	file := filepath.Join(dir, "routes.yaml")
	os.WriteFile(file, []byte(conf+"  - {name: more, path_prefix: /more, upstream: app}\n"), 0o600)
	if err := g.LoadFile(file); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, srv.URL+"/api/x"); resp.StatusCode != 429 {
		t.Fatalf("after reload: %d, want the bucket state kept", resp.StatusCode)
	}
	if resp, _ := get(t, srv.URL+"/more"); resp.StatusCode != 200 {
		t.Fatalf("new route: %d", resp.StatusCode)
	}
	// A bad file keeps the rules in force.
	os.WriteFile(file, []byte("zones: {perip: {rate: 0r/s, key: ip}}\n"), 0o600)
	err := g.LoadFile(file)
	if err == nil || !strings.Contains(err.Error(), "rate") {
		t.Fatalf("bad file: %v", err)
	}
	if resp, _ := get(t, srv.URL+"/more"); resp.StatusCode != 200 {
		t.Fatalf("after a bad reload: %d", resp.StatusCode)
	}
	rep := g.Limits("perip", "127.0.0.1")
	if rep.Key == nil || !rep.Key.Held || *rep.Key.Excess != 2 || rep.Zones[0].Keys != 1 || rep.Zones[0].MaxKeys != (1<<20)/BytesPerKey {
		t.Fatalf("report %+v key %+v", rep.Zones, rep.Key)
	}
	// Time passes on the zone's clock: one more request is admitted.
	c.ms.Add(1000)
	if resp, _ := get(t, srv.URL+"/api/x"); resp.StatusCode != 200 {
		t.Fatalf("a second later: %d", resp.StatusCode)
	}
}

func TestDelayDryRunAndBucket(t *testing.T) {
	b := newBackend(t, "b1")
	c := &clock{}
	c.ms.Store(100_000)
	_, srv := newGateway(t, fmt.Sprintf(`
zones:
  slow: {rate: 20r/s, key: ip}
  shadow: {rate: 1r/m, key: header:X-User}
  tokens: {mode: bucket, rate: 1/m, burst: 1, key: query:k}
upstreams:
  app: {servers: [%s]}
routes:
  - {name: slow, path_prefix: /slow, upstream: app, limits: [{zone: slow, burst: 5}]}
  - {name: shadow, path_prefix: /shadow, upstream: app, dry_run: true, limits: [{zone: shadow}]}
  - {name: tokens, path_prefix: /tokens, upstream: app, status: 503, limits: [{zone: tokens}]}
`, b.addr()), c)
	get(t, srv.URL+"/slow")
	start := time.Now()
	resp, _ := get(t, srv.URL+"/slow")
	if d := time.Since(start); resp.StatusCode != 200 || d < 45*time.Millisecond {
		t.Fatalf("second request: %d after %v, want delayed 50ms", resp.StatusCode, d)
	}
	for i := 0; i < 3; i++ {
		if resp, _ := get(t, srv.URL+"/shadow", "X-User", "u"); resp.StatusCode != 200 {
			t.Fatalf("dry run refused: %d", resp.StatusCode)
		}
	}
	// No key: not counted.
	if resp, _ := get(t, srv.URL+"/tokens"); resp.StatusCode != 200 || resp.Header.Get("RateLimit") != "" {
		t.Fatalf("keyless: %d %v", resp.StatusCode, resp.Header)
	}
	get(t, srv.URL+"/tokens?k=a")
	resp, _ = get(t, srv.URL+"/tokens?k=a")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "60" {
		t.Fatalf("bucket: %d retry %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("RateLimit-Policy") != `"tokens";q=1;w=60` {
		t.Errorf("policy %q", resp.Header.Get("RateLimit-Policy"))
	}
}

func TestUpstreamRetryHealthAndHash(t *testing.T) {
	b1, b2 := newBackend(t, "b1"), newBackend(t, "b2")
	dead := freeAddr(t)
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  flaky: {servers: [%s, %s], retries: 1}
  checked:
    servers: [%s, %s]
    health_check: {path: /healthz, interval: 20ms, fails: 1, passes: 1}
  sticky: {servers: [%s, %s], balance: hash, hash_key: header:X-User}
routes:
  - {name: flaky, path_prefix: /flaky, upstream: flaky}
  - {name: checked, path_prefix: /checked, upstream: checked}
  - {name: sticky, path_prefix: /sticky, upstream: sticky}
`, dead, b1.addr(), b1.addr(), b2.addr(), b1.addr(), b2.addr()), nil)
	for i := 0; i < 4; i++ {
		if resp, body := get(t, srv.URL+"/flaky"); resp.StatusCode != 200 || !strings.HasPrefix(body, "b1") {
			t.Fatalf("flaky %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// A POST is not retried, but the dead server is out of rotation now.
	resp, err := http.Post(srv.URL+"/flaky", "text/plain", bytes.NewBufferString("x"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post: %v %v", err, resp)
	}
	resp.Body.Close()

	b2.sick.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		seen := map[string]bool{}
		for i := 0; i < 6; i++ {
			_, body := get(t, srv.URL+"/checked")
			seen[body[:2]] = true
		}
		if !seen["b2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sick server stays in rotation")
		}
		time.Sleep(30 * time.Millisecond)
	}
	b2.sick.Store(false)
	for deadline = time.Now().Add(5 * time.Second); ; time.Sleep(30 * time.Millisecond) {
		seen := false
		for i := 0; i < 6; i++ {
			if _, body := get(t, srv.URL+"/checked"); strings.HasPrefix(body, "b2") {
				seen = true
			}
		}
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recovered server does not come back")
		}
	}

	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		_, first := get(t, srv.URL+"/sticky", "X-User", user)
		for i := 0; i < 3; i++ {
			if _, body := get(t, srv.URL+"/sticky", "X-User", user); body[:2] != first[:2] {
				t.Fatalf("%s moved from %s to %s", user, first[:2], body[:2])
			}
		}
	}
}

func TestDyeIsPassedOn(t *testing.T) {
	b := newBackend(t, "b1")
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: api, upstream: app, dye: {key: header:X-User, values: [alice]}}
`, b.addr()), nil)
	get(t, srv.URL+"/", "X-User", "bob")
	if got := b.header(DyeHeader); got != "" {
		t.Fatalf("bob dyed: %q", got)
	}
	get(t, srv.URL+"/", "X-User", "alice")
	if got := b.header(DyeHeader); got != "alice" {
		t.Fatalf("alice's dye upstream: %q", got)
	}
}

func TestNoLiveServer(t *testing.T) {
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: api, upstream: app}
`, freeAddr(t)), nil)
	if resp, _ := get(t, srv.URL+"/"); resp.StatusCode != 502 {
		t.Fatalf("dead upstream: %d", resp.StatusCode)
	}
	if resp, _ := get(t, srv.URL+"/"); resp.StatusCode != 503 {
		t.Fatalf("no live server: %d", resp.StatusCode)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestAdaptiveConcurrencyRefusesOverTheLimit(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer slow.Close()
	defer close(release)
	g, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app:
    servers: [%s]
    adaptive: {algorithm: gradient2, initial_limit: 1, min_limit: 1, max_limit: 1}
routes:
  - {name: api, upstream: app}
`, strings.TrimPrefix(slow.URL, "http://")), nil)
	go http.Get(srv.URL + "/slow")
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep := g.Limits("", "")
		if rep.Upstreams[0].Servers[0].InFlight == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached the upstream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, body := get(t, srv.URL+"/fast")
	if resp.StatusCode != 503 || !strings.Contains(body, "over the concurrency limit") {
		t.Fatalf("over the limit: %d %q", resp.StatusCode, body)
	}
	snap := g.Limits("", "").Upstreams[0].Adaptive
	if s := fmt.Sprintf("%+v", snap); !strings.Contains(s, "Limit:1") || !strings.Contains(s, "Refused:1") {
		t.Fatalf("snapshot %s", s)
	}
}

func TestShareDividesTheRate(t *testing.T) {
	b := newBackend(t, "b1")
	c := &clock{}
	c.ms.Store(100_000)
	g, srv := newGateway(t, fmt.Sprintf(`
zones:
  z: {rate: 10r/s, key: ip}
  t: {mode: bucket, rate: 10/s, burst: 1, key: ip}
upstreams:
  app: {servers: [%s]}
routes:
  - {name: a, upstream: app, limits: [{zone: z}]}
`, b.addr()), c)
	g.SetShare(4)
	rep := g.Limits("", "")
	if rep.Zones[1].RateNow != "2.500r/s" || rep.Zones[0].RateNow != "2.5/s" {
		t.Fatalf("shares %+v", rep.Zones)
	}
	get(t, srv.URL+"/")
	c.ms.Add(100) // a full rate would admit one more after 100 ms; a quarter does not
	if resp, _ := get(t, srv.URL+"/"); resp.StatusCode != 429 {
		t.Fatalf("at a quarter of 10r/s, 100 ms later: %d", resp.StatusCode)
	}
	c.ms.Add(300)
	if resp, _ := get(t, srv.URL+"/"); resp.StatusCode != 200 {
		t.Fatalf("400 ms later: %d", resp.StatusCode)
	}
	// A reload keeps the share for new and kept zones.
	cfg, _ := Parse("r", []byte(fmt.Sprintf("zones: {z: {rate: 10r/s, key: ip}, n: {rate: 20r/s, key: ip}}\nupstreams: {app: {servers: [%s]}}\n", b.addr())))
	if err := g.Load(cfg); err != nil {
		t.Fatal(err)
	}
	rep = g.Limits("", "")
	if rep.Zones[0].RateNow != "5r/s" || rep.Zones[1].RateNow != "2.500r/s" {
		t.Fatalf("after reload %+v", rep.Zones)
	}
}

// TestUpgradePassesThrough: an Upgrade (as WebSocket uses) reaches the
// upstream and the connection then carries bytes both ways.
func TestUpgradePassesThrough(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(brw, buf); err == nil {
			conn.Write(buf)
		}
	}))
	defer up.Close()
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: ws, upstream: app}
`, strings.TrimPrefix(up.URL, "http://")), nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(conn, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over the upgraded connection: %q %v", buf, err)
	}
}

// TestStreamingResponse: a response written in pieces reaches the client
// piece by piece, not once the upstream is done.
func TestStreamingResponse(t *testing.T) {
	next := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second\n")
	}))
	defer up.Close()
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: s, upstream: app}
`, strings.TrimPrefix(up.URL, "http://")), nil)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first piece: %q %v", line, err)
	}
	close(next)
	if line, _ := br.ReadString('\n'); line != "second\n" {
		t.Fatalf("second piece: %q", line)
	}
}
