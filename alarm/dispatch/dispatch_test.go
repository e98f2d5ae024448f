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
	"github.com/opskit/opskit/alarm/timeinterval"
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

// waitFor polls until at least n flushes happened, failing after 5s; timers
// in these tests are short but the machine may be busy.
func (f *flushLog) waitFor(t *testing.T, n int) []*notify.Group {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d flushes, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
	d := New(ctx, r, nil, n, m, nil, time.Now, slog.New(slog.DiscardHandler), metrics.NewSet())
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
	got := fl.waitFor(t, 2)
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
	fl.waitFor(t, 4)
	fl.mu.Lock()
	gap := fl.when[2].Sub(fl.when[0])
	fl.mu.Unlock()
	if gap < 190*time.Millisecond {
		t.Fatalf("second flush %v after the first, before group_interval", gap)
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
	fl.waitFor(t, 1) // group_wait is an hour: any flush came at once

}

func TestResolvedLeaveAndEmptyGroupEnds(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, 30*time.Millisecond, 60*time.Millisecond), fl, muteNames{})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(-time.Millisecond)), mk("Disk", "web02", now, now.Add(time.Hour))})
	if got := fl.waitFor(t, 1); len(got) != 1 || instances(got[0]) != "web01,web02" {
		t.Fatalf("first flush: %v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for gs := d.Groups(); len(gs) != 1 || len(gs[0].Alerts) != 1; gs = d.Groups() {
		if time.Now().After(deadline) {
			t.Fatalf("the resolved alert stayed in its group: %+v", gs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Add([]*alert.Alert{mk("Disk", "web02", now, time.Now().Add(-time.Millisecond))})
	for gs := d.Groups(); len(gs) != 0; gs = d.Groups() {
		if time.Now().After(deadline) {
			t.Fatalf("empty group kept: %+v", gs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailedFlushKeepsResolved(t *testing.T) {
	fl := &flushLog{fail: true}
	d := newDispatcher(t, build(t, 20*time.Millisecond, 40*time.Millisecond), fl, muteNames{})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(-time.Millisecond))})
	got := fl.waitFor(t, 2) // a failed flush is tried again with the resolved alert
	if instances(got[1]) != "web01" {
		t.Fatalf("second flush %v", got[1])
	}
}

func TestMutedAlertsAreNotHandedOver(t *testing.T) {
	fl := &flushLog{}
	d := newDispatcher(t, build(t, 20*time.Millisecond, time.Hour), fl, muteNames{"web01": true})
	now := time.Now()
	d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(time.Hour)), mk("Disk", "web02", now, now.Add(time.Hour)), mk("CPU", "web01", now, now.Add(time.Hour))})
	got := fl.waitFor(t, 1)
	time.Sleep(30 * time.Millisecond)
	got = fl.snapshot()
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
	d.SetRoute(build(t, 20*time.Millisecond, time.Hour), nil, []*alert.Alert{a})
	fl.waitFor(t, 1)
	if rs := d.Receivers(a.Labels); len(rs) != 1 || rs[0] != "r" {
		t.Fatalf("Receivers = %v", rs)
	}
}

func TestTimeIntervals(t *testing.T) {
	always, _ := timeinterval.Build(timeinterval.Config{Name: "always", TimeIntervals: []timeinterval.IntervalConfig{{}}})
	never, _ := timeinterval.Build(timeinterval.Config{Name: "never", TimeIntervals: []timeinterval.IntervalConfig{{Years: []string{"1999"}}}})
	intervals := map[string]*timeinterval.Set{"always": always, "never": never}
	known := map[string]bool{"always": true, "never": true}
	w, i := route.Duration(20*time.Millisecond), route.Duration(time.Hour)
	tests := []struct {
		name         string
		mute, active []string
		want         int
	}{
		{"muted now", []string{"always"}, nil, 0},
		{"mute interval not now", []string{"never"}, nil, 1},
		{"active now", nil, []string{"always"}, 1},
		{"active interval not now", nil, []string{"never"}, 0},
	}
	for _, tt := range tests {
		r, err := route.Build(&route.Config{Receiver: "r", GroupWait: &w, GroupInterval: &i, Routes: []*route.Config{
			{Match: map[string]string{"alertname": "Disk"}, MuteTimeIntervals: tt.mute, ActiveTimeIntervals: tt.active},
		}}, map[string]bool{"r": true}, known)
		if err != nil {
			t.Fatal(err)
		}
		fl := &flushLog{}
		ctx, cancel := context.WithCancel(context.Background())
		d := New(ctx, r, intervals, fl, muteNames{}, nil, time.Now, slog.New(slog.DiscardHandler), metrics.NewSet())
		now := time.Now()
		d.Add([]*alert.Alert{mk("Disk", "web01", now, now.Add(time.Hour))})
		if tt.want > 0 {
			fl.waitFor(t, tt.want)
		}
		time.Sleep(60 * time.Millisecond)
		if got := len(fl.snapshot()); got != tt.want {
			t.Errorf("%s: %d notifications, want %d", tt.name, got, tt.want)
		}
		cancel()
		d.Stop()
	}
}
