// Package dispatch groups alerts and decides when each group is flushed to
// its receiver, with Alertmanager's timers: a new group waits group_wait
// (an alert that started longer ago than that flushes it at once), then
// flushes every group_interval; whether a flush sends anything is the
// notifier's decision (it applies repeat_interval). Resolved alerts leave
// their group once a flush has handed them over.
package dispatch

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/route"
	"github.com/opskit/opskit/alarm/timeinterval"
)

// Notifier takes a flushed group.
type Notifier interface {
	Notify(ctx context.Context, g *notify.Group) error
}

// Muter says whether an alert is silenced or inhibited now, and why.
type Muter interface {
	Muted(a *alert.Alert) (reason string, muted bool)
}

// Recorder receives the transitions worth keeping as history.
type Recorder interface {
	RecordAlert(kind string, a *alert.Alert, groupKey, receiver, detail string)
}

// Dispatcher holds the aggregation groups.
type Dispatcher struct {
	ctx      context.Context
	notifier Notifier
	muter    Muter
	rec      Recorder
	now      func() time.Time
	log      *slog.Logger

	mu        sync.Mutex
	root      *route.Route
	intervals map[string]*timeinterval.Set
	groups    map[string]*group

	flushes, flushErrors *metrics.Counter
}

type group struct {
	route  *route.Route
	key    string
	labels alert.Labels

	mu         sync.Mutex
	alerts     map[alert.Fingerprint]*alert.Alert
	muted      map[alert.Fingerprint]string // why each alert was muted at the last flush
	timer      *time.Timer
	hasFlushed bool
	stopped    bool
}

// New makes a dispatcher over the routing tree root, whose routes name
// time intervals in intervals. Flushes stop when ctx ends.
func New(ctx context.Context, root *route.Route, intervals map[string]*timeinterval.Set, n Notifier, m Muter, rec Recorder, now func() time.Time, log *slog.Logger, set *metrics.Set) *Dispatcher {
	d := &Dispatcher{
		ctx: ctx, root: root, intervals: intervals, notifier: n, muter: m, rec: rec, now: now, log: log,
		groups:      map[string]*group{},
		flushes:     set.NewCounter(`opskit_alarm_group_flushes_total`),
		flushErrors: set.NewCounter(`opskit_alarm_group_flush_errors_total`),
	}
	set.NewGauge(`opskit_alarm_groups`, func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(len(d.groups))
	})
	return d
}

// Add routes alerts into their groups.
func (d *Dispatcher) Add(alerts []*alert.Alert) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range alerts {
		for _, r := range d.root.Match(a.Labels) {
			gk := r.GroupKey(a.Labels)
			g := d.groups[gk]
			isNew := g == nil
			if isNew {
				g = &group{route: r, key: gk, labels: r.GroupLabels(a.Labels), alerts: map[alert.Fingerprint]*alert.Alert{}}
				d.groups[gk] = g
			}
			g.mu.Lock()
			fp := a.Fingerprint()
			_, known := g.alerts[fp]
			g.alerts[fp] = a
			if isNew {
				g.timer = time.AfterFunc(r.GroupWait, func() { d.flush(g) })
			}
			// An alert that began longer than group_wait ago need not wait.
			if !g.hasFlushed && a.StartsAt.Add(r.GroupWait).Before(now) {
				g.timer.Reset(0)
			}
			g.mu.Unlock()
			if d.rec != nil && !known {
				d.rec.RecordAlert("grouped", a, gk, r.Receiver, "")
			}
		}
	}
}

// SetRoute replaces the routing tree (on reload): the groups are rebuilt
// from alerts, as Alertmanager does; the notification log keeps what was
// already sent from being sent again.
func (d *Dispatcher) SetRoute(root *route.Route, intervals map[string]*timeinterval.Set, alerts []*alert.Alert) {
	d.mu.Lock()
	for _, g := range d.groups {
		g.mu.Lock()
		g.stopped = true
		g.timer.Stop()
		g.mu.Unlock()
	}
	d.groups = map[string]*group{}
	d.root = root
	d.intervals = intervals
	d.mu.Unlock()
	d.Add(alerts)
}

