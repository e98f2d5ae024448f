package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/deploy/poller"
	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/agents"
	"github.com/opskit/opskit/deployer/hosts"
	"github.com/opskit/opskit/deployer/plan"
	"github.com/opskit/opskit/deployer/rollout"
	"github.com/opskit/opskit/deployer/store"
)

type okApplier struct {
	mu    sync.Mutex
	calls map[string]int
}

func (a *okApplier) Apply(_ context.Context, t release.Task) (*release.Result, error) {
	a.mu.Lock()
	a.calls[t.ID]++
	a.mu.Unlock()
	return &release.Result{Task: t, State: release.StateDone, Steps: []release.Step{{Name: "unpacked"}, {Name: "switched"}}}, nil
}

type twoHosts struct{}

func (twoHosts) Hosts(context.Context, string, string) ([]hosts.Host, error) {
	return []hosts.Host{{Name: "h1"}, {Name: "h2"}}, nil
}

type rig struct {
	srv    *Server
	mux    *http.ServeMux
	http   *httptest.Server
	engine *rollout.Engine
}

func newRig(t *testing.T, tokens *Tokens) *rig {
	t.Helper()
	st, err := store.Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	apps, _ := plan.ParseApps("apps", []byte(`apps: {web: {batches: [1]}, held: {pause: until_promote, batches: [1]}}`))
	hub := agents.NewHub()
	eng := rollout.New(rollout.Options{Store: st, Hosts: twoHosts{}, Apps: func() *plan.Apps { return apps }, Dispatch: hub,
		Holder: "t", Tick: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	r := &rig{engine: eng, mux: http.NewServeMux()}
	r.srv = &Server{Engine: eng, Store: st, Hub: hub, Tokens: func() *Tokens { return tokens }, MaxWait: 5 * time.Second, Base: ctx}
	r.srv.Register(r.mux)
	r.http = httptest.NewServer(r.mux)
	t.Cleanup(func() {
		r.http.CloseClientConnections()
		cancel()
		r.http.Close()
		<-done
		st.Close()
	})
	for !eng.Leader() {
		time.Sleep(time.Millisecond)
	}
	return r
}

// call sends a request as if from remote (an address) with a token.
func (r *rig) call(t *testing.T, method, path, remote, token, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	r.mux.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

const sha = "2222222222222222222222222222222222222222222222222222222222222222"

func submitBody(app, version string) string {
	return fmt.Sprintf(`{"app":%q,"env":"prod","version":%q,"artifact":"http://pkg/x.tgz","sha256":%q}`, app, version, sha)
}

func TestAgentsContractThroughThePoller(t *testing.T) {
	r := newRig(t, nil)
	app := &okApplier{calls: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, h := range []string{"h1", "h2"} {
		p := &poller.Poller{Deployer: r.http.URL, Host: h, Applier: app, Wait: time.Second,
			CursorFile: filepath.Join(t.TempDir(), "cursor"), MinBackoff: 10 * time.Millisecond}
		go p.Run(ctx)
	}
	code, body := r.call(t, "POST", "/v1/deploys", "127.0.0.1:5000", "", submitBody("web", "1.0"))
	if code != http.StatusCreated {
		t.Fatalf("submit: %d %s", code, body)
	}
	var d Summary
	json.Unmarshal([]byte(body), &d)
	// Follow the events as `submit --wait` does.
	var after int64
	var kinds []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(fmt.Sprintf("%s/v1/deploys/%s/events?after=%d&wait=2s", r.http.URL, d.ID, after))
		if err != nil {
			t.Fatal(err)
		}
		var page EventsAnswer
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		for _, e := range page.Events {
			kinds = append(kinds, e.Kind+":"+e.Host)
		}
		after = page.Last
		if store.Terminal(page.State) && len(page.Events) == 0 {
			if page.State != store.Succeeded {
				t.Fatalf("deploy %s: %v", page.State, kinds)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done: %v", kinds)
		}
	}
	joined := strings.Join(kinds, " ")
	for _, want := range []string{"dispatched:h1", "step:h1", "done:h1", "dispatched:h2", "done:h2"} {
		if !strings.Contains(joined, want) {
			t.Errorf("events %s lack %s", joined, want)
		}
	}
	if strings.Index(joined, "done:h1") > strings.Index(joined, "dispatched:h2") {
		t.Errorf("batch 2 sent before batch 1 ended: %s", joined)
	}
	// An idle poll waits, then answers 204.
	start := time.Now()
	resp, err := http.Get(r.http.URL + "/api/v1/hosts/h1/tasks?after=x&wait=1s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || time.Since(start) < 900*time.Millisecond {
		t.Errorf("idle poll: %d after %v", resp.StatusCode, time.Since(start))
	}
	// A report for a task id other than the path's is refused; an unknown
	// task is acknowledged (the agent moves on).
	if code, _ := r.call(t, "POST", "/api/v1/tasks/a/progress", "127.0.0.1:1", "", `{"task":{"id":"b"},"state":"done"}`); code != http.StatusBadRequest {
		t.Errorf("mismatched report: %d", code)
	}
	if code, _ := r.call(t, "POST", "/api/v1/tasks/zz/progress", "127.0.0.1:1", "", `{"task":{"id":"zz"},"state":"done"}`); code != http.StatusNoContent {
		t.Errorf("unknown task report: %d", code)
	}
	got, _ := r.srv.Store.Get(d.ID)
	for _, h := range got.Hosts {
		if app.calls[h.TaskID] != 1 {
			t.Errorf("%s applied %d times", h.TaskID, app.calls[h.TaskID])
		}
	}
}

func TestTokensAndRoles(t *testing.T) {
	tokens, err := ParseTokens("tokens.yaml", []byte(`
tokens:
  - {name: ci, token: ci-secret-1, roles: {web: deployer, held: deployer}}
  - {name: viewer, token: view-secret, roles: {"*": reader}}
  - {name: oncall, token: oncall-secret, roles: {"*": operator}}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, tokens)
	remote := "10.1.2.3:4444"
	cases := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token from afar", "GET", "/v1/deploys", "", "", http.StatusUnauthorized},
		{"unknown token", "GET", "/v1/deploys", "nope-nope", "", http.StatusUnauthorized},
		{"reader reads", "GET", "/v1/deploys", "view-secret", "", http.StatusOK},
		{"reader cannot submit", "POST", "/v1/deploys", "view-secret", submitBody("web", "1"), http.StatusForbidden},
		{"deployer submits its app", "POST", "/v1/deploys", "ci-secret-1", submitBody("held", "1"), http.StatusCreated},
		{"deployer not on another app", "POST", "/v1/deploys", "ci-secret-1", submitBody("api", "1"), http.StatusForbidden},
		{"deployer cannot roll back", "POST", "/v1/apps/web/rollback", "ci-secret-1", `{"version":"1"}`, http.StatusForbidden},
		{"bad request", "POST", "/v1/deploys", "ci-secret-1", `{"app":"web","version":"../x"}`, http.StatusBadRequest},
	}
	for _, c := range cases {
		if code, body := r.call(t, c.method, c.path, remote, c.token, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	// The deploy of "held" pauses until promote; ci may promote, not abort.
	list, _ := r.srv.Store.List(store.Filter{App: "held"})
	id := list[0].ID
	for deadline := time.Now().Add(5 * time.Second); ; {
		if d, _ := r.srv.Store.Get(id); d.State == store.Running || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, _ := r.call(t, "POST", "/v1/deploys/"+id+"/abort", remote, "ci-secret-1", ""); code != http.StatusForbidden {
		t.Errorf("deployer aborted: %d", code)
	}
	if code, body := r.call(t, "POST", "/v1/deploys/"+id+"/abort", remote, "oncall-secret", ""); code != http.StatusOK {
		t.Errorf("operator abort: %d %s", code, body)
	}
	if code, _ := r.call(t, "POST", "/v1/deploys/"+id+"/cancel", remote, "oncall-secret", ""); code != http.StatusConflict {
		t.Errorf("cancel of an aborted deploy: %d", code)
	}
	// Loopback without a token may do anything.
	if code, body := r.call(t, "GET", "/v1/deploys/"+id, "127.0.0.1:9", "", ""); code != http.StatusOK || !strings.Contains(body, `"hosts"`) {
		t.Errorf("loopback get: %d %s", code, body)
	}
	// Every mutation is audited, refused ones too.
	code, body := r.call(t, "GET", "/v1/audit", "127.0.0.1:9", "", "")
	var entries []store.AuditEntry
	json.Unmarshal([]byte(body), &entries)
	var seen []string
	for _, e := range entries {
		seen = append(seen, e.User+" "+e.Action+" "+e.App+" "+map[bool]string{true: "ok", false: "refused"}[e.Result == "ok"])
	}
	all := strings.Join(seen, "; ")
	for _, want := range []string{"viewer submit  refused", "ci submit held ok", "ci submit api refused", "ci abort held refused", "oncall abort held ok", "oncall cancel held refused"} {
		if !strings.Contains(all, want) {
			t.Errorf("audit %q lacks %q (%d)", all, want, code)
		}
	}
}

func TestParseTokensRejects(t *testing.T) {
	for name, text := range map[string]string{
		"short token":  "tokens: [{name: a, token: x}]",
		"no name":      "tokens: [{token: 12345678}]",
		"bad role":     "tokens: [{name: a, token: 12345678, roles: {web: admin}}]",
		"reused token": "tokens: [{name: a, token: 12345678}, {name: b, token: 12345678}]",
		"unknown key":  "tokens: [{name: a, token: 12345678, role: reader}]",
	} {
		if _, err := ParseTokens("f", []byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add([]byte(`tokens: [{name: ci, token: abcdefgh, roles: {web: deployer, "*": reader}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, err := ParseTokens("fuzz", data)
		if err != nil {
			return
		}
		for _, x := range tk.Tokens {
			c := Caller{Name: x.Name, Roles: x.Roles}
			if c.Can(RoleOperator, "web") && !c.Can(RoleReader, "web") {
				t.Fatal("operator without reader")
			}
		}
	})
}

// TestAgentsToken: without a configured token only loopback agents are
// served; with one, every agent must present it, and deploy/poller does.
func TestAgentsToken(t *testing.T) {
	r := newRig(t, nil)
	report := `{"task":{"id":"zz"},"state":"done"}`
	if code, body := r.call(t, "POST", "/api/v1/tasks/zz/progress", "10.0.0.1:1", "", report); code != http.StatusUnauthorized {
		t.Errorf("report from off loopback without a configured token: %d %s", code, body)
	}
	if code, _ := r.call(t, "GET", "/api/v1/hosts/h1/tasks?wait=0s", "10.0.0.1:1", "", ""); code != http.StatusUnauthorized {
		t.Errorf("poll from off loopback without a configured token: %d", code)
	}
	if code, _ := r.call(t, "POST", "/api/v1/tasks/zz/progress", "127.0.0.1:1", "", report); code != http.StatusNoContent {
		t.Errorf("report from loopback: %d", code)
	}
	r.srv.AgentsToken = "s3cret"
	for _, tc := range []struct {
		remote, token string
		want          int
	}{
		{"10.0.0.1:1", "", http.StatusUnauthorized},
		{"127.0.0.1:1", "", http.StatusUnauthorized},
		{"10.0.0.1:1", "wrong", http.StatusUnauthorized},
		{"10.0.0.1:1", "s3cret", http.StatusNoContent},
	} {
		if code, body := r.call(t, "POST", "/api/v1/tasks/zz/progress", tc.remote, tc.token, report); code != tc.want {
			t.Errorf("report from %s with token %q: %d %s, want %d", tc.remote, tc.token, code, body, tc.want)
		}
	}
	// The real poller with the token gets its tasks and reports them.
	app := &okApplier{calls: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, h := range []string{"h1", "h2"} {
		p := &poller.Poller{Deployer: r.http.URL, Host: h, Token: "s3cret", Applier: app, HTTP: http.DefaultClient, Wait: time.Second,
			CursorFile: filepath.Join(t.TempDir(), "cursor.json"), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
		go p.Run(ctx)
	}
	d, err := r.engine.Submit(rollout.Request{App: "web", Env: "prod", Version: "1.0", Artifact: "/x.tgz", SHA256: strings.Repeat("a", 64)}, "t")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := r.srv.Store.Get(d.ID)
		if got.State == store.Succeeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deploy with token-carrying agents: %s", got.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
