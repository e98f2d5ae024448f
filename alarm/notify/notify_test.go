package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

// hook is a webhook receiver whose answers the test scripts.
type hook struct {
	mu       sync.Mutex
	answers  []int // status per request; 200 once exhausted
	delay    time.Duration
	got      []received
	srv      *httptest.Server
	arrivals chan struct{}
}

type received struct {
	raw     string
	team    string
	key     string
	payload Payload
	status  int
}

func newHook(t *testing.T, answers ...int) *hook {
	h := &hook{answers: answers, arrivals: make(chan struct{}, 100)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		code := 200
		if len(h.answers) > 0 {
			code, h.answers = h.answers[0], h.answers[1:]
		}
		var p Payload
		json.Unmarshal(body, &p)
		h.got = append(h.got, received{string(body), r.Header.Get("X-Team"), r.Header.Get("Idempotency-Key"), p, code})
		delay := h.delay
		h.mu.Unlock()
		time.Sleep(delay)
		w.WriteHeader(code)
		h.arrivals <- struct{}{}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) wait(t *testing.T, n int) []received {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		got := append([]received(nil), h.got...)
		h.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-h.arrivals:
		case <-deadline:
			t.Fatalf("got %d webhook requests, want %d", len(got), n)
		}
	}
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func setup(t *testing.T, dir string, url string, c *clock, opt Options) (*Notifier, context.CancelFunc, *store.DB) {
	t.Helper()
	db, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := BuildReceiver(ReceiverConfig{Name: "team", WebhookConfigs: []WebhookConfig{{URL: url}}}, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	opt.Now = c.now
	if opt.RetryInitial == 0 {
		opt.RetryInitial = 10 * time.Millisecond
	}
	n := New(db, []*Receiver{r}, opt, slog.New(slog.DiscardHandler), metrics.NewSet(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done; db.Close() }
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			stop()
		}
	})
	return n, stop, db
}

func firingAlert(c *clock, name string) *alert.Alert {
	return &alert.Alert{Labels: alert.Labels{"alertname": "Disk", "instance": name}, Annotations: alert.Labels{},
		StartsAt: c.now(), EndsAt: c.now().Add(24 * time.Hour), UpdatedAt: c.now()}
}

func group(alerts ...*alert.Alert) *Group {
	return &Group{Receiver: "team", GroupKey: `{}:{alertname="Disk"}`, GroupLabels: alert.Labels{"alertname": "Disk"}, RepeatInterval: time.Hour, Alerts: alerts}
}

func TestDedupRepeatAndResolve(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t)
	n, _, _ := setup(t, t.TempDir(), h.srv.URL, c, Options{})
	ctx := context.Background()
	a1 := firingAlert(c, "web01")
	steps := []struct {
		name    string
		alerts  []*alert.Alert
		advance time.Duration
		want    int // total requests after the step
		status  string
	}{
		{"first firing", []*alert.Alert{a1}, 0, 1, "firing"},
		{"same again", []*alert.Alert{a1}, time.Minute, 1, ""},
		{"a new alert fires", []*alert.Alert{a1, firingAlert(c, "web02")}, time.Minute, 2, "firing"},
		{"subset of what was sent", []*alert.Alert{a1}, time.Minute, 2, ""},
		{"repeat interval passed", []*alert.Alert{a1}, time.Hour, 3, "firing"},
	}
	for _, s := range steps {
		c.add(s.advance)
		if err := n.Notify(ctx, group(s.alerts...)); err != nil {
			t.Fatal(err)
		}
		if s.status != "" {
			got := h.wait(t, s.want)
			if got[s.want-1].payload.Status != s.status {
				t.Fatalf("%s: status %s", s.name, got[s.want-1].payload.Status)
			}
		}
		time.Sleep(30 * time.Millisecond)
		if h.count() != s.want {
			t.Fatalf("%s: %d requests, want %d", s.name, h.count(), s.want)
		}
	}
	// Resolution: reported once, then nothing.
	c.add(time.Minute)
	res := *a1
	res.EndsAt = c.now().Add(-time.Second)
	n.Notify(ctx, group(&res))
	got := h.wait(t, 4)
	p := got[3].payload
	if p.Status != "resolved" || p.Alerts[0].Status != "resolved" || p.Alerts[0].EndsAt.IsZero() || p.Version != "4" || p.GroupKey != `{}:{alertname="Disk"}` {
		t.Fatalf("resolved payload %+v", p)
	}
	n.Notify(ctx, group(&res))
	time.Sleep(30 * time.Millisecond)
	if h.count() != 4 {
		t.Fatalf("resolution sent twice")
	}
	keys := map[string]bool{}
	for _, r := range got {
		if len(r.key) != 32 || keys[r.key] {
			t.Fatalf("idempotency keys not unique per notification: %v", got)
		}
		keys[r.key] = true
	}
}

