package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// collectorSeries lists the series transfer holds that match a selector.
func collectorSeries(t *testing.T, transferAddr, match string) []map[string]string {
	t.Helper()
	resp, err := http.PostForm("http://"+transferAddr+"/api/v1/series", url.Values{"match[]": {match}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Status string              `json:"status"`
		Data   []map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Status != "success" {
		t.Fatalf("series %s: %d %s", match, resp.StatusCode, body)
	}
	return out.Data
}

// collectorWaitSeries waits until transfer holds at least n series matching
// match, and returns them.
func collectorWaitSeries(t *testing.T, transferAddr, match string, n int, within time.Duration) []map[string]string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := collectorSeries(t, transferAddr, match)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer holds %d series matching %s after %v, want %d: %v", len(got), match, within, n, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// collectorArgs are the short timers every test collector runs with.
func collectorArgs(transferAddr string, extra ...string) []string {
	return append([]string{
		"--hostname", "e2e-host", "--interval", "1s", "--transfer", transferAddr,
		"--transfer-backoff-min", "50ms", "--transfer-backoff-max", "300ms",
		"--intake-flush-interval", "100ms",
		"--graphite-listen", "127.0.0.1:0", "--statsd-listen", "127.0.0.1:0",
	}, extra...)
}

// collectorListen finds the address a listener logged, e.g. "statsd_listen".
func collectorListen(t *testing.T, p *testkit.Proc, key string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := p.Logs()
		if i := strings.Index(logs, key+"="); i >= 0 {
			rest := logs[i+len(key)+1:]
			if j := strings.IndexAny(rest, " \n"); j >= 0 {
				return rest[:j]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not logged:\n%s", key, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCollectorOncePipesIntoTransfer runs `collector once | transfer push`.
func TestCollectorOncePipesIntoTransfer(t *testing.T) {
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "")
	out, errs, code := testkit.Run(t, "collector", "", "once", "--hostname", "once-host", "--window", "300ms")
	if code != 0 && code != 1 {
		t.Fatalf("collector once: exit %d\n%s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 30 {
		t.Fatalf("collector once printed %d lines:\n%s\n%s", len(lines), out, errs)
	}
	pushed, perrs, pcode := testkit.Run(t, "transfer", out, "push", "--addr", tr.Addr)
	if pcode != 0 {
		t.Fatalf("transfer push refused collector once's output: exit %d\n%s\n%s", pcode, pushed, perrs)
	}
	for _, name := range []string{"cpu.idle", "cpu.busy", "mem.memfree.percent", "load.1min", "sys.uptime"} {
		got := collectorSeries(t, tr.Addr, `{__name__="`+name+`",endpoint="once-host"}`)
		if len(got) != 1 {
			t.Errorf("%s: %v", name, got)
		}
	}
	if got := collectorSeries(t, tr.Addr, `{__name__="df.bytes.free.percent",mount="/"}`); len(got) != 1 {
		t.Errorf("df of the root: %v", got)
	}
}

// TestCollectorRelaysEveryIntake runs collector in front of transfer: host
// metrics, /v1/push, Graphite over TCP and UDP, StatsD over UDP and a
// plugin all end up queryable in transfer.
func TestCollectorRelaysEveryIntake(t *testing.T) {
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "")
	plugins := t.TempDir()
	os.WriteFile(filepath.Join(plugins, "1_app.sh"), []byte("#!/bin/sh\necho 'plugin.app.connections 12'\n"), 0o755)
	os.WriteFile(filepath.Join(plugins, "broken.sh"), []byte("#!/bin/sh\n# opskit-interval: 1s\necho 'not a metric'\nexit 1\n"), 0o755)
	co := testkit.Start(t, "collector", testkit.StartOptions{}, collectorArgs(tr.Addr, "--plugin-dir", plugins, "--statsd-interval", "1s")...)
	graphiteAddr := collectorListen(t, co, "graphite_listen")
	statsdAddr := collectorListen(t, co, "statsd_listen")

	resp, err := http.Post(co.URL("/v1/push"), "application/json", strings.NewReader(
		`[{"metric":"app.orders","value":5,"tags":"shop=eu"},{"endpoint":"db-9","metric":"app.own","value":1},{"metric":"bad","value":"x"}]`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"accepted":2`) || !strings.Contains(string(body), "bad_value") {
		t.Fatalf("/v1/push: %d %s", resp.StatusCode, body)
	}
	now := time.Now().Unix()
	c, err := net.Dial("tcp", graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "app.graphite.tcp 1 %d\napp.graphite.tagged;dc=fra 2 %d\n", now, now)
	c.Close()
	u, _ := net.Dial("udp", graphiteAddr)
	fmt.Fprintf(u, "app.graphite.udp 3 %d\n", now)
	u.Close()
	s, _ := net.Dial("udp", statsdAddr)
	for range 10 {
		s.Write([]byte("app.statsd.hits:1|c|#route:login\napp.statsd.rt:12|ms\napp.statsd.temp:21|g"))
	}
	s.Close()

	within := 15 * time.Second
	collectorWaitSeries(t, tr.Addr, `{__name__="app.orders",endpoint="e2e-host",shop="eu"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.own",endpoint="db-9"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.graphite.tcp",endpoint="e2e-host"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.graphite.tagged",dc="fra"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.graphite.udp"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.statsd.hits.count",route="login"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.statsd.rt.p99"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="app.statsd.temp"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="plugin.app.connections",endpoint="e2e-host"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="cpu.idle",endpoint="e2e-host"}`, 1, within)
	collectorWaitSeries(t, tr.Addr, `{__name__="mem.memused.percent",endpoint="e2e-host"}`, 1, within)

	// The StatsD count is the sum of the interval's datagrams.
	q, _ := http.Get("http://" + tr.Addr + "/api/v1/query?query=" + url.QueryEscape(`max_over_time({__name__="app.statsd.hits.count"}[5m])`))
	qb, _ := io.ReadAll(q.Body)
	q.Body.Close()
	if !strings.Contains(string(qb), `"10"`) {
		t.Errorf("statsd hits over the interval: %s", qb)
	}
	_, metrics := get(t, co.URL("/metrics"))
	for _, want := range []string{
		`opskit_collector_intake_points_rejected_total{proto="http",reason="bad_value"} 1`,
		`opskit_collector_plugin_runs_total{plugin="broken.sh",result="failed"}`,
		`opskit_collector_statsd_datagrams_total 10`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("collector /metrics lacks %s", want)
		}
	}
	if code := co.Stop(t, 10*time.Second); code != 0 {
		t.Fatalf("collector exit %d on SIGTERM\n%s", code, co.Logs())
	}
}

// TestCollectorOutageAndKillNine: transfer is down while apps push; the
// collector is killed with SIGKILL and restarted; then transfer comes up
// and every point acknowledged meanwhile arrives.
func TestCollectorOutageAndKillNine(t *testing.T) {
	transferAddr := testkit.FreeAddr(t)
	dataDir := t.TempDir()
	args := collectorArgs(transferAddr, "--host-metrics=false")
	co := testkit.Start(t, "collector", testkit.StartOptions{DataDir: dataDir}, args...)
	push := func(p *testkit.Proc, from, n int) {
		t.Helper()
		var items []string
		for i := from; i < from+n; i++ {
			items = append(items, fmt.Sprintf(`{"metric":"outage.seq","value":%d,"tags":"i=%d"}`, i, i))
		}
		resp, err := http.Post(p.URL("/v1/push"), "application/json", strings.NewReader("["+strings.Join(items, ",")+"]"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf(`"accepted":%d`, n)) {
			t.Fatalf("/v1/push during the outage: %d %s", resp.StatusCode, body)
		}
	}
	for i := 0; i < 300; i += 50 {
		push(co, i, 50)
	}
	_, metrics := get(t, co.URL("/metrics"))
	if !strings.Contains(metrics, "opskit_collector_spool_points 300") {
		t.Fatalf("spool during the outage:\n%s", metrics)
	}
	co.Kill()
	co.Wait(t.Context())
	co = testkit.Start(t, "collector", testkit.StartOptions{DataDir: dataDir}, args...)
	push(co, 300, 100)
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--listen", transferAddr, "--graphite-listen", "")
	got := collectorWaitSeries(t, tr.Addr, `{__name__="outage.seq"}`, 400, 20*time.Second)
	seen := map[string]bool{}
	for _, s := range got {
		seen[s["i"]] = true
	}
	for i := range 400 {
		if !seen[fmt.Sprint(i)] {
			t.Fatalf("point %d lost", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, m := get(t, co.URL("/metrics")); strings.Contains(m, "opskit_collector_spool_points 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spool not drained")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCollectorTakesCollectdWriteGraphite runs Debian's collectd with its
// write_graphite plugin against collector's Graphite port.
func TestCollectorTakesCollectdWriteGraphite(t *testing.T) {
	collectd := testkit.RequireBinary(t, "collectd", "collectd-core")
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "")
	co := testkit.Start(t, "collector", testkit.StartOptions{}, collectorArgs(tr.Addr, "--host-metrics=false")...)
	host, port, _ := net.SplitHostPort(collectorListen(t, co, "graphite_listen"))
	dir := t.TempDir()
	conf := filepath.Join(dir, "collectd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`Hostname "collectd-host"
FQDNLookup false
Interval 1
BaseDir %q
PIDFile %q
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin load
LoadPlugin memory
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "opskit">
    Host %q
    Port %q
    Protocol "tcp"
    Prefix "collectd."
    StoreRates true
    EscapeCharacter "_"
  </Node>
</Plugin>
`, dir, filepath.Join(dir, "collectd.pid"), host, port)), 0o644)
	cmd := exec.Command(collectd, "-f", "-C", conf)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("collectd:\n%s", logs.String())
		}
	})
	got := collectorWaitSeries(t, tr.Addr, `{__name__=~"collectd[.]collectd-host[.]load[.].*"}`, 1, 20*time.Second)
	if got[0]["endpoint"] != "e2e-host" {
		t.Errorf("collectd series without the collector's endpoint: %v", got[0])
	}
	collectorWaitSeries(t, tr.Addr, `{__name__=~"collectd[.]collectd-host[.]memory[.].*"}`, 1, 20*time.Second)
}
