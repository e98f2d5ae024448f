package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/internal/testkit"
)

// alarmHook is a webhook receiver for alarm (and Alertmanager) tests: it
// records every request and answers with the scripted status codes.
type alarmHook struct {
	mu      sync.Mutex
	answers []int
	delay   time.Duration
	got     []alarmDelivery
	srv     *httptest.Server
}

type alarmDelivery struct {
	at     time.Time
	key    string
	status int
	body   alarmPayload
}

type alarmPayload struct {
	Receiver    string            `json:"receiver"`
	Status      string            `json:"status"`
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels"`
	Version     string            `json:"version"`
	Alerts      []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

func newAlarmHook(t *testing.T, answers ...int) *alarmHook {
	t.Helper()
	h := &alarmHook{answers: answers}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		code := http.StatusOK
		if len(h.answers) > 0 {
			code, h.answers = h.answers[0], h.answers[1:]
		}
		delay := h.delay
		d := alarmDelivery{at: time.Now(), key: r.Header.Get("Idempotency-Key"), status: code}
		json.Unmarshal(b, &d.body)
		h.got = append(h.got, d)
		h.mu.Unlock()
		time.Sleep(delay)
		w.WriteHeader(code)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *alarmHook) deliveries() []alarmDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]alarmDelivery(nil), h.got...)
}

// alarmWaitFor polls cond until it holds or the time is up.
func alarmWaitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alarmWriteConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func alarmPost(t *testing.T, base, body string) {
	t.Helper()
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST alerts to %s: %d %s", base, resp.StatusCode, b)
	}
}

