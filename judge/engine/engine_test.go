package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/judge/strategy"
)

var t0 = time.Unix(1_700_000_000, 0).UTC()

func newEngine(t *testing.T, yaml string) *Engine {
	t.Helper()
	set, err := strategy.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := New(Config{})
	e.SetStrategies(set, t0)
	return e
}

func pt(name, endpoint string, at time.Time, v float64, tags ...string) metric.Point {
	pairs := []metric.Label{{Name: metric.NameLabel, Value: name}, {Name: metric.EndpointLabel, Value: endpoint}}
	for i := 0; i+1 < len(tags); i += 2 {
		pairs = append(pairs, metric.Label{Name: tags[i], Value: tags[i+1]})
	}
	return metric.Point{Labels: metric.New(pairs...), Time: at.Unix(), Value: v, Step: 30}
}

// feed sends values of one series, 30 s apart from t0, and returns a line
// per transition: "STEP:status value".
func feed(e *Engine, name string, values ...float64) []string {
	var out []string
	for i, v := range values {
		at := t0.Add(time.Duration(i) * 30 * time.Second)
		for _, tr := range e.Ingest(at, []metric.Point{pt(name, "h1", at, v)}) {
			s := fmt.Sprintf("%d:%s %g", i, tr.Status, tr.Value)
			if tr.Duration != "" {
				s += " " + tr.Duration
			}
			out = append(out, s)
		}
	}
	return out
}

func TestAlertLifecycle(t *testing.T) {
	cases := []struct {
		name   string
		spec   string
		values []float64
		want   string
	}{
		{"fires when the window is full and resolves with value and duration",
			"condition: all(#3) > 90", []float64{95, 95, 95, 96, 50, 40},
			"2:firing 95 | 4:resolved 50 1m0s"},
		{"too few points never fire", "condition: all(#3) > 90", []float64{95, 95}, ""},
		{"for holds it pending", "condition: all(#1) > 90\n  for: 60s", []float64{95, 95, 95, 10},
			"2:firing 95 | 3:resolved 10 30s"},
		{"a pending alert that stops holding starts over", "condition: all(#1) > 90\n  for: 60s",
			[]float64{95, 95, 10, 95, 95, 95}, "5:firing 95"},
		{"keep_firing_for holds a firing alert", "condition: all(#1) > 90\n  keep_firing_for: 60s",
			[]float64{95, 10, 10, 10}, "0:firing 95 | 2:resolved 10 1m0s"},
		{"keep_firing_for is reset by a new hold", "condition: all(#1) > 90\n  keep_firing_for: 60s",
			[]float64{95, 10, 95, 10, 10, 10}, "0:firing 95 | 4:resolved 10 2m0s"},
		{"repeats up to max_step", "condition: all(#1) > 90\n  repeat_interval: 60s\n  max_step: 2",
			[]float64{91, 92, 93, 94, 95, 96}, "0:firing 91 | 2:repeat 93"},
		{"repeats without bound with max_step 0", "condition: all(#1) > 90\n  repeat_interval: 60s",
			[]float64{91, 92, 93, 94, 95}, "0:firing 91 | 2:repeat 93 | 4:repeat 95"},
		{"diff needs N+1 points", "condition: diff(#2) > 10", []float64{1, 2, 30, 31, 31, 31},
			"2:firing 28 | 4:resolved 1 1m0s"},
		{"flap damping holds a flapping alert until steady for a window",
			"condition: all(#1) > 90\n  flap: {changes: 3, window: 2m}", []float64{95, 10, 95, 10, 95, 10, 10, 10, 10, 10},
			"0:firing 95 | 1:resolved 10 30s | 2:firing 95 | 9:resolved 10 3m30s"},
		{"flap damping leaves a steady alert alone",
			"condition: all(#1) > 90\n  flap: {changes: 3, window: 2m}", []float64{95, 95, 10, 10, 95},
			"0:firing 95 | 2:resolved 10 1m0s | 4:firing 95"},
		{"fires again after resolving", "condition: max(#1) > 5", []float64{6, 1, 7},
			"0:firing 6 | 1:resolved 1 30s | 2:firing 7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, "strategies:\n- name: s\n  metric: m\n  "+c.spec+"\n")
			got := strings.Join(feed(e, "m", c.values...), " | ")
			if got != c.want {
				t.Fatalf("transitions %q; want %q", got, c.want)
			}
		})
	}
}

