package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// judgeHook is a webhook receiver recording Alertmanager v4 payloads.
type judgeHook struct {
	mu       sync.Mutex
	payloads []judgeWebhook
	srv      *httptest.Server
}

type judgeWebhook struct {
	Status string `json:"status"`
	Alerts []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
	} `json:"alerts"`
}

func newJudgeHook(t *testing.T) *judgeHook {
	h := &judgeHook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p judgeWebhook
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		h.mu.Lock()
		h.payloads = append(h.payloads, p)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// notifications lists "STATUS alertname endpoint" per alert per payload.
func (h *judgeHook) notifications() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.payloads {
		for _, a := range p.Alerts {
			out = append(out, a.Status+" "+a.Labels["alertname"]+" "+a.Labels["endpoint"])
		}
	}
	return out
}

func (h *judgeHook) count(status string) int {
	n := 0
	for _, s := range h.notifications() {
		if strings.HasPrefix(s, status+" ") {
			n++
		}
	}
	return n
}

func judgeWait(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func judgePush(t *testing.T, addr, endpoint string, ts int64, v float64) {
	t.Helper()
	body := fmt.Sprintf(`[{"endpoint":%q,"metric":"cpu.busy","timestamp":%d,"step":30,"value":%g,"counterType":"GAUGE","tags":"core=all"}]`, endpoint, ts, v)
	resp, err := http.Post("http://"+addr+"/api/push", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"accepted":1`) {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
}

const judgeStrategies = `strategies:
- name: CPUBusy
  metric: cpu.busy
  condition: all(#2) > 90
  priority: 1
  annotations:
    summary: 'cpu busy {{ $value }}% on {{ $labels.endpoint }}'
  runbook: https://runbooks.example/cpu
`

func writeJudgeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAlertmanager runs Debian's Alertmanager with one webhook receiver.
func startAlertmanager(t *testing.T, hookURL string) string {
	t.Helper()
	bin := testkit.RequireBinary(t, "prometheus-alertmanager", "prometheus-alertmanager")
	cfg := writeJudgeFile(t, "am.yml", fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname, endpoint]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: %s
    send_resolved: true
`, hookURL))
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(bin, "--config.file", cfg, "--storage.path", t.TempDir(), "--web.listen-address", addr, "--cluster.listen-address=")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager log:\n%s", logs.String())
		}
	})
	judgeWait(t, 20*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

// TestJudgeAlertmanagerKillRestart: judge fires into Debian's Alertmanager,
// which notifies a webhook once; judge is killed with SIGKILL while the
// alert fires and restarted on its data directory; the alert keeps holding
// and no second firing notification goes out; then it recovers and the
// recovery, with its value, reaches the webhook.
func TestJudgeAlertmanagerKillRestart(t *testing.T) {
	hook := newJudgeHook(t)
	am := startAlertmanager(t, hook.srv.URL)
	strategies := writeJudgeFile(t, "strategies.yaml", judgeStrategies)
	dataDir := t.TempDir()
	args := []string{"--strategies", strategies, "--alarm", am, "--resend-interval", "1s", "--transfer-url", "http://127.0.0.1:7120"}
	j := testkit.Start(t, "judge", testkit.StartOptions{DataDir: dataDir}, args...)
	ts := time.Now().Unix() - 600
	judgePush(t, j.Addr, "web-1", ts, 95)
	judgePush(t, j.Addr, "web-1", ts+30, 97)
	judgeWait(t, 15*time.Second, "firing notification", func() bool { return hook.count("firing") >= 1 })

	j.Kill()
	j = testkit.Start(t, "judge", testkit.StartOptions{DataDir: dataDir}, args...)
	judgePush(t, j.Addr, "web-1", ts+60, 98)
	judgePush(t, j.Addr, "web-1", ts+90, 99)
	// Several re-sends and group intervals pass: still one firing notification.
	time.Sleep(3 * time.Second)
	if n := hook.count("firing"); n != 1 {
		t.Fatalf("%d firing notifications after the restart, want 1: %v", n, hook.notifications())
	}
	// The restarted judge itself announced nothing new: its alert kept its
	// original start.
	if _, m := get(t, j.URL("/metrics")); strings.Contains(m, `opskit_judge_transitions_total{status="firing"`) {
		t.Fatalf("restarted judge fired again:\n%s", m)
	}
	judgePush(t, j.Addr, "web-1", ts+120, 10)
	judgeWait(t, 15*time.Second, "resolved notification", func() bool { return hook.count("resolved") >= 1 })
	hook.mu.Lock()
	defer hook.mu.Unlock()
	last := hook.payloads[len(hook.payloads)-1].Alerts[0]
	if last.Annotations["recovery_value"] != "10" || last.Annotations["duration"] != "1m30s" ||
		last.Labels["severity"] != "critical" || last.Labels["core"] != "all" || last.Annotations["runbook_url"] != "https://runbooks.example/cpu" {
		t.Fatalf("resolved alert %+v", last)
	}
	if !last.StartsAt.Equal(hook.payloads[0].Alerts[0].StartsAt) {
		t.Fatalf("recovery startsAt %v differs from the firing's %v", last.StartsAt, hook.payloads[0].Alerts[0].StartsAt)
	}
	if got := hook.payloads[0].Alerts[0].Annotations["summary"]; got != "cpu busy 97% on web-1" {
		t.Fatalf("firing summary %q", got)
	}
}

// TestJudgePipeline: points pushed to transfer are routed to judge, which
// alerts alarm, which notifies a webhook; the alert and its recovery arrive.
func TestJudgePipeline(t *testing.T) {
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
	alarm := testkit.Start(t, "alarm", testkit.StartOptions{}, "--notify-config", alarmCfg)
	j := testkit.Start(t, "judge", testkit.StartOptions{}, "--strategies", writeJudgeFile(t, "s.yaml", judgeStrategies),
		"--alarm", alarm.Addr, "--resend-interval", "1s")
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--judge", "j1="+j.Addr, "--graphite-listen", "",
		"--forward-min-backoff", "50ms")
	ts := time.Now().Unix() - 300
	var lines []string
	for i, v := range []float64{95, 97, 10} {
		lines = append(lines, fmt.Sprintf(`{"endpoint":"db-1","metric":"cpu.busy","timestamp":%d,"step":30,"value":%g}`, ts+int64(30*i), v))
	}
	push := func(line string) {
		out, errs, code := testkit.Run(t, "transfer", line+"\n", "push", "--addr", tr.Addr)
		if code != 0 {
			t.Fatalf("transfer push: exit %d %s %s", code, out, errs)
		}
	}
	push(lines[0])
	push(lines[1])
	judgeWait(t, 20*time.Second, "firing through transfer, judge and alarm", func() bool { return hook.count("firing") >= 1 })
	push(lines[2])
	judgeWait(t, 20*time.Second, "recovery through transfer, judge and alarm", func() bool { return hook.count("resolved") >= 1 })
	if got := hook.notifications(); got[0] != "firing CPUBusy db-1" {
		t.Fatalf("notifications %v", got)
	}
}

