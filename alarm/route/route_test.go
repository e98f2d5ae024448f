package route

import (
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

func TestParseDuration(t *testing.T) {
	tests := map[string]time.Duration{
		"30s": 30 * time.Second, "5m": 5 * time.Minute, "4h": 4 * time.Hour, "1d12h": 36 * time.Hour,
		"1w": 7 * 24 * time.Hour, "100ms": 100 * time.Millisecond, "1h30m0s": 90 * time.Minute, "1.5s": 1500 * time.Millisecond, "0": 0,
	}
	for in, want := range tests {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "5x", "d", "99999999999999y"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func TestMatchOrderAndContinue(t *testing.T) {
	yes := map[string]bool{"root": true, "a": true, "b": true, "c": true}
	root, err := Build(&Config{Receiver: "root", GroupBy: []string{"alertname"}, Routes: []*Config{
		{Receiver: "a", Matchers: []string{`team="x"`}, Continue: true},
		{Receiver: "b", Matchers: []string{`team=~"x|y"`}},
		{Receiver: "c", Matchers: []string{`team="x"`}},
	}}, yes, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		team string
		want string
	}{
		{"x", "a,b"}, // continue on a, stop at b: c is never reached
		{"y", "b"},
		{"z", "root"},
	}
	for _, tt := range tests {
		var got string
		for i, r := range root.Match(alert.Labels{"team": tt.team, "alertname": "A"}) {
			if i > 0 {
				got += ","
			}
			got += r.Receiver
		}
		if got != tt.want {
			t.Errorf("team=%s: %s, want %s", tt.team, got, tt.want)
		}
	}
	if k := root.Routes[1].Key(); k != `{}/{team=~"x|y"}` {
		t.Errorf("key %s", k)
	}
	n := 0
	root.Walk(func(*Route) { n++ })
	if n != 4 {
		t.Errorf("Walk visited %d", n)
	}
	if _, err := Build(&Config{Receiver: "root", GroupBy: []string{"...", "a"}}, yes, nil); err == nil {
		t.Error("group_by with '...' and more accepted")
	}
}
