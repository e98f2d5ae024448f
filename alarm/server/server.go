// Package server is alarm's core put together: the intake path (decode,
// store durably, update inhibition, route into groups, record history) and
// the HTTP API, Alertmanager's v2 API plus alarm's own endpoints.
package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/alertstore"
	"github.com/opskit/opskit/alarm/config"
	"github.com/opskit/opskit/alarm/dispatch"
	"github.com/opskit/opskit/alarm/history"
	"github.com/opskit/opskit/alarm/inhibit"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/route"
	"github.com/opskit/opskit/alarm/silence"
	"github.com/opskit/opskit/alarm/timeinterval"
	"github.com/opskit/opskit/internal/dye"
)

// Options are the server's settings.
type Options struct {
	ResolveTimeout time.Duration
	MaxBodyBytes   int64
	Limits         alert.Limits
	ExternalURL    string
	ConfigText     string // shown by /api/v2/status
	Now            func() time.Time
	// Dye traces alerts carrying the annotation opskit_dye at intake.
	Dye *dye.Tracer
}

// Server is the running core.
type Server struct {
	Alerts     *alertstore.Store
	Silences   *silence.Silences
	Dispatcher *dispatch.Dispatcher
	Notifier   *notify.Notifier
	History    *history.Log

	opt       atomic.Pointer[Options]
	inhibitor atomic.Pointer[inhibit.Inhibitor]
	windows   atomic.Pointer[[]*config.Maintenance]
	log       *slog.Logger
	started   time.Time

	received, refused, invalidBodies *metrics.Counter
}

// Parts are the components a server is assembled from.
type Parts struct {
	Alerts    *alertstore.Store
	Silences  *silence.Silences
	Inhibitor *inhibit.Inhibitor
	Route     *route.Route
	Intervals map[string]*timeinterval.Set
	// Maintenance windows mute matching alerts on a schedule.
	Maintenance []*config.Maintenance
	Notifier    *notify.Notifier
	History     *history.Log // may be nil
}

// New assembles a server and its dispatcher; flushes stop when ctx ends.
func New(ctx context.Context, opt Options, p Parts, log *slog.Logger, set *metrics.Set) *Server {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	alerts := p.Alerts
	s := &Server{
		Alerts: alerts, Silences: p.Silences, Notifier: p.Notifier, History: p.History,
		log: log, started: opt.Now(),
		received:      set.NewCounter(`opskit_alarm_alerts_received_total`),
		refused:       set.NewCounter(`opskit_alarm_alerts_refused_total`),
		invalidBodies: set.NewCounter(`opskit_alarm_alert_posts_refused_total`),
	}
	s.opt.Store(&opt)
	s.inhibitor.Store(p.Inhibitor)
	var rec dispatch.Recorder
	if p.History != nil {
		rec = p.History
	}
	s.windows.Store(&p.Maintenance)
	s.Dispatcher = dispatch.New(ctx, p.Route, p.Intervals, p.Notifier, s, rec, opt.Now, log, set)
	set.NewGauge(`opskit_alarm_alerts{state="firing"}`, func() float64 { f, _ := alerts.Counts(); return float64(f) })
	set.NewGauge(`opskit_alarm_alerts{state="resolved"}`, func() float64 { _, r := alerts.Counts(); return float64(r) })
	return s
}

// SetOptions replaces the options (on reload).
func (s *Server) SetOptions(opt Options) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s.opt.Store(&opt)
}

// Options returns the options in force.
func (s *Server) Options() Options { return *s.opt.Load() }

// SetInhibitor replaces the inhibition rules (on reload), indexing the
// current alerts.
func (s *Server) SetInhibitor(in *inhibit.Inhibitor) {
	for _, a := range s.Alerts.List() {
		in.Observe(a)
	}
	s.inhibitor.Store(in)
}

// SetMaintenance replaces the maintenance windows (on reload).
func (s *Server) SetMaintenance(ws []*config.Maintenance) { s.windows.Store(&ws) }

// maintenanceFor names the open maintenance windows that mute ls.
func (s *Server) maintenanceFor(ls alert.Labels) []string {
	now := s.opt.Load().Now()
	var out []string
	for _, w := range *s.windows.Load() {
		if w.Mutes(ls, now) {
			out = append(out, "maintenance:"+w.Name)
		}
	}
	return out
}

// Ingest stores alerts durably, then routes them. When it returns nil the
// alerts are safe from a crash.
func (s *Server) Ingest(ctx context.Context, alerts []*alert.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	now := s.opt.Load().Now()
	type prior struct {
		known, resolved bool
	}
	before := make([]prior, len(alerts))
	for i, a := range alerts {
		if old, ok := s.Alerts.Get(a.Fingerprint()); ok {
			before[i] = prior{true, old.Resolved(now)}
		}
	}
	stored, err := s.Alerts.Put(alerts)
	if err != nil {
		return err
	}
	s.received.Add(len(stored))
	in := s.inhibitor.Load()
	for i, a := range stored {
		in.Observe(a)
		if s.History != nil {
			res := a.Resolved(now)
			switch {
			case (!before[i].known || before[i].resolved) && !res:
				s.History.RecordAlert("firing", a, "", "", "")
			case before[i].known && !before[i].resolved && res:
				s.History.RecordAlert("resolved", a, "", "", "")
			}
		}
	}
	s.Dispatcher.Add(stored)
	return nil
}

// Restore routes every stored alert after a restart.
func (s *Server) Restore() int {
	all := s.Alerts.List()
	in := s.inhibitor.Load()
	for _, a := range all {
		in.Observe(a)
	}
	s.Dispatcher.Add(all)
	return len(all)
}

// Muted implements dispatch.Muter: silences first, then inhibition.
func (s *Server) Muted(a *alert.Alert) (string, bool) {
	if ids := s.Silences.MutedBy(a.Labels); len(ids) > 0 {
		return "silenced", true
	}
	if ws := s.maintenanceFor(a.Labels); len(ws) > 0 {
		return "maintenance", true
	}
	if by := s.inhibitor.Load().InhibitedBy(a.Labels); len(by) > 0 {
		return "inhibited", true
	}
	return "", false
}

// GC drops old resolved alerts, expired silences and old log entries.
func (s *Server) GC() {
	gone, err := s.Alerts.GC()
	if err != nil {
		s.log.Error("alert GC", "err", err)
	}
	in := s.inhibitor.Load()
	for _, a := range gone {
		in.Forget(a.Fingerprint())
	}
	if _, err := s.Silences.GC(); err != nil {
		s.log.Error("silence GC", "err", err)
	}
	if err := s.Notifier.GC(); err != nil {
		s.log.Error("notification log GC", "err", err)
	}
	if s.History != nil {
		if err := s.History.GC(); err != nil {
			s.log.Error("history GC", "err", err)
		}
	}
}
