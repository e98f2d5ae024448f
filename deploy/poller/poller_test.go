package poller

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/deploy/release"
)

type fakeApplier struct {
	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeApplier) Apply(_ context.Context, t release.Task) (*release.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[t.ID]++
	return &release.Result{Task: t, State: release.StateDone, Replayed: f.calls[t.ID] > 1}, nil
}

// fakeDeployer hands out tasks after the cursor and records results; the
// first report is refused, so the task comes again.
type fakeDeployer struct {
	mu       sync.Mutex
	tasks    []release.Task
	results  map[string]release.Result
	refused  int
	afters   []string
	reported chan struct{}
}

func (d *fakeDeployer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/api/v1/hosts/h1/tasks"):
		after := r.URL.Query().Get("after")
		d.afters = append(d.afters, after)
		var out []release.Task
		seen := after == ""
		for _, t := range d.tasks {
			if seen {
				out = append(out, t)
			}
			if t.ID == after {
				seen = true
			}
		}
		if len(out) == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		json.NewEncoder(w).Encode(out)
	case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/progress"):
		if d.refused == 0 {
			d.refused++
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var res release.Result
		json.NewDecoder(r.Body).Decode(&res)
		d.results[res.Task.ID] = res
		if len(d.results) == len(d.tasks) {
			close(d.reported)
		}
	default:
		http.NotFound(w, r)
	}
}

func TestPollerAppliesAndReportsAtLeastOnce(t *testing.T) {
	sha := strings.Repeat("a", 64)
	dep := &fakeDeployer{
		tasks: []release.Task{
			{ID: "t1", App: "web", Version: "1", Package: "/p", SHA256: sha},
			{ID: "t2", App: "web", Version: "../bad", Package: "/p", SHA256: sha},
		},
		results: map[string]release.Result{}, reported: make(chan struct{}),
	}
	srv := httptest.NewServer(dep)
	defer srv.Close()
	app := &fakeApplier{calls: map[string]int{}}
	cursor := filepath.Join(t.TempDir(), "cursor.json")
	p := &Poller{Deployer: srv.URL, Host: "h1", Applier: app, Wait: time.Second, CursorFile: cursor,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	select {
	case <-dep.reported:
	case <-time.After(5 * time.Second):
		t.Fatal("results not reported")
	}
	// The cursor is saved once the report is acknowledged.
	for deadline := time.Now().Add(2 * time.Second); p.loadCursor() != "t2" && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if r := dep.results["t1"]; r.State != release.StateDone || !r.Replayed {
		t.Errorf("t1 result %+v: want done, replayed after the refused report", r)
	}
	if r := dep.results["t2"]; r.State != release.StateFailed || !strings.Contains(r.Error, "version") {
		t.Errorf("t2 result %+v: want failed for its version", r)
	}
	if app.calls["t1"] != 2 || app.calls["t2"] != 0 {
		t.Errorf("apply calls %v", app.calls)
	}
	// A new poller starts after the last acknowledged task.
	if got := (&Poller{CursorFile: cursor}).loadCursor(); got != "t2" {
		t.Errorf("cursor %q, want t2", got)
	}
}

func TestProgressIsReportedAndNeverBlocks(t *testing.T) {
	got := make(chan release.Result, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/progress") {
			var res release.Result
			json.NewDecoder(r.Body).Decode(&res)
			got <- res
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	p := &Poller{Deployer: srv.URL, Host: "h1", Applier: &fakeApplier{calls: map[string]int{}}, Wait: time.Second,
		CursorFile: filepath.Join(t.TempDir(), "c"), MinBackoff: 10 * time.Millisecond}
	// Before Run, and beyond the queue's room: dropped, not blocking.
	for range 100 {
		p.Progress(release.Result{Task: release.Task{ID: "t1"}, State: release.StateRunning})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	select {
	case r := <-got:
		if r.Task.ID != "t1" || r.State != release.StateRunning {
			t.Fatalf("progress %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no progress report")
	}
}
