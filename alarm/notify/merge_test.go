package notify

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

func run(t *testing.T, c ReceiverConfig, now func() time.Time) *Notifier {
	t.Helper()
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := BuildReceiver(c, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	n := New(db, []*Receiver{r}, Options{Now: now, Tick: 10 * time.Millisecond, ExternalURL: "http://alarm:7140", RetryInitial: 10 * time.Millisecond},
		slog.New(slog.DiscardHandler), metrics.NewSet(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return n
}

func prioAlert(host, prio, metric string) *alert.Alert {
	now := time.Now()
	return &alert.Alert{
		Labels:      alert.Labels{"alertname": "Falcon", "endpoint": host, "priority": prio, "metric": metric},
		Annotations: alert.Labels{"condition": metric + " < 5"},
		StartsAt:    now, EndsAt: now.Add(time.Hour), UpdatedAt: now,
	}
}

func TestMergeLowPriorities(t *testing.T) {
	h := newHook(t)
	n := run(t, ReceiverConfig{Name: "team", WebhookConfigs: []WebhookConfig{{URL: h.srv.URL}},
		Merge: &MergeConfig{Interval: 100 * time.Millisecond}}, time.Now)
	ctx := context.Background()
	// Each host is its own group, as open-falcon alerts per endpoint.
	for _, host := range []string{"web01", "web02", "web03", "web04"} {
		g := group(prioAlert(host, "3", "df.bytes.free.percent"))
		g.GroupKey = "{}:{endpoint=\"" + host + "\"}"
		if err := n.Notify(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	urgent := group(prioAlert("db01", "P0", "mysql.alive"))
	urgent.GroupKey = `{}:{endpoint="db01"}`
	n.Notify(ctx, urgent)
	got := h.wait(t, 1)
	if len(got[0].payload.Alerts) != 1 || got[0].payload.Alerts[0].Labels["endpoint"] != "db01" {
		t.Fatalf("urgent alert not sent first and alone: %+v", got[0].payload)
	}
	got = h.wait(t, 2)
	p := got[1].payload
	want := "4 hosts: df.bytes.free.percent < 5, e.g. web01, web02, web03, …"
	if len(p.Alerts) != 4 || p.CommonAnnotations["summary"] != want {
		t.Fatalf("merged message: summary %q, %d alerts", p.CommonAnnotations["summary"], len(p.Alerts))
	}
	if !strings.HasPrefix(p.CommonAnnotations["alarm_url"], "http://alarm:7140/api/v2/alerts?filter=") || p.GroupLabels["priority"] != "3" {
		t.Fatalf("merged message: %+v", p)
	}
	time.Sleep(250 * time.Millisecond)
	if h.count() != 2 {
		t.Fatalf("%d requests; the merged alerts were sent again", h.count())
	}
}

func TestStormControlFoldsIntoSummary(t *testing.T) {
	h := newHook(t)
	c := &clock{t: time.Now()}
	n := run(t, ReceiverConfig{Name: "team", WebhookConfigs: []WebhookConfig{{URL: h.srv.URL}},
		RateLimit: &RateLimitConfig{PerMinute: 6, Burst: 2}}, c.now) // one token every 10s
	ctx := context.Background()
	for i := range 10 {
		g := group(firingAlert(c, "web"+string(rune('a'+i))))
		g.GroupKey = "g" + string(rune('a'+i))
		n.Notify(ctx, g)
	}
	// Two pass on the burst; the other eight wait for one summary.
	h.wait(t, 2)
	time.Sleep(100 * time.Millisecond)
	if h.count() != 2 {
		t.Fatalf("%d requests before the limit allows more", h.count())
	}
	c.add(10 * time.Second)
	got := h.wait(t, 3)
	time.Sleep(100 * time.Millisecond)
	got = h.wait(t, 3)
	if len(got) != 3 {
		t.Fatalf("%d requests, want 2 + 1 summary", len(got))
	}
	s := got[2].payload
	if len(s.Alerts) != 8 || !strings.Contains(s.CommonAnnotations["summary"], "8 notifications for 8 groups") || s.GroupKey != "storm:team/webhook[0]" {
		t.Fatalf("summary: %d alerts, %+v", len(s.Alerts), s.CommonAnnotations)
	}
	if p, _ := n.Pending(); len(p) != 0 {
		t.Fatalf("outbox keeps %d", len(p))
	}
}

func TestTemplateAndExecReceivers(t *testing.T) {
	h := newHook(t)
	out := filepath.Join(t.TempDir(), "exec.json")
	tmpl := `{"text": {{ json (printf "%s: %d firing, %d resolved" .Status (len .Firing) (len .Resolved)) }}}`
	n := run(t, ReceiverConfig{Name: "team",
		WebhookConfigs: []WebhookConfig{{URL: h.srv.URL, Template: tmpl, Headers: map[string]string{"X-Team": "ops"}}},
		ExecConfigs:    []ExecConfig{{Command: []string{"sh", "-c", "cat > " + out}}},
	}, time.Now)
	a := firingAlert(&clock{t: time.Now()}, "web01")
	n.Notify(context.Background(), group(a))
	got := h.wait(t, 1)
	if got[0].raw != `{"text": "firing: 1 firing, 0 resolved"}` || got[0].team != "ops" {
		t.Fatalf("template webhook got %q, X-Team %q", got[0].raw, got[0].team)
	}
	deadline := time.Now().Add(5 * time.Second)
	var body []byte
	for time.Now().Before(deadline) {
		if body, _ = os.ReadFile(out); len(body) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(string(body), `"version":"4"`) || !strings.Contains(string(body), `"instance":"web01"`) {
		t.Fatalf("exec receiver got %q", body)
	}
}

func TestTemplateBody(t *testing.T) {
	r, err := BuildReceiver(ReceiverConfig{Name: "chat", WebhookConfigs: []WebhookConfig{{URL: "http://x/",
		Template: `{{ range .Resolved }}{{ .Labels.instance }} recovered after {{ round .Duration }}{{ end }}`}}}, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	a := &alert.Alert{Labels: alert.Labels{"instance": "web01"}, StartsAt: now.Add(-90 * time.Minute), EndsAt: now.Add(-time.Minute)}
	body, _, err := r.integrations[0].render(BuildPayload("chat", "k", "", nil, []*alert.Alert{a}, 0, now), now)
	if err != nil || string(body) != "web01 recovered after 1h29m0s" {
		t.Fatalf("%q %v", body, err)
	}
}
