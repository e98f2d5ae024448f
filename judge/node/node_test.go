package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/judge/engine"
	"github.com/opskit/opskit/judge/notify"
	"github.com/opskit/opskit/judge/state"
)

type amFake struct {
	mu     sync.Mutex
	alerts []notify.Alert
}

func (f *amFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var as []notify.Alert
	json.NewDecoder(r.Body).Decode(&as)
	f.mu.Lock()
	f.alerts = append(f.alerts, as...)
	f.mu.Unlock()
}

func (f *amFake) count(pred func(notify.Alert) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.alerts {
		if pred(a) {
			n++
		}
	}
	return n
}

func open(t *testing.T, dir, am string) (*Node, *httptest.Server) {
	t.Helper()
	n, err := Open(Config{DataDir: dir, Strategies: filepath.Join(dir, "s.yaml"), SweepInterval: 10 * time.Millisecond,
		Notify: notify.Config{Addrs: []string{am}, ResendInterval: time.Hour}}, metrics.NewSet(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	n.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return n, srv
}

func push(t *testing.T, srv *httptest.Server, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/api/push", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func points(ts int64, v float64) string {
	return fmt.Sprintf(`[{"endpoint":"h1","metric":"cpu.busy","timestamp":%d,"step":30,"value":%g,"counterType":"GAUGE","tags":"core=0"}]`, ts, v)
}

func TestPushFiresAndRestartDoesNotRefire(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s.yaml"), []byte("strategies:\n- name: busy\n  metric: cpu.busy\n  condition: all(#1) > 90\n"), 0o600)
	am := &amFake{}
	amSrv := httptest.NewServer(am)
	defer amSrv.Close()
	n, srv := open(t, dir, amSrv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()

	code, body := push(t, srv, `[{"endpoint":"h1","metric":"cpu.busy","step":30,"value":"x"},`+points(1_700_000_000, 95)[1:])
	if code != 200 || !strings.HasPrefix(body, `{"accepted":1,"rejected":[{"index":0,"reason":"bad_value"`) {
		t.Fatalf("push answered %d %s", code, body)
	}
	if code, body := push(t, srv, `{"not":"an array"}`); code != 400 {
		t.Fatalf("non-array answered %d %s", code, body)
	}
	firing := func(a notify.Alert) bool { return a.Labels["alertname"] == "busy" && a.EndsAt.After(time.Now()) }
	waitFor(t, func() bool { return am.count(firing) >= 1 })
	// The state was saved before the push was answered.
	if b, err := os.ReadFile(filepath.Join(dir, state.JournalFile)); err != nil || !strings.Contains(string(b), `"state":"firing"`) {
		t.Fatalf("state file: %v %s", err, b)
	}
	cancel()
	<-done
	// A crash: no Close. Restart on the same directory.
	n2, srv2 := open(t, dir, amSrv.URL)
	as := n2.Alerts()
	if len(as) != 1 || as[0].State != engine.StateFiring || as[0].Labels["core"] != "0" {
		t.Fatalf("restored %+v", as)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go n2.Run(ctx2)
	push(t, srv2, points(1_700_000_030, 96))
	push(t, srv2, points(1_700_000_060, 20))
	resolved := func(a notify.Alert) bool {
		return a.Labels["alertname"] == "busy" && !a.EndsAt.After(time.Now()) && a.Annotations["recovery_value"] == "20"
	}
	waitFor(t, func() bool { return am.count(resolved) >= 1 })
	am.mu.Lock()
	defer am.mu.Unlock()
	for _, a := range am.alerts {
		// Timestamps are aligned to the step, as transfer stores them.
		if !a.StartsAt.Equal(time.Unix(1_699_999_980, 0)) {
			t.Fatalf("an alert with another startsAt was sent (a second firing): %+v", a)
		}
	}
}

func TestBadReloadKeepsStrategies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	os.WriteFile(path, []byte("strategies:\n- name: busy\n  metric: cpu.busy\n  condition: all(#1) > 90\n"), 0o600)
	n, srv := open(t, dir, "")
	os.WriteFile(path, []byte("strategies:\n- name: busy\n  metric: cpu.busy\n  condition: all(#1) >> 90\n"), 0o600)
	if err := n.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "strategies[0] (busy)") {
		t.Fatalf("reload error %v", err)
	}
	push(t, srv, points(1_700_000_000, 95))
	if as := n.Alerts(); len(as) != 1 {
		t.Fatalf("old strategies not in force: %v", as)
	}
	if st := n.StrategiesStatus(); !strings.Contains(st.LastError, "busy") || len(st.Strategies) != 1 {
		t.Fatalf("status %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFileChangeReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	os.WriteFile(path, []byte("strategies:\n- name: a\n  metric: m\n  condition: all(#1) > 1\n"), 0o600)
	n, err := Open(Config{DataDir: dir, Strategies: path, WatchInterval: 10 * time.Millisecond}, metrics.NewSet(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	os.WriteFile(path, []byte("strategies:\n- name: b\n  metric: m\n  condition: all(#1) > 1\n- name: c\n  metric: m\n  nodata: 1m\n"), 0o600)
	waitFor(t, func() bool { return len(n.StrategiesStatus().Strategies) == 2 })
	if st := n.StrategiesStatus(); st.Strategies[0] != "b" || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
}

// TestRecoveryNotDeliveredSurvivesCrash: a recovery that no receiver took
// before a crash is sent after the restart.
func TestRecoveryNotDeliveredSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s.yaml"), []byte("strategies:\n- name: busy\n  metric: cpu.busy\n  condition: all(#1) > 90\n"), 0o600)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	n, srv := open(t, dir, down.URL)
	push(t, srv, points(1_700_000_000, 95))
	push(t, srv, points(1_700_000_030, 5))
	if as := n.Alerts(); len(as) != 1 || as[0].State != engine.StateResolved || as[0].Delivered {
		t.Fatalf("before the crash: %+v", as)
	}
	// Crash (no Close), restart with a receiver that works.
	am := &amFake{}
	amSrv := httptest.NewServer(am)
	defer amSrv.Close()
	n2, _ := open(t, dir, amSrv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n2.Run(ctx)
	waitFor(t, func() bool {
		return am.count(func(a notify.Alert) bool { return a.Annotations["recovery_value"] == "5" && !a.EndsAt.IsZero() }) == 1
	})
	waitFor(t, func() bool { as := n2.Alerts(); return len(as) == 1 && as[0].Delivered })
}
