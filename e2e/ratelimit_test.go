package e2e

import (
	"fmt"
	"io"
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

	"github.com/opskit/opskit/internal/testkit"
)

func rlFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func rlGet(t *testing.T, client *http.Client, url string) (int, http.Header) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// rlWriteFile replaces a file atomically, as a config agent does.
func rlWriteFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// rlWaitFor polls until cond holds.
func rlWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRatelimitGateway runs the gateway in front of an in-test backend:
// limits answer 429 with Retry-After, the routes file is reloaded when it
// changes without losing a request under load and keeping the zone's
// state, a bad file keeps the rules in force, and ctl limits reports the
// key's excess.
func TestRatelimitGateway(t *testing.T) {
	var served atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer backend.Close()
	upstream := strings.TrimPrefix(backend.URL, "http://")

	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	base := fmt.Sprintf(`zones:
  perip: {rate: 1r/m, key: ip, memory: 64k}
upstreams:
  app: {servers: [%s]}
routes:
  - {name: limited, path_prefix: /limited, upstream: app, limits: [{zone: perip, burst: 2, nodelay: true}]}
  - {name: open, path_prefix: /open, upstream: app}
`, upstream)
	if err := os.WriteFile(routes, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	proxyAddr := rlFreeAddr(t)
	p := testkit.Start(t, "ratelimit", testkit.StartOptions{}, "--proxy-listen", proxyAddr, "--routes", routes, "--routes-watch-interval", "50ms")
	proxy := "http://" + proxyAddr
	client := &http.Client{Timeout: 5 * time.Second}

	for i := 0; i < 3; i++ {
		if code, _ := rlGet(t, client, proxy+"/limited"); code != 200 {
			t.Fatalf("request %d: %d", i+1, code)
		}
	}
	code, hdr := rlGet(t, client, proxy+"/limited")
	// nginx's 1r/m is 16 thousandths a second: a request drains in 62.5 s.
	if code != 429 || hdr.Get("Retry-After") != "63" || hdr.Get("RateLimit-Policy") != `"perip";q=1;w=63` {
		t.Fatalf("4th: %d %v", code, hdr)
	}

	// Load on the open route while the file is rewritten several times.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(proxy + "/open")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		extra := fmt.Sprintf("  - {name: extra%d, path_prefix: /extra%d, upstream: app}\n", i, i)
		rlWriteFile(t, routes, base+extra)
		rlWaitFor(t, "the new route", func() bool {
			c, _ := rlGet(t, client, fmt.Sprintf("%s/extra%d", proxy, i))
			return c == 200
		})
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("under reloads: %d ok, %d failed", ok.Load(), failed.Load())
	}
	if code, _ := rlGet(t, client, proxy+"/limited"); code != 429 {
		t.Fatalf("after reloads: %d, want the zone's state kept", code)
	}

	// A broken file: the rules in force stay, the log says why.
	rlWriteFile(t, routes, base+"  - {name: broken, upstream: nowhere}\n")
	rlWaitFor(t, "the error in the log", func() bool { return strings.Contains(p.Logs(), `upstream \"nowhere\" is not defined`) })
	if code, _ := rlGet(t, client, proxy+"/extra4"); code != 200 {
		t.Fatalf("after a bad file: %d", code)
	}

	out, errs, exit := testkit.Run(t, "ratelimit", "", "ctl", "limits", "perip", "127.0.0.1", "--addr", p.Addr)
	if exit != 0 || !strings.Contains(out, `"held":true,"excess":1.9`) || !strings.Contains(out, `"max_keys":512`) {
		t.Fatalf("ctl limits: exit %d\n%s%s", exit, out, errs)
	}
	_, metrics := get(t, p.URL("/metrics"))
	for _, want := range []string{`ratelimit_requests_total{route="limited",limit_status="REJECTED"} 2`, `ratelimit_zone_keys{zone="perip"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code := p.Stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestRatelimitPipe paces lines through `ratelimit pipe` and runs a command
// per line with `ratelimit exec`.
func TestRatelimitPipe(t *testing.T) {
	in := "a\nb\nc\nd\ne\n"
	start := time.Now()
	out, errs, code := testkit.Run(t, "ratelimit", in, "pipe", "--rate", "20/s")
	if code != 0 || out != in {
		t.Fatalf("pipe: exit %d out %q err %q", code, out, errs)
	}
	// Burst 1: four waits of 50 ms.
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Fatalf("5 lines at 20/s took %v", d)
	}
	out, errs, code = testkit.Run(t, "ratelimit", "x\ny\ny\n", "pipe", "--rate", "1/m", "--key-field", "1", "--drop")
	if code != 0 || out != "x\ny\n" || !strings.Contains(errs, "1 dropped") {
		t.Fatalf("pipe --drop: exit %d out %q err %q", code, out, errs)
	}
	out, errs, code = testkit.Run(t, "ratelimit", "1\n2\n", "exec", "--rate", "100/s", "--", "echo", "item", "{}")
	if code != 0 || out != "item 1\nitem 2\n" {
		t.Fatalf("exec: exit %d out %q err %q", code, out, errs)
	}
	if _, errs, code = testkit.Run(t, "ratelimit", "", "pipe", "--rate", "0/s"); code != 2 || !strings.Contains(errs, "rate") {
		t.Fatalf("rate 0: exit %d %q", code, errs)
	}
}