func TestAlertLabelsAndAnnotations(t *testing.T) {
	e := newEngine(t, `strategies:
- name: disk_full
  metric: df.used.percent
  condition: all(#1) > 90
  priority: 1
  labels: {team: storage}
  annotations: {summary: '{{ $labels.endpoint }} {{ $labels.mount }} at {{ $value }}%'}
  runbook: https://runbooks.example/disk
`)
	trs := e.Ingest(t0, []metric.Point{pt("df.used.percent", "web-1", t0, 97, "mount", "/var")})
	if len(trs) != 1 {
		t.Fatalf("transitions %v", trs)
	}
	out := e.Outgoing()
	if len(out) != 1 {
		t.Fatalf("outgoing %v", out)
	}
	a := out[0]
	want := map[string]string{"alertname": "disk_full", "endpoint": "web-1", "metric": "df.used.percent", "mount": "/var",
		"priority": "1", "severity": "critical", "team": "storage"}
	if fmt.Sprint(a.Labels) != fmt.Sprint(want) {
		t.Fatalf("labels %v; want %v", a.Labels, want)
	}
	if a.Annotations["summary"] != "web-1 /var at 97%" || a.Annotations["runbook_url"] != "https://runbooks.example/disk" || a.Annotations["condition"] != "all(#1) > 90" {
		t.Fatalf("annotations %v", a.Annotations)
	}
	if !a.StartsAt.Equal(t0) || a.State != StateFiring {
		t.Fatalf("alert %+v", a)
	}
}

