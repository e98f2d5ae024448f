package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/internal/testkit"
)

const fleetAdminToken = "fleet-e2e-admin-token"

// fleetPipeline is collector -> transfer -> judge -> alarm, every daemon
// registered with one configd.
type fleetPipeline struct {
	configd, alarm, judge, transfer, collector *testkit.Proc
	env                                        []string
	judgeArgs                                  []string
}

func startFleetPipeline(t *testing.T) *fleetPipeline {
	t.Helper()
	f := &fleetPipeline{}
	cfgAddr := testkit.FreeAddr(t)
	f.env = []string{"OPSKIT_CONFIGD=http://" + cfgAddr, "OPSKIT_CONFIGD_HEARTBEAT=200ms", "OPSKIT_ADMIN_TOKEN=" + fleetAdminToken}
	f.configd = testkit.Start(t, "configd", testkit.StartOptions{Env: f.env}, "--listen", cfgAddr,
		"--fleet-scrape-interval", "1s", "--fleet-ttl", "1s", "--fleet-admin-token", fleetAdminToken)
	hook := newJudgeHook(t)
	alarmCfg := writeJudgeFile(t, "alarm.yml", fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: %s
`, hook.srv.URL))
	f.alarm = testkit.Start(t, "alarm", testkit.StartOptions{Env: f.env}, "--notify-config", alarmCfg)
	f.judgeArgs = []string{"--strategies", writeJudgeFile(t, "s.yaml", judgeStrategies), "--alarm", f.alarm.Addr, "--resend-interval", "300ms"}
	f.judge = testkit.Start(t, "judge", testkit.StartOptions{Env: f.env}, f.judgeArgs...)
	f.transfer = testkit.Start(t, "transfer", testkit.StartOptions{Env: f.env}, "--judge", "j1="+f.judge.Addr, "--graphite-listen", "",
		"--forward-min-backoff", "50ms")
	f.collector = testkit.Start(t, "collector", testkit.StartOptions{Env: f.env}, collectorArgs(f.transfer.Addr, "--host-metrics=false")...)
	return f
}

// feed pushes a busy CPU point to collector every 100 ms until ctx ends,
// so points flow through every hop and judge keeps re-sending its alert.
func (f *fleetPipeline) feed(ctx context.Context) {
	ts := time.Now().Unix() - 3600
	for i := 0; ctx.Err() == nil; i++ {
		body := fmt.Sprintf(`[{"endpoint":"fleet-web","metric":"cpu.busy","timestamp":%d,"step":30,"value":95,"counterType":"GAUGE","tags":"core=all"}]`, ts+int64(30*i))
		if resp, err := http.Post("http://"+f.collector.Addr+"/v1/push", "application/json", strings.NewReader(body)); err == nil {
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (f *fleetPipeline) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return testkit.Run(t, "configd", "", append(args, "--server", f.configd.Addr)...)
}

func (f *fleetPipeline) daemons(t *testing.T) map[string]api.FleetDaemon {
	t.Helper()
	out, errs, code := f.cli(t, "fleet", "--json")
	if code != 0 {
		t.Fatalf("configd fleet --json: exit %d %s", code, errs)
	}
	byKind := map[string]api.FleetDaemon{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var d api.FleetDaemon
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("fleet line %q: %v", line, err)
		}
		byKind[d.Kind] = d
	}
	return byKind
}

func adminLevel(t *testing.T, addr string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/admin/loglevel", nil)
	req.Header.Set("Authorization", "Bearer "+fleetAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Level string }
	json.NewDecoder(resp.Body).Decode(&v)
	return v.Level
}

// TestFleetView: a running pipeline registered with configd is listed by
// `configd fleet` with health, heap, goroutines and rates; `fleet send`
// changes judge's log level only; the topology page drawn by headless
// Chromium shows the four daemons and their flows with non-zero rates;
// judge killed with -9 is shown down, restarted shown up again with a
// rejoin event; a graceful stop deregisters.
func TestFleetView(t *testing.T) {
	chromium := testkit.RequireBinary(t, "chromium", "chromium")
	f := startFleetPipeline(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.feed(ctx)

	kinds := []string{"alarm", "collector", "configd", "judge", "transfer"}
	judgeWait(t, 20*time.Second, "every daemon listed up with stats", func() bool {
		ds := f.daemons(t)
		for _, k := range kinds {
			if d, ok := ds[k]; !ok || d.State != api.DaemonUp || d.Stats == nil || d.Stats.Health != api.HealthOK {
				return false
			}
		}
		return true
	})
	ds := f.daemons(t)
	if j := ds["judge"]; j.ID != f.judge.Addr || j.PID <= 0 || j.Stats.HeapBytes <= 0 || j.Stats.Goroutines <= 0 || j.Version == "" {
		t.Fatalf("judge %+v stats %+v", j, j.Stats)
	}
	// The console: one line per daemon, with the columns the operator reads.
	out, _, code := f.cli(t, "fleet")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 1+len(kinds) || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "GOROUTINES") {
		t.Fatalf("console (exit %d):\n%s", code, out)
	}
	for i, k := range kinds {
		if fields := strings.Fields(lines[i+1]); len(fields) < 10 || fields[1] != k || fields[4] != "up" || fields[7] != "ok" {
			t.Fatalf("console line for %s: %q", k, lines[i+1])
		}
	}

	// Flows: collector -> transfer -> judge -> alarm, each with a rate.
	flows := map[string]string{f.collector.Addr: f.transfer.Addr, f.transfer.Addr: f.judge.Addr, f.judge.Addr: f.alarm.Addr}
	judgeWait(t, 30*time.Second, "three flows with non-zero rates in /v1/topology", func() bool {
		_, body := get(t, "http://"+f.configd.Addr+"/v1/topology")
		var topo api.Topology
		json.Unmarshal([]byte(body), &topo)
		seen := 0
		for _, e := range topo.Edges {
			if flows[e.From] == e.To && e.ItemsPerSecond > 0 {
				seen++
			}
		}
		return seen == len(flows)
	})
	dom := fleetPageDOM(t, chromium, "http://"+f.configd.Addr+"/fleet?refresh=1")
	for _, p := range []*testkit.Proc{f.collector, f.transfer, f.judge, f.alarm} {
		node := regexp.MustCompile(`<g class="node up ok connected" [^>]*data-id="` + regexp.QuoteMeta(p.Addr) + `" data-kind="` + p.Name + `" data-state="up"`)
		if !node.MatchString(dom) {
			t.Errorf("the page does not draw %s (%s) as up and connected:\n%s", p.Name, p.Addr, dom)
		}
	}
	edgeRE := regexp.MustCompile(`<g class="edge [a-z]+" id="edge-\d+" data-from="([^"]+)" data-to="([^"]+)" data-target="[^"]*" data-rate="([^"]+)" data-latency="([^"]+)"><path [^>]*></path><text [^>]*>([^<]+)</text>`)
	drawn := 0
	for _, m := range edgeRE.FindAllStringSubmatch(dom, -1) {
		rate, _ := strconv.ParseFloat(m[3], 64)
		if flows[m[1]] == m[2] && rate > 0 && strings.Contains(m[5], "/s") {
			drawn++
		}
	}
	if drawn != len(flows) {
		t.Errorf("the page draws %d of the %d flows with a non-zero rate:\n%s", drawn, len(flows), dom)
	}
	if !strings.Contains(dom, `data-kind="configd" data-state="up" data-health="ok" data-isolated="true"`) {
		t.Errorf("configd, which sends nowhere, is not drawn isolated:\n%s", dom)
	}

	// Broadcast: judge only, through configd with the daemons' admin token.
	out, errs, code := f.cli(t, "fleet", "send", "--dest", "judge", "loglevel", "debug")
	if code != 0 || !strings.HasPrefix(out, f.judge.Addr+" judge ") || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"level":"debug"`) {
		t.Fatalf("fleet send: exit %d\n%s%s", code, out, errs)
	}
	for _, p := range []*testkit.Proc{f.collector, f.transfer, f.judge, f.alarm} {
		want := "info"
		if p == f.judge {
			want = "debug"
		}
		if got := adminLevel(t, p.Addr); got != want {
			t.Errorf("%s log level %q, want %q", p.Name, got, want)
		}
	}
	out, _, code = f.cli(t, "fleet", "send", "--dest", "all", "frobnicate")
	if code != 1 || strings.Count(out, " error 404 ") != len(kinds) {
		t.Errorf("an unknown command: exit %d\n%s", code, out)
	}

	// kill -9: down once its heartbeats are missed; restarted: up, rejoined.
	oldPID := f.daemons(t)["judge"].PID
	f.judge.Kill()
	judgeWait(t, 10*time.Second, "killed judge shown down", func() bool { return f.daemons(t)["judge"].State == api.DaemonDown })
	out, _, _ = f.cli(t, "fleet")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(f.judge.Addr) + ` +judge +\S+ +\d+ +down `).MatchString(out) {
		t.Errorf("console does not show judge down:\n%s", out)
	}
	f.judge = testkit.Start(t, "judge", testkit.StartOptions{Env: f.env, DataDir: f.judge.DataDir}, append(f.judgeArgs, "--listen", f.judge.Addr)...)
	judgeWait(t, 10*time.Second, "restarted judge shown up", func() bool {
		d := f.daemons(t)["judge"]
		return d.State == api.DaemonUp && d.PID != oldPID
	})
	f.collector.Stop(t, 10*time.Second)
	judgeWait(t, 10*time.Second, "stopped collector", func() bool { return f.daemons(t)["collector"].State == api.DaemonStopped })
	out, _, _ = f.cli(t, "fleet", "events", "--once")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev api.FleetEvent
		json.Unmarshal([]byte(line), &ev)
		if ev.Kind == "judge" || ev.Kind == "collector" {
			got = append(got, strings.TrimSpace(ev.Type+" "+ev.Kind+" "+ev.Reason))
		}
	}
	want := []string{"join judge", "join collector", "leave judge timeout", "rejoin judge", "leave collector stopped"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("events %q, want %q", got, want)
	}
}

// fleetPageDOM loads the page in headless Chromium and returns the DOM
// once the script has drawn (virtual time lets its fetch and timer run).
func fleetPageDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=3000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	return string(out)
}
