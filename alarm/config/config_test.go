package config

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

const sample = `
global:
  resolve_timeout: 1m
route:
  receiver: default
  group_by: [alertname, cluster]
  group_wait: 10s
  routes:
  - matchers: ['severity="critical"']
    receiver: pager
    group_interval: 1m
    continue: true
  - match: {team: db}
    receiver: db
    group_by: ['...']
    routes:
    - match_re: {service: "mysql|pg"}
      repeat_interval: 1d
receivers:
- name: default
- name: pager
  webhook_configs:
  - url: http://127.0.0.1:9/pager
    send_resolved: false
- name: db
  webhook_configs:
  - url: http://127.0.0.1:9/db
    max_alerts: 5
inhibit_rules:
- source_matchers: [severity=critical]
  target_matchers: [severity=warning]
  equal: [cluster]
`

func TestParseSample(t *testing.T) {
	c, err := Parse("sample", []byte(sample), http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	if c.ResolveTimeout != time.Minute || len(c.Receivers) != 3 || len(c.InhibitRules) != 1 {
		t.Fatalf("config %+v", c)
	}
	tests := []struct {
		labels    alert.Labels
		receivers []string
		groupKey  string
	}{
		{alert.Labels{"alertname": "A"}, []string{"default"}, `{}:{alertname="A"}`},
		{alert.Labels{"alertname": "A", "severity": "critical", "cluster": "x"}, []string{"pager"}, `{}/{severity="critical"}:{alertname="A", cluster="x"}`},
		{alert.Labels{"alertname": "A", "severity": "critical", "team": "db"}, []string{"pager", "db"}, ""},
		{alert.Labels{"alertname": "B", "team": "db", "service": "pg"}, []string{"db"}, `{}/{team="db"}/{service=~"mysql|pg"}:{alertname="B", service="pg", team="db"}`},
	}
	for _, tt := range tests {
		rs := c.Route.Match(tt.labels)
		var got []string
		for _, r := range rs {
			got = append(got, r.Receiver)
		}
		if strings.Join(got, ",") != strings.Join(tt.receivers, ",") {
			t.Errorf("%v routed to %v, want %v", tt.labels, got, tt.receivers)
		}
		if tt.groupKey != "" && rs[0].GroupKey(tt.labels) != tt.groupKey {
			t.Errorf("%v group key %s, want %s", tt.labels, rs[0].GroupKey(tt.labels), tt.groupKey)
		}
	}
	// Inheritance: the pg route keeps its parent's group_wait and group_by
	// and overrides repeat_interval.
	pg := c.Route.Routes[1].Routes[0]
	if pg.GroupWait != 10*time.Second || !pg.GroupByAll || pg.RepeatInterval != 24*time.Hour || pg.GroupInterval != 5*time.Minute {
		t.Fatalf("inherited timers: %+v", pg)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"unknown key", "route:\n  receiver: a\n  group_wiat: 1s\nreceivers:\n- name: a\n", "group_wiat"},
		{"undefined receiver", "route:\n  receiver: nope\nreceivers:\n- name: a\n", `receiver "nope" is not defined`},
		{"no route", "receivers:\n- name: a\n", "no route"},
		{"bad url", "route:\n  receiver: a\nreceivers:\n- name: a\n  webhook_configs:\n  - url: ftp://x\n", "not an http(s) URL"},
		{"bad matcher", "route:\n  receiver: a\n  routes:\n  - matchers: ['a=~\"(\"']\nreceivers:\n- name: a\n", "route.routes[0]"},
		{"bad duration", "route:\n  receiver: a\n  group_wait: 5x\nreceivers:\n- name: a\n", "unknown unit"},
		{"twice", "route:\n  receiver: a\nreceivers:\n- name: a\n- name: a\n", "used twice"},
		{"root matchers", "route:\n  receiver: a\n  match: {a: b}\nreceivers:\n- name: a\n", "root route must not have matchers"},
		{"zero interval", "route:\n  receiver: a\n  group_interval: 0s\nreceivers:\n- name: a\n", "group_interval must be positive"},
		{"bad template", "route:\n  receiver: a\nreceivers:\n- name: a\n  webhook_configs:\n  - url: http://x/\n    template: '{{ .Nope'\n", "template"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.name, []byte(tt.text), http.DefaultClient)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	c, err := Default("http://127.0.0.1:9/hook", http.DefaultClient)
	if err != nil || c.Route.Receiver != "default" || len(c.Receivers) != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	if c.Route.GroupKey(alert.Labels{"alertname": "X", "a": "b"}) != `{}:{alertname="X"}` {
		t.Fatal(c.Route.GroupKey(alert.Labels{"alertname": "X"}))
	}
}

func TestTimeIntervalsAndMaintenance(t *testing.T) {
	text := `
route:
  receiver: a
  routes:
  - matchers: [team=db]
    mute_time_intervals: [nights]
receivers:
- name: a
time_intervals:
- name: nights
  time_intervals:
  - times: [{start_time: "00:00", end_time: "06:00"}]
- name: sundays
  time_intervals:
  - weekdays: [sunday]
maintenance_windows:
- name: db-patching
  matchers: ['service=~"mysql|pg"']
  time_intervals: [sundays]
`
	c, err := Parse("t", []byte(text), http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TimeIntervals) != 2 || len(c.Maintenance) != 1 {
		t.Fatalf("%+v", c)
	}
	sunday := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	m := c.Maintenance[0]
	if !m.Mutes(alert.Labels{"service": "pg"}, sunday) || m.Mutes(alert.Labels{"service": "web"}, sunday) || m.Mutes(alert.Labels{"service": "pg"}, sunday.Add(24*time.Hour)) {
		t.Fatal("maintenance window")
	}
	for _, bad := range []string{
		strings.Replace(text, "mute_time_intervals: [nights]", "mute_time_intervals: [days]", 1),
		strings.Replace(text, "time_intervals: [sundays]", "time_intervals: [mondays]", 1),
		strings.Replace(text, "name: sundays", "name: nights", 1),
	} {
		if _, err := Parse("t", []byte(bad), http.DefaultClient); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}
