package dispatch

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/route"
)

type flushLog struct {
	mu   sync.Mutex
	got  []*notify.Group
	when []time.Time
	fail bool
}

func (f *flushLog) Notify(_ context.Context, g *notify.Group) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, g)
	f.when = append(f.when, time.Now())
	if f.fail {
		return context.DeadlineExceeded
	}
	return nil
}

func (f *flushLog) snapshot() []*notify.Group {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*notify.Group(nil), f.got...)
}

type muteNames map[string]bool

func (m muteNames) Muted(a *alert.Alert) (string, bool) {
	if m[a.Labels["instance"]] {
		return "silenced", true
	}
	return "", false
}

func build(t *testing.T, wait, interval time.Duration) *route.Route {
	t.Helper()
	w, i := route.Duration(wait), route.Duration(interval)
	r, err := route.Build(&route.Config{Receiver: "r", GroupBy: []string{"alertname"}, GroupWait: &w, GroupInterval: &i}, map[string]bool{"r": true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mk(name, instance string, start time.Time, end time.Time) *alert.Alert {
	return &alert.Alert{Labels: alert.Labels{"alertname": name, "instance": instance}, StartsAt: start, EndsAt: end, UpdatedAt: time.Now()}
}

func newDispatcher(t *testing.T, r *route.Route, n Notifier, m Muter) *Dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := New(ctx, r, n, m, nil, time.Now, slog.New(slog.DiscardHandler), metrics.NewSet())
	t.Cleanup(func() { cancel(); d.Stop() })
	return d
}

func instances(g *notify.Group) string {
	var out []string
	for _, a := range g.Alerts {
		out = append(out, a.Labels["instance"])
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestGroupWaitBatchesThenInterval(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, 150*time.Millisecond, 200*time.Millisecond), fl, muteNames{})
	now := time.Now()
	start := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(time.Hour))})
	time.Sleep(50 * time.Millisecond)
	d.Add([]*alert.Alert{mk("Disk", "web02", now, now.Add(time.Hour)), mk("CPU", "web01", now, now.Add(time.Hour))})
	time.Sleep(250 * time.Millisecond)
	got := fl.snapshot()
	if len(got) != 2 {
		t.Fatalf("%d flushes after group_wait, want 2 (one per alertname)", len(got))
	}
	byKey := map[string]*notify.Group{}
	for _, g := range got {
		byKey[g.GroupKey] = g
	}
	if g := byKey[`{}:{alertname="Disk"}`]; g == nil || instances(g) != "web01,web02" || g.GroupLabels["alertname"] != "Disk" {
		t.Fatalf("Disk group: %+v", g)
	}
	if waited := fl.when[0].Sub(start); waited < 140*time.Millisecond {
		t.Fatalf("first flush after %v, before group_wait", waited)
	}
	// Next flushes come every group_interval.
	time.Sleep(250 * time.Millisecond)
	if n := len(fl.snapshot()); n < 4 {
		t.Fatalf("%d flushes after one interval, want 4", n)
	}
	if len(d.Groups()) != 2 {
		t.Fatalf("groups: %+v", d.Groups())
	}
}

func TestOldAlertFlushesAtOnce(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, time.Hour, time.Hour), fl, muteNames{})
	old := time.Now().Add(-2 * time.Hour)
	d.Add([]*alert.Alert{mk("Disk", "web01", old, time.Now().Add(time.Hour))})
	time.Sleep(100 * time.Millisecond)
	if len(fl.snapshot()) != 1 {
		t.Fatal("an alert older than group_wait did not flush its new group at once")
	}
}

func TestResolvedLeaveAndEmptyGroupEnds(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, 30*time.Millisecond, 60*time.Millisecond), fl, muteNames{})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(-time.Millisecond)), mk("Disk", "web02", now, now.Add(time.Hour))})
	time.Sleep(60 * time.Millisecond)
	if got := fl.snapshot(); len(got) != 1 || instances(got[0]) != "web01,web02" {
		t.Fatalf("first flush: %v", got)
	}
	if gs := d.Groups(); len(gs) != 1 || len(gs[0].Alerts) != 1 {
		t.Fatalf("the resolved alert stayed in its group: %+v", gs)
	}
	d.Add([]*alert.Alert{mk("Disk", "web02", now, time.Now().Add(-time.Millisecond))})
	time.Sleep(150 * time.Millisecond)
	if gs := d.Groups(); len(gs) != 0 {
		t.Fatalf("empty group kept: %+v", gs)
	}
}

func TestFailedFlushKeepsResolved(t *testing.T) {
	fl := &flushLog{fail: true}
	d := newDispatcher(t, build(t, 20*time.Millisecond, 40*time.Millisecond), fl, muteNames{})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(-time.Millisecond))})
	time.Sleep(100 * time.Millisecond)
	if len(fl.snapshot()) < 2 {
		t.Fatal("a failed flush was not tried again")
	}
}

func TestMutedAlertsAreNotHandedOver(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, 20*time.Millisecond, time.Hour), fl, muteNames{"web01": true})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(time.Hour)), mk("Disk", "web02", now, now.Add(time.Hour)), mk("CPU", "web01", now, now.Add(time.Hour))})
	time.Sleep(80 * time.Millisecond)
	got := fl.snapshot()
	if len(got) != 1 || instances(got[0]) != "web02" {
		t.Fatalf("flushes %v", got)
	}
}

func TestSetRouteRegroups(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, time.Hour, time.Hour), fl, muteNames{})
	now := time.Now()
	a := mk("Disk", "web01", now, now.Add(time.Hour))
	d.Add([]*alert.Alert{a})
	d.SetRoute(build(t, 20*time.Millisecond, time.Hour), []*alert.Alert{a})
	time.Sleep(80 * time.Millisecond)
	if len(fl.snapshot()) != 1 {
		t.Fatal("no flush under the new route")
	}
	if rs := d.Receivers(a.Labels); len(rs) != 1 || rs[0] != "r" {
		t.Fatalf("Receivers = %v", rs)
	}
}