// TestAlarmSendAndAmtool drives alarm with `alarm send` and Debian's amtool:
// alert query, silence add / query / expire.
func TestAlarmSendAndAmtool(t *testing.T) {
	amtool := testkit.RequireBinary(t, "amtool", "prometheus-alertmanager")
	p := testkit.Start(t, "alarm", testkit.StartOptions{})
	in := `{"labels":{"alertname":"DiskFull","instance":"web01"},"annotations":{"summary":"disk full on web01"}}
[{"labels":{"alertname":"DiskFull","instance":"web02"}},{"labels":{"alertname":"Load","instance":"web02"}}]
{"labels":{}}
`
	out, errs, code := testkit.Run(t, "alarm", in, "send", "--addr", p.Addr)
	if code != 1 || !strings.Contains(out, `"accepted":3`) || !strings.Contains(out, `"line":3`) {
		t.Fatalf("alarm send: exit %d\n%s%s", code, out, errs)
	}
	am := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(amtool, append([]string{"--alertmanager.url=http://" + p.Addr}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("amtool %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	q := am("alert", "query")
	if strings.Count(q, "DiskFull") != 2 || !strings.Contains(q, "Load") || !strings.Contains(q, "disk full on web01") {
		t.Fatalf("amtool alert query:\n%s", q)
	}
	if q := am("alert", "query", "alertname=Load"); !strings.Contains(q, "Load") || strings.Contains(q, "DiskFull") {
		t.Fatalf("amtool alert query alertname=Load:\n%s", q)
	}
	if q := am("alert", "query", `instance=~"web0[2-9]"`); strings.Count(q, "DiskFull") != 1 || !strings.Contains(q, "Load") {
		t.Fatalf("amtool alert query instance=~web0[2-9]:\n%s", q)
	}
	id := strings.TrimSpace(am("silence", "add", "instance=web02", "--comment=maintenance", "--author=ops", "--duration=1h"))
	if len(id) != 36 {
		t.Fatalf("silence add printed %q, want a silence ID", id)
	}
	if s := am("silence", "query"); !strings.Contains(s, id) || !strings.Contains(s, `instance="web02"`) || !strings.Contains(s, "maintenance") {
		t.Fatalf("amtool silence query:\n%s", s)
	}
	if q := am("alert", "query"); strings.Contains(q, "Load") || !strings.Contains(q, "DiskFull") {
		t.Fatalf("silenced alerts still listed as active:\n%s", q)
	}
	if q := am("alert", "query", "--silenced"); !strings.Contains(q, "Load") {
		t.Fatalf("amtool alert query --silenced:\n%s", q)
	}
	am("silence", "expire", id)
	if s := am("silence", "query"); strings.Contains(s, id) {
		t.Fatalf("expired silence still active:\n%s", s)
	}
	if s := am("silence", "query", "--expired"); !strings.Contains(s, id) {
		t.Fatalf("expired silence not listed with --expired:\n%s", s)
	}
	// History keeps the transitions, by label.
	out, errs, code = testkit.Run(t, "alarm", "", "history", "--addr", p.Addr, "--since", "1h", "--match", "instance=web02")
	if code != 0 || !strings.Contains(out, `"kind":"firing"`) || !strings.Contains(out, `"kind":"silence_set"`) || strings.Contains(out, `"web01"`) {
		t.Fatalf("alarm history: exit %d\n%s%s", code, out, errs)
	}
}

// TestAlarmWebhookRetriesAcrossKill9: the receiver fails, alarm is killed
// with SIGKILL while retrying, and after the restart the notification is
// delivered once, with the same Idempotency-Key; a receiver that always
// fails leads to a dead letter.
func TestAlarmWebhookRetriesAcrossKill9(t *testing.T) {
	hook := newAlarmHook(t, 500, 503, 500, 500, 500, 500, 500, 500, 500, 500)
	cfg := alarmWriteConfig(t, fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: %s/hook
`, hook.srv.URL))
	dir := t.TempDir()
	args := []string{"--notify-config", cfg, "--retry-initial", "100ms", "--retry-max", "200ms", "--retry-timeout", "1m"}
	p := testkit.Start(t, "alarm", testkit.StartOptions{DataDir: dir}, args...)
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"Down","instance":"db1"}}]`)
	alarmWaitFor(t, 10*time.Second, "three failed attempts", func() bool { return len(hook.deliveries()) >= 3 })
	p.Kill()
	hook.mu.Lock()
	hook.answers = nil // the receiver recovers
	before := len(hook.got)
	hook.mu.Unlock()
	p = testkit.Start(t, "alarm", testkit.StartOptions{DataDir: dir}, args...)
	alarmWaitFor(t, 10*time.Second, "delivery after restart", func() bool {
		for _, d := range hook.deliveries() {
			if d.status == 200 {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond) // anything sent twice would arrive now
	all := hook.deliveries()
	keys := map[string]bool{}
	ok := 0
	for _, d := range all {
		keys[d.key] = true
		if d.status == 200 {
			ok++
		}
	}
	if ok != 1 || len(keys) != 1 || len(all) <= before {
		t.Fatalf("deliveries %+v: want exactly one success and one Idempotency-Key", all)
	}
	if d := all[len(all)-1]; d.body.Status != "firing" || len(d.body.Alerts) != 1 || d.body.Version != "4" {
		t.Fatalf("payload %+v", d.body)
	}
	_, outbox := get(t, "http://"+p.Addr+"/api/alarm/outbox")
	if strings.TrimSpace(outbox) != "[]" {
		t.Fatalf("outbox after delivery: %s", outbox)
	}
	p.Stop(t, 10*time.Second)

	// A receiver that keeps failing: dead letter, visible in the API.
	dead := newAlarmHook(t)
	dead.delay = 300 * time.Millisecond
	cfg2 := alarmWriteConfig(t, strings.ReplaceAll(mustRead(t, cfg), hook.srv.URL, dead.srv.URL))
	p = testkit.Start(t, "alarm", testkit.StartOptions{}, "--notify-config", cfg2, "--retry-initial", "50ms",
		"--retry-timeout", "500ms", "--send-timeout", "100ms")
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"Down","instance":"db1"}}]`)
	alarmWaitFor(t, 10*time.Second, "a dead letter", func() bool {
		_, body := get(t, "http://"+p.Addr+"/api/alarm/deadletters")
		return strings.Contains(body, "deadline exceeded")
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAlarmKill9DuringGroupWait: alerts acknowledged during group_wait are
// notified once after a SIGKILL and restart; a second restart sends nothing.
func TestAlarmKill9DuringGroupWait(t *testing.T) {
	hook := newAlarmHook(t)
	cfg := alarmWriteConfig(t, fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 200ms
receivers:
- name: hook
  webhook_configs:
  - url: %s/
`, hook.srv.URL))
	dir := t.TempDir()
	p := testkit.Start(t, "alarm", testkit.StartOptions{DataDir: dir}, "--notify-config", cfg)
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"Disk","instance":"web01"}},{"labels":{"alertname":"Disk","instance":"web02"}}]`)
	time.Sleep(300 * time.Millisecond)
	p.Kill()
	if n := len(hook.deliveries()); n != 0 {
		t.Fatalf("%d notifications before group_wait ended", n)
	}
	p = testkit.Start(t, "alarm", testkit.StartOptions{DataDir: dir}, "--notify-config", cfg)
	alarmWaitFor(t, 10*time.Second, "the notification", func() bool { return len(hook.deliveries()) >= 1 })
	time.Sleep(1500 * time.Millisecond) // several group intervals
	got := hook.deliveries()
	if len(got) != 1 || len(got[0].body.Alerts) != 2 {
		t.Fatalf("deliveries after restart: %+v", got)
	}
	// Killed again after the notification: the restart repeats nothing.
	p.Kill()
	p = testkit.Start(t, "alarm", testkit.StartOptions{DataDir: dir}, "--notify-config", cfg)
	time.Sleep(1500 * time.Millisecond)
	if got := hook.deliveries(); len(got) != 1 {
		t.Fatalf("restart sent again: %+v", got)
	}
	_, body := get(t, "http://"+p.Addr+"/api/v2/alerts")
	if strings.Count(body, `"alertname":"Disk"`) != 2 {
		t.Fatalf("alerts after two crashes: %s", body)
	}
}

// alarmSummarize reduces notifications to what must match between alarm
// and Alertmanager, one sorted line each.
func alarmSummarize(ds []alarmDelivery) []string {
	var out []string
	for _, d := range ds {
		var alerts []string
		for _, a := range d.body.Alerts {
			alerts = append(alerts, a.Labels["alertname"]+"/"+a.Labels["instance"]+"="+a.Status)
		}
		sort.Strings(alerts)
		out = append(out, fmt.Sprintf("%s %s %s [%s]", d.body.Receiver, d.body.GroupKey, d.body.Status, strings.Join(alerts, " ")))
	}
	sort.Strings(out)
	return out
}

// TestAlarmMatchesAlertmanager gives the same configuration and the same
// sequence of alerts and silences to alarm and to Debian's Alertmanager,
// and compares the notifications each sends: grouping, inhibition,
// silencing, resolution and the group keys.
func TestAlarmMatchesAlertmanager(t *testing.T) {
	amBin := testkit.RequireBinary(t, "prometheus-alertmanager", "prometheus-alertmanager")
	amtool := testkit.RequireBinary(t, "amtool", "prometheus-alertmanager")
	alarmHookSrv, amHookSrv := newAlarmHook(t), newAlarmHook(t)
	configFor := func(url string) string {
		return alarmWriteConfig(t, fmt.Sprintf(`global:
  resolve_timeout: 5m
