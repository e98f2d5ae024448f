package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func testRegistration(id, kind string) api.DaemonRegistration {
	return api.DaemonRegistration{ID: id, Kind: kind, Host: "web01", Version: "1.2.3", PID: 100, Addr: id,
		Started: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC), HeartbeatSeconds: 1}
}

func eventTypes(evs []api.FleetEvent) string {
	var out []string
	for _, e := range evs {
		s := e.Type + " " + e.Kind
		if e.Reason != "" {
			s += " " + e.Reason
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func TestFleetRegistryJoinLeaveRejoin(t *testing.T) {
	clock := newClock()
	state := filepath.Join(t.TempDir(), "fleet.json")
	reg, err := newFleetRegistry(FleetConfig{TTL: 10 * time.Second, StateFile: state, Forget: time.Hour}, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	judge, transfer := testRegistration("127.0.0.1:7130", "judge"), testRegistration("127.0.0.1:7120", "transfer")
	for _, r := range []api.DaemonRegistration{judge, transfer, judge} { // the second judge is a heartbeat
		if _, err := reg.register(r); err != nil {
			t.Fatal(err)
		}
	}
	// Heartbeats keep the judge up; the silent transfer goes down after
	// its TTL (10 s > 3 heartbeats of 1 s).
	for range 3 {
		clock.add(4 * time.Second)
		reg.register(judge)
		if err := reg.sweep(); err != nil {
			t.Fatal(err)
		}
	}
	// A graceful stop, then the same process comes back: rejoin.
	if found, err := reg.leave(judge.ID); !found || err != nil {
		t.Fatalf("leave: %v %v", found, err)
	}
	if found, _ := reg.leave("nobody:1"); found {
		t.Fatal("leave of an unknown daemon found it")
	}
	judge.PID = 101
	if _, err := reg.register(judge); err != nil {
		t.Fatal(err)
	}
	// The killed transfer restarts: rejoin too.
	if _, err := reg.register(transfer); err != nil {
		t.Fatal(err)
	}
	// A judge restarted before its TTL ran out (a new pid) rejoins at once.
	judge.PID = 102
	if _, err := reg.register(judge); err != nil {
		t.Fatal(err)
	}
	evs, _, last, gone := reg.eventsAfter(0)
	want := "join judge, join transfer, leave transfer timeout, leave judge stopped, rejoin judge, rejoin transfer, rejoin judge restarted"
	if got := eventTypes(evs); got != want || gone || last != 7 {
		t.Fatalf("events %q (last %d, gone %v), want %q", got, last, gone, want)
	}
	if evs, _, _, _ := reg.eventsAfter(4); eventTypes(evs) != "rejoin judge, rejoin transfer, rejoin judge restarted" {
		t.Fatalf("events after 4: %s", eventTypes(evs))
	}
	list := reg.list()
	if len(list) != 2 || list[0].Kind != "judge" || list[0].PID != 102 || list[0].State != api.DaemonUp ||
		list[0].UptimeSeconds != time.Hour.Seconds()+12 {
		t.Fatalf("list %+v", list)
	}

	// A restarted configd remembers daemons and events from its state file.
	reg.leave(transfer.ID)
	again, err := newFleetRegistry(FleetConfig{TTL: 10 * time.Second, StateFile: state, Forget: time.Hour}, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	if evs, _, last, _ := again.eventsAfter(0); len(evs) != 8 || last != 8 {
		t.Fatalf("after restart: %d events, last %d", len(evs), last)
	}
	if c := again.counts(); c[api.DaemonUp] != 1 || c[api.DaemonStopped] != 1 {
		t.Fatalf("counts after restart %v", c)
	}
	// Long gone daemons are forgotten.
	clock.add(2 * time.Hour)
	again.sweep() // the silent judge goes down
	again.sweep() // and, down for longer than Forget, is forgotten
	if l := again.list(); len(l) != 0 {
		t.Fatalf("after forget: %+v", l)
	}
}

func TestFleetRegistrationValidation(t *testing.T) {
	reg, _ := newFleetRegistry(FleetConfig{}, time.Now)
	ok := testRegistration("127.0.0.1:7120", "transfer")
	cases := []struct {
		name   string
		change func(r *api.DaemonRegistration)
	}{
		{"no id", func(r *api.DaemonRegistration) { r.ID = "" }},
		{"bad kind", func(r *api.DaemonRegistration) { r.Kind = "../x" }},
		{"no host", func(r *api.DaemonRegistration) { r.Host = "" }},
		{"addr without port", func(r *api.DaemonRegistration) { r.Addr = "web01" }},
		{"bad listener", func(r *api.DaemonRegistration) { r.Listeners = map[string]string{"graphite": "nowhere"} }},
		{"negative pid", func(r *api.DaemonRegistration) { r.PID = -1 }},
	}
	for _, c := range cases {
		r := ok
		c.change(&r)
		if _, err := reg.register(r); err == nil {
			t.Errorf("%s: accepted %+v", c.name, r)
		}
	}
	if _, err := reg.register(ok); err != nil {
		t.Fatal(err)
	}
}

func sampleAt(at time.Time, sums map[string]float64, hopItems, hopLat map[string]float64) *sample {
	return &sample{at: at, ok: true, sums: sums, hopItems: hopItems, hopLatency: hopLat}
}

func TestFleetRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := sampleAt(t0, map[string]float64{"opskit_judge_points_total": 100, "opskit_judge_transitions_total": 7},
		map[string]float64{"127.0.0.1:7140": 10}, map[string]float64{"127.0.0.1:7140": 1})
	cur := sampleAt(t0.Add(5*time.Second), map[string]float64{"opskit_judge_points_total": 600, "opskit_judge_transitions_total": 2},
		map[string]float64{"127.0.0.1:7140": 60, "kafka://b:9092": 5}, map[string]float64{"127.0.0.1:7140": 3.5, "kafka://b:9092": 0.5})
	rates := kindRates("judge", prev, cur)
	// Transitions went down: the judge restarted, so they count from 0.
	want := map[string]float64{"points/s": 100, "alerts/s": 0.4, "out/s": 11}
	if len(rates) != len(want) {
		t.Fatalf("rates %v, want %v", rates, want)
	}
	for k, v := range want {
		if math.Abs(rates[k]-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, rates[k], v)
		}
	}
	hops := hopStats(prev, cur)
	// 50 items in 5 s with 2.5 s latency in all: 10/s at 50 ms each; the
	// Kafka target is new: 5 items counted from zero.
	if len(hops) != 2 || hops[0].To != "127.0.0.1:7140" || hops[0].ItemsPerSecond != 10 || math.Abs(hops[0].LatencySeconds-0.05) > 1e-9 ||
		hops[1].ItemsPerSecond != 1 || hops[1].LatencySeconds != 0.1 || hops[1].ItemsTotal != 5 {
		t.Fatalf("hops %+v", hops)
	}
	if r := kindRates("judge", nil, cur); r != nil {
		t.Fatalf("rates without a previous sample: %v", r)
	}
	if h := hopStats(nil, cur); len(h) != 2 || h[0].ItemsPerSecond != 0 || h[0].ItemsTotal != 60 {
		t.Fatalf("hops without a previous sample: %+v", h)
	}
	// Nothing passed: no latency rather than a division by zero.
	if h := hopStats(cur, sampleAt(t0.Add(10*time.Second), nil, cur.hopItems, cur.hopLatency)); h[0].LatencySeconds != 0 || h[0].ItemsPerSecond != 0 {
		t.Fatalf("idle hops %+v", h)
	}
}

func TestParseExposition(t *testing.T) {
	page := `# HELP go_goroutines Number of goroutines
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_inuse_bytes 1.5e+06
opskit_hop_items_total{to="127.0.0.1:7120"} 10
opskit_hop_items_total{to="127.0.0.1:7120",x="a\"b\\c"} 5
opskit_hop_latency_seconds_total{to="kafka://b:9092"} 2.5 1700000000000
opskit_judge_points_total NaN
opskit_judge_points_total{a="1"} 3
broken{to="x" 1
{to="x"} 1
name_only
opskit_transfer_points_received_total{proto="falcon"} 7
opskit_transfer_points_received_total{proto="graphite"} 8
`
	s := parseSample([]byte(page), time.Unix(0, 0), wantedMetrics())
	if s.goroutines != 42 || s.heap != 1.5e6 {
		t.Fatalf("gauges %v %v", s.goroutines, s.heap)
	}
	if s.hopItems["127.0.0.1:7120"] != 15 || s.hopLatency["kafka://b:9092"] != 2.5 {
		t.Fatalf("hops %v %v", s.hopItems, s.hopLatency)
	}
	// NaN is kept out (JSON cannot carry it); the sums add every series.
	if s.sums["opskit_judge_points_total"] != 3 || s.sums["opskit_transfer_points_received_total"] != 15 {
		t.Fatalf("sums %v", s.sums)
	}
	cases := []struct {
		line   string
		ok     bool
		name   string
		labels string
		value  float64
	}{
		{`a 1`, true, "a", "", 1},
		{`a{} 1`, true, "a", "", 1},
		{`a{b="c",} -2`, true, "a", "b=c", -2},
		{`a{b="c\nd"} +Inf`, true, "a", "b=c\nd", math.Inf(1)},
		{`a{b="c"}1`, true, "a", "b=c", 1},
		{`a{b=c} 1`, false, "", "", 0},
		{`a{b="c} 1`, false, "", "", 0},
		{`a 1 2 3`, false, "", "", 0},
		{`9a 1`, false, "", "", 0},
		{`a x`, false, "", "", 0},
	}
	for _, c := range cases {
		name, labels, v, ok := parseSampleLine(c.line)
		var ls []string
		for _, l := range labels {
			ls = append(ls, l.name+"="+l.value)
		}
		if ok != c.ok || name != c.name || strings.Join(ls, ",") != c.labels || (ok && v != c.value) {
			t.Errorf("%q: %q %v %v %v", c.line, name, ls, v, ok)
		}
	}
}

func FuzzParseExposition(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/metrics/*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	wanted := wantedMetrics()
	f.Fuzz(func(t *testing.T, data []byte) {
		s := parseSample(data, time.Unix(0, 0), wanted)
		for _, v := range []float64{s.heap, s.goroutines} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("non-finite gauge from %q", data)
			}
		}
		if _, err := json.Marshal(hopStats(s, s)); err != nil {
			t.Fatalf("hop stats of %q do not encode: %v", data, err)
		}
	})
}

func TestNormalizeTarget(t *testing.T) {
	cases := []struct{ in, want string }{
		{"127.0.0.1:7120", "127.0.0.1:7120"},
		{"localhost:7120", "127.0.0.1:7120"},
		{"[::1]:7120", "127.0.0.1:7120"},
		{"0.0.0.0:7120", "127.0.0.1:7120"},
		{"http://LOCALHOST:7140/api/v2/alerts", "127.0.0.1:7140"},
		{"http://alarm.example/hook", "alarm.example:80"},
		{"https://Hooks.Example/x", "hooks.example:443"},
		{"kafka://Broker1:9092", "kafka://broker1:9092"},
		{"Web01:7120", "web01:7120"},
		{"odd", "odd"},
	}
	for _, c := range cases {
		if got := normalizeTarget(c.in); got != c.want {
			t.Errorf("normalizeTarget(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBuildTopology(t *testing.T) {
	hops := func(hs ...api.HopStats) *api.DaemonStats { return &api.DaemonStats{Health: api.HealthOK, Hops: hs} }
	daemons := []api.FleetDaemon{
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7110", Kind: "collector", Host: "web01", Addr: "127.0.0.1:7110"},
			State: api.DaemonUp, Stats: hops(api.HopStats{To: "localhost:7121", ItemsPerSecond: 20, LatencySeconds: 0.01})},
		{DaemonRegistration: api.DaemonRegistration{ID: "web01:7120", Kind: "transfer", Host: "web01", Addr: "web01:7120",
			Listeners: map[string]string{"graphite": "web01:7121"}},
			State: api.DaemonUp, Stats: hops(api.HopStats{To: "10.0.0.9:7130", ItemsPerSecond: 18}, api.HopStats{To: "kafka://k1:9092", ItemsPerSecond: 2})},
		{DaemonRegistration: api.DaemonRegistration{ID: "10.0.0.9:7130", Kind: "judge", Host: "db02", Addr: "10.0.0.9:7130"}, State: api.DaemonDown},
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7190", Kind: "abtest", Host: "web01", Addr: "127.0.0.1:7190"}, State: api.DaemonUp, Stats: hops()},
		{DaemonRegistration: api.DaemonRegistration{ID: "127.0.0.1:7150", Kind: "ratelimit", Host: "web01", Addr: "127.0.0.1:7150"}, State: api.DaemonStopped},
	}
	topo := buildTopology(daemons, time.Unix(0, 0))
	var nodes, edges []string
	for _, n := range topo.Nodes {
		nodes = append(nodes, fmt.Sprintf("%s %s %s isolated=%v", n.ID, n.Kind, n.State, n.Isolated))
	}
	for _, e := range topo.Edges {
		edges = append(edges, fmt.Sprintf("%s -> %s %g/s %gs (%s)", e.From, e.To, e.ItemsPerSecond, e.LatencySeconds, e.Target))
	}
	wantNodes := []string{
		"10.0.0.9:7130 judge down isolated=false",
		"127.0.0.1:7110 collector up isolated=false",
		"127.0.0.1:7190 abtest up isolated=true",
		"kafka://k1:9092 external  isolated=false",
		"web01:7120 transfer up isolated=false",
	}
	// The collector's loopback target is transfer's graphite listener on
	// the same host, advertised under the host name.
	wantEdges := []string{
		"127.0.0.1:7110 -> web01:7120 20/s 0.01s (localhost:7121)",
		"web01:7120 -> 10.0.0.9:7130 18/s 0s (10.0.0.9:7130)",
		"web01:7120 -> kafka://k1:9092 2/s 0s (kafka://k1:9092)",
	}
	if strings.Join(nodes, "\n") != strings.Join(wantNodes, "\n") {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(nodes, "\n"), strings.Join(wantNodes, "\n"))
	}
	if strings.Join(edges, "\n") != strings.Join(wantEdges, "\n") {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(edges, "\n"), strings.Join(wantEdges, "\n"))
	}
}

// fakeDaemon serves the kit's endpoints: /metrics with a growing counter,
// /healthz, /readyz and /admin/*.
type fakeDaemon struct {
	mu     sync.Mutex
	level  string
	points float64
	ready  bool
	token  string
	srv    *httptest.Server
}

func newFakeDaemon(t *testing.T, token string) *fakeDaemon {
	d := &fakeDaemon{level: "info", ready: true, token: token}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.ready {
			http.Error(w, "not ready: wal: replaying", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.points += 100
		fmt.Fprintf(w, "go_goroutines 12\ngo_memstats_heap_inuse_bytes 4194304\nopskit_judge_points_total %g\nopskit_hop_items_total{to=\"127.0.0.1:1\"} %g\n", d.points, d.points)
	})
	mux.HandleFunc("/admin/{cmd}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+d.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		switch {
		case r.PathValue("cmd") == "loglevel" && r.Method == http.MethodGet:
			fmt.Fprintf(w, "{\"level\":%q}\n", d.level)
		case r.PathValue("cmd") == "loglevel":
			r.ParseForm()
			prev := d.level
			d.level = r.Form.Get("arg")
			fmt.Fprintf(w, "{\"level\":%q,\"previous\":%q}\n", d.level, prev)
		default:
			http.Error(w, "unknown admin command", http.StatusNotFound)
		}
	})
	d.srv = httptest.NewServer(mux)
	t.Cleanup(d.srv.Close)
	return d
}

func (d *fakeDaemon) addr() string { return strings.TrimPrefix(d.srv.URL, "http://") }

func (d *fakeDaemon) registration(kind string) api.DaemonRegistration {
	r := testRegistration(d.addr(), kind)
	r.Host = "host-" + kind
	return r
}

func TestFleetConsoleScrapeAndSend(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(path, []byte("tokens:\n  - {name: root, token: admin-token-0123456789, role: admin}\n  - {name: agent, token: reader-token-0123456789, role: reader}\n"), 0o600)
	auth, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Auth: auth, Fleet: FleetConfig{TTL: time.Hour, AdminToken: "daemon-admin"}})
	ctx := context.Background()
	admin := remote(t, s.url, client.RemoteOptions{Token: "admin-token-0123456789"})
	reader := remote(t, s.url, client.RemoteOptions{Token: "reader-token-0123456789"})
	judge, alarm := newFakeDaemon(t, "daemon-admin"), newFakeDaemon(t, "daemon-admin")
	// A reader token is enough to register (what daemons hold).
	for _, reg := range []api.DaemonRegistration{judge.registration("judge"), alarm.registration("alarm")} {
		body, _ := json.Marshal(reg)
		req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/fleet/daemons", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer reader-token-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("register: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	alarm.mu.Lock()
	alarm.ready = false
	alarm.mu.Unlock()
	s.fleet.scraper.scrapeAll(ctx)
	time.Sleep(20 * time.Millisecond)
	s.fleet.scraper.scrapeAll(ctx)

	daemons, err := reader.Fleet(ctx)
	if err != nil || len(daemons) != 2 {
		t.Fatalf("fleet %+v %v", daemons, err)
	}
	a, j := daemons[0], daemons[1]
	if a.Kind != "alarm" || a.Stats == nil || a.Stats.Health != api.HealthNotReady || !strings.Contains(a.Stats.Detail, "replaying") {
		t.Fatalf("alarm %+v %+v", a, a.Stats)
	}
	if j.Kind != "judge" || j.Stats.Health != api.HealthOK || j.Stats.Goroutines != 12 || j.Stats.HeapBytes != 4<<20 ||
		j.Stats.Rates["points/s"] <= 0 || len(j.Stats.Hops) != 1 || j.Stats.Hops[0].ItemsPerSecond <= 0 {
		t.Fatalf("judge %+v", j.Stats)
	}
	topo, err := reader.Topology(ctx)
	if err != nil || len(topo.Nodes) != 3 || len(topo.Edges) != 2 {
		t.Fatalf("topology %+v %v", topo, err)
	}

	// Broadcast needs the admin role and reaches only the chosen kind.
	if _, err := reader.FleetSend(ctx, api.FleetSendRequest{Dest: "judge", Command: "loglevel", Args: []string{"debug"}}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("reader sent a command: %v", err)
	}
	res, err := admin.FleetSend(ctx, api.FleetSendRequest{Dest: "judge", Command: "loglevel", Args: []string{"debug"}})
	if err != nil || len(res.Results) != 1 || !res.Results[0].OK || res.Results[0].ID != judge.addr() ||
		compact(res.Results[0].Answer) != `{"level":"debug","previous":"info"}` {
		t.Fatalf("send: %+v %v", res, err)
	}
	if judge.level != "debug" || alarm.level != "info" {
		t.Fatalf("levels judge %s alarm %s", judge.level, alarm.level)
	}
	// loglevel without a level asks every daemon for its own.
	res, err = admin.FleetSend(ctx, api.FleetSendRequest{Dest: "all", Command: "loglevel"})
	if err != nil || len(res.Results) != 2 || compact(res.Results[0].Answer) != `{"level":"info"}` || compact(res.Results[1].Answer) != `{"level":"debug"}` {
		t.Fatalf("loglevel query: %+v %v", res, err)
	}
	// A command a daemon does not know fails on that daemon only.
	res, err = admin.FleetSend(ctx, api.FleetSendRequest{Dest: "host-alarm", Command: "compact"})
	if err != nil || len(res.Results) != 1 || res.Results[0].OK || res.Results[0].Status != 404 || !strings.Contains(res.Results[0].Error, "unknown admin command") {
		t.Fatalf("unknown command: %+v %v", res, err)
	}
	if _, err := admin.FleetSend(ctx, api.FleetSendRequest{Dest: "ratelimit", Command: "reload"}); !client.IsNotFound(err) {
		t.Fatalf("no match: %v", err)
	}
	if _, err := admin.FleetSend(ctx, api.FleetSendRequest{Dest: "all", Command: "../stop"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad command: %v", err)
	}
	// An unreachable daemon shows its health, no stale figures, no flows.
	judge.srv.Close()
	s.fleet.scraper.scrapeAll(ctx)
	daemons, _ = reader.Fleet(ctx)
	if st := daemons[1].Stats; st.Health != api.HealthUnreachable || st.Detail == "" || st.Rates != nil || st.Hops != nil || st.HeapBytes != 0 {
		t.Fatalf("unreachable judge %+v", st)
	}
	if topo, _ := reader.Topology(ctx); len(topo.Edges) != 1 {
		t.Fatalf("edges of an unreachable daemon drawn: %+v", topo.Edges)
	}
	// A down daemon is reported, not contacted.
	s.fleet.reg.mu.Lock()
	s.fleet.reg.daemons[judge.addr()].State = api.DaemonDown
	s.fleet.reg.mu.Unlock()
	res, err = admin.FleetSend(ctx, api.FleetSendRequest{Dest: "all", Command: "reload"})
	if err != nil || len(res.Results) != 2 || res.Results[1].OK || !strings.Contains(res.Results[1].Error, "daemon is down") {
		t.Fatalf("send to a down daemon: %+v %v", res, err)
	}
	log, err := admin.Audit(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	var sends []string
	for _, e := range log {
		if e.Action == "fleet send" {
			sends = append(sends, fmt.Sprintf("%s %s ok=%v", e.Target, e.Detail, e.OK))
		}
	}
	if len(sends) != 5 || sends[0] != "judge loglevel debug: 1 daemons, 0 failed ok=true" || sends[3] != "ratelimit reload: no daemon matches ok=false" {
		t.Fatalf("audit of sends:\n%s", strings.Join(sends, "\n"))
	}
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	json.Compact(&b, raw)
	return b.String()
}

func TestFleetEventsLongPoll(t *testing.T) {
	s := startServer(t, Config{Fleet: FleetConfig{TTL: time.Hour}})
	c := remote(t, s.url, client.RemoteOptions{})
	ctx := context.Background()
	got := make(chan api.FleetEventsResponse, 1)
	go func() {
		res, err := c.FleetEvents(ctx, 0, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	time.Sleep(50 * time.Millisecond)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	reg := testRegistration(ln.Addr().String(), "transfer")
	if _, err := s.fleet.reg.register(reg); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if eventTypes(res.Events) != "join transfer" || res.Last != 1 {
			t.Fatalf("events %+v", res)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the watcher was not woken by the join")
	}
	// Deregistering answers 204, and a second time too; an unknown id 404.
	for _, want := range []int{204, 204} {
		req, _ := http.NewRequest(http.MethodDelete, s.url+"/v1/fleet/daemons/"+reg.ID, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("leave: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodDelete, s.url+"/v1/fleet/daemons/nobody:1", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("leave of an unknown daemon: %v %v", resp, err)
	}
	res, err := c.FleetEvents(ctx, 1, 0)
	if err != nil || eventTypes(res.Events) != "leave transfer stopped" {
		t.Fatalf("events after the leave: %+v %v", res, err)
	}
}

// BenchmarkParseSample reads a /metrics page the size of a busy transfer's
// (about 400 series) as the scraper does every interval.
func BenchmarkParseSample(b *testing.B) {
	var page strings.Builder
	for i := range 200 {
		fmt.Fprintf(&page, "# HELP go_thing_%d some help\n# TYPE go_thing_%d gauge\ngo_thing_%d %d\n", i, i, i, i)
		fmt.Fprintf(&page, "opskit_transfer_points_received_total{proto=\"p%d\"} %d\n", i, i*1000)
	}
	page.WriteString("go_goroutines 42\ngo_memstats_heap_inuse_bytes 1.5e+06\nopskit_hop_items_total{to=\"127.0.0.1:7130\"} 123456\n")
	data := []byte(page.String())
	wanted := wantedMetrics()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		parseSample(data, time.Unix(0, 0), wanted)
	}
}

// BenchmarkBuildTopology builds the graph of 200 daemons each sending to
// two others.
func BenchmarkBuildTopology(b *testing.B) {
	var ds []api.FleetDaemon
	for i := range 200 {
		addr := fmt.Sprintf("10.0.%d.%d:7120", i/250, i%250)
		ds = append(ds, api.FleetDaemon{DaemonRegistration: api.DaemonRegistration{ID: addr, Kind: "transfer", Host: fmt.Sprint("h", i), Addr: addr},
			State: api.DaemonUp, Stats: &api.DaemonStats{Hops: []api.HopStats{
				{To: fmt.Sprintf("10.0.%d.%d:7120", (i+1)/250, (i+1)%250), ItemsPerSecond: 10},
				{To: "kafka://k1:9092", ItemsPerSecond: 1}}}})
	}
	b.ReportAllocs()
	for b.Loop() {
		buildTopology(ds, time.Unix(0, 0))
	}
}