func TestOutOfOrderAndUnwatched(t *testing.T) {
	e := newEngine(t, "strategies:\n- name: s\n  metric: m\n  condition: all(#2) > 1\n")
	e.Ingest(t0, []metric.Point{pt("m", "h", t0, 5), pt("other", "h", t0, 5)})
	if trs := e.Ingest(t0, []metric.Point{pt("m", "h", t0, 5), pt("m", "h", t0.Add(-time.Minute), 5)}); len(trs) != 0 {
		t.Fatalf("old points made transitions: %v", trs)
	}
	st := e.Stats()
	if st.OutOfOrder != 2 || st.Unwatched != 1 || st.Series != 1 || st.Points != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMaxSeries(t *testing.T) {
	set, _ := strategy.Parse("t", []byte("strategies:\n- name: s\n  metric: m\n  condition: all(#1) > 1\n"), nil)
	e := New(Config{MaxSeries: 2})
	e.SetStrategies(set, t0)
	for i := range 5 {
		e.Ingest(t0, []metric.Point{pt("m", fmt.Sprint("h", i), t0, 0)})
	}
	if st := e.Stats(); st.Series != 2 || st.SeriesDropped != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNodataPerSeriesAndPerHost(t *testing.T) {
	e := newEngine(t, "strategies:\n- name: silent\n  metric: agent.alive\n  nodata: 3m\n")
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	send := func(d time.Duration, endpoint, tag string) []Transition {
		return e.Ingest(at(d), []metric.Point{pt("agent.alive", endpoint, at(d), 1, "a", tag)})
	}
	send(0, "h1", "1")
	send(0, "h1", "2")
	send(0, "h2", "1")
	send(0, "h2", "2")
	if trs := e.Sweep(at(2 * time.Minute)); len(trs) != 0 {
		t.Fatalf("nodata before 3m: %v", trs)
	}
	send(2*time.Minute, "h1", "1")
	trs := e.Sweep(at(4 * time.Minute))
	var got []string
	for _, tr := range trs {
		got = append(got, tr.Status+" "+tr.Labels["nodata"]+" "+tr.Labels["endpoint"]+" "+tr.Labels["a"])
	}
	if strings.Join(got, ",") != "firing series h1 2,firing host h2 " {
		t.Fatalf("sweep at 4m: %q", got)
	}
	if trs := e.Sweep(at(4*time.Minute + time.Second)); len(trs) != 0 {
		t.Fatalf("second sweep repeated alerts: %v", trs)
	}
	// The silent series reports again: its alert recovers at once.
	trs = send(5*time.Minute, "h1", "2")
	if len(trs) != 1 || trs[0].Status != "resolved" || trs[0].Labels["nodata"] != "series" || trs[0].Duration != "1m0s" {
		t.Fatalf("recovery of series nodata: %+v", trs)
	}
	// One series of the silent host reports: the host alert recovers at the
	// next sweep, and its other series, still silent, gets its own alert.
	send(5*time.Minute, "h2", "1")
	send(5*time.Minute, "h1", "1")
	trs = e.Sweep(at(5*time.Minute + time.Second))
	got = nil
	for _, tr := range trs {
		got = append(got, tr.Status+" "+tr.Labels["nodata"]+" "+tr.Labels["endpoint"]+" "+tr.Labels["a"])
	}
	if strings.Join(got, ",") != "firing series h2 2,resolved host h2 " {
		t.Fatalf("sweep at 5m: %q", got)
	}
}

func TestRestoreNeitherRefiresNorForgets(t *testing.T) {
	spec := "strategies:\n- name: s\n  metric: m\n  condition: all(#2) > 90\n  for: 30s\n"
	e := newEngine(t, spec)
	if got := strings.Join(feed(e, "m", 95, 95, 95), " | "); got != "2:firing 95" {
		t.Fatalf("before restart: %q", got)
	}
	// A pending alert on another series is kept too.
	e.Ingest(t0, []metric.Point{pt("m", "h2", t0, 99), pt("m", "h2", t0.Add(30*time.Second), 99)})
	saved, changed := e.Snapshot()
	if !changed || len(saved) != 2 {
		t.Fatalf("snapshot %v %v", saved, changed)
	}
	e2 := newEngine(t, spec)
	e2.Restore(saved, t0.Add(2*time.Minute))
	if out := e2.Outgoing(); len(out) != 1 || out[0].State != StateFiring || !out[0].StartsAt.Equal(t0.Add(60*time.Second)) {
		t.Fatalf("outgoing after restore %+v", out)
	}
	var trs []Transition
	for i, v := range []float64{96, 97, 98, 10} {
		at := t0.Add(time.Duration(3+i) * 30 * time.Second)
		trs = append(trs, e2.Ingest(at, []metric.Point{pt("m", "h1", at, v), pt("m", "h2", at, 99)})...)
	}
	var got []string
	for _, tr := range trs {
		got = append(got, tr.Status+" "+tr.Labels["endpoint"]+" "+tr.Duration)
	}
	// h1 never fires again and resolves; h2's pending timer survived, so
	// it fires at its first point (for: 30s was already served).
	if strings.Join(got, ",") != "firing h2 ,resolved h1 2m0s" {
		t.Fatalf("after restore: %q", got)
	}
}

func TestRemovedStrategyResolvesAndDeliveredAlertsExpire(t *testing.T) {
	e := newEngine(t, "strategies:\n- name: s\n  metric: m\n  condition: all(#1) > 1\n- name: keep\n  metric: m\n  condition: all(#1) > 100\n")
	e.Ingest(t0, []metric.Point{pt("m", "h", t0, 5)})
	set, _ := strategy.Parse("t", []byte("strategies:\n- name: keep\n  metric: m\n  condition: all(#1) > 100\n"), nil)
	trs := e.SetStrategies(set, t0.Add(time.Minute))
	if len(trs) != 1 || trs[0].Status != "resolved" {
		t.Fatalf("reload transitions %v", trs)
	}
	out := e.Outgoing()
	if len(out) != 1 || out[0].State != StateResolved {
		t.Fatalf("outgoing %+v", out)
	}
	e.Sweep(t0.Add(time.Hour))
	if len(e.Outgoing()) != 1 {
		t.Fatal("undelivered resolved alert was forgotten")
	}
	e.MarkDelivered(out, t0.Add(time.Hour))
	e.Sweep(t0.Add(time.Hour + 14*time.Minute))
	if len(e.Outgoing()) != 1 {
		t.Fatal("delivered resolved alert forgotten before the retention")
	}
	e.Sweep(t0.Add(time.Hour + 16*time.Minute))
	if got := e.Outgoing(); len(got) != 0 {
		t.Fatalf("delivered resolved alert kept past retention: %+v", got)
	}
}

func TestSeriesKeyDecodes(t *testing.T) {
	ls := metric.New(metric.Label{Name: metric.NameLabel, Value: "m"}, metric.Label{Name: "endpoint", Value: "h"}, metric.Label{Name: "z", Value: ""}, metric.Label{Name: "a", Value: "1"})
	s := &series{key: ls.Key()}
	if got := s.labels(); !got.Equal(ls) {
		t.Fatalf("labels %v; want %v", got, ls)
	}
	if keyGet(s.key, "endpoint") != "h" || keyGet(s.key, "absent") != "" {
		t.Fatal("keyGet wrong")
	}
}

func TestFlappingAlertIsAnnotated(t *testing.T) {
	e := newEngine(t, "strategies:\n- name: s\n  metric: m\n  condition: all(#1) > 90\n  flap: {changes: 1, window: 5m}\n")
	feed(e, "m", 95, 10, 95, 10)
	out := e.Outgoing()
	// Resolving at the second point would be a second change, over the
	// limit of one: the alert is held firing from then on.
	if len(out) != 1 || out[0].State != StateFiring || out[0].Annotations["flapping"] != "true" || out[0].Value != 10 {
		t.Fatalf("outgoing %+v", out)
	}
}

type fakeHistory struct {
	window []float64
	avg    float64
	asked  []string
}

func (f *fakeHistory) Window(_ context.Context, ls metric.Labels, before int64, step int32, n int) ([]float64, error) {
	f.asked = append(f.asked, fmt.Sprintf("window %s before=%d step=%d n=%d", ls.Get("endpoint"), before-t0.Unix(), step, n))
	return f.window[:min(n, len(f.window))], nil
}

func (f *fakeHistory) Average(_ context.Context, ls metric.Labels, from, to int64) (float64, bool, error) {
	f.asked = append(f.asked, fmt.Sprintf("avg %s from=%d to=%d", ls.Get("endpoint"), from-t0.Unix(), to-t0.Unix()))
	return f.avg, true, nil
}

// runHistory answers the queued history requests.
func runHistory(t *testing.T, e *Engine, want uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.RunHistory(ctx, 1) }()
	deadline := time.Now().Add(5 * time.Second)
	for st := e.Stats(); st.HistoryDone+st.HistoryFailed < want; st = e.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("history requests not answered: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

func TestWindowRefillFromHistory(t *testing.T) {
	set, _ := strategy.Parse("t", []byte("strategies:\n- name: s\n  metric: m\n  condition: all(#3) > 90\n"), nil)
	hist := &fakeHistory{window: []float64{96, 95, 1}}
	e := New(Config{History: hist})
	e.SetStrategies(set, t0)
	if trs := e.Ingest(t0, []metric.Point{pt("m", "h1", t0, 97)}); len(trs) != 0 {
		t.Fatalf("fired before refill: %v", trs)
	}
	runHistory(t, e, 1)
	at := t0.Add(30 * time.Second)
	trs := e.Ingest(at, []metric.Point{pt("m", "h1", at, 98)})
	if len(trs) != 1 || trs[0].Status != "firing" {
		t.Fatalf("second point after a refill of 2 values: %v (asked %v)", trs, hist.asked)
	}
	if strings.Join(hist.asked, ";") != "window h1 before=0 step=30 n=2" {
		t.Fatalf("asked %v", hist.asked)
	}
}

func TestCAvgBaselineFromHistory(t *testing.T) {
	set, _ := strategy.Parse("t", []byte("strategies:\n- name: s\n  metric: m\n  condition: c_avg_rate(#2,1d) > 50\n"), nil)
	hist := &fakeHistory{avg: 10}
	e := New(Config{History: hist})
	e.SetStrategies(set, t0)
	var trs []Transition
	for i := range 3 {
		at := t0.Add(time.Duration(i) * 30 * time.Second)
		trs = append(trs, e.Ingest(at, []metric.Point{pt("m", "h1", at, 20)})...)
		runHistory(t, e, uint64(i+2))
	}
	if len(trs) != 1 || trs[0].Value != 100 {
		t.Fatalf("transitions %+v; asked %v", trs, hist.asked)
	}
	day := int64(24 * 3600)
	if hist.asked[1] != fmt.Sprintf("avg h1 from=%d to=%d", -day-30, -day) {
		t.Fatalf("asked %v", hist.asked)
	}
}

func TestExpressionAcrossMetrics(t *testing.T) {
	spec := "strategies:\n- name: disk_full\n  expression: disk.used / disk.total > 0.9\n"
	e := newEngine(t, spec)
	send := func(i int, name, mount string, v float64) []Transition {
		at := t0.Add(time.Duration(i) * 30 * time.Second)
		return e.Ingest(at, []metric.Point{pt(name, "h1", at, v, "mount", mount)})
	}
	if trs := send(0, "disk.used", "/", 95); len(trs) != 0 {
		t.Fatalf("fired with one metric: %v", trs)
	}
	send(0, "disk.total", "/var", 100) // another tag set: another group
	trs := send(0, "disk.total", "/", 100)
	if len(trs) != 1 || trs[0].Status != "firing" || trs[0].Value != 0.95 || trs[0].Labels["mount"] != "/" ||
		trs[0].Labels["metric"] != "disk.used / disk.total > 0.9" {
		t.Fatalf("transitions %+v", trs)
	}
	// Restart: the group's alert re-attaches when its metrics report.
	saved, _ := e.Snapshot()
	e = newEngine(t, spec)
	e.Restore(saved, t0)
	if st := e.Stats(); st.Series != 0 {
		t.Fatalf("restore made series for an expression: %+v", st)
	}
	send(1, "disk.used", "/", 96)
	if trs := send(1, "disk.total", "/", 100); len(trs) != 0 {
		t.Fatalf("fired again after restore: %v", trs)
	}
	trs = send(2, "disk.used", "/", 10)
	if len(trs) != 1 || trs[0].Status != "resolved" || trs[0].Duration != "1m0s" {
		t.Fatalf("recovery %+v", trs)
	}
	// A metric silent for more than three steps is missing: no evaluation.
	if trs := send(10, "disk.used", "/", 99); len(trs) != 0 {
		t.Fatalf("evaluated with a stale input: %v", trs)
	}
}

func TestIdleSeriesExpire(t *testing.T) {
	set, _ := strategy.Parse("t", []byte("strategies:\n- name: s\n  metric: m\n  condition: all(#1) > 90\n  nodata: 1m\n"), nil)
	e := New(Config{SeriesIdleExpiry: time.Hour, Shards: 1})
	e.SetStrategies(set, t0)
	e.Ingest(t0, []metric.Point{pt("m", "h1", t0, 95), pt("m", "h2", t0, 5)})
	e.Ingest(t0.Add(50*time.Minute), []metric.Point{pt("m", "h2", t0.Add(50*time.Minute), 5)})
	var got []string
	for _, tr := range e.Sweep(t0.Add(61 * time.Minute)) {
		got = append(got, tr.Status+" "+string(tr.Kind)+" "+tr.Labels["endpoint"])
	}
	// h1, silent for over an hour, is forgotten: its firing alert resolves
	// and no nodata alert is raised for it; h2, silent for 11 minutes, gets
	// its host nodata alert.
	if strings.Join(got, ",") != "resolved condition h1,firing host_nodata h2" {
		t.Fatalf("sweep at 61m: %v", got)
	}
	if st := e.Stats(); st.Series != 1 || st.SeriesExpired != 1 {
		t.Fatalf("stats %+v; transitions %v", st, got)
	}
	for _, a := range e.Outgoing() {
		if a.Labels["endpoint"] == "h1" && a.State != StateResolved {
			t.Fatalf("alert of an expired series still %s: %+v", a.State, a)
		}
	}
	// It reports again: a new series, judged afresh.
	if trs := e.Ingest(t0.Add(63*time.Minute), []metric.Point{pt("m", "h1", t0.Add(63*time.Minute), 96)}); len(trs) != 1 || trs[0].Status != "firing" {
		t.Fatalf("returning series: %v", trs)
	}
}
