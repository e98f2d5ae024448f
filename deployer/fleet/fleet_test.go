package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opskit/opskit/deployer/hosts"
)

// fakeAgent speaks the parts of the deploy agent's API the fleet uses.
type fakeAgent struct {
	name  string
	token string
	// allow lists the diagnostic names it runs; others get 403.
	allow []string
	// exitCode is what every diagnostic exits with.
	exitCode int
	mu       sync.Mutex
	actions  []string
	inFlight *atomic.Int32
	maxSeen  *atomic.Int32
	srv      *httptest.Server
}

func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.token != "" && r.Header.Get("Authorization") != "Bearer "+a.token {
		http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
		return
	}
	if a.inFlight != nil {
		n := a.inFlight.Add(1)
		defer a.inFlight.Add(-1)
		for {
			m := a.maxSeen.Load()
			if n <= m || a.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/programs/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.actions = append(a.actions, r.PathValue("action")+" "+r.PathValue("name"))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.PathValue("name") != "web:server" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":"no program %s"}`, r.PathValue("name"))
			return
		}
		if a.name == "h2" && r.PathValue("action") == "start" {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error":"exited too quickly","program":{"name":"web:server","state":"BACKOFF"}}`)
			return
		}
		fmt.Fprint(w, `{"name":"web:server","state":"RUNNING","pid":42}`)
	})
	mux.HandleFunc("GET /api/v1/host", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"time":"2026-11-22T01:00:00Z","samples":[
			{"metric":"load.1min","value":0.5},{"metric":"load.5min","value":0.4},{"metric":"load.15min","value":0.3},
			{"metric":"mem.memtotal","value":1000},{"metric":"mem.memused.percent","value":25},
			{"metric":"df.bytes.used.percent","labels":{"mount":"/","fstype":"ext4"},"value":40},
			{"metric":"df.bytes.free","labels":{"mount":"/","fstype":"ext4"},"value":600},
			{"metric":"df.bytes.used.percent","labels":{"mount":"/data","fstype":"xfs"},"value":90},
			{"metric":"cpu.idle","value":80}],
			"programs":[{"name":"web:server","pid":42,"cpu_seconds":1.5,"rss_bytes":2048},{"name":"other:x","pid":43,"cpu_seconds":9,"rss_bytes":1}]}`)
	})
	mux.HandleFunc("POST /api/v1/diag/{name}", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Args []string }
		json.NewDecoder(r.Body).Decode(&body)
		if !slices.Contains(a.allow, r.PathValue("name")) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"error":"not allowed: %s is not in the allowlist"}`, r.PathValue("name"))
			return
		}
		w.Header().Set("Trailer", "X-Exit-Code, X-Error")
		fmt.Fprintf(w, "%s line 1 %s\n", a.name, strings.Join(body.Args, ","))
		w.(http.Flusher).Flush()
		fmt.Fprintf(w, "line 2\r\nno newline")
		w.Header().Set("X-Exit-Code", fmt.Sprint(a.exitCode))
		if a.exitCode != 0 {
			w.Header().Set("X-Error", fmt.Sprintf("exit status %d", a.exitCode))
		}
	})
	mux.ServeHTTP(w, r)
}

type staticSource map[string][]hosts.Host

func (s staticSource) Hosts(_ context.Context, app, env string) ([]hosts.Host, error) {
	hs, ok := s[app+"/"+env]
	if !ok {
		return nil, fmt.Errorf("%s/%s: %w", app, env, hosts.ErrUnknownApp)
	}
	return slices.Clone(hs), nil
}

// testFleet starts agents h1..hN (h3 is down: its address refuses
// connections) for app web/prod.
func testFleet(t *testing.T, n int, configure func(*fakeAgent)) (*Fleet, map[string]*fakeAgent) {
	t.Helper()
	agents := map[string]*fakeAgent{}
	var hs []hosts.Host
	for i := 1; i <= n; i++ {
		a := &fakeAgent{name: fmt.Sprint("h", i), allow: []string{"df", "uptime"}}
		if configure != nil {
			configure(a)
		}
		a.srv = httptest.NewServer(a)
		t.Cleanup(a.srv.Close)
		agents[a.name] = a
		hs = append(hs, hosts.Host{Name: a.name, Addr: strings.TrimPrefix(a.srv.URL, "http://")})
	}
	if a, ok := agents["h3"]; ok {
		a.srv.Close()
	}
	f := &Fleet{Hosts: staticSource{"web/prod": hs}, Agents: &AgentClient{CallTimeout: 5 * time.Second}, Concurrency: 4}
	return f, agents
}

