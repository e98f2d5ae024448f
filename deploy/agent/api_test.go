package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/deploy/diag"
	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deploy/supervise"
)

func newTestAgent(t *testing.T, token string) (*Agent, http.Handler) {
	t.Helper()
	dir := t.TempDir()
	opts := ReleaseOptions{Keep: 2, HealthInterval: 10 * time.Millisecond}
	store, applier, err := opts.Applier(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	sup, err := supervise.New(supervise.Options{StateDir: filepath.Join(dir, "s"), LogDir: filepath.Join(dir, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.StopAll(context.Background()); sup.Detach() })
	a := New(store, applier, sup, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	a.Register(mux, token)
	return a, mux
}

func TestAPIGuardAndErrors(t *testing.T) {
	_, open := newTestAgent(t, "")
	_, tokened := newTestAgent(t, "s3cret")
	cases := []struct {
		name    string
		h       http.Handler
		method  string
		path    string
		remote  string
		auth    string
		body    string
		code    int
		contain string
	}{
		{"loopback status", open, "GET", "/api/v1/status", "127.0.0.1:5000", "", "", 200, `"programs"`},
		{"remote refused without token", open, "GET", "/api/v1/status", "192.0.2.1:5000", "", "", 403, "loopback"},
		{"token missing", tokened, "GET", "/api/v1/status", "192.0.2.1:5000", "", "", 401, "Bearer"},
		{"token good", tokened, "GET", "/api/v1/status", "192.0.2.1:5000", "Bearer s3cret", "", 200, `"apps"`},
		{"unknown program", open, "POST", "/api/v1/programs/nope/start", "127.0.0.1:1", "", "", 404, "no program"},
		{"bad action", open, "POST", "/api/v1/programs/nope/explode", "127.0.0.1:1", "", "", 404, "action"},
		{"task unknown field", open, "POST", "/api/v1/tasks", "127.0.0.1:1", "", `{"id":"a","bogus":1}`, 400, "unknown field"},
		{"task invalid", open, "POST", "/api/v1/tasks", "127.0.0.1:1", "", `{"id":"a","app":"../x","version":"1","package":"p","sha256":"00"}`, 400, "app"},
		{"no task", open, "GET", "/api/v1/tasks/missing", "127.0.0.1:1", "", "", 404, "no such task"},
		{"no rollback target", open, "POST", "/api/v1/apps/web/rollback", "127.0.0.1:1", "", "", 409, "no previous release"},
		{"releases of unknown app", open, "GET", "/api/v1/apps/web/releases", "127.0.0.1:1", "", "", 200, "[]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
			req.RemoteAddr = c.remote
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := httptest.NewRecorder()
			c.h.ServeHTTP(rec, req)
			if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.contain) {
				t.Fatalf("%d %s, want %d containing %q", rec.Code, rec.Body, c.code, c.contain)
			}
		})
	}
}

func TestAPIDiagStreamsAndRefuses(t *testing.T) {
	a, h := newTestAgent(t, "")
	var audit strings.Builder
	var err error
	a.Diag, err = diag.New([]diag.Command{{Name: "echo", Command: []string{"echo"}, Args: []string{`[a-z]+`}}}, &audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		body, want string
		code       int
	}{
		{`{"args":["hi"]}`, "hi\n", 200},
		{`{"args":["$(id)"]}`, "does not match", 403},
	} {
		req := httptest.NewRequest("POST", "/api/v1/diag/echo", strings.NewReader(c.body))
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s: %d %q", c.body, rec.Code, rec.Body)
		}
	}
	if n := strings.Count(audit.String(), "\n"); n != 2 {
		t.Errorf("%d audit records, want 2:\n%s", n, audit.String())
	}
}

func TestProgramConfigFromManifest(t *testing.T) {
	retries := 7
	c, err := ProgramConfig("web:api", "/srv/web/releases/1", release.ProgramSpec{
		Name: "api", Command: []string{"./api"}, Dir: "sub", StopSignal: "SIGQUIT", StartRetries: &retries,
	})
	if err != nil || c.Dir != "/srv/web/releases/1/sub" || c.StopSignal.String() != "quit" || c.StartRetries != 7 || !c.Autostart {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := ProgramConfig("x", "/", release.ProgramSpec{Command: []string{"a"}, StopSignal: "BOGUS"}); err == nil {
		t.Fatal("bad stop signal accepted")
	}
}

func TestActivateInstancesAndRemoval(t *testing.T) {
	a, _ := newTestAgent(t, "")
	ctx := context.Background()
	m, err := release.ParseManifest([]byte("programs:\n  - {name: w, command: [sh, -c, 'echo $DEPLOY_INSTANCE; exec sleep 100'], instances: 2, startsecs: 50ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Activate(ctx, "web", "1", t.TempDir(), m); err != nil {
		t.Fatal(err)
	}
	st := a.Supervisor.Status()
	if len(st) != 2 || st[0].Name != "web:w-0" || st[1].Name != "web:w-1" || st[0].State != supervise.Running || st[1].State != supervise.Running {
		t.Fatalf("status %+v", st)
	}
	if err := a.Activate(ctx, "web", "2", t.TempDir(), release.Manifest{}); err != nil {
		t.Fatal(err)
	}
	if st := a.Supervisor.Status(); len(st) != 0 {
		t.Fatalf("programs the release dropped are still supervised: %+v", st)
	}
}
