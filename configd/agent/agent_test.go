package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/server"
	"github.com/opskit/opskit/configd/store"
)

type readiness struct {
	mu       sync.Mutex
	notReady map[string]string
}

func (r *readiness) SetNotReady(k, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notReady[k] = reason
}
func (r *readiness) SetReady(k string) { r.mu.Lock(); defer r.mu.Unlock(); delete(r.notReady, k) }
func (r *readiness) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notReady["stale"]
}

// serverAt runs a configd server on addr ("" for any port).
func serverAt(t *testing.T, addr, dataDir string) (*httptest.Server, func()) {
	t.Helper()
	st, err := store.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{WatchTimeout: time.Second, HostTTL: time.Hour}, st)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewUnstartedServer(mux)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hs.Listener = ln
	}
	hs.Start()
	// Run ends the parked watches and the connections handed back with it.
	runCtx, cancelRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { srv.Run(runCtx); close(runDone) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancelRun()
			<-runDone
			hs.CloseClientConnections()
			hs.Close()
			st.Close()
		}
	}
	t.Cleanup(stop)
	return hs, stop
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAgentFollowsServerAndSurvivesItsAbsence(t *testing.T) {
	dataDir := t.TempDir()
	hs, stop := serverAt(t, "", dataDir)
	addr := hs.Listener.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin, _ := client.NewRemote([]string{hs.URL}, client.RemoteOptions{User: "test"})
	const ns = "web/prod/app"
	if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("a.conf", "v1")}}); err != nil {
		t.Fatal(err)
	}
	// The agent lists a dead server first: it must fail over to the live one.
	dead := "127.0.0.1:1"
	remote, _ := client.NewRemote([]string{dead, hs.URL}, client.RemoteOptions{})
	ready := &readiness{notReady: map[string]string{}}
	set := metrics.NewSet()
	ag, err := New(Config{Host: "h1", Apps: []string{"web"}, Targets: []Target{{Namespace: ns}}, CacheDir: t.TempDir(),
		WatchTimeout: 300 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond, StaleAfter: 400 * time.Millisecond,
		Metrics: set, Readiness: ready, Logger: nil}, remote)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { ag.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	version := func() int64 { return ag.Status().Namespaces[0].Version }
	waitFor(t, "release 1", 5*time.Second, func() bool { return version() == 1 })
	if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("a.conf", "v2")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release 2", 5*time.Second, func() bool { return version() == 2 })
	waitFor(t, "host registered", 2*time.Second, func() bool {
		hosts, _ := admin.Hosts(ctx, "web", false)
		return len(hosts) == 1 && hosts[0].Host == "h1"
	})
	waitFor(t, "convergence report", 2*time.Second, func() bool {
		c, _ := admin.Status(ctx, ns, 2)
		return len(c.Applied) == 1
	})

	// Local API: files and a long-poll that wakes on the next switch.
	mux := http.NewServeMux()
	ag.Register(mux)
	local := httptest.NewServer(mux)
	defer local.Close()
	resp, err := http.Get(local.URL + "/v1/files/web/prod/app/a.conf")
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 10)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if string(body[:n]) != "v2" || resp.Header.Get("X-Configd-Version") != "2" {
		t.Fatalf("local file: %q version %s", body[:n], resp.Header.Get("X-Configd-Version"))
	}

	// Server gone: cached files stay, staleness grows and is reported.
	stop()
	waitFor(t, "stale", 5*time.Second, func() bool { return strings.Contains(ready.reason(), "stale") })
	var buf strings.Builder
	set.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), "opskit_configd_agent_stale 1") {
		t.Fatalf("metrics do not show staleness:\n%s", buf.String())
	}
	if version() != 2 {
		t.Fatal("cached release lost while the server is down")
	}

	// The server returns (same address, same data) with a newer release:
	// the agent catches up and is fresh again.
	st, _ := store.Open(dataDir)
	st.Publish(ns, store.PublishInput{Author: "test", Files: []api.File{api.NewFile("a.conf", "v3")}})
	st.Close()
	serverAt(t, addr, dataDir)
	waitFor(t, "catch-up to release 3", 10*time.Second, func() bool { return version() == 3 })
	waitFor(t, "fresh", 5*time.Second, func() bool { return ready.reason() == "" })

	// The switch on disk comes a moment before the agent's own record of it.
	waitFor(t, "local watch at the current release to wait", 5*time.Second, func() bool {
		watch, err := http.Get(local.URL + "/v1/watch?ns=web/prod/app:3&timeout=100ms")
		if err != nil {
			return false
		}
		watch.Body.Close()
		return watch.StatusCode == http.StatusNotModified
	})
	watch, _ := http.Get(local.URL + "/v1/watch?ns=web/prod/app:1&timeout=1s")
	var changes []api.Change
	json.NewDecoder(watch.Body).Decode(&changes)
	watch.Body.Close()
	if len(changes) != 1 || changes[0].Version != 3 {
		t.Fatalf("local watch: %+v", changes)
	}
}

func TestAgentWithOnlyMembership(t *testing.T) {
	hs, _ := serverAt(t, "", t.TempDir())
	remote, _ := client.NewRemote([]string{hs.URL}, client.RemoteOptions{})
	if _, err := New(Config{Host: "h"}, remote); err == nil {
		t.Fatal("an agent with neither namespaces nor apps was accepted")
	}
	ag, err := New(Config{Host: "relay-1", Apps: []string{"filefly"}, HeartbeatInterval: 20 * time.Millisecond, Metrics: metrics.NewSet()}, remote)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ag.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "registered", 5*time.Second, func() bool {
		hosts, _ := remote.Hosts(ctx, "filefly", false)
		return len(hosts) == 1 && hosts[0].Host == "relay-1"
	})
	waitFor(t, "heartbeats count as checks", 5*time.Second, func() bool {
		st := ag.Status()
		return !st.Stale && !st.LastCheck.IsZero()
	})
}
