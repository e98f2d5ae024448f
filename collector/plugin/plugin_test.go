package plugin

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

var defaults = falconfmt.Defaults{Endpoint: "host-1", Step: 60}

func writeScript(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "60_mysql.sh", "#!/bin/sh\n", 0o755)
	writeScript(t, dir, "redis.sh", "#!/bin/sh\n# opskit-interval: 15s\n# opskit-timeout: 2\n", 0o755)
	writeScript(t, dir, "5_slow.sh", "#!/bin/sh\n# opskit-timeout: 1m\n", 0o755)
	writeScript(t, dir, "plain.sh", "#!/bin/sh\n", 0o755)
	writeScript(t, dir, "notes.txt", "not executable", 0o644)
	writeScript(t, dir, ".hidden.sh", "#!/bin/sh\n", 0o755)
	writeScript(t, dir, "backup.sh~", "#!/bin/sh\n", 0o755)
	os.Mkdir(filepath.Join(dir, "30_subdir"), 0o755)
	specs, err := Scan(Config{Dir: dir, Interval: 60 * time.Second, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Spec{}
	for _, s := range specs {
		got[s.Name] = s
	}
	want := map[string][2]time.Duration{
		"60_mysql.sh": {60 * time.Second, 10 * time.Second},
		"redis.sh":    {15 * time.Second, 2 * time.Second},
		"5_slow.sh":   {5 * time.Second, 5 * time.Second}, // a timeout never exceeds the interval
		"plain.sh":    {60 * time.Second, 10 * time.Second},
	}
	if len(got) != len(want) {
		t.Errorf("found %v", got)
	}
	for name, w := range want {
		if s := got[name]; s.Interval != w[0] || s.Timeout != w[1] {
			t.Errorf("%s: interval %v timeout %v, want %v", name, s.Interval, s.Timeout, w)
		}
	}
	// A relative directory still gives paths that run from the plugin's
	// own directory.
	wd, _ := os.Getwd()
	if rel, err := filepath.Rel(wd, dir); err == nil {
		specs, err := Scan(Config{Dir: rel, Interval: time.Minute})
		if err != nil || len(specs) == 0 || !filepath.IsAbs(specs[0].Path) {
			t.Errorf("relative dir: %v %+v", err, specs)
		}
	}
	if _, err := Scan(Config{Dir: filepath.Join(dir, "missing")}); err == nil {
		t.Error("no error for a missing directory")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		points   int
		rejected []string
	}{
		{"json array", `[{"metric":"mysql.qps","value":10},{"metric":"x","value":"y"}]`, 1, []string{"bad_value"}},
		{"json lines and graphite mixed", "{\"metric\":\"a\",\"value\":1}\nredis.mem 100 1700000000\n\n{broken\nonly-two-fields x\n", 2, []string{"bad_json", "bad_value"}},
		{"garbage", "Segmentation fault\ncore dumped at 0x0 now\n", 0, []string{"bad_value", "bad_line"}},
		{"nothing", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pts, rej := Parse([]byte(tt.out), 1700000000, defaults, intake.DefaultLimits())
			var reasons []string
			for _, r := range rej {
				reasons = append(reasons, r.Reason)
			}
			if len(pts) != tt.points || strings.Join(reasons, ",") != strings.Join(tt.rejected, ",") {
				t.Errorf("%d points, rejected %v", len(pts), reasons)
			}
			for _, p := range pts {
				if p.Labels.Get(metric.EndpointLabel) == "" && p.Step == 0 && p.Labels.Name() != "redis.mem" {
					t.Errorf("JSON point without defaults: %+v", p)
				}
			}
		})
	}
}

type memSink struct {
	mu  sync.Mutex
	pts []metric.Point
}

func (m *memSink) Write(_ context.Context, pts []metric.Point) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pts = append(m.pts, pts...)
	return nil
}

func (m *memSink) names() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, p := range m.pts {
		out[p.Labels.Name()]++
	}
	return out
}

func newRunner(t *testing.T, dir string) (*Runner, *memSink, *metrics.Set) {
	set := metrics.NewSet()
	out := &memSink{}
	// A long rescan period: TestRunSchedules picks up a new plugin by Rescan.
	r := New(Config{Dir: dir, Interval: time.Minute, Timeout: 300 * time.Millisecond, Defaults: defaults, Rescan: time.Hour},
		out, sink.NewCounters(set, nil), set, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return r, out, set
}

func TestRunOnceOutcomes(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	scripts := map[string]string{
		"good.sh":    "#!/bin/sh\necho 'app.ok 1'\n",
		"crash.sh":   "#!/bin/sh\necho 'app.partial 1'\nexit 3\n",
		"garbage.sh": "#!/bin/sh\necho 'core dumped'\n",
		// The child sleeps on after its parent is killed unless the whole
		// process group goes.
		"hang.sh": "#!/bin/sh\nsleep 30 &\necho $! > " + pidFile + "\nwait\n",
	}
	r, out, set := newRunner(t, dir)
	want := map[string]string{"good.sh": ResultOK, "crash.sh": ResultFailed, "garbage.sh": ResultGarbage, "hang.sh": ResultTimeout}
	for name, body := range scripts {
		path := writeScript(t, dir, name, body, 0o755)
		start := time.Now()
		got := r.RunOnce(context.Background(), Spec{Path: path, Name: name, Interval: time.Minute, Timeout: 300 * time.Millisecond})
		if got != want[name] {
			t.Errorf("%s: %s, want %s", name, got, want[name])
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", name, d)
		}
	}
	if n := out.names(); len(n) != 1 || n["app.ok"] != 1 {
		t.Errorf("points written: %v (a failed run's output must be discarded)", n)
	}
	pid, _ := os.ReadFile(pidFile)
	if p := strings.TrimSpace(string(pid)); p != "" {
		time.Sleep(50 * time.Millisecond)
		if _, err := os.Stat("/proc/" + p); err == nil {
			if stat, _ := os.ReadFile("/proc/" + p + "/stat"); !strings.Contains(string(stat), ") Z") {
				t.Errorf("the hung plugin's child %s is still alive", p)
			}
		}
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, w := range []string{
		`opskit_collector_plugin_runs_total{plugin="hang.sh",result="timeout"} 1`,
		`opskit_collector_plugin_runs_total{plugin="crash.sh",result="failed"} 1`,
		`opskit_collector_intake_points_rejected_total{proto="plugin",reason="bad_value"} 1`,
		`opskit_collector_intake_points_received_total{proto="plugin"} 1`,
	} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}

// TestRunSchedules runs a directory where one plugin hangs: the other keeps
// its schedule, and a plugin added later is picked up.
func TestRunSchedules(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "fast.sh", "#!/bin/sh\n# opskit-interval: 100ms\necho 'fast.tick 1'\n", 0o755)
	writeScript(t, dir, "hang.sh", "#!/bin/sh\n# opskit-interval: 100ms\n# opskit-timeout: 250ms\nsleep 10\n", 0o755)
	r, out, set := newRunner(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for out.names()["fast.tick"] < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	writeScript(t, dir, "late.sh", "#!/bin/sh\n# opskit-interval: 100ms\necho '{\"metric\":\"late.tick\",\"value\":2}'\n", 0o755)
	r.Rescan()
	for out.names()["late.tick"] < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	n := out.names()
	if n["fast.tick"] < 4 || n["late.tick"] < 1 {
		t.Errorf("points %v", n)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), `plugin="hang.sh",result="timeout"`) || !strings.Contains(sb.String(), `plugin="hang.sh",result="skipped"`) {
		t.Errorf("hang.sh not timed out and skipped:\n%s", sb.String())
	}
}