// TestJudgeRefillsFromTransfer: a judge started after transfer already
// holds a series' history fills the series' window from transfer's query
// API, so all(#3) fires on the second point it sees instead of the third.
func TestJudgeRefillsFromTransfer(t *testing.T) {
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "")
	ts := time.Now().Unix()/30*30 - 600
	var lines []string
	for i := range 3 {
		lines = append(lines, fmt.Sprintf(`{"endpoint":"web-7","metric":"cpu.busy","timestamp":%d,"step":30,"value":95,"tags":"core=all"}`, ts+int64(30*i)))
	}
	if out, errs, code := testkit.Run(t, "transfer", strings.Join(lines, "\n")+"\n", "push", "--addr", tr.Addr); code != 0 {
		t.Fatalf("transfer push: exit %d %s %s", code, out, errs)
	}
	strategies := writeJudgeFile(t, "s.yaml", strings.Replace(judgeStrategies, "all(#2)", "all(#4)", 1))
	j := testkit.Start(t, "judge", testkit.StartOptions{}, "--strategies", strategies, "--transfer-url", "http://"+tr.Addr)
	judgePush(t, j.Addr, "web-7", ts+90, 96)
	judgeWait(t, 10*time.Second, "refill answered", func() bool {
		_, m := get(t, j.URL("/metrics"))
		return strings.Contains(m, `opskit_judge_history_requests_total{result="ok"} 1`)
	})
	judgePush(t, j.Addr, "web-7", ts+120, 97)
	_, body := get(t, j.URL("/api/alerts"))
	if !strings.Contains(body, `"state":"firing"`) || !strings.Contains(body, `"endpoint":"web-7"`) {
		t.Fatalf("not firing after the refill: %s", body)
	}
}

