package release

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type pkgFile struct {
	path, sha string
}

func makePkg(t *testing.T, version, manifest string) pkgFile {
	t.Helper()
	entries := []entry{{name: "VERSION", body: version + "\n"}}
	if manifest != "" {
		entries = append(entries, entry{name: ManifestName, body: manifest})
	}
	b := tgz(t, entries)
	sum := sha256.Sum256(b)
	return pkgFile{path: writeTemp(t, b), sha: hex.EncodeToString(sum[:])}
}

func newApplier(t *testing.T) *Applier {
	dir := t.TempDir()
	return &Applier{
		Store:          &Store{Root: filepath.Join(dir, "apps")},
		TaskDir:        filepath.Join(dir, "tasks"),
		CacheDir:       filepath.Join(dir, "packages"),
		Keep:           2,
		HealthInterval: 20 * time.Millisecond,
	}
}

func currentVersion(t *testing.T, a *Applier, app string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.Store.CurrentDir(app), "VERSION"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func TestApplyInstallsSwitchesAndReplays(t *testing.T) {
	a := newApplier(t)
	ctx := context.Background()
	p1 := makePkg(t, "1.0", "")
	r, err := a.Apply(ctx, Task{ID: "t1", App: "web", Version: "1.0", Package: p1.path, SHA256: p1.sha})
	if err != nil || r.State != StateDone {
		t.Fatalf("apply: %v %+v", err, r)
	}
	if got := currentVersion(t, a, "web"); got != "1.0" {
		t.Fatalf("current = %q", got)
	}
	// The same task again does nothing: even a removed package is not read.
	os.Remove(p1.path)
	r, err = a.Apply(ctx, Task{ID: "t1", App: "web", Version: "1.0", Package: p1.path, SHA256: p1.sha})
	if err != nil || !r.Replayed || r.State != StateDone {
		t.Fatalf("replay: %v %+v", err, r)
	}
	// The same version from another package is refused.
	other := makePkg(t, "1.0-other", "")
	if _, err := a.Apply(ctx, Task{ID: "t1b", App: "web", Version: "1.0", Package: other.path, SHA256: other.sha}); err == nil || !strings.Contains(err.Error(), "another package") {
		t.Fatalf("reused version: %v", err)
	}
	// The same id with other fields is refused.
	if _, err := a.Apply(ctx, Task{ID: "t1", App: "web", Version: "2.0", Package: p1.path, SHA256: p1.sha}); err == nil {
		t.Fatal("a reused task id with another version was accepted")
	}
}

func TestApplyChecksumMismatchLeavesCurrent(t *testing.T) {
	a := newApplier(t)
	ctx := context.Background()
	p1 := makePkg(t, "1.0", "")
	if _, err := a.Apply(ctx, Task{ID: "t1", App: "web", Version: "1.0", Package: p1.path, SHA256: p1.sha}); err != nil {
		t.Fatal(err)
	}
	p2 := makePkg(t, "2.0", "")
	wrong := strings.Repeat("0", 64)
	r, err := a.Apply(ctx, Task{ID: "t2", App: "web", Version: "2.0", Package: p2.path, SHA256: wrong})
	if !errors.Is(err, ErrChecksum) || r.State != StateFailed {
		t.Fatalf("err = %v state %s", err, r.State)
	}
	if got := currentVersion(t, a, "web"); got != "1.0" {
		t.Fatalf("current = %q after a corrupt package", got)
	}
	if a.Store.Installed("web", "2.0") {
		t.Fatal("corrupt package was unpacked")
	}
	// Recorded as failed: asking again replays the failure.
	r, _ = a.Apply(ctx, Task{ID: "t2", App: "web", Version: "2.0", Package: p2.path, SHA256: wrong})
	if !r.Replayed || r.State != StateFailed || !strings.Contains(r.Error, "sha256 mismatch") {
		t.Fatalf("replayed failure %+v", r)
	}
}

func TestApplyFailingHealthRollsBack(t *testing.T) {
	a := newApplier(t)
	ctx := context.Background()
	p1 := makePkg(t, "1.0", "hooks:\n  health: {command: [sh, -c, 'grep -q 1.0 VERSION'], timeout: 2s}\n")
	if _, err := a.Apply(ctx, Task{ID: "t1", App: "web", Version: "1.0", Package: p1.path, SHA256: p1.sha}); err != nil {
		t.Fatal(err)
	}
	p2 := makePkg(t, "2.0", "hooks:\n  pre_start: {command: [sh, -c, 'echo $DEPLOY_VERSION > pre; test -z \"$SECRET\"']}\n  health: {command: [sh, -c, 'echo unhealthy; exit 3'], timeout: 200ms}\n")
	t.Setenv("SECRET", "agent-env-must-not-leak")
	r, err := a.Apply(ctx, Task{ID: "t2", App: "web", Version: "2.0", Package: p2.path, SHA256: p2.sha})
	if err == nil || !r.RolledBack || !strings.Contains(err.Error(), "rolled back to 1.0") || !strings.Contains(err.Error(), "unhealthy") {
		t.Fatalf("err = %v, result %+v", err, r)
	}
	if got := currentVersion(t, a, "web"); got != "1.0" {
		t.Fatalf("current = %q after failed health", got)
	}
	if b, _ := os.ReadFile(filepath.Join(a.Store.ReleaseDir("web", "2.0"), "pre")); string(b) != "2.0\n" {
		t.Fatalf("pre_start hook env: %q", b)
	}
}

func TestApplyResumesAfterCrash(t *testing.T) {
	a := newApplier(t)
	p1 := makePkg(t, "1.0", "hooks:\n  pre_start: {command: [sh, -c, 'echo x >> runs']}\n")
	task := Task{ID: "t1", App: "web", Version: "1.0", Package: p1.path, SHA256: p1.sha}
	if _, err := a.Apply(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	// Pretend the agent died after pre_start: the record says running.
	r, _ := a.Load("t1")
	r.State = StateRunning
	r.Steps = r.Steps[:2] // unpacked, pre_start
	a.save(r)
	os.Remove(a.Store.CurrentDir("web"))
	r, err := a.Apply(context.Background(), task)
	if err != nil || r.State != StateDone || r.Replayed {
		t.Fatalf("resume: %v %+v", err, r)
	}
	if b, _ := os.ReadFile(filepath.Join(a.Store.ReleaseDir("web", "1.0"), "runs")); string(b) != "x\n" {
		t.Fatalf("pre_start ran %q times", b)
	}
	if currentVersion(t, a, "web") != "1.0" {
		t.Fatal("resumed task did not switch")
	}
}

func TestApplySignatureAndDownload(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	p1 := makePkg(t, "1.0", "")
	body, _ := os.ReadFile(p1.path)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	a := newApplier(t)
	a.Keys = []ed25519.PublicKey{pub}
	a.RequireSignature = true
	ctx := context.Background()
	sign := func(k ed25519.PrivateKey) string {
		return base64.StdEncoding.EncodeToString(ed25519.Sign(k, SignedMessage(p1.sha)))
	}
	cases := []struct {
		id, sig string
		wantErr bool
	}{
		{"unsigned", "", true},
		{"wrong-key", sign(otherPriv), true},
		{"garbage", "bm90IGEgc2lnbmF0dXJl", true},
		{"good", sign(priv), false},
	}
	for _, c := range cases {
		_, err := a.Apply(ctx, Task{ID: c.id, App: "web", Version: "1.0", Package: srv.URL + "/p.tgz", SHA256: p1.sha, Signature: c.sig})
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err = %v", c.id, err)
		}
		if c.wantErr && !errors.Is(err, ErrSignature) {
			t.Errorf("%s: err %v is not ErrSignature", c.id, err)
		}
	}
	if currentVersion(t, a, "web") != "1.0" {
		t.Fatal("signed download not installed")
	}
}

func TestPruneKeepsCurrentAndPrevious(t *testing.T) {
	a := newApplier(t)
	ctx := context.Background()
	for i, v := range []string{"1", "2", "3", "4"} {
		p := makePkg(t, v, "")
		if _, err := a.Apply(ctx, Task{ID: "t" + v, App: "web", Version: v, Package: p.path, SHA256: p.sha}); err != nil {
			t.Fatal(i, err)
		}
		time.Sleep(5 * time.Millisecond) // distinct mtimes
	}
	rels, _ := a.Store.Releases("web")
	var names []string
	for _, r := range rels {
		names = append(names, r.Version)
	}
	if strings.Join(names, ",") != "4,3" {
		t.Fatalf("releases kept: %v", names)
	}
	v, err := a.Store.Rollback("web", "")
	if err != nil || v != "3" || currentVersion(t, a, "web") != "3" {
		t.Fatalf("rollback: %v %s", err, v)
	}
	if _, err := a.Store.Rollback("web", "1"); err == nil {
		t.Fatal("rollback to a pruned release succeeded")
	}
}

func TestParseManifestStrict(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", ""},
		{"programs:\n  - {name: web, command: [./web]}\n", ""},
		{"unknown: 1\n", "field unknown not found"},
		{"programs:\n  - {name: web}\n", "needs a name and a command"},
		{"restart: sometimes\n", "restart"},
	} {
		_, err := ParseManifest([]byte(tc.in))
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("programs:\n  - {name: web, command: [./web]}\nhooks:\n  health: {command: [true], timeout: 1s}\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseManifest(b) })
}

// FuzzDecodeTask: a task as the API and `deploy apply` read it never
// panics, and one that validates names only safe path elements.
func FuzzDecodeTask(f *testing.F) {
	f.Add([]byte(`{"id":"t1","app":"web","version":"1.0","package":"/p","sha256":"` + strings.Repeat("a", 64) + `"}`))
	f.Add([]byte(`{"id":"../x","app":"/","version":".."}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var task Task
		if json.Unmarshal(b, &task) != nil || task.Validate() != nil {
			return
		}
		for _, s := range []string{task.ID, task.App, task.Version} {
			if strings.Contains(s, "/") || s == "." || s == ".." || s == "" {
				t.Fatalf("validated unsafe name %q", s)
			}
		}
	})
}
