package kit

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// TestDyeEndpointsBehindToken: every daemon serves /admin/dye and
// /admin/trace behind the admin token, and its Start reaches the rules
// through d.Dye.
func TestDyeEndpointsBehindToken(t *testing.T) {
	dyed := make(chan *Daemon, 1)
	addr, done, _ := liveDaemon(t, Spec{Name: "demo", Start: func(ctx context.Context, d *Daemon) error {
		dyed <- d
		return nil
	}}, "--admin-token", "s3cret")
	d := <-dyed
	base := "http://" + addr
	rule := `{"id":"k1","match":{"endpoint":"web01"},"for":"1m"}`
	if code := post(t, base+"/admin/dye", "", rule); code != http.StatusUnauthorized {
		t.Fatalf("dye without token: %d, want 401", code)
	}
	if code := post(t, base+"/admin/dye", "s3cret", rule); code != http.StatusOK {
		t.Fatalf("dye with token: %d", code)
	}
	p := metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "x"}, metric.Label{Name: metric.EndpointLabel, Value: "web01"})}
	d.Dye.Points("intake", []metric.Point{p}, nil)

	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/admin/trace?id=k1", ""); code != http.StatusUnauthorized {
		t.Fatalf("trace without token: %d, want 401", code)
	}
	code, body := get("/admin/trace?id=k1", "s3cret")
	if code != http.StatusOK || !strings.Contains(body, `"daemon":"demo"`) || !strings.Contains(body, `"instance":"127.0.0.1:`) {
		t.Fatalf("trace: %d %s", code, body)
	}
	if code, body := get("/admin/dye", "s3cret"); code != http.StatusOK || !strings.Contains(body, `"id":"k1"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	// The kit's other admin commands still work beside the dye routes.
	if code := post(t, base+"/admin/stop", "s3cret", ""); code != http.StatusAccepted {
		t.Fatalf("stop: %d", code)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
}