func TestProc(t *testing.T) {
	f, agents := testFleet(t, 3, nil)
	ctx := context.Background()
	res, err := f.Proc(ctx, Target{App: "web", Env: "prod"}, "start", "server")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("results %+v", res)
	}
	if r := res[0]; r.Host != "h1" || !r.OK || r.Program.State != "RUNNING" || r.Program.PID != 42 {
		t.Errorf("h1: %+v", r)
	}
	if r := res[1]; r.Host != "h2" || r.OK || r.Program == nil || r.Program.State != "BACKOFF" || !strings.Contains(r.Error, "exited too quickly") {
		t.Errorf("h2 (409): %+v", r)
	}
	if r := res[2]; r.Host != "h3" || r.OK || r.Error == "" {
		t.Errorf("h3 (down): %+v", r)
	}
	if got := agents["h1"].actions; !slices.Equal(got, []string{"start web:server"}) {
		t.Errorf("h1 saw %v", got)
	}

	// One host only; a full program name is passed as it is.
	res, err = f.Proc(ctx, Target{App: "web", Env: "prod", Host: "h2"}, "restart", "web:server")
	if err != nil || len(res) != 1 || !res[0].OK || res[0].Host != "h2" {
		t.Fatalf("--host h2: %+v %v", res, err)
	}
	if n := len(agents["h1"].actions); n != 1 {
		t.Errorf("h1 got %d actions, want 1", n)
	}
	res, _ = f.Proc(ctx, Target{App: "web", Env: "prod", Host: "h1"}, "stop", "nope")
	if res[0].OK || !strings.Contains(res[0].Error, "404") {
		t.Errorf("unknown program: %+v", res[0])
	}

	for _, c := range []struct {
		target          Target
		action, program string
		want            error
	}{
		{Target{App: "web", Env: "prod", Host: "h9"}, "start", "server", ErrNoSuchHost},
		{Target{App: "api", Env: "prod"}, "start", "server", hosts.ErrUnknownApp},
		{Target{App: "web", Env: "prod"}, "kill", "server", ErrBadRequest},
		{Target{App: "web", Env: "prod"}, "start", "", ErrBadRequest},
		{Target{Env: "prod"}, "start", "server", ErrBadRequest},
	} {
		if _, err := f.Proc(ctx, c.target, c.action, c.program); !errors.Is(err, c.want) {
			t.Errorf("Proc(%+v, %s, %s) = %v, want %v", c.target, c.action, c.program, err, c.want)
		}
	}
}

func TestConcurrencyBound(t *testing.T) {
	var inFlight, maxSeen atomic.Int32
	f, _ := testFleet(t, 10, func(a *fakeAgent) { a.inFlight, a.maxSeen = &inFlight, &maxSeen })
	f.Concurrency = 3
	if _, err := f.Proc(context.Background(), Target{App: "web", Env: "prod"}, "restart", "server"); err != nil {
		t.Fatal(err)
	}
	if m := maxSeen.Load(); m > 3 || m < 2 {
		t.Fatalf("at most %d agents called at once, want 2..3", m)
	}
}

func TestAgentToken(t *testing.T) {
	f, _ := testFleet(t, 2, func(a *fakeAgent) { a.token = "s3cret" })
	res, _ := f.Proc(context.Background(), Target{App: "web", Env: "prod"}, "restart", "server")
	if res[0].OK || !strings.Contains(res[0].Error, "401") {
		t.Fatalf("without the token: %+v", res[0])
	}
	f.Agents.Token = "s3cret"
	res, _ = f.Proc(context.Background(), Target{App: "web", Env: "prod"}, "restart", "server")
	if !res[0].OK || !res[1].OK {
		t.Fatalf("with the token: %+v", res)
	}
}

