package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opskit/opskit/deployer/api"
	"github.com/opskit/opskit/deployer/store"
	"github.com/opskit/opskit/internal/kit"
)

// fakeDeployer answers a submit, then two pages of events, then the
// deploy in state final.
func fakeDeployer(t *testing.T, final string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := &store.Deploy{ID: "d1-x", App: "web", Env: "prod", Version: "1", State: store.Queued,
			Hosts: []store.HostStep{{Host: "h1", State: store.StepDone}}}
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/deploys":
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(http.StatusUnauthorized)
				json.NewEncoder(w).Encode(map[string]string{"error": "unknown token"})
				return
			}
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(api.Summary{Deploy: d})
		case r.URL.Path == "/v1/deploys/d1-x/events":
			page := api.EventsAnswer{Deploy: "d1-x", State: final, Events: []store.Event{}}
			if r.URL.Query().Get("after") == "0" {
				page.State = store.Running
				page.Events = []store.Event{{Seq: 1, Kind: "dispatched", Host: "h1"}, {Seq: 2, Kind: "done", Host: "h1"}}
				page.Last = 2
			} else {
				page.Last = 2
			}
			json.NewEncoder(w).Encode(page)
		case r.URL.Path == "/v1/deploys/d1-x":
			d.State = final
			json.NewEncoder(w).Encode(api.Summary{Deploy: d, Progress: api.Progress{Hosts: 1, Done: 1}})
		default:
			http.NotFound(w, r)
		}
	}))
}

func run(cmd string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	for _, c := range Commands() {
		if c.Name == cmd {
			code := c.Run(context.Background(), args, kit.IO{In: strings.NewReader(""), Out: &out, Err: &errb})
			return out.String(), errb.String(), code
		}
	}
	return "", "no command", -1
}

func TestSubmitWaitExitCodes(t *testing.T) {
	sha := strings.Repeat("a", 64)
	for _, tc := range []struct {
		final string
		want  int
	}{{store.Succeeded, 0}, {store.RolledBack, 1}, {store.Failed, 1}, {store.Aborted, 1}} {
		srv := fakeDeployer(t, tc.final)
		out, errOut, code := run("submit", "--addr", srv.URL, "--token", "tok", "--app", "web", "--version", "1",
			"--artifact", "http://x/p.tgz", "--sha256", sha, "--wait")
		srv.Close()
		if code != tc.want {
			t.Errorf("%s: exit %d, want %d (%s)", tc.final, code, tc.want, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.Contains(lines[1], `"kind":"done"`) {
			t.Errorf("%s: printed %q, want one JSON line per event", tc.final, out)
		}
	}
}

func TestUsageAndServerErrors(t *testing.T) {
	if _, _, code := run("submit", "--app", "web"); code != kit.ExitUsage {
		t.Errorf("submit without version: exit %d", code)
	}
	if _, _, code := run("rollback"); code != kit.ExitUsage {
		t.Errorf("rollback without app: exit %d", code)
	}
	srv := fakeDeployer(t, store.Succeeded)
	defer srv.Close()
	_, errOut, code := run("submit", "--addr", srv.URL, "--token", "wrong", "--app", "web", "--version", "1",
		"--artifact", "u", "--sha256", strings.Repeat("a", 64))
	if code != kit.ExitFailure || !strings.Contains(errOut, "HTTP 401: unknown token") {
		t.Errorf("refused submit: exit %d %q", code, errOut)
	}
}
