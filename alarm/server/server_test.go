package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alertstore"
	"github.com/opskit/opskit/alarm/config"
	"github.com/opskit/opskit/alarm/history"
	"github.com/opskit/opskit/alarm/inhibit"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/silence"
	"github.com/opskit/opskit/alarm/store"
)

const testConfig = `
route:
  receiver: default
  group_by: [alertname]
  group_wait: 1h
  routes:
  - matchers: [team=db]
    receiver: db
receivers:
- name: default
- name: db
inhibit_rules:
- source_matchers: [severity=critical]
  target_matchers: [severity=warning]
  equal: [instance]
`

type fixture struct {
	srv  *Server
	http *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test", []byte(testConfig), http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	set := metrics.NewSet()
	sil, _ := silence.Open(db, time.Now, time.Hour)
	alerts, err := alertstore.Open(dir, time.Now, time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	hist := history.New(db, time.Hour, time.Now, nil, log, set)
	n := notify.New(db, cfg.Receivers, notify.Options{}, log, set, hist)
	ctx, cancel := context.WithCancel(context.Background())
	s := New(ctx, Options{ResolveTimeout: 5 * time.Minute, MaxBodyBytes: 4096, Now: time.Now, ConfigText: cfg.Text},
		Parts{Alerts: alerts, Silences: sil, Inhibitor: inhibit.New(cfg.InhibitRules, time.Now), Route: cfg.Route, Notifier: n, History: hist}, log, set)
	histDone := make(chan struct{})
	go func() { hist.Run(ctx); close(histDone) }()
	mux := http.NewServeMux()
	s.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		cancel()
		<-histDone
		s.Dispatcher.Stop()
		alerts.Close()
		db.Close()
	})
	return &fixture{srv: s, http: hs}
}

func (f *fixture) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPostAndQueryAlerts(t *testing.T) {
	f := newFixture(t)
	code, body := f.do(t, "POST", "/api/v2/alerts", `[
	 {"labels":{"alertname":"Disk","instance":"web01","severity":"critical"}},
	 {"labels":{"alertname":"Disk","instance":"web01","severity":"warning","team":"db"},"annotations":{"summary":"s"}},
	 {"labels":{"alertname":"Old","instance":"web09"},"startsAt":"2020-01-01T00:00:00Z","endsAt":"2020-01-01T01:00:00Z"},
	 {"labels":{}}]`)
	if code != 400 || !strings.Contains(body, `"accepted":3`) || !strings.Contains(body, `"index":3`) {
		t.Fatalf("POST = %d %s", code, body)
	}
	code, body = f.do(t, "GET", "/api/v2/alerts", "")
	var got []gettableAlert
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
		t.Fatalf("GET = %d %s", code, body)
	}
	if len(got) != 2 {
		t.Fatalf("%d alerts listed, want 2 (the resolved one hidden): %s", len(got), body)
	}
	var warning gettableAlert
	for _, g := range got {
		if g.Labels["severity"] == "warning" {
			warning = g
		}
	}
	if warning.Status.State != "suppressed" || len(warning.Status.InhibitedBy) != 1 || warning.Receivers[0].Name != "db" {
		t.Fatalf("inhibited alert: %+v", warning)
	}
	for _, tt := range []struct {
		query string
		want  int
	}{
		{"?filter=" + url.QueryEscape(`severity="critical"`), 1},
		{"?inhibited=false", 1},
		{"?active=false", 1},
		{"?receiver=db", 1},
		{"?receiver=nobody", 0},
	} {
		_, body := f.do(t, "GET", "/api/v2/alerts"+tt.query, "")
		var got []gettableAlert
		json.Unmarshal([]byte(body), &got)
		if len(got) != tt.want {
			t.Errorf("GET %s: %d alerts, want %d", tt.query, len(got), tt.want)
		}
	}
	if code, _ := f.do(t, "GET", "/api/v2/alerts?filter=%3D%3D", ""); code != 400 {
		t.Errorf("bad filter: %d", code)
	}
	code, body = f.do(t, "GET", "/api/v2/alerts/groups", "")
	var groups []alertGroup
	json.Unmarshal([]byte(body), &groups)
	if code != 200 || len(groups) != 2 {
		t.Fatalf("groups = %d %s", code, body)
	}
}