route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
  - matchers: ['severity="page"']
    receiver: pager
    group_by: [instance]
receivers:
- name: team
  webhook_configs:
  - url: %[1]s/team
- name: pager
  webhook_configs:
  - url: %[1]s/pager
inhibit_rules:
- source_matchers: [severity=critical]
  target_matchers: [severity=warning]
  equal: [instance]
`, url))
	}
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--notify-config", configFor(alarmHookSrv.srv.URL))
	amAddr := testkit.FreeAddr(t)
	dir := t.TempDir()
	cmd := exec.Command(amBin, "--config.file", configFor(amHookSrv.srv.URL), "--storage.path", dir,
		"--web.listen-address", amAddr, "--cluster.listen-address=")
	var amLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &amLog, &amLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager log:\n%s", amLog.String())
		}
	}()
	alarmWaitFor(t, 20*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get("http://" + amAddr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	both := []string{"http://" + p.Addr, "http://" + amAddr}
	for _, base := range both {
		out, err := exec.Command(amtool, "--alertmanager.url="+base, "silence", "add", "alertname=CPU", "--comment=test", "--duration=1h").CombinedOutput()
		if err != nil {
			t.Fatalf("amtool silence add on %s: %v %s", base, err, out)
		}
	}
	firing := `[
	 {"labels":{"alertname":"Disk","instance":"web01","severity":"warning"}},
	 {"labels":{"alertname":"Disk","instance":"web02","severity":"warning"}},
	 {"labels":{"alertname":"Down","instance":"web01","severity":"critical"}},
	 {"labels":{"alertname":"CPU","instance":"web03","severity":"warning"}},
	 {"labels":{"alertname":"Dead","instance":"db1","severity":"page"}}]`
	for _, base := range both {
		alarmPost(t, base, firing)
	}
	time.Sleep(2500 * time.Millisecond)
	// Down resolves: Disk on web01 is no longer inhibited; Dead resolves.
	end := time.Now().UTC().Format(time.RFC3339Nano)
	resolved := `[
	 {"labels":{"alertname":"Down","instance":"web01","severity":"critical"},"endsAt":"` + end + `"},
	 {"labels":{"alertname":"Dead","instance":"db1","severity":"page"},"endsAt":"` + end + `"}]`
	for _, base := range both {
		alarmPost(t, base, resolved)
	}
	time.Sleep(5 * time.Second)
	got, want := alarmSummarize(alarmHookSrv.deliveries()), alarmSummarize(amHookSrv.deliveries())
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notifications differ\nalarm:\n  %s\nalertmanager:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if len(got) < 5 {
		t.Fatalf("too few notifications to compare: %v", got)
	}
	t.Logf("both sent:\n  %s", strings.Join(got, "\n  "))
}

// alarmStartAlertmanager runs Debian's Alertmanager with config file cfg
// and returns its address.
func alarmStartAlertmanager(t *testing.T, amBin, cfg string) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(amBin, "--config.file", cfg, "--storage.path", t.TempDir(),
		"--web.listen-address", addr, "--cluster.listen-address=")
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
	alarmWaitFor(t, 20*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

// TestAlarmTimersMatchAlertmanager compares the timing of notifications:
// group_wait, an update at the next group_interval when a new alert joins,
// and repeats after repeat_interval, between alarm and Alertmanager given
// the same alerts at the same moments. Times must agree within a second.
func TestAlarmTimersMatchAlertmanager(t *testing.T) {
	amBin := testkit.RequireBinary(t, "prometheus-alertmanager", "prometheus-alertmanager")
	alarmHookSrv, amHookSrv := newAlarmHook(t), newAlarmHook(t)
	configFor := func(url string) string {
		return alarmWriteConfig(t, fmt.Sprintf(`route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
