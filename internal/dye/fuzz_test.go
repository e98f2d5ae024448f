package dye

import (
	"testing"
	"time"
)

// FuzzDecodeRule: the body of POST /admin/dye never panics, and a rule it
// accepts passes Check and can be set.
func FuzzDecodeRule(f *testing.F) {
	f.Add([]byte(`{"id":"d1","match":{"endpoint":"web01","metric":"cpu.idle"},"until":"2030-01-02T15:04:05Z"}`))
	f.Add([]byte(`{"match":{"path":"/var/log/x","contains":"ERR"},"for":"10m"}`))
	f.Add([]byte(`{"id":"d1","match":{"tags":{"core":"0"}},"for":"-1s"}`))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeRule(body, now, func() string { return "id" })
		if err != nil {
			return
		}
		if err := r.Check(); err != nil {
			t.Fatalf("accepted rule fails Check: %v", err)
		}
		tr := New(Options{Now: func() time.Time { return now }})
		if r.Until.After(now) {
			if err := tr.Set(r); err != nil {
				t.Fatalf("accepted rule not set: %v", err)
			}
		}
	})
}

// FuzzParseMatch: the command-line match never panics and round-trips
// through String.
func FuzzParseMatch(f *testing.F) {
	f.Add("endpoint=web01,metric=cpu.idle")
	f.Add("path=/var/log/app.log,contains=ERROR")
	f.Add("core=0,,disk=sda")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatch(s)
		if err != nil {
			return
		}
		m2, err := ParseMatch(m.String())
		if err != nil {
			t.Fatalf("String %q of an accepted match does not parse: %v", m.String(), err)
		}
		if m2.String() != m.String() {
			t.Fatalf("round trip %q -> %q", m.String(), m2.String())
		}
	})
}
