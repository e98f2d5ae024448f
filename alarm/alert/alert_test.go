package alert

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestDecodeCompletesTimes(t *testing.T) {
	body := `[
	 {"labels":{"alertname":"A"}},
	 {"labels":{"alertname":"B"},"startsAt":"2026-01-02T03:00:00Z","endsAt":"2026-01-02T03:10:00Z","annotations":{"summary":"s"},"generatorURL":"http://g"},
	 {"labels":{"alertname":"C"},"endsAt":"2026-01-02T03:00:00Z"},
	 {"labels":{}},
	 {"labels":{"alertname":"E"},"startsAt":"2026-01-02T03:10:00Z","endsAt":"2026-01-02T03:00:00Z"},
	 {"labels":{"":"x"}},
	 "nonsense"
	]`
	alerts, bad, err := Decode([]byte(body), t0, 5*time.Minute, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 3 || len(bad) != 4 {
		t.Fatalf("got %d alerts, %d refused: %v", len(alerts), len(bad), bad)
	}
	a := alerts[0]
	if !a.StartsAt.Equal(t0) || !a.EndsAt.Equal(t0.Add(5*time.Minute)) || !a.Timeout || a.Annotations == nil {
		t.Errorf("defaults: %+v", a)
	}
	b := alerts[1]
	if b.Timeout || b.Annotations["summary"] != "s" || b.GeneratorURL != "http://g" || b.Resolved(t0) || !b.Resolved(t0.Add(6*time.Minute)) {
		t.Errorf("explicit: %+v", b)
	}
	c := alerts[2]
	if !c.StartsAt.Equal(c.EndsAt) {
		t.Errorf("startsAt of an alert with only endsAt = %v, want its endsAt", c.StartsAt)
	}
	wantIdx := []int{3, 4, 5, 6}
	for i, e := range bad {
		if e.Index != wantIdx[i] {
			t.Errorf("refused #%d has index %d, want %d", i, e.Index, wantIdx[i])
		}
	}
	if !strings.Contains(bad[1].Error(), "start time must be before end time") {
		t.Errorf("reason: %v", bad[1])
	}
}

func TestDecodeBadBody(t *testing.T) {
	for _, body := range []string{``, `{}`, `[`, `[{"labels":{"a":"b"}}`} {
		if _, _, err := Decode([]byte(body), t0, time.Minute, DefaultLimits); !errors.Is(err, ErrBody) {
			t.Errorf("Decode(%q) error = %v, want ErrBody", body, err)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	lim := Limits{MaxLabels: 2, MaxNameBytes: 4, MaxValueBytes: 4}
	body := `[{"labels":{"a":"1","b":"2","c":"3"}},{"labels":{"abcde":"1"}},{"labels":{"a":"12345"}},{"labels":{"a":"1234"}}]`
	alerts, bad, err := Decode([]byte(body), t0, time.Minute, lim)
	if err != nil || len(alerts) != 1 || len(bad) != 3 {
		t.Fatalf("alerts %d bad %v err %v", len(alerts), bad, err)
	}
}

func TestFingerprintIgnoresOrderAndAnnotations(t *testing.T) {
	a := Labels{"a": "1", "b": "2"}
	b := Labels{"b": "2", "a": "1"}
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("same labels, different fingerprints")
	}
	if a.Fingerprint() == (Labels{"a": "1", "b": "3"}).Fingerprint() {
		t.Fatal("different labels, same fingerprint")
	}
	// The separator keeps {a="b1"} apart from {ab="1"}-like shifts.
	if (Labels{"a": "bc"}).Fingerprint() == (Labels{"ab": "c"}).Fingerprint() {
		t.Fatal("shifted boundary collides")
	}
	fp := a.Fingerprint()
	back, err := ParseFingerprint(fp.String())
	if err != nil || back != fp || len(fp.String()) != 16 {
		t.Fatalf("fingerprint %s round trip: %v %v", fp, back, err)
	}
	if got := a.String(); got != `{a="1", b="2"}` {
		t.Fatalf("String = %s", got)
	}
}

func TestMerge(t *testing.T) {
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	tests := []struct {
		name        string
		old, upd    Alert
		wantStart   time.Time
		wantEnd     time.Time
		wantTimeout bool
	}{
		{"refresh keeps earliest start, takes new end",
			Alert{StartsAt: min(0), EndsAt: min(5), UpdatedAt: min(0)},
			Alert{StartsAt: min(1), EndsAt: min(6), UpdatedAt: min(1)},
			min(0), min(6), false},
		{"explicit later end beats a timeout end",
			Alert{StartsAt: min(0), EndsAt: min(10), UpdatedAt: min(0)},
			Alert{StartsAt: min(1), EndsAt: min(6), UpdatedAt: min(1), Timeout: true},
			min(0), min(10), false},
		{"timeout end does not hold back a new one",
			Alert{StartsAt: min(0), EndsAt: min(10), UpdatedAt: min(0), Timeout: true},
			Alert{StartsAt: min(1), EndsAt: min(6), UpdatedAt: min(1), Timeout: true},
			min(0), min(6), true},
		{"no overlap: the new report replaces",
			Alert{StartsAt: min(0), EndsAt: min(2), UpdatedAt: min(0)},
			Alert{StartsAt: min(3), EndsAt: min(8), UpdatedAt: min(3)},
			min(3), min(8), false},
	}
	for _, tt := range tests {
		got := Merge(&tt.old, &tt.upd, min(4))
		if !got.StartsAt.Equal(tt.wantStart) || !got.EndsAt.Equal(tt.wantEnd) || got.Timeout != tt.wantTimeout {
			t.Errorf("%s: start %v end %v timeout %v", tt.name, got.StartsAt, got.EndsAt, got.Timeout)
		}
	}
}