func TestRetryKeepsKeyAndDelivers(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t, 500, 503, 429)
	n, _, _ := setup(t, t.TempDir(), h.srv.URL, c, Options{})
	n.Notify(context.Background(), group(firingAlert(c, "web01")))
	got := h.wait(t, 4)
	for _, r := range got[1:] {
		if r.key != got[0].key {
			t.Fatalf("retry changed the Idempotency-Key: %v", got)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if h.count() != 4 {
		t.Fatalf("%d requests after success", h.count())
	}
	if p, _ := n.Pending(); len(p) != 0 {
		t.Fatalf("outbox not empty: %v", p)
	}
}

func TestPermanentFailureDeadLettersAndRetriesNextFlush(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t, 400)
	n, _, _ := setup(t, t.TempDir(), h.srv.URL, c, Options{})
	a := firingAlert(c, "web01")
	n.Notify(context.Background(), group(a))
	h.wait(t, 1)
	var dl []*Notification
	for range 100 {
		if dl, _ = n.DeadLetters(); len(dl) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(dl) != 1 || !strings.Contains(dl[0].LastError, "HTTP 400") || dl[0].Attempts != 1 {
		t.Fatalf("dead letters %+v", dl)
	}
	// The log was restored: the next flush of the same group sends again.
	c.add(time.Minute)
	n.Notify(context.Background(), group(a))
	h.wait(t, 2)
}

func TestTimeLimitDeadLetters(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t)
	h.delay = 200 * time.Millisecond
	n, _, _ := setup(t, t.TempDir(), h.srv.URL, c, Options{SendTimeout: 20 * time.Millisecond, RetryTimeout: 50 * time.Millisecond})
	n.Notify(context.Background(), group(firingAlert(c, "web01")))
	var dl []*Notification
	for range 200 {
		c.add(10 * time.Millisecond)
		if dl, _ = n.DeadLetters(); len(dl) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(dl) != 1 || dl[0].Attempts < 1 || !strings.Contains(dl[0].LastError, "deadline") {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestOutboxSurvivesRestart(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t, 500, 500, 500, 500, 500, 500, 500, 500)
	dir := t.TempDir()
	n, stop, _ := setup(t, dir, h.srv.URL, c, Options{RetryInitial: time.Hour})
	a := firingAlert(c, "web01")
	n.Notify(context.Background(), group(a))
	first := h.wait(t, 1)
	stop()
	h.mu.Lock()
	h.answers = nil
	h.mu.Unlock()
	n2, _, _ := setup(t, dir, h.srv.URL, c, Options{})
	got := h.wait(t, 2)
	if got[1].key != first[0].key || got[1].status != 200 {
		t.Fatalf("after restart: %+v (first key %s)", got[1], first[0].key)
	}
	// The log says it was sent: the same flush again sends nothing.
	n2.Notify(context.Background(), group(a))
	time.Sleep(50 * time.Millisecond)
	if h.count() != 2 {
		t.Fatalf("%d requests", h.count())
	}
}

func TestSendResolvedFalseAndMaxAlerts(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t)
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	no := false
	r, _ := BuildReceiver(ReceiverConfig{Name: "team", WebhookConfigs: []WebhookConfig{{URL: h.srv.URL, SendResolved: &no, MaxAlerts: 1}}}, http.DefaultClient)
	n := New(db, []*Receiver{r}, Options{Now: c.now}, slog.New(slog.DiscardHandler), metrics.NewSet(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	a, b := firingAlert(c, "web01"), firingAlert(c, "web02")
	n.Notify(ctx, group(a, b))
	got := h.wait(t, 1)
	if len(got[0].payload.Alerts) != 1 || got[0].payload.TruncatedAlerts != 1 {
		t.Fatalf("max_alerts: %+v", got[0].payload)
	}
	resolved := *a
	resolved.EndsAt = c.now().Add(-time.Second)
	c.add(time.Minute)
	n.Notify(ctx, group(&resolved, b))
	time.Sleep(50 * time.Millisecond)
	if h.count() != 1 {
		t.Fatal("a resolution was sent with send_resolved false")
	}
}

func TestNeedsUpdate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fp := func(v ...alert.Fingerprint) []alert.Fingerprint { return v }
	prev := &LogEntry{Firing: fp(1, 2), Resolved: fp(3), Timestamp: now.Add(-time.Minute)}
	tests := []struct {
		name             string
		prev             *LogEntry
		firing, resolved []alert.Fingerprint
		sendResolved     bool
		want             bool
	}{
		{"nothing sent yet, firing", nil, fp(1), nil, true, true},
		{"nothing sent yet, only resolved", nil, nil, fp(1), true, false},
		{"new firing", prev, fp(1, 4), nil, true, true},
		{"subset firing", prev, fp(1), fp(3), true, false},
		{"all resolved after firing", prev, nil, fp(1, 2), true, true},
		{"new resolved, send_resolved", prev, fp(1), fp(2, 3), true, true},
		{"new resolved, no send_resolved", prev, fp(1), fp(2, 3), false, false},
		{"nothing fired before, nothing fires", &LogEntry{Timestamp: now}, nil, fp(5), true, false},
	}
	for _, tt := range tests {
		if got := needsUpdate(tt.prev, tt.firing, tt.resolved, tt.sendResolved, time.Hour, now); got != tt.want {
			t.Errorf("%s: %v", tt.name, got)
		}
	}
	if !needsUpdate(prev, fp(1), nil, true, 30*time.Second, now) {
		t.Error("repeat interval passed but no update")
	}
}

func TestNotificationEncoding(t *testing.T) {
	for _, body := range []string{`{"a":[1,2]}`, `hello "world"`, ``} {
		nt := &Notification{ID: "x", Receiver: "r", Body: []byte(body), Headers: map[string]string{"a": "b"}}
		raw, err := nt.encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeNotification(raw)
		if err != nil || string(back.Body) != body || back.ID != "x" || back.Headers["a"] != "b" || back.BodySize != len(body) {
			t.Errorf("%q: read back %+v %v", body, back, err)
		}
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {0, 0, 0, 9, '{', '}'}, {0, 0, 0, 1, 'x'}} {
		if _, err := decodeNotification(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
