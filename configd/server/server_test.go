package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/store"
)

type testServer struct {
	*Server
	url   string
	store *store.Store
}

func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WatchTimeout == 0 {
		cfg.WatchTimeout = 2 * time.Second
	}
	if cfg.HostTTL == 0 {
		cfg.HostTTL = time.Hour
	}
	srv, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); hs.CloseClientConnections(); hs.Close(); <-done; st.Close() })
	return &testServer{srv, hs.URL, st}
}

func remote(t testing.TB, url string, opts client.RemoteOptions) *client.Remote {
	t.Helper()
	r, err := client.NewRemote([]string{url}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPublishWatchRollbackDiff(t *testing.T) {
	s := startServer(t, Config{})
	c := remote(t, s.url, client.RemoteOptions{User: "ann"})
	ctx := context.Background()
	const ns = "web/prod/app"

	if _, err := c.Put(ctx, ns, "app.properties", []byte("port=80\n")); err != nil {
		t.Fatal(err)
	}
	rel, err := c.Publish(ctx, ns, api.PublishRequest{Comment: "first"})
	if err != nil || rel.Version != 1 || rel.Author != "ann" {
		t.Fatalf("publish: %+v %v", rel, err)
	}
	// A watcher holding version 1 waits; the next publish wakes it.
	got := make(chan []api.Change, 1)
	go func() {
		ch, err := c.Watch(ctx, map[string]int64{ns: 1}, "h1", nil, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- ch
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{{Name: "app.properties", Content: "port=81\n"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-got:
		if len(ch) != 1 || ch[0].Version != 2 {
			t.Fatalf("watch returned %+v", ch)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("watch not woken by publish")
	}
	// content=1 carries the release in the answer.
	changes, err := c.WatchContent(ctx, map[string]int64{ns: 1}, "h1", nil, time.Second)
	var carried api.Release
	if err != nil || len(changes) != 1 || json.Unmarshal(changes[0].Release, &carried) != nil || carried.Files[0].Content != "port=81\n" {
		t.Fatalf("watch with content: %+v %v", changes, err)
	}
	// Holding the current version times out with no change (304).
	start := time.Now()
	ch, err := c.Watch(ctx, map[string]int64{ns: 2}, "h1", nil, 200*time.Millisecond)
	if err != nil || ch != nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("watch at current: %v %v after %v", ch, err, time.Since(start))
	}
	if _, err := c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{{Name: "bad.json", Content: "{"}}}); err == nil || !strings.Contains(err.Error(), "invalid JSON") {
		t.Fatalf("invalid file published: %v", err)
	}
	rb, err := c.Rollback(ctx, ns, 0, "")
	if err != nil || rb.Version != 3 || rb.RollbackOf != 1 {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	content, err := c.File(ctx, ns, "app.properties", 0)
	if err != nil || content != "port=80\n" {
		t.Fatalf("file after rollback: %q %v", content, err)
	}
	d, err := c.Diff(ctx, ns, 1, 2)
	if err != nil || !strings.Contains(d, "-port=80\n+port=81\n") {
		t.Fatalf("diff: %q %v", d, err)
	}
	hist, _ := c.History(ctx, ns)
	if len(hist) != 3 || hist[2].Action != "rollback" {
		t.Fatalf("history %+v", hist)
	}
	audit, _ := c.Audit(ctx, 10)
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action+":"+map[bool]string{true: "ok", false: "failed"}[a.OK])
	}
	want := []string{"put:ok", "publish:ok", "publish:ok", "publish:failed", "rollback:ok"}
	if !slices.Equal(actions, want) {
		t.Fatalf("audit %v, want %v", actions, want)
	}
}

func TestGrayByLabelAndPercent(t *testing.T) {
	s := startServer(t, Config{})
	c := remote(t, s.url, client.RemoteOptions{})
	ctx := context.Background()
	const ns = "web/prod/app"
	c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "v1")}})
	if _, err := c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "v2")}, Gray: &api.Gray{Labels: map[string]string{"zone": "a"}}}); err != nil {
		t.Fatal(err)
	}
	// Labels registered by the host count when the request gives none.
	c.Register(ctx, api.Host{Host: "web-a", Apps: []string{"web"}, Labels: map[string]string{"zone": "a"}})
	for _, tt := range []struct {
		host   string
		labels map[string]string
		want   int64
	}{{"web-a", nil, 2}, {"web-b", map[string]string{"zone": "b"}, 1}, {"other", map[string]string{"zone": "a"}, 2}} {
		rel, err := c.Config(ctx, ns, tt.host, tt.labels)
		if err != nil || rel.Version != tt.want {
			t.Errorf("%s gets %d (%v), want %d", tt.host, rel.Version, err, tt.want)
		}
	}
	// A watcher outside the gray set is not woken by it.
	ch, err := c.Watch(ctx, map[string]int64{ns: 1}, "web-b", map[string]string{"zone": "b"}, 100*time.Millisecond)
	if err != nil || ch != nil {
		t.Fatalf("host outside gray saw %v %v", ch, err)
	}
	if _, err := c.Abandon(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if rel, _ := c.Config(ctx, ns, "web-a", nil); rel.Version != 1 {
		t.Fatalf("after abandon web-a gets %d", rel.Version)
	}
	c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "v3")}, Gray: &api.Gray{Percent: 20}})
	in := 0
	for i := range 200 {
		rel, err := c.Config(ctx, ns, "host-"+string(rune('A'+i%26))+strings.Repeat("x", i/26), nil)
		if err != nil {
			t.Fatal(err)
		}
		if rel.Version == 3 {
			in++
		}
	}
	if in < 20 || in > 60 {
		t.Fatalf("20%% gray reached %d of 200 hosts", in)
	}
	if h, err := c.Promote(ctx, ns); err != nil || h.Current != 3 {
		t.Fatalf("promote: %+v %v", h, err)
	}
}