// Stop stops every group timer.
func (d *Dispatcher) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, g := range d.groups {
		g.mu.Lock()
		g.stopped = true
		g.timer.Stop()
		g.mu.Unlock()
	}
}

func (d *Dispatcher) flush(g *group) {
	if d.ctx.Err() != nil {
		return
	}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	snapshot := make([]*alert.Alert, 0, len(g.alerts))
	for _, a := range g.alerts {
		snapshot = append(snapshot, a)
	}
	g.hasFlushed = true
	wasMuted := g.muted
	g.mu.Unlock()
	muted := map[alert.Fingerprint]string{}

	now := d.now()
	notify.SortAlerts(snapshot)
	send := make([]*alert.Alert, 0, len(snapshot))
	for _, a := range snapshot {
		if reason, isMuted := d.muter.Muted(a); isMuted {
			fp := a.Fingerprint()
			muted[fp] = reason
			// History gets the change, not every flush of a muted alert.
			if d.rec != nil && wasMuted[fp] != reason {
				d.rec.RecordAlert(reason, a, g.key, g.route.Receiver, "")
			}
			continue
		}
		send = append(send, a)
	}
	d.flushes.Inc()
	var err error
	if len(send) > 0 && d.timeAllows(g.route, now) {
		err = d.notifier.Notify(d.ctx, &notify.Group{
			Receiver: g.route.Receiver, GroupKey: g.key, GroupLabels: g.labels,
			RepeatInterval: g.route.RepeatInterval, Alerts: send,
		})
	}
	if err != nil {
		d.flushErrors.Inc()
		if d.ctx.Err() == nil {
			d.log.Error("flush failed; the group is tried again at the next interval", "group", g.key, "err", err)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	g.muted = muted
	if err == nil {
		for _, a := range snapshot {
			fp := a.Fingerprint()
			// Only if unchanged since the snapshot: a new report stays.
			if a.Resolved(now) && g.alerts[fp] == a {
				delete(g.alerts, fp)
			}
		}
	}
	if len(g.alerts) == 0 {
		g.stopped = true
		if d.groups[g.key] == g {
			delete(d.groups, g.key)
		}
		return
	}
	g.timer.Reset(g.route.GroupInterval)
}

// timeAllows applies the route's mute and active time intervals at now.
func (d *Dispatcher) timeAllows(r *route.Route, now time.Time) bool {
	d.mu.Lock()
	intervals := d.intervals
	d.mu.Unlock()
	for _, name := range r.MuteTimeIntervals {
		if in := intervals[name]; in != nil && in.Contains(now) {
			return false
		}
	}
	if len(r.ActiveTimeIntervals) == 0 {
		return true
	}
	for _, name := range r.ActiveTimeIntervals {
		if in := intervals[name]; in != nil && in.Contains(now) {
			return true
		}
	}
	return false
}

// GroupInfo describes a group for the API.
type GroupInfo struct {
	Key      string
	Labels   alert.Labels
	Receiver string
	Alerts   []*alert.Alert
}

// Groups returns the current groups sorted by key.
func (d *Dispatcher) Groups() []GroupInfo {
	d.mu.Lock()
	out := make([]GroupInfo, 0, len(d.groups))
	for _, g := range d.groups {
		g.mu.Lock()
		gi := GroupInfo{Key: g.key, Labels: g.labels, Receiver: g.route.Receiver}
		for _, a := range g.alerts {
			gi.Alerts = append(gi.Alerts, a)
		}
		g.mu.Unlock()
		notify.SortAlerts(gi.Alerts)
		out = append(out, gi)
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Receivers returns the receivers the tree routes labels to.
func (d *Dispatcher) Receivers(ls alert.Labels) []string {
	d.mu.Lock()
	root := d.root
	d.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for _, r := range root.Match(ls) {
		if !seen[r.Receiver] {
			seen[r.Receiver] = true
			out = append(out, r.Receiver)
		}
	}
	return out
}