// TestJudgeKafkaTransitions: with --kafka-brokers every transition is also
// produced to Kafka, firing then resolved, keyed by the alert's labels.
func TestJudgeKafkaTransitions(t *testing.T) {
	k := testkit.Kafka(t, testkit.KafkaTopic("judge-transitions", 1))
	j := testkit.Start(t, "judge", testkit.StartOptions{}, "--strategies", writeJudgeFile(t, "s.yaml", judgeStrategies),
		"--kafka-brokers", strings.Join(k.Addrs(), ","))
	ts := time.Now().Unix() - 600
	for i, v := range []float64{95, 97, 10} {
		judgePush(t, j.Addr, "web-3", ts+int64(30*i), v)
	}
	recs := k.ReadTopic(t, "judge-transitions", 2, 15*time.Second)
	var got []string
	for _, r := range recs {
		var tr struct{ Status, Alertname string }
		json.Unmarshal(r.Value, &tr)
		got = append(got, tr.Status+" "+tr.Alertname)
		if !strings.Contains(string(r.Key), `endpoint="web-3"`) {
			t.Fatalf("record key %s", r.Key)
		}
	}
	if strings.Join(got, ",") != "firing CPUBusy,resolved CPUBusy" {
		t.Fatalf("records %v", got)
	}
}

// TestJudgeDayOverDay: c_avg_rate compares with the same window a day
// earlier, read from a real transfer.
func TestJudgeDayOverDay(t *testing.T) {
	tr := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "", "--retentions", "30s:2d")
	now := time.Now().Unix() / 30 * 30
	day := int64(24 * 3600)
	var lines []string
	for i := range 2 {
		lines = append(lines, fmt.Sprintf(`{"endpoint":"web-9","metric":"cpu.busy","timestamp":%d,"step":30,"value":10,"tags":"core=all"}`, now-day-60+int64(30*i)))
	}
	if out, errs, code := testkit.Run(t, "transfer", strings.Join(lines, "\n")+"\n", "push", "--addr", tr.Addr); code != 0 {
		t.Fatalf("transfer push: exit %d %s %s", code, out, errs)
	}
	strategies := writeJudgeFile(t, "s.yaml", "strategies:\n- name: Busier\n  metric: cpu.busy\n  condition: c_avg_rate(#2,1d) > 50\n")
	j := testkit.Start(t, "judge", testkit.StartOptions{}, "--strategies", strategies, "--transfer-url", "http://"+tr.Addr)
	judgePush(t, j.Addr, "web-9", now-30, 20)
	judgeWait(t, 10*time.Second, "baseline fetched", func() bool {
		_, m := get(t, j.URL("/metrics"))
		return strings.Contains(m, `opskit_judge_history_requests_total{result="ok"} 2`)
	})
	judgePush(t, j.Addr, "web-9", now, 20)
	_, body := get(t, j.URL("/api/alerts"))
	// avg(20, 20) against yesterday's avg(10): +100%.
	if !strings.Contains(body, `"state":"firing"`) || !strings.Contains(body, `"value":100`) {
		t.Fatalf("not firing at +100%%: %s", body)
	}
}
