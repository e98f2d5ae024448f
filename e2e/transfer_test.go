package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// promResponse is the Prometheus HTTP API envelope.
type promResponse struct {
	Status string `json:"status"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
	Error string `json:"error"`
}

func queryRange(t *testing.T, base, q string, start, end, step int64) promResponse {
	t.Helper()
	v := url.Values{"query": {q}, "start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(end, 10)}, "step": {strconv.FormatInt(step, 10)}}
	resp, err := http.PostForm(base+"/api/v1/query_range", v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr promResponse
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &pr); err != nil || pr.Status != "success" {
		t.Fatalf("query_range %s: %d %s", q, resp.StatusCode, body)
	}
	return pr
}

// sampleMap turns a range result into series key -> timestamp -> value.
func sampleMap(t *testing.T, pr promResponse, key string) map[string]map[int64]float64 {
	out := map[string]map[int64]float64{}
	for _, r := range pr.Data.Result {
		m := map[int64]float64{}
		for _, v := range r.Values {
			ts := int64(v[0].(float64))
			f, err := strconv.ParseFloat(v[1].(string), 64)
			if err != nil {
				t.Fatal(err)
			}
			m[ts] = f
		}
		out[r.Metric[key]] = m
	}
	return out
}

// TestTransferPipeQueryAndPromtool pushes open-falcon JSON lines through
// `transfer push`, Graphite lines over TCP, then reads them back through the
// Prometheus API, with Debian's promtool as an independent client.
func TestTransferPipeQueryAndPromtool(t *testing.T) {
	promtool := testkit.RequireBinary(t, "promtool", "prometheus")
	graphiteAddr := testkit.FreeAddr(t)
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", graphiteAddr)

	now := time.Now().Unix()
	t0 := now - now%60 - 3600
	var lines strings.Builder
	for i := 0; i < 30; i++ {
		ts := t0 + int64(i)*60
		fmt.Fprintf(&lines, `{"endpoint":"web-1","metric":"cpu.idle","timestamp":%d,"step":60,"value":%d,"counterType":"GAUGE","tags":""}`+"\n", ts, 50+i)
		// A counter rising by 120 a minute is a rate of 2/s.
		fmt.Fprintf(&lines, `{"endpoint":"web-1","metric":"net.if.in.bytes","timestamp":%d,"step":60,"value":%d,"counterType":"COUNTER","tags":"iface=eth0"}`+"\n", ts, 1000+120*i)
	}
	out, errs, code := testkit.Run(t, "transfer", lines.String(), "push", "--addr", p.Addr)
	if code != 0 {
		t.Fatalf("transfer push exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	// A refused item makes push exit 1 and name the line.
	out, _, code = testkit.Run(t, "transfer", `{"endpoint":"","metric":"x","timestamp":1,"step":60,"value":1}`+"\n", "push", "--addr", p.Addr)
	if code != 1 || !strings.Contains(out, "endpoint") {
		t.Fatalf("push of a bad item: exit %d, %s", code, out)
	}

	conn, err := net.Dial("tcp", graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		fmt.Fprintf(conn, "servers.db-1.load %d %d\n", i, t0+int64(i)*60)
	}
	fmt.Fprintf(conn, "this line is garbage\n")
	conn.Close()

	base := "http://" + p.Addr
	got := sampleMap(t, queryRange(t, base, `{__name__="cpu.idle"}`, t0, t0+29*60, 60), "endpoint")
	if len(got["web-1"]) != 30 || got["web-1"][t0] != 50 || got["web-1"][t0+29*60] != 79 {
		t.Fatalf("cpu.idle = %v", got)
	}
	rates := sampleMap(t, queryRange(t, base, `{__name__="net.if.in.bytes",iface="eth0"}`, t0+60, t0+29*60, 60), "endpoint")
	for ts, v := range rates["web-1"] {
		if math.Abs(v-2) > 1e-9 {
			t.Fatalf("counter rate at %d = %v; want 2", ts, v)
		}
	}
	if len(rates["web-1"]) < 28 {
		t.Fatalf("counter rates: %v", rates)
	}
	// Graphite points arrive asynchronously: wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := sampleMap(t, queryRange(t, base, `{__name__="servers.db-1.load"}`, t0, t0+29*60, 60), "__name__")
		if len(g["servers.db-1.load"]) == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("graphite points not queryable: %v", g)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// promtool, Prometheus's own client, reads the same data.
	cmd := exec.Command(promtool, "query", "range", "--start", strconv.FormatInt(t0, 10), "--end", strconv.FormatInt(t0+29*60, 10),
		"--step", "60s", base, `sum by (endpoint) ({__name__="cpu.idle"})`)
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool query range: %v\n%s", err, res)
	}
	if !strings.Contains(string(res), `{endpoint="web-1"}`) || !strings.Contains(string(res), "79 @[") || !strings.Contains(string(res), "50 @[") {
		t.Fatalf("promtool output lacks the series or values:\n%s", res)
	}
	res, err = exec.Command(promtool, "query", "instant", "--time", strconv.FormatInt(t0+29*60, 10), base, `{__name__="cpu.idle"} * 2`).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "158") {
		t.Fatalf("promtool query instant: %v\n%s", err, res)
	}

	// The garbage Graphite line was counted, not fatal.
	_, metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, `opskit_transfer_points_rejected_total{proto="graphite"`) {
		t.Errorf("rejected Graphite line not counted in /metrics")
	}
	if code := p.Stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestTransferPrometheusRemoteWrite runs Debian's Prometheus scraping itself
// and remote-writing into transfer.
func TestTransferPrometheusRemoteWrite(t *testing.T) {
	prom := testkit.RequireBinary(t, "prometheus", "prometheus")
	// 5 s slots: a slot is readable once a later point closes it, so a
	// fine archive keeps the wait short.
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "", "--retentions", "5s:2h,1m:1d")
	promAddr := testkit.FreeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs: [{targets: [%q]}]
remote_write:
  - url: http://%s/api/v1/write
    queue_config: {batch_send_deadline: 1s}
`, promAddr, p.Addr)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600)
	cmd := exec.Command(prom, "--config.file", filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", promAddr)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	}()
	base := "http://" + p.Addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + `/api/v1/series?match[]=` + url.QueryEscape(`prometheus_build_info{job="self"}`))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"version"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no remote-written series reached transfer within 60s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	for {
		now := time.Now().Unix()
		pr := queryRange(t, base, `up{job="self"}`, now-300, now+60, 5)
		found := false
		for _, r := range pr.Data.Result {
			for _, v := range r.Values {
				if v[1] == "1" {
					found = true
				}
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("up{job=self} has no sample of 1: %+v", pr.Data.Result)
		}
		time.Sleep(500 * time.Millisecond)
	}
	_, metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, `opskit_transfer_points_received_total{proto="remote_write"}`) {
		t.Error("remote_write points not counted")
	}
}