func TestBadBodies(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		body string
		code int
	}{
		{`{"labels":{}}`, 400},
		{`nonsense`, 400},
		{`[` + strings.Repeat(`{"labels":{"a":"b"}},`, 400) + `{"labels":{"a":"b"}}]`, 413},
	} {
		if code, body := f.do(t, "POST", "/api/v2/alerts", tt.body); code != tt.code {
			t.Errorf("POST %.30s: %d %s, want %d", tt.body, code, body, tt.code)
		}
	}
}

func TestSilencesAPI(t *testing.T) {
	f := newFixture(t)
	f.do(t, "POST", "/api/v2/alerts", `[{"labels":{"alertname":"Disk","instance":"web01"}}]`)
	start := time.Now().UTC().Format(time.RFC3339)
	end := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	code, body := f.do(t, "POST", "/api/v2/silences", `{"matchers":[{"name":"instance","value":"web01","isRegex":false,"isEqual":true}],"startsAt":"`+start+`","endsAt":"`+end+`","createdBy":"me","comment":"maint"}`)
	var created struct{ SilenceID string }
	json.Unmarshal([]byte(body), &created)
	if code != 200 || created.SilenceID == "" {
		t.Fatalf("POST silence = %d %s", code, body)
	}
	_, body = f.do(t, "GET", "/api/v2/alerts", "")
	if !strings.Contains(body, `"silencedBy":["`+created.SilenceID+`"]`) {
		t.Fatalf("alert not silenced: %s", body)
	}
	code, body = f.do(t, "GET", "/api/v2/silence/"+created.SilenceID, "")
	if code != 200 || !strings.Contains(body, `"state":"active"`) || !strings.Contains(body, `"updatedAt"`) {
		t.Fatalf("GET silence = %d %s", code, body)
	}
	_, body = f.do(t, "GET", "/api/v2/silences?filter=instance%3Dweb01", "")
	if !strings.Contains(body, created.SilenceID) {
		t.Fatalf("filtered silences: %s", body)
	}
	_, body = f.do(t, "GET", "/api/v2/silences?filter=instance%3Dweb02", "")
	if body != "[]\n" {
		t.Fatalf("filter web02: %s", body)
	}
	if code, _ := f.do(t, "DELETE", "/api/v2/silence/"+created.SilenceID, ""); code != 200 {
		t.Fatalf("DELETE = %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/api/v2/silence/"+created.SilenceID, ""); code != 400 {
		t.Fatalf("second DELETE = %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/api/v2/silence/nope", ""); code != 404 {
		t.Fatalf("DELETE unknown = %d", code)
	}
	if code, _ := f.do(t, "POST", "/api/v2/silences", `{"matchers":[],"startsAt":"`+start+`","endsAt":"`+end+`"}`); code != 400 {
		t.Fatalf("empty silence = %d", code)
	}
	// History has the silence and the firing alert, found by label.
	time.Sleep(100 * time.Millisecond)
	_, body = f.do(t, "GET", "/api/alarm/history?since=1h&match=instance%3Dweb01", "")
	for _, kind := range []string{`"kind":"firing"`, `"kind":"silence_set"`, `"kind":"silence_expired"`} {
		if !strings.Contains(body, kind) {
			t.Errorf("history lacks %s:\n%s", kind, body)
		}
	}
}

func TestStatusAndReceivers(t *testing.T) {
	f := newFixture(t)
	code, body := f.do(t, "GET", "/api/v2/status", "")
	if code != 200 || !strings.Contains(body, `"status":"disabled"`) || !strings.Contains(body, "inhibit_rules") || !strings.Contains(body, `"versionInfo"`) {
		t.Fatalf("status = %d %s", code, body)
	}
	_, body = f.do(t, "GET", "/api/v2/receivers", "")
	if body != `[{"name":"db"},{"name":"default"}]`+"\n" {
		t.Fatalf("receivers = %s", body)
	}
	for _, p := range []string{"/api/alarm/deadletters", "/api/alarm/outbox"} {
		if code, body := f.do(t, "GET", p, ""); code != 200 || body != "[]\n" {
			t.Errorf("%s = %d %s", p, code, body)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     now.Add(-24 * time.Hour),
		"2h":                   now.Add(-2 * time.Hour),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2026-01-01T00:00:00Z": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSince("yesterday", now); err == nil {
		t.Error("bad since accepted")
	}
}