receivers:
- name: team
  webhook_configs:
  - url: %s/
`, url))
	}
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--notify-config", configFor(alarmHookSrv.srv.URL))
	amAddr := alarmStartAlertmanager(t, amBin, configFor(amHookSrv.srv.URL))
	both := []string{"http://" + p.Addr, "http://" + amAddr}
	// Prometheus-like: endsAt ahead, resent while firing.
	post := func(instances ...string) {
		end := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
		var items []string
		for _, in := range instances {
			items = append(items, `{"labels":{"alertname":"Rep","instance":"`+in+`"},"endsAt":"`+end+`"}`)
		}
		for _, base := range both {
			alarmPost(t, base, "["+strings.Join(items, ",")+"]")
		}
	}
	// Flushes fall at 1s, then every 2s; b joins between two of them, and
	// the repeat falls a second after it is due.
	start := time.Now()
	post("a")
	time.Sleep(4 * time.Second)
	post("a", "b")
	time.Sleep(7500 * time.Millisecond)
	type note struct {
		at     float64
		alerts string
	}
	reduce := func(ds []alarmDelivery) []note {
		var out []note
		for _, d := range ds {
			var in []string
			for _, a := range d.body.Alerts {
				in = append(in, a.Labels["instance"])
			}
			sort.Strings(in)
			out = append(out, note{d.at.Sub(start).Seconds(), strings.Join(in, ",")})
		}
		return out
	}
	got, want := reduce(alarmHookSrv.deliveries()), reduce(amHookSrv.deliveries())
	t.Logf("alarm: %v\nalertmanager: %v", got, want)
	if len(got) != len(want) || len(got) < 3 {
		t.Fatalf("alarm sent %d notifications, Alertmanager %d (want the same, at least 3)", len(got), len(want))
	}
	for i := range got {
		if got[i].alerts != want[i].alerts {
			t.Errorf("notification %d: alarm [%s], Alertmanager [%s]", i, got[i].alerts, want[i].alerts)
		}
		if d := got[i].at - want[i].at; d > 1 || d < -1 {
			t.Errorf("notification %d: alarm at %.1fs, Alertmanager at %.1fs", i, got[i].at, want[i].at)
		}
	}
}

// TestAlarmReload: `alarm ctl reload` applies a changed file; a broken
// file is refused and the running configuration stays.
func TestAlarmReload(t *testing.T) {
	first, second := newAlarmHook(t), newAlarmHook(t)
	text := `route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
receivers:
- name: hook
  webhook_configs:
  - url: %s/