func TestStats(t *testing.T) {
	f, _ := testFleet(t, 3, nil)
	st, err := f.Stats(context.Background(), Target{App: "web", Env: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	h1 := st[0]
	if h1.Host != "h1" || h1.Load1 != 0.5 || h1.Load15 != 0.3 || h1.MemTotalBytes != 1000 || h1.MemUsedPercent != 25 || h1.Error != "" {
		t.Errorf("h1: %+v", h1)
	}
	if len(h1.Disks) != 2 || h1.Disks[0] != (DiskStats{Mount: "/", UsedPercent: 40, FreeBytes: 600}) || h1.Disks[1].Mount != "/data" {
		t.Errorf("disks: %+v", h1.Disks)
	}
	if len(h1.Programs) != 1 || h1.Programs[0].Name != "web:server" || h1.Programs[0].RSSBytes != 2048 {
		t.Errorf("programs (only the app's): %+v", h1.Programs)
	}
	if st[2].Host != "h3" || st[2].Error == "" {
		t.Errorf("h3 (down): %+v", st[2])
	}
}

func TestExec(t *testing.T) {
	f, _ := testFleet(t, 4, func(a *fakeAgent) {
		switch a.name {
		case "h2":
			a.allow = []string{"uptime"} // refuses df
		case "h4":
			a.exitCode = 2
		}
	})
	var events []ExecEvent
	res, err := f.Exec(context.Background(), Target{App: "web", Env: "prod"}, "df", []string{"/", "-h"}, func(ev ExecEvent) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	var h1 []string
	ends := map[string]ExecEvent{}
	for _, ev := range events {
		switch {
		case ev.Type == "line" && ev.Host == "h1":
			h1 = append(h1, ev.Line)
		case ev.Type == "end":
			if _, dup := ends[ev.Host]; dup {
				t.Errorf("two ends for %s", ev.Host)
			}
			ends[ev.Host] = ev
		}
	}
	if want := []string{"h1 line 1 /,-h", "line 2", "no newline"}; !slices.Equal(h1, want) {
		t.Errorf("h1 lines %q, want %q", h1, want)
	}
	if e := ends["h1"]; e.ExitCode != 0 || e.Error != "" || e.Refused {
		t.Errorf("h1 end %+v", e)
	}
	if e := ends["h2"]; !e.Refused || e.ExitCode != -1 || !strings.Contains(e.Error, "not allowed") {
		t.Errorf("h2 end (refused) %+v", e)
	}
	if e := ends["h3"]; e.Refused || e.ExitCode != -1 || e.Error == "" {
		t.Errorf("h3 end (down) %+v", e)
	}
	if e := ends["h4"]; e.ExitCode != 2 || !strings.Contains(e.Error, "exit status 2") {
		t.Errorf("h4 end %+v", e)
	}
	if len(res) != 4 || !res[0].OK() || res[1].OK() || !res[1].Refused || res[3].OK() || res[0].Bytes != int64(len("h1 line 1 /,-h\nline 2\r\nno newline")) {
		t.Errorf("results %+v", res)
	}

	// The deployer's own allowlist refuses before any agent is called.
	f.Allow = []string{"uptime"}
	events = nil
	if _, err := f.Exec(context.Background(), Target{App: "web", Env: "prod"}, "df", nil, func(ev ExecEvent) { events = append(events, ev) }); !errors.Is(err, ErrRefused) || len(events) != 0 {
		t.Fatalf("deployer allowlist: %v, %d events", err, len(events))
	}
}

func TestLineWriterSplitsLongLines(t *testing.T) {
	var lines []string
	w := &lineWriter{emit: func(s string) { lines = append(lines, s) }}
	long := strings.Repeat("x", maxLine+10)
	w.Write([]byte("a\nb"))
	w.Write([]byte("c\n" + long[:100]))
	w.Write([]byte(long[100:] + "\n\nend"))
	w.flush()
	want := []string{"a", "bc", long[:maxLine], long[maxLine:], "", "end"}
	if !slices.Equal(lines, want) {
		t.Fatalf("got %d lines %.40q", len(lines), lines)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{keep: 5}
	tb.Write([]byte("abc"))
	tb.Write([]byte("defgh"))
	tb.Write([]byte("ij"))
	if string(tb.buf) != "fghij" || tb.total != 10 {
		t.Fatalf("tail %q total %d", tb.buf, tb.total)
	}
}