// TestTransferKill9KeepsAcknowledged pushes from several writers, kills
// transfer with SIGKILL mid-stream, restarts it on the same data and checks
// that every point acknowledged with a 200 is queryable.
func TestTransferKill9KeepsAcknowledged(t *testing.T) {
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "", "--checkpoint-interval", "1s")
	base := "http://" + p.Addr
	now := time.Now().Unix()
	t0 := now - now%60 - 6*3600
	const writers, seriesPerWriter, maxSteps = 4, 50, 300

	var mu sync.Mutex
	acked := map[int]int{} // writer -> highest step acknowledged (all series of the writer)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for step := 0; step < maxSteps; step++ {
				select {
				case <-stop:
					return
				default:
				}
				var items []map[string]any
				for s := 0; s < seriesPerWriter; s++ {
					items = append(items, map[string]any{"endpoint": fmt.Sprintf("w%d-h%d", w, s), "metric": "e2e.load",
						"timestamp": t0 + int64(step)*60, "step": 60, "value": step, "counterType": "GAUGE", "tags": ""})
				}
				body, _ := json.Marshal(items)
				resp, err := client.Post(base+"/api/push", "application/json", bytes.NewReader(body))
				if err != nil {
					return // the kill
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return
				}
				mu.Lock()
				acked[w] = step
				mu.Unlock()
			}
		}(w)
	}
	// Let a checkpoint and plenty of acknowledged writes happen, then crash
	// while the writers are still going.
	time.Sleep(1200 * time.Millisecond)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := 0
		for _, s := range acked {
			n += s + 1
		}
		mu.Unlock()
		if n >= 40 {
			break
		}
	}
	p.Kill()
	close(stop)
	wg.Wait()
	total := 0
	for _, s := range acked {
		total += s + 1
	}
	if total < 20 {
		t.Fatalf("only %d batches acknowledged before the kill; the test proves nothing", total)
	}

	p2 := testkit.Start(t, "transfer", testkit.StartOptions{DataDir: p.DataDir}, "--graphite-listen", "")
	got := sampleMap(t, queryRange(t, "http://"+p2.Addr, `{__name__="e2e.load"}`, t0, t0+maxSteps*60, 60), "endpoint")
	for w, last := range acked {
		for s := 0; s < seriesPerWriter; s++ {
			ep := fmt.Sprintf("w%d-h%d", w, s)
			for step := 0; step <= last; step++ {
				ts := t0 + int64(step)*60
				if v, ok := got[ep][ts]; !ok || v != float64(step) {
					t.Fatalf("%s at step %d (acknowledged up to %d): got %v, %v", ep, step, last, v, ok)
				}
			}
		}
	}
	t.Logf("%d acknowledged batches of %d points all present after kill -9", total, seriesPerWriter)
}