`
	cfg := alarmWriteConfig(t, fmt.Sprintf(text, first.srv.URL))
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--notify-config", cfg)
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"One"}}]`)
	alarmWaitFor(t, 10*time.Second, "first receiver", func() bool { return len(first.deliveries()) == 1 })

	os.WriteFile(cfg, []byte("route:\n  receiver: nope\nreceivers: []\n"), 0o600)
	if _, errs, code := testkit.Run(t, "alarm", "", "ctl", "reload", "--addr", p.Addr); code == 0 {
		t.Fatalf("reload of a broken file succeeded: %s", errs)
	}
	os.WriteFile(cfg, []byte(fmt.Sprintf(text, second.srv.URL)), 0o600)
	if out, errs, code := testkit.Run(t, "alarm", "", "ctl", "reload", "--addr", p.Addr); code != 0 {
		t.Fatalf("reload: exit %d %s %s", code, out, errs)
	}
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"Two"}}]`)
	alarmWaitFor(t, 10*time.Second, "second receiver", func() bool { return len(second.deliveries()) == 1 })
	time.Sleep(300 * time.Millisecond)
	// One was already notified: the rebuilt groups do not send it again.
	if n := len(first.deliveries()); n != 1 {
		t.Fatalf("first receiver got %d notifications", n)
	}
	if d := second.deliveries(); len(d) != 1 || d[0].body.GroupLabels["alertname"] != "Two" {
		t.Fatalf("second receiver got %+v", d)
	}
}

// TestAlarmHistoryInClickHouse: with --clickhouse-addr, transitions land
// in the alert_events table too.
func TestAlarmHistoryInClickHouse(t *testing.T) {
	ch := testkit.ClickHouse(t)
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--clickhouse-addr", ch.NativeAddr(), "--clickhouse-database", ch.Database())
	alarmPost(t, "http://"+p.Addr, `[{"labels":{"alertname":"InClickHouse","endpoint":"web01"}}]`)
	conn := ch.Conn(t)
	alarmWaitFor(t, 20*time.Second, "the firing event in ClickHouse", func() bool {
		rows, err := conn.Query(context.Background(), "SELECT count() FROM alert_events WHERE kind = 'firing' AND alertname = 'InClickHouse' AND has(label_values, 'web01')")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n uint64
		for rows.Next() {
			rows.Scan(&n)
		}
		return n == 1
	})
}

// TestAlarmKafkaIntake: alerts produced to a Kafka topic reach alarm.
func TestAlarmKafkaIntake(t *testing.T) {
	k := testkit.Kafka(t, testkit.KafkaTopic("alerts", 1))
	p := testkit.Start(t, "alarm", testkit.StartOptions{}, "--kafka-brokers", strings.Join(k.Addrs(), ","))
	prod := k.Client(t)
	rec := &kgo.Record{Topic: "alerts", Value: []byte(`[{"labels":{"alertname":"FromKafka","instance":"web01"}}]`)}
	if err := prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	alarmWaitFor(t, 20*time.Second, "the alert from Kafka", func() bool {
		_, body := get(t, "http://"+p.Addr+"/api/v2/alerts")
		return strings.Contains(body, `"alertname":"FromKafka"`)
	})
}

// TestAlarmPrometheusDelivers: a real Prometheus with alarm as its
// Alertmanager delivers a firing alert through the v2 API.
func TestAlarmPrometheusDelivers(t *testing.T) {
	prom := testkit.RequireBinary(t, "prometheus", "prometheus")
	p := testkit.Start(t, "alarm", testkit.StartOptions{})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(`groups:
- name: test
  interval: 1s
  rules:
  - alert: AlwaysFiring
    expr: vector(1)
    labels: {severity: warning}
    annotations: {summary: "it fires"}
`), 0o600)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(fmt.Sprintf(`global:
  evaluation_interval: 1s
rule_files: [%q]
alerting:
  alertmanagers:
  - static_configs: [{targets: [%q]}]
`, filepath.Join(dir, "rules.yml"), p.Addr)), 0o600)
	cmd := exec.Command(prom, "--config.file", filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", testkit.FreeAddr(t),
		// Prometheus drops what it evaluates before it has found its
		// Alertmanagers and resends only after this delay (1m by default).
		"--rules.alert.resend-delay=1s")
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
	var body string
	alarmWaitFor(t, 30*time.Second, "Prometheus's alert in alarm", func() bool {
		_, body = get(t, "http://"+p.Addr+"/api/v2/alerts")
		return strings.Contains(body, `"alertname":"AlwaysFiring"`)
	})
	if !strings.Contains(body, `"summary":"it fires"`) || !strings.Contains(body, `"generatorURL":"http`) {
		t.Fatalf("alert from Prometheus: %s", body)
	}
}
