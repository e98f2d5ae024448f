// Package e2e builds the real opskit binaries and runs them together on
// loopback.
package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

var daemons = []string{"collector", "transfer", "judge", "alarm", "ratelimit", "configd", "deployer", "deploy", "filefly", "abtest"}

// freeListeners moves a daemon's other listeners off their default ports,
// so the test passes beside a running `make demo`.
func freeListeners(t *testing.T, name string) []string {
	switch name {
	case "collector":
		return []string{"--graphite-listen", testkit.FreeAddr(t), "--statsd-listen", testkit.FreeAddr(t)}
	case "transfer":
		return []string{"--graphite-listen", testkit.FreeAddr(t)}
	case "ratelimit":
		return []string{"--proxy-listen", testkit.FreeAddr(t)}
	}
	return nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEveryBinaryServesTheKit checks the foundation contract on each binary:
// --help, /healthz, /readyz, /metrics with opskit_build_info, a log level
// change by ctl, and a clean exit 0 on SIGTERM.
func TestEveryBinaryServesTheKit(t *testing.T) {
	for _, name := range daemons {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, _, code := testkit.Run(t, name, "", "--help")
			if code != 0 || !strings.Contains(out, "--listen") || !strings.Contains(out, "--data-dir") {
				t.Fatalf("--help: exit %d\n%s", code, out)
			}
			p := testkit.Start(t, name, testkit.StartOptions{}, freeListeners(t, name)...)
			if code, body := get(t, p.URL("/healthz")); code != 200 || !strings.Contains(body, "ok") {
				t.Errorf("/healthz = %d %q", code, body)
			}
			if code, _ := get(t, p.URL("/readyz")); code != 200 {
				t.Errorf("/readyz = %d", code)
			}
			_, metrics := get(t, p.URL("/metrics"))
			for _, want := range []string{`opskit_build_info{daemon="` + name + `"`, "go_goroutines", "process_resident_memory_bytes"} {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if out, errs, code := testkit.Run(t, name, "", "ctl", "loglevel", "debug", "--addr", p.Addr); code != 0 {
				t.Fatalf("ctl loglevel: exit %d %s %s", code, out, errs)
			}
			if _, body := get(t, p.URL("/admin/loglevel")); !strings.Contains(body, `"debug"`) {
				t.Errorf("log level after ctl = %s", body)
			}
			start := time.Now()
			if code := p.Stop(t, 15*time.Second); code != 0 {
				t.Fatalf("exit %d on SIGTERM\n%s", code, p.Logs())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("SIGTERM took %v, beyond the default shutdown deadline", d)
			}
		})
	}
}

func TestBadConfigStopsStartup(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "transfer.yaml")
	os.WriteFile(cfg, []byte("log-level: info\nshutdown-timeout: 5s\nlisten-adress: 127.0.0.1:1\n"), 0o600)
	_, errs, code := testkit.Run(t, "judge", "", "--config", cfg, "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errs, ":3:") || !strings.Contains(errs, "listen-adress") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the key and line 3", code, errs)
	}
	os.WriteFile(cfg, []byte("shutdown-timeout: [1, 2]\n"), 0o600)
	_, errs, code = testkit.Run(t, "judge", "", "--config", cfg, "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errs, ":1:") || !strings.Contains(errs, "shutdown-timeout") {
		t.Fatalf("wrong type: exit %d, stderr %q", code, errs)
	}
}

func TestAdminRefusedOffLoopbackWithoutToken(t *testing.T) {
	// Without a token the daemon refuses to listen on all interfaces...
	_, errs, code := testkit.Run(t, "alarm", "", "--listen", "0.0.0.0:0", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errs, "--admin-token-file") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	// ...and with one, an admin call without it is refused and the daemon runs on.
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("t0ken\n"), 0o600)
	// Start passes --listen 127.0.0.1:0 first; the later --listen wins.
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--listen", "0.0.0.0:0", "--admin-token-file", tokenFile)
	port := p.Addr[strings.LastIndex(p.Addr, ":")+1:]
	base := "http://127.0.0.1:" + port
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/stop", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/admin/stop without token = %d; want 401", resp.StatusCode)
	}
	time.Sleep(200 * time.Millisecond)
	if p.Exited() {
		t.Fatal("daemon stopped on an unauthorized /admin/stop")
	}
	if out, errs, code := testkit.Run(t, "alarm", "", "ctl", "stop", "--addr", "127.0.0.1:"+port, "--token-file", tokenFile); code != 0 {
		t.Fatalf("ctl stop with token: %d %s %s", code, out, errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("after ctl stop: exit %d, %v", code, err)
	}
	if strings.Contains(p.Logs(), "t0ken") {
		t.Fatal("the admin token appears in the log")
	}
}
