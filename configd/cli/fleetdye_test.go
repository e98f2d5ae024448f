package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/internal/metric"
)

// fakeDaemon serves a daemon's dye admin endpoints behind a token.
func fakeDaemon(t *testing.T, kind, token string) (*dye.Tracer, string) {
	t.Helper()
	tr := dye.New(dye.Options{Daemon: kind, Instance: kind + "-1"})
	mux := http.NewServeMux()
	tr.Register(mux, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return tr, strings.TrimPrefix(srv.URL, "http://")
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), "fleet", args, kit.IO{In: strings.NewReader(""), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func TestFleetDyeAndTrace(t *testing.T) {
	t.Setenv("OPSKIT_ADMIN_TOKEN", "s3cret")
	collector, ca := fakeDaemon(t, "collector", "s3cret")
	transfer, ta := fakeDaemon(t, "transfer", "s3cret")
	targets := "--targets=" + ca + "," + ta

	code, out, errs := runCLI(t, "dye", "endpoint=web01,metric=cpu.idle", "--for", "5m", "--id", "d1", targets)
	if code != kit.ExitOK || strings.TrimSpace(out) != "d1" {
		t.Fatalf("dye: exit %d, out %q, err %q", code, out, errs)
	}
	for _, tr := range []*dye.Tracer{collector, transfer} {
		rs := tr.Rules()
		if len(rs) != 1 || rs[0].Match.Endpoint != "web01" || rs[0].Match.Metric != "cpu.idle" || time.Until(rs[0].Until) < 4*time.Minute {
			t.Fatalf("rules = %+v", rs)
		}
	}
	p := metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: "web01"}), Time: 1, Value: 3}
	collector.Points("intake", []metric.Point{p}, nil)
	time.Sleep(2 * time.Millisecond)
	transfer.Points("intake", []metric.Point{p}, nil)
	time.Sleep(2 * time.Millisecond)
	collector.Points("send "+ta, []metric.Point{p}, nil)

	code, out, errs = runCLI(t, "trace", "d1", targets)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != kit.ExitOK || len(lines) != 3 {
		t.Fatalf("trace: exit %d, out %q, err %q", code, out, errs)
	}
	for i, want := range []string{"collector", "transfer", "collector"} {
		if f := strings.Fields(lines[i]); f[1] != want {
			t.Fatalf("line %d is from %s, want %s (time order):\n%s", i, f[1], want, out)
		}
	}
	code, out, _ = runCLI(t, "trace", "d1", "--json", targets)
	var rec dye.Record
	if code != kit.ExitOK || json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &rec) != nil || rec.Daemon != "collector" || rec.Hop != "intake" {
		t.Fatalf("trace --json: exit %d, %q", code, out)
	}
}

func TestFleetDyeErrors(t *testing.T) {
	t.Setenv("OPSKIT_ADMIN_TOKEN", "wrong")
	_, a := fakeDaemon(t, "judge", "s3cret")
	if code, _, _ := runCLI(t, "dye", "endpoint", "--targets", a); code != kit.ExitUsage {
		t.Fatalf("bad match: exit %d, want %d", code, kit.ExitUsage)
	}
	code, out, errs := runCLI(t, "dye", "endpoint=web01", "--id", "d2", "--targets", a)
	if code != kit.ExitFailure || !strings.Contains(errs, "HTTP 401") || strings.TrimSpace(out) != "d2" {
		t.Fatalf("wrong token: exit %d, out %q, err %q", code, out, errs)
	}
}