func TestTokensAndRoles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(path, []byte(`tokens:
  - {name: root, token: admin-token-0123456789, role: admin}
  - {name: webteam, token: publisher-token-0123456789, role: publisher, apps: [web]}
  - {name: agent, token: reader-token-0123456789, role: reader}
`), 0o600)
	auth, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Auth: auth})
	ctx := context.Background()
	files := api.PublishRequest{Files: []api.File{api.NewFile("f", "x")}}
	tests := []struct {
		token, ns string
		wantErr   string
	}{
		{"", "web/prod/a", "401"},
		{"wrong-token-0123456789", "web/prod/a", "401"},
		{"reader-token-0123456789", "web/prod/a", "403"},
		{"publisher-token-0123456789", "db/prod/a", "403"},
		{"publisher-token-0123456789", "web/prod/a", ""},
		{"admin-token-0123456789", "db/prod/a", ""},
	}
	for _, tt := range tests {
		c := remote(t, s.url, client.RemoteOptions{Token: tt.token})
		_, err := c.Publish(ctx, tt.ns, files)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("token %q on %s: %v, want %q", tt.token, tt.ns, err, tt.wantErr)
		}
	}
	reader := remote(t, s.url, client.RemoteOptions{Token: "reader-token-0123456789"})
	if _, err := reader.Release(ctx, "web/prod/a", 1); err != nil {
		t.Errorf("reader cannot read: %v", err)
	}
	if _, err := reader.Audit(ctx, 10); err == nil {
		t.Error("reader read the audit log")
	}
	admin := remote(t, s.url, client.RemoteOptions{Token: "admin-token-0123456789"})
	log, err := admin.Audit(ctx, 10)
	if err != nil || len(log) != 4 || log[0].Who != "agent" || log[0].OK || log[2].Who != "webteam" || !log[2].OK {
		t.Fatalf("audit %+v %v", log, err)
	}
	for _, bad := range []string{"tokens: [{name: x, token: short, role: admin}]", "tokens: [{name: x, token: 0123456789abcdefgh, role: boss}]", "tokenz: []"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := LoadTokens(path); err == nil {
			t.Errorf("tokens file %q accepted", bad)
		}
	}
}

