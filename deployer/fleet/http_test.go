package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/deployer/fleet/cron"
)

// tokenAuth: "op" may change web, "ro" may only read web, others nothing.
func tokenAuth(r *http.Request, app, role string) (string, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer op":
		if app == "web" || app == "" {
			return "olga", nil
		}
		return "olga", errors.New("olga may not touch " + app)
	case "Bearer ro":
		if role == RoleReader && (app == "web" || app == "") {
			return "rita", nil
		}
		return "rita", errors.New("rita may only read")
	}
	return "", unauthenticated{}
}

type unauthenticated struct{}

func (unauthenticated) Error() string   { return "no valid token" }
func (unauthenticated) StatusCode() int { return http.StatusUnauthorized }

type auditLog struct {
	mu      sync.Mutex
	entries []string
}

func (a *auditLog) record(user, action, app, env, detail string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	a.entries = append(a.entries, strings.Join([]string{user, action, app, env, detail, res}, "|"))
}

func (a *auditLog) has(entry string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.entries {
		if e == entry {
			return true
		}
	}
	return false
}

func (a *auditLog) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.entries) == 0 {
		return ""
	}
	return a.entries[len(a.entries)-1]
}

func testServer(t *testing.T) (*httptest.Server, *auditLog, *cron.FakeClock) {
	t.Helper()
	f, _ := testFleet(t, 3, nil)
	st, err := cron.OpenStore(filepath.Join(t.TempDir(), "cron.db"), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := cron.NewFakeClock(time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC))
	sched, err := cron.New(cron.Options{Store: st, Runner: CronRunner{Fleet: f}, Clock: clock,
		Check: func(j cron.Job) error { return f.CheckAllowed(j.Name) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sched.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	audit := &auditLog{}
	mux := http.NewServeMux()
	Register(mux, Deps{Fleet: f, Cron: sched, Authorize: tokenAuth, Audit: audit.record})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, audit, clock
}

func call(t *testing.T, srv *httptest.Server, token, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func TestHTTPProcAndStats(t *testing.T) {
	srv, audit, _ := testServer(t)
	body := `{"app":"web","env":"prod","program":"server"}`
	var ans ProcAnswer
	if code := call(t, srv, "op", "POST", "/v1/proc/restart", body, &ans); code != 200 {
		t.Fatalf("restart: %d", code)
	}
	if ans.Program != "web:server" || len(ans.Results) != 3 || ans.Failed != 1 || !ans.Results[0].OK {
		t.Fatalf("answer %+v", ans)
	}
	if got := audit.last(); got != "olga|proc|web|prod|restart server host=|failed on 1 of 3 hosts" {
		t.Errorf("audit %q", got)
	}
	var e struct{ Error string }
	for _, c := range []struct {
		token, path, body string
		want              int
	}{
		{"", "/v1/proc/restart", body, 401},
		{"ro", "/v1/proc/restart", body, 403},
		{"op", "/v1/proc/restart", `{"app":"api","env":"prod","program":"server"}`, 403},
		{"op", "/v1/proc/explode", body, 400},
		{"op", "/v1/proc/restart", `{"app":"web","env":"prod","program":"server","host":"h9"}`, 404},
		{"op", "/v1/proc/restart", `{"app":"web","env":"prod","program":"server","bogus":1}`, 400},
	} {
		if code := call(t, srv, c.token, "POST", c.path, c.body, &e); code != c.want || e.Error == "" {
			t.Errorf("%s %s %s = %d %q, want %d", c.token, c.path, c.body, code, e.Error, c.want)
		}
	}

	for _, want := range []string{
		"unknown|proc|web|prod|restart server host=|no valid token",
		"rita|proc|web|prod|restart server host=|rita may only read",
		"olga|proc|api|prod|restart server host=|olga may not touch api",
	} {
		if !audit.has(want) {
			t.Errorf("refusal not audited: %s\n%v", want, audit.entries)
		}
	}

	var st StatsAnswer
	if code := call(t, srv, "ro", "GET", "/v1/apps/web/hosts/stats?env=prod", "", &st); code != 200 || len(st.Hosts) != 3 || st.Hosts[0].Load1 != 0.5 {
		t.Fatalf("stats: %d %+v", code, st)
	}
	if code := call(t, srv, "ro", "GET", "/v1/apps/web/hosts/stats?env=prod&host=h2", "", &st); code != 200 || len(st.Hosts) != 1 || st.Hosts[0].Host != "h2" {
		t.Fatalf("stats of h2: %d %+v", code, st)
	}
	if code := call(t, srv, "ro", "GET", "/v1/apps/api/hosts/stats?env=prod", "", nil); code != 403 {
		t.Fatalf("stats of another app: %d", code)
	}
}

func TestHTTPExecStreams(t *testing.T) {
	srv, audit, _ := testServer(t)
	req, _ := http.NewRequest("POST", srv.URL+"/v1/exec", strings.NewReader(`{"app":"web","env":"prod","name":"df","args":["/"]}`))
	req.Header.Set("Authorization", "Bearer op")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("exec: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []ExecEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev ExecEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		events = append(events, ev)
	}
	last := events[len(events)-1]
	if last.Type != "summary" || last.Hosts != 3 || last.Failed != 1 {
		t.Fatalf("summary %+v", last)
	}
	lines := 0
	for _, ev := range events {
		if ev.Type == "line" {
			lines++
		}
	}
	if lines != 6 { // h1 and h2 three lines each, h3 is down
		t.Fatalf("%d lines: %+v", lines, events)
	}
	if got := audit.last(); got != "olga|exec|web|prod|df /|failed on 1 of 3 hosts" {
		t.Errorf("audit %q", got)
	}
	var e struct{ Error string }
	if code := call(t, srv, "ro", "POST", "/v1/exec", `{"app":"web","env":"prod","name":"df"}`, &e); code != 403 {
		t.Errorf("reader exec: %d", code)
	}
	if code := call(t, srv, "op", "POST", "/v1/exec", `{"app":"web","env":"dev","name":"df"}`, &e); code != 404 {
		t.Errorf("unknown env: %d %s", code, e.Error)
	}
}

func TestHTTPCron(t *testing.T) {
	srv, audit, clock := testServer(t)
	var job cron.JobView
	if code := call(t, srv, "op", "POST", "/v1/cron", `{"app":"web","env":"prod","schedule":"*/5 * * * *","target":"batch:2","name":"df","args":["/"]}`, &job); code != 201 {
		t.Fatalf("add: %d", code)
	}
	if job.ID != "c1" || job.CreatedBy != "olga" || !job.Next.Equal(time.Date(2026, 11, 22, 1, 5, 0, 0, time.UTC)) {
		t.Fatalf("added %+v", job)
	}
	if !strings.HasPrefix(audit.last(), "olga|cron_add|web|prod|c1 \"*/5 * * * *\" target=batch:2 df /|ok") {
		t.Errorf("audit %q", audit.last())
	}
	var e struct{ Error string }
	for _, c := range []struct {
		token, body string
		want        int
	}{
		{"ro", `{"app":"web","schedule":"* * * * *","name":"df"}`, 403},
		{"op", `{"app":"web","schedule":"61 * * * *","name":"df"}`, 400},
		{"op", `{"app":"web","schedule":"* * * * *","name":"df","target":"half"}`, 400},
	} {
		if code := call(t, srv, c.token, "POST", "/v1/cron", c.body, &e); code != c.want || e.Error == "" {
			t.Errorf("add %s %s = %d %q, want %d", c.token, c.body, code, e.Error, c.want)
		}
	}

	// On schedule: at 01:05 the first batch (h1, h2) runs.
	clock.Set(time.Date(2026, 11, 22, 1, 5, 0, 0, time.UTC))
	var runs []cron.Run
	deadline := time.Now().Add(5 * time.Second)
	for len(runs) == 0 && time.Now().Before(deadline) {
		call(t, srv, "ro", "GET", "/v1/cron/c1/runs", "", &runs)
		time.Sleep(10 * time.Millisecond)
	}
	if len(runs) != 1 || runs[0].Trigger != "schedule" || len(runs[0].Hosts) != 2 || runs[0].Hosts[0].Host != "h1" || runs[0].Hosts[1].Host != "h2" {
		t.Fatalf("runs %+v", runs)
	}
	if h := runs[0].Hosts[0]; !h.OK() || !strings.HasPrefix(h.Output, "h1 line 1 /\n") {
		t.Errorf("h1 result %+v", h)
	}

	// Run now: the next batch is h3 (down) and h1, reported in host order.
	var run cron.Run
	for {
		var v cron.JobView
		call(t, srv, "ro", "GET", "/v1/cron/c1", "", &v)
		if !v.Running {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code := call(t, srv, "op", "POST", "/v1/cron/c1/run", "", &run); code != 200 {
		t.Fatalf("run now: %d", code)
	}
	if run.Seq != 2 || run.Trigger != "manual" || run.OK() || run.Hosts[1].Host != "h3" || run.Hosts[1].Error == "" || !run.Hosts[0].OK() {
		t.Fatalf("run now %+v", run)
	}
	var list []cron.JobView
	if code := call(t, srv, "ro", "GET", "/v1/cron?app=web", "", &list); code != 200 || len(list) != 1 || list[0].Last.Seq != 2 {
		t.Fatalf("list: %d %+v", code, list)
	}
	if code := call(t, srv, "ro", "DELETE", "/v1/cron/c1", "", &e); code != 403 || !audit.has("rita|cron_rm|web|prod|c1|rita may only read") {
		t.Fatalf("reader rm: %d, audit %v", code, audit.entries)
	}
	if code := call(t, srv, "op", "DELETE", "/v1/cron/c1", "", nil); code != 200 {
		t.Fatalf("rm: %d", code)
	}
	if code := call(t, srv, "op", "GET", "/v1/cron/c1/runs", "", &e); code != 404 {
		t.Fatalf("runs of a removed job: %d", code)
	}
	if code := call(t, srv, "", "GET", "/v1/cron/c9", "", &e); code != 401 {
		t.Fatalf("unknown job without a token: %d %s", code, e.Error)
	}
}

// TestHTTPExecStreamsAsOutputArrives: a host's first line reaches the
// client while the command is still running.
func TestHTTPExecStreamsAsOutputArrives(t *testing.T) {
	release := make(chan struct{})
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Exit-Code, X-Error")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "second\n")
		w.Header().Set("X-Exit-Code", "0")
	}))
	defer agent.Close()
	defer close(release)
	f := &Fleet{Hosts: staticSource{"web/prod": {{Name: "h1", Addr: strings.TrimPrefix(agent.URL, "http://")}}}, Agents: &AgentClient{}}
	mux := http.NewServeMux()
	Register(mux, Deps{Fleet: f})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v1/exec", "application/json", strings.NewReader(`{"app":"web","name":"slow"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != `{"host":"h1","type":"line","line":"first"}` {
			t.Fatalf("first line %s", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first line did not arrive while the command ran")
	}
	release <- struct{}{}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	want := []string{`{"host":"h1","type":"line","line":"second"}`, `{"host":"h1","type":"end"}`, `{"type":"summary","hosts":1}`}
	if strings.Join(rest, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rest %q", rest)
	}
}
