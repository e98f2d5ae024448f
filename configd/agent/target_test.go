package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/manifest"
)

func newApplier(t *testing.T, tgt Target) *applier {
	t.Helper()
	if tgt.Namespace == "" {
		tgt.Namespace = "web/prod/app"
	}
	if tgt.Dir == "" {
		tgt.Dir = t.TempDir()
	}
	return &applier{t: tgt, keep: 2, checkTimeout: 5 * time.Second, now: time.Now}
}

func release(v int64, files ...string) api.Release {
	rel := api.Release{Namespace: "web/prod/app", Version: v, Time: time.Now()}
	for i := 0; i+1 < len(files); i += 2 {
		rel.Files = append(rel.Files, api.NewFile(files[i], files[i+1]))
	}
	return rel
}

func readCurrent(t *testing.T, a *applier) (int64, map[string]string) {
	t.Helper()
	real, err := filepath.EvalSymlinks(filepath.Join(a.t.Dir, CurrentLink))
	if err != nil {
		t.Fatal(err)
	}
	m, files, err := manifest.Load(real)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range files {
		out[k] = string(v)
	}
	return m.Version, out
}

func TestApplySwitchesWholeSets(t *testing.T) {
	a := newApplier(t, Target{})
	ctx := context.Background()
	for v := int64(1); v <= 4; v++ {
		n := strconv.FormatInt(v, 10)
		if res := a.apply(ctx, release(v, "a.conf", "a"+n, "b.conf", "b"+n)); res.Err != nil || res.InForce != v {
			t.Fatalf("apply %d: %+v", v, res)
		}
		got, files := readCurrent(t, a)
		if got != v || files["a.conf"] != "a"+n || files["b.conf"] != "b"+n {
			t.Fatalf("after %d: version %d files %v", v, got, files)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(a.t.Dir, ReleasesDir))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "3,4" {
		t.Fatalf("kept releases %v, want the newest two", names)
	}
	// Re-applying the release in force is harmless.
	if res := a.apply(ctx, release(4, "a.conf", "a4", "b.conf", "b4")); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestApplyFailures(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	marker := filepath.Join(dir, "reloads")
	tests := []struct {
		name    string
		target  Target
		next    api.Release
		wantErr string
		inForce int64
		reloads string
	}{
		{"check fails keeps old files", Target{Check: `grep -q good "$CONFIGD_DIR/a.conf" || { echo bad config >&2; exit 1; }`},
			release(2, "a.conf", "broken"), "check command failed", 1, ""},
		{"check passes", Target{Check: `grep -q good "$CONFIGD_DIR/a.conf"`},
			release(2, "a.conf", "good too"), "", 2, ""},
		{"reload fails restores", Target{Reload: `echo "$CONFIGD_VERSION" >> ` + marker + `; test "$CONFIGD_VERSION" = 1`},
			release(2, "a.conf", "good 2"), "restored release 1", 1, "2\n1\n"},
		{"empty file refused", Target{}, release(2, "a.conf", ""), "empty", 1, ""},
		{"empty file allowed", Target{AllowEmpty: true}, release(2, "a.conf", ""), "", 2, ""},
		{"damaged in transit", Target{}, api.Release{Namespace: "web/prod/app", Version: 2, Files: []api.File{{Name: "a.conf", Content: "x", SHA256: api.Digest("y")}}}, "sha256", 1, ""},
		{"wrong namespace", Target{}, api.Release{Namespace: "web/prod/other", Version: 2}, "not web/prod/app", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(marker)
			a := newApplier(t, tt.target)
			if res := a.apply(ctx, release(1, "a.conf", "good 1")); res.Err != nil {
				t.Fatalf("first apply: %v %s", res.Err, res.Output)
			}
			os.Remove(marker)
			res := a.apply(ctx, tt.next)
			if (tt.wantErr == "") != (res.Err == nil) || (res.Err != nil && !strings.Contains(res.Err.Error(), tt.wantErr)) {
				t.Fatalf("apply: %v (output %q), want %q", res.Err, res.Output, tt.wantErr)
			}
			if v, _ := readCurrent(t, a); v != tt.inForce || res.InForce != tt.inForce {
				t.Fatalf("in force %d (result %d), want %d", v, res.InForce, tt.inForce)
			}
			if tt.reloads != "" {
				got, _ := os.ReadFile(marker)
				if string(got) != tt.reloads {
					t.Fatalf("reloads ran for %q, want %q", got, tt.reloads)
				}
			}
		})
	}
}

func TestReloadSignal(t *testing.T) {
	if _, err := ParseSignal("sighup"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSignal("KILL"); err == nil {
		t.Fatal("KILL accepted as a reload signal")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	os.WriteFile(pidFile, []byte("not-a-pid\n"), 0o644)
	a := newApplier(t, Target{ReloadSignal: "HUP", PidFile: pidFile})
	if res := a.apply(context.Background(), release(1, "a", "x")); res.Err == nil || !strings.Contains(res.Err.Error(), "not a pid") {
		t.Fatalf("bad pid file: %v", res.Err)
	}
}