func TestMembershipJoinLeaveRejoin(t *testing.T) {
	s := startServer(t, Config{HostTTL: time.Second})
	c := remote(t, s.url, client.RemoteOptions{})
	ctx := context.Background()
	c.Register(ctx, api.Host{Host: "h1", Apps: []string{"web"}, Addr: "10.0.0.1:7161"})
	c.Register(ctx, api.Host{Host: "h2", Apps: []string{"web", "db"}})
	hosts, err := c.Hosts(ctx, "web", false)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("hosts %+v %v", hosts, err)
	}
	// h1 keeps heartbeating; h2 goes silent and is marked down, not forgotten.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.Register(ctx, api.Host{Host: "h1", Apps: []string{"web"}, Addr: "10.0.0.1:7161"})
		hosts, _ = c.Hosts(ctx, "web", false)
		if len(hosts) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 not marked down: %+v", hosts)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if hosts[0].Host != "h1" {
		t.Fatalf("live hosts %+v", hosts)
	}
	all, _ := c.Hosts(ctx, "web", true)
	if len(all) != 2 || all[1].State != api.HostDown {
		t.Fatalf("all hosts %+v", all)
	}
	c.Register(ctx, api.Host{Host: "h2", Apps: []string{"web"}})
	res, err := c.Events(ctx, "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range res.Events {
		seen = append(seen, e.Type+":"+e.Host)
	}
	if want := []string{"join:h1", "join:h2", "leave:h2", "rejoin:h2"}; !slices.Equal(seen, want) {
		t.Fatalf("web events %v, want %v", seen, want)
	}
	// A watcher after the last event waits for the next one.
	got := make(chan api.EventsResponse, 1)
	go func() {
		r, _ := c.Events(ctx, "db", res.Last, 3*time.Second)
		got <- r
	}()
	time.Sleep(50 * time.Millisecond)
	c.Register(ctx, api.Host{Host: "h3", Apps: []string{"db"}})
	select {
	case r := <-got:
		if len(r.Events) != 1 || r.Events[0].Host != "h3" || r.Events[0].Type != "join" {
			t.Fatalf("db watch got %+v", r)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("membership watch not woken")
	}
}

func TestReplicaFollowsPrimary(t *testing.T) {
	p := startServer(t, Config{})
	ctx := context.Background()
	pc := remote(t, p.url, client.RemoteOptions{})
	const ns = "web/prod/app"
	pc.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "v1")}})
	synced := make(chan error, 16)
	r := startServer(t, Config{Follow: p.url, FollowState: func(err error) { synced <- err }})
	rc := remote(t, r.url, client.RemoteOptions{})
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if rel, err := rc.Config(ctx, ns, "h", nil); err != nil || rel.Files[0].Content != "v1" {
		t.Fatalf("replica after sync: %+v %v", rel, err)
	}
	// A watcher on the replica sees a publish on the primary.
	got := make(chan []api.Change, 1)
	go func() {
		ch, _ := rc.Watch(ctx, map[string]int64{ns: 1}, "h", nil, 5*time.Second)
		got <- ch
	}()
	time.Sleep(100 * time.Millisecond)
	// Writes sent to the replica reach the primary.
	if _, err := rc.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "v2")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-got:
		if len(ch) != 1 || ch[0].Version != 2 {
			t.Fatalf("replica watch %+v", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("replica watcher not woken")
	}
	if rel, err := rc.Release(ctx, ns, 2); err != nil || rel.Files[0].Content != "v2" {
		t.Fatalf("replica release 2: %+v %v", rel, err)
	}
	if h, _ := pc.Namespace(ctx, ns); h.Current != 2 {
		t.Fatalf("primary current %d", h.Current)
	}
}

