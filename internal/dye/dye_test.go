package dye

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// clock is a settable test clock.
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

func newTest(t *testing.T, capacity int) (*Tracer, *clock, *bytes.Buffer) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var logs bytes.Buffer
	tr := New(Options{Daemon: "transfer", Instance: "127.0.0.1:7120", Capacity: capacity, Now: c.now,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	return tr, c, &logs
}

func point(name, endpoint string, tags ...string) metric.Point {
	pairs := []metric.Label{{Name: metric.NameLabel, Value: name}, {Name: metric.EndpointLabel, Value: endpoint}}
	for i := 0; i+1 < len(tags); i += 2 {
		pairs = append(pairs, metric.Label{Name: tags[i], Value: tags[i+1]})
	}
	return metric.Point{Labels: metric.New(pairs...), Time: 1700000000, Value: 42}
}

func TestMatchPoints(t *testing.T) {
	web01 := point("cpu.idle", "web01", "core", "0")
	for _, tc := range []struct {
		name  string
		match string
		p     metric.Point
		want  bool
	}{
		{"endpoint and metric", "endpoint=web01,metric=cpu.idle", web01, true},
		{"endpoint only", "endpoint=web01", web01, true},
		{"other endpoint", "endpoint=web02,metric=cpu.idle", web01, false},
		{"other metric", "endpoint=web01,metric=cpu.user", web01, false},
		{"tag", "metric=cpu.idle,core=0", web01, true},
		{"other tag value", "metric=cpu.idle,core=1", web01, false},
		{"absent tag", "metric=cpu.idle,disk=sda", web01, false},
		{"log-line rule never matches points", "path=/var/log/x", web01, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, c, _ := newTest(t, 16)
			m, err := ParseMatch(tc.match)
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.Set(Rule{ID: "d1", Match: m, Until: c.now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			got := tr.MatchLabels(tc.p.Labels) == "d1"
			if got != tc.want {
				t.Fatalf("match %q on %s = %v, want %v", tc.match, tc.p.Labels, got, tc.want)
			}
			// The same through an alert's series map.
			m2 := map[string]string{}
			for _, l := range tc.p.Labels {
				m2[l.Name] = l.Value
			}
			if got := tr.MatchMap(m2) == "d1"; got != tc.want {
				t.Fatalf("map match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMatchLine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		match string
		host  string
		path  string
		line  string
		want  bool
	}{
		{"path", "path=/var/log/app.log", "web01", "/var/log/app.log", "hello", true},
		{"other path", "path=/var/log/app.log", "web01", "/var/log/other.log", "hello", false},
		{"contains", "contains=ERROR", "web01", "/x", "an ERROR here", true},
		{"not contained", "contains=ERROR", "web01", "/x", "fine", false},
		{"path and contains", "path=/x,contains=boom", "web01", "/x", "boom", true},
		{"endpoint is the host", "endpoint=web01,contains=boom", "web01", "/x", "boom", true},
		{"other host", "endpoint=web02,contains=boom", "web01", "/x", "boom", false},
		{"point rule never matches lines", "endpoint=web01", "web01", "/x", "boom", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, c, _ := newTest(t, 16)
			m, err := ParseMatch(tc.match)
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.Set(Rule{ID: "d1", Match: m, Until: c.now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if got := tr.MatchLine(tc.host, tc.path, []byte(tc.line)) == "d1"; got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRulesExpire(t *testing.T) {
	tr, c, _ := newTest(t, 16)
	m, _ := ParseMatch("endpoint=web01")
	if err := tr.Set(Rule{ID: "short", Match: m, Until: c.now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Set(Rule{ID: "long", Match: m, Until: c.now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p := point("cpu.idle", "web01")
	if got := tr.MatchLabels(p.Labels); got != "short" {
		t.Fatalf("matched %q, want the first rule", got)
	}
	c.add(2 * time.Minute)
	if got := tr.MatchLabels(p.Labels); got != "long" {
		t.Fatalf("after expiry matched %q, want long", got)
	}
	if rs := tr.Rules(); len(rs) != 1 || rs[0].ID != "long" {
		t.Fatalf("rules = %+v", rs)
	}
	c.add(time.Hour)
	if got := tr.MatchLabels(p.Labels); got != "" {
		t.Fatalf("after every rule expired matched %q", got)
	}
	if tr.Active() {
		t.Fatal("still active with every rule expired: matching would not be free")
	}
}

func TestSetReplacesAndDeleteRemoves(t *testing.T) {
	tr, c, _ := newTest(t, 16)
	a, _ := ParseMatch("endpoint=web01")
	b, _ := ParseMatch("endpoint=web02")
	tr.Set(Rule{ID: "d1", Match: a, Until: c.now().Add(time.Minute)})
	tr.Set(Rule{ID: "d1", Match: b, Until: c.now().Add(time.Minute)})
	if rs := tr.Rules(); len(rs) != 1 || rs[0].Match.Endpoint != "web02" {
		t.Fatalf("rules after replace = %+v", rs)
	}
	if !tr.Delete("d1") || tr.Delete("d1") {
		t.Fatal("Delete did not report the rule once")
	}
	if tr.Active() {
		t.Fatal("active after deleting the only rule")
	}
	err := tr.Set(Rule{ID: "old", Match: a, Until: c.now().Add(-time.Second)})
	if !errors.Is(err, ErrBadRule) {
		t.Fatalf("a rule already past its end was taken: %v", err)
	}
}

func TestRingIsBoundedAndOrdered(t *testing.T) {
	tr, c, logs := newTest(t, 4)
	for i := range 10 {
		c.add(time.Second)
		id := "a"
		if i%2 == 1 {
			id = "b"
		}
		tr.Hop(id, "intake", strings.Repeat("x", i), time.Duration(i)*time.Millisecond)
	}
	all := tr.Trace("")
	if len(all) != 4 {
		t.Fatalf("%d records kept, capacity 4", len(all))
	}
	for i := 1; i < len(all); i++ {
		if !all[i].Time.After(all[i-1].Time) {
			t.Fatalf("records out of order: %+v", all)
		}
	}
	if all[3].Item != strings.Repeat("x", 9) || all[3].Daemon != "transfer" || all[3].Instance != "127.0.0.1:7120" {
		t.Fatalf("newest record = %+v", all[3])
	}
	b := tr.Trace("b")
	if len(b) != 2 || b[0].Item != strings.Repeat("x", 7) {
		t.Fatalf("trace of b = %+v", b)
	}
	if !strings.Contains(logs.String(), "dye=b") || !strings.Contains(logs.String(), "hop=intake") {
		t.Fatalf("dyed items not logged with dye=ID:\n%s", logs.String())
	}
}

func TestPointsRecordsOnlyMatches(t *testing.T) {
	tr, c, _ := newTest(t, 16)
	m, _ := ParseMatch("endpoint=web01,metric=cpu.idle")
	tr.Set(Rule{ID: "d1", Match: m, Until: c.now().Add(time.Minute)})
	pts := []metric.Point{point("cpu.idle", "web02"), point("cpu.idle", "web01"), point("mem.free", "web01")}
	tr.Points("intake", pts, func(*metric.Point) time.Duration { return 3 * time.Second })
	recs := tr.Trace("d1")
	if len(recs) != 1 || recs[0].Hop != "intake" || recs[0].Duration != 3 || !strings.Contains(recs[0].Item, `endpoint="web01"`) {
		t.Fatalf("records = %+v", recs)
	}
	if !recs[0].Time.Equal(c.now().Add(-3 * time.Second)) {
		t.Fatalf("record time %v: want when the point entered the hop, 3s before now", recs[0].Time)
	}
}

// TestTraceOrdersByEntry: a hop recorded when it ends but entered earlier
// (an upstream's send, acknowledged after the downstream's intake) sorts by
// when it was entered.
func TestTraceOrdersByEntry(t *testing.T) {
	tr, c, _ := newTest(t, 16)
	c.add(10 * time.Millisecond)
	tr.Hop("d", "downstream intake", "", 2*time.Millisecond) // entered at 8ms
	c.add(time.Millisecond)
	tr.Hop("d", "upstream send", "", 6*time.Millisecond) // entered at 5ms
	recs := tr.Trace("d")
	if len(recs) != 2 || recs[0].Hop != "upstream send" {
		t.Fatalf("trace = %+v", recs)
	}
}

func TestLogRateBound(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	var logs bytes.Buffer
	tr := New(Options{Log: slog.New(slog.NewTextHandler(&logs, nil)), LogPerSecond: 5, Now: c.now})
	for range 50 {
		tr.Hop("d", "h", "i", 0)
	}
	if n := strings.Count(logs.String(), "dyed item"); n > 10 {
		t.Fatalf("%d lines logged at 5/s", n)
	}
	if tr.Unlogged() == 0 || len(tr.Trace("d")) != 50 {
		t.Fatalf("unlogged %d, kept %d", tr.Unlogged(), len(tr.Trace("d")))
	}
}

func TestNilTracer(t *testing.T) {
	var tr *Tracer
	if tr.Active() || tr.MatchLabels(metric.Labels{}) != "" || tr.MatchLine("", "", nil) != "" || tr.Trace("") != nil {
		t.Fatal("nil tracer matched")
	}
	tr.Hop("d", "h", "i", 0)
	tr.Points("h", []metric.Point{point("a", "b")}, nil)
}

func TestParseMatch(t *testing.T) {
	m, err := ParseMatch(" endpoint = web01 ,metric=cpu.idle,core=0,, ")
	if err != nil {
		t.Fatal(err)
	}
	if m.Endpoint != "web01" || m.Metric != "cpu.idle" || m.Tags["core"] != "0" {
		t.Fatalf("parsed %+v", m)
	}
	if m.String() != "endpoint=web01,metric=cpu.idle,core=0" {
		t.Fatalf("String = %q", m.String())
	}
	for _, bad := range []string{"", ",", "endpoint", "endpoint=", "=x"} {
		if _, err := ParseMatch(bad); !errors.Is(err, ErrBadRule) {
			t.Errorf("ParseMatch(%q) err = %v", bad, err)
		}
	}
}

func TestDecodeRule(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name, body string
		wantErr    bool
		wantUntil  time.Time
		wantID     string
	}{
		{"until", `{"id":"d1","match":{"endpoint":"web01"},"until":"2026-01-02T04:00:00Z"}`, false, time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC), "d1"},
		{"for", `{"id":"d1","match":{"metric":"cpu.idle"},"for":"10m"}`, false, now.Add(10 * time.Minute), "d1"},
		{"made-up id", `{"match":{"metric":"cpu.idle"},"for":"1m"}`, false, now.Add(time.Minute), "made"},
		{"no end", `{"id":"d1","match":{"metric":"cpu.idle"}}`, true, time.Time{}, ""},
		{"both ends", `{"id":"d1","match":{"metric":"x"},"for":"1m","until":"2026-01-02T04:00:00Z"}`, true, time.Time{}, ""},
		{"empty match", `{"id":"d1","match":{},"for":"1m"}`, true, time.Time{}, ""},
		{"bad id", `{"id":"a b","match":{"metric":"x"},"for":"1m"}`, true, time.Time{}, ""},
		{"metric with path", `{"id":"d1","match":{"metric":"x","path":"/y"},"for":"1m"}`, true, time.Time{}, ""},
		{"unknown field", `{"id":"d1","match":{"metric":"x"},"for":"1m","x":1}`, true, time.Time{}, ""},
		{"not JSON", `endpoint=web01`, true, time.Time{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DecodeRule([]byte(tc.body), now, func() string { return "made" })
			if tc.wantErr {
				if !errors.Is(err, ErrBadRule) {
					t.Fatalf("err = %v, want a bad rule", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.ID != tc.wantID || !r.Until.Equal(tc.wantUntil) {
				t.Fatalf("rule = %+v", r)
			}
		})
	}
}

func TestAdminEndpoints(t *testing.T) {
	tr, c, _ := newTest(t, 16)
	mux := http.NewServeMux()
	guarded := 0
	tr.Register(mux, func(h http.Handler) http.Handler {
		guarded++
		return h
	})
	if guarded != 4 {
		t.Fatalf("%d endpoints guarded, want 4", guarded)
	}
	do := func(method, path, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w
	}
	if w := do("POST", "/admin/dye", `{"id":"d1","match":{"endpoint":"web01"},"for":"5m"}`); w.Code != 200 {
		t.Fatalf("set: %d %s", w.Code, w.Body)
	}
	if w := do("POST", "/admin/dye", `{"id":"d2","match":{}}`); w.Code != 400 {
		t.Fatalf("bad rule: %d %s", w.Code, w.Body)
	}
	w := do("GET", "/admin/dye", "")
	var rules []Rule
	if err := json.Unmarshal(w.Body.Bytes(), &rules); err != nil || len(rules) != 1 || rules[0].ID != "d1" {
		t.Fatalf("list: %s (%v)", w.Body, err)
	}
	p := point("cpu.idle", "web01")
	tr.Points("intake", []metric.Point{p}, nil)
	c.add(time.Second)
	tr.Hop("other", "x", "y", 0)
	w = do("GET", "/admin/trace?id=d1", "")
	lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("trace: %q", w.Body)
	}
	var rec Record
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Dye != "d1" || rec.Hop != "intake" || rec.Daemon != "transfer" {
		t.Fatalf("trace record %s (%v)", lines[0], err)
	}
	if w := do("DELETE", "/admin/dye/d1", ""); w.Code != 200 {
		t.Fatalf("delete: %d", w.Code)
	}
	if w := do("DELETE", "/admin/dye/d1", ""); w.Code != 404 {
		t.Fatalf("second delete: %d", w.Code)
	}
	if w := do("GET", "/admin/dye", ""); strings.TrimSpace(w.Body.String()) != "[]" {
		t.Fatalf("list after delete: %s", w.Body)
	}
}

// BenchmarkPointsNoRule is the cost a hot path pays per batch when no rule
// is set: one atomic load.
func BenchmarkPointsNoRule(b *testing.B) {
	tr := New(Options{})
	pts := []metric.Point{point("cpu.idle", "web01"), point("cpu.user", "web01")}
	b.ReportAllocs()
	for b.Loop() {
		tr.Points("intake", pts, nil)
	}
}

// BenchmarkMatchNoRule is the per-item check with no rule set.
func BenchmarkMatchNoRule(b *testing.B) {
	tr := New(Options{})
	p := point("cpu.idle", "web01")
	b.ReportAllocs()
	for b.Loop() {
		if tr.MatchLabels(p.Labels) != "" {
			b.Fatal("matched")
		}
	}
}

// BenchmarkPointsRuleNoMatch is the cost per point while a rule is in
// force that the points do not match.
func BenchmarkPointsRuleNoMatch(b *testing.B) {
	tr := New(Options{})
	m, _ := ParseMatch("endpoint=web99,metric=cpu.idle")
	tr.Set(Rule{ID: "d", Match: m, Until: time.Now().Add(time.Hour)})
	pts := make([]metric.Point, 1000)
	for i := range pts {
		pts[i] = point("cpu.idle", "web01", "core", "0")
	}
	b.ReportAllocs()
	for b.Loop() {
		tr.Points("intake", pts, nil)
	}
}