// TestTransferBadInputIsCountedAndHarmless sends garbage on every intake and
// checks the daemon answers with reasons, counts them, and keeps serving.
func TestTransferBadInputIsCountedAndHarmless(t *testing.T) {
	graphiteAddr := testkit.FreeAddr(t)
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", graphiteAddr, "--max-body-bytes", "4096")
	base := "http://" + p.Addr
	post := func(path, ctype, body string) (int, string) {
		resp, err := http.Post(base+path, ctype, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/api/push", "application/json", `{"not":"an array"}`); code != 400 {
		t.Errorf("object body: %d %s", code, body)
	}
	now := time.Now().Unix()
	mixed := fmt.Sprintf(`[{"endpoint":"h","metric":"ok.metric","timestamp":%d,"step":60,"value":1},{"endpoint":"h","metric":"","timestamp":%d,"step":60,"value":1},{"endpoint":"h","metric":"m","timestamp":%d,"step":60,"value":"abc"}]`, now, now, now)
	code, body := post("/api/push", "application/json", mixed)
	if code != 200 || !strings.Contains(body, `"accepted":1`) || !strings.Contains(body, `"index":1`) || !strings.Contains(body, `"index":2`) {
		t.Errorf("mixed batch: %d %s", code, body)
	}
	if code, _ := post("/api/push", "application/json", "["+strings.Repeat(`{"a":1},`, 1000)+"{}]"); code != 413 {
		t.Errorf("oversized body: %d; want 413", code)
	}
	if code, _ := post("/api/v1/write", "application/x-protobuf", "not snappy"); code != 400 {
		t.Errorf("garbage remote_write: %d; want 400", code)
	}
	conn, err := net.Dial("tcp", graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	w.WriteString("\x00\xff\xfe garbage\n" + strings.Repeat("x", 100000) + "\nok.graphite 1 " + strconv.FormatInt(now, 10) + "\n")
	w.Flush()
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + `/api/v1/series?match[]=` + url.QueryEscape(`{__name__="ok.graphite"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "ok.graphite") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the good Graphite line after garbage was not stored")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{`reason="empty_metric"`, `reason="bad_value"`, `proto="graphite"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks a rejection counter with %s", want)
		}
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatal("transfer unhealthy after bad input")
	}
}

// metricValue reads one unlabelled sample from a /metrics text.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// TestTransferSeriesFloodStaysBounded sends 200,000 distinct new series to a
// node limited to 10,000: the rest are refused as series_limit and counted,
// and resident memory stays within the documented bound.
func TestTransferSeriesFloodStaysBounded(t *testing.T) {
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "", "--max-series", "10000")
	base := "http://" + p.Addr
	now := time.Now().Unix()
	refused := 0
	for batch := 0; batch < 20; batch++ {
		var b strings.Builder
		b.WriteByte('[')
		for i := 0; i < 10000; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"endpoint":"flood-%d","metric":"flood.series","timestamp":%d,"step":60,"value":1,"tags":"n=%d"}`, batch, now, i)
		}
		b.WriteByte(']')
		resp, err := http.Post(base+"/api/push", "application/json", strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Accepted int `json:"accepted"`
			Rejected []struct {
				Reason string `json:"reason"`
			} `json:"rejected"`
		}
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		for _, rj := range r.Rejected {
			if rj.Reason != "series_limit" {
				t.Fatalf("rejected for %q; want series_limit", rj.Reason)
			}
		}
		refused += len(r.Rejected)
	}
	if refused != 190000 {
		t.Fatalf("%d points refused; want 190000", refused)
	}
	_, metrics := get(t, base+"/metrics")
	if n := metricValue(t, metrics, "opskit_transfer_storage_series"); n != 10000 {
		t.Fatalf("live series = %v; want 10000", n)
	}
	// The bound in transfer/README.md: process overhead, about 650 B of heap
	// and a few KB of mapped slab pages per live series, request buffers.
	rss := metricValue(t, metrics, "process_resident_memory_bytes")
	t.Logf("resident memory after the flood: %d MB", int(rss)>>20)
	if rss > 400<<20 {
		t.Fatalf("resident memory %d MB after the flood; bound is 400 MB", int(rss)>>20)
	}
	if !strings.Contains(metrics, `reason="series_limit"`) {
		t.Error("series_limit refusals not counted by reason in /metrics")
	}
}