func TestConvergenceView(t *testing.T) {
	s := startServer(t, Config{})
	c := remote(t, s.url, client.RemoteOptions{})
	ctx := context.Background()
	const ns = "a/b/c"
	c.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "1")}})
	c.Report(ctx, api.Report{Host: "h1", Namespace: ns, Version: 1, Applied: 1, OK: true})
	c.Report(ctx, api.Report{Host: "h2", Namespace: ns, Version: 1, Applied: 0, OK: false, Error: "check failed"})
	c.Report(ctx, api.Report{Host: "h3", Namespace: ns, Version: 0, Applied: 0, OK: true})
	conv, err := c.Status(ctx, ns, 1)
	if err != nil || !slices.Equal(conv.Applied, []string{"h1"}) || !slices.Equal(conv.Failed, []string{"h2"}) || !slices.Equal(conv.Other, []string{"h3"}) {
		t.Fatalf("convergence %+v %v", conv, err)
	}
	if conv.P50 <= 0 || conv.P99 < conv.P50 {
		t.Fatalf("latencies %+v", conv)
	}
}

func TestHubWakesInBatches(t *testing.T) {
	h := newHub(10, 20*time.Millisecond)
	var ws []*waiter
	for range 35 {
		ws = append(ws, h.subscribe([]string{"a/b/c"}, false))
	}
	other := h.subscribe([]string{"x/y/z"}, false)
	start := time.Now()
	h.notify("a/b/c")
	for _, w := range ws {
		<-w.ch
	}
	// Four batches: three pauses between them.
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Fatalf("35 watchers in batches of 10 woken in %v", d)
	}
	select {
	case <-other.ch:
		t.Fatal("watcher of another namespace woken")
	default:
	}
	for _, w := range ws {
		h.unsubscribe(w)
	}
	h.unsubscribe(other)
	if h.watchers() != 0 {
		t.Fatal("watchers left after unsubscribe")
	}
}

// TestParkedWatchesHoldNoGoroutine checks that waiting watches are parked
// (no goroutine each), that they all answer on a change, and that their
// keep-alive connections keep serving requests afterwards.
func TestParkedWatchesHoldNoGoroutine(t *testing.T) {
	s := startServer(t, Config{WatchTimeout: 10 * time.Second, WatchBatch: 50, WatchBatchInterval: time.Millisecond})
	ctx := context.Background()
	const ns, watchers = "a/b/c", 200
	admin := remote(t, s.url, client.RemoteOptions{})
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "1")}})
	before := runtime.NumGoroutine()
	transport := &http.Transport{MaxIdleConnsPerHost: watchers}
	c := remote(t, s.url, client.RemoteOptions{HTTPClient: &http.Client{Transport: transport}})
	results := make(chan []api.Change, watchers)
	for range watchers {
		go func() {
			ch, err := c.Watch(ctx, map[string]int64{ns: 1}, "h", nil, 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			results <- ch
		}()
	}
	waitFor := time.Now().Add(10 * time.Second)
	for s.hub.watchers() < watchers && time.Now().Before(waitFor) {
		time.Sleep(10 * time.Millisecond)
	}
	// The client side holds a goroutine or two per request; the server
	// side should add next to nothing.
	if extra := runtime.NumGoroutine() - before; extra > 3*watchers+20 {
		t.Fatalf("%d goroutines for %d waiting watches: they are not parked", extra, watchers)
	}
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "2")}})
	for range watchers {
		if ch := <-results; len(ch) != 1 || ch[0].Version != 2 {
			t.Fatalf("watch answered %+v", ch)
		}
	}
	// The same connections carry on.
	for range 5 {
		if rel, err := c.Config(ctx, ns, "h", nil); err != nil || rel.Version != 2 {
			t.Fatalf("request after a parked watch: %+v %v", rel, err)
		}
	}
}
