package inhibit

import (
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

func TestInhibition(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rule, err := BuildRule(RuleConfig{
		SourceMatchers: []string{`severity="critical"`},
		TargetMatchers: []string{`severity=~"warning|critical"`},
		Equal:          []string{"cluster"},
	})
	if err != nil {
		t.Fatal(err)
	}
	in := New([]*Rule{rule}, func() time.Time { return now })
	critA := &alert.Alert{Labels: alert.Labels{"alertname": "Down", "severity": "critical", "cluster": "a"}, EndsAt: now.Add(time.Minute)}
	in.Observe(critA)

	tests := []struct {
		name   string
		labels alert.Labels
		want   int
	}{
		{"same cluster warning", alert.Labels{"alertname": "Slow", "severity": "warning", "cluster": "a"}, 1},
		{"other cluster", alert.Labels{"alertname": "Slow", "severity": "warning", "cluster": "b"}, 0},
		{"missing equal label differs from a", alert.Labels{"alertname": "Slow", "severity": "warning"}, 0},
		{"target does not match", alert.Labels{"alertname": "Slow", "severity": "info", "cluster": "a"}, 0},
		{"the source does not mute itself", critA.Labels, 0},
		{"another critical in the cluster is muted by the first", alert.Labels{"alertname": "Other", "severity": "critical", "cluster": "a"}, 1},
	}
	for _, tt := range tests {
		if got := in.InhibitedBy(tt.labels); len(got) != tt.want {
			t.Errorf("%s: inhibited by %v, want %d", tt.name, got, tt.want)
		}
	}

	// Once the source resolves, nothing is muted.
	resolved := *critA
	resolved.EndsAt = now.Add(-time.Second)
	in.Observe(&resolved)
	if got := in.InhibitedBy(tests[0].labels); len(got) != 0 {
		t.Errorf("after the source resolved: inhibited by %v", got)
	}
	in.Observe(critA)
	in.Forget(critA.Fingerprint())
	if got := in.InhibitedBy(tests[0].labels); len(got) != 0 {
		t.Errorf("after Forget: inhibited by %v", got)
	}
}

func TestBuildRuleLegacyAndErrors(t *testing.T) {
	r, err := BuildRule(RuleConfig{SourceMatch: map[string]string{"a": "b"}, TargetMatchRE: map[string]string{"c": "d.*"}})
	if err != nil || len(r.Source) != 1 || len(r.Target) != 1 || !r.Target[0].Matches("dx") {
		t.Fatalf("legacy rule: %+v %v", r, err)
	}
	if _, err := BuildRule(RuleConfig{TargetMatchRE: map[string]string{"c": "("}}); err == nil {
		t.Fatal("bad regexp accepted")
	}
	if _, err := BuildRule(RuleConfig{SourceMatchers: []string{"=a"}}); err == nil {
		t.Fatal("bad matcher accepted")
	}
}
