package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/internal/atomicfile"
)

// FleetConfig tunes the fleet view: the registry of opskit daemons started
// with --configd, the scraper of their /metrics, and command broadcast.
type FleetConfig struct {
	// TTL is the least time a daemon may miss heartbeats before it is
	// down; a daemon that heartbeats slowly gets three of its intervals.
	TTL time.Duration
	// ScrapeInterval is how often every up daemon's /metrics, /healthz
	// and /readyz are read; ScrapeTimeout bounds one daemon's scrape.
	ScrapeInterval time.Duration
	ScrapeTimeout  time.Duration
	// AdminToken is sent to the daemons' /admin/* endpoints by
	// POST /v1/fleet/send. It is never logged.
	AdminToken string
	// StateFile keeps registrations and events across restarts ("" =
	// memory only).
	StateFile string
	// Forget drops daemons down or stopped for this long.
	Forget time.Duration
	// Events is how many membership events are kept.
	Events int
}

func (c *FleetConfig) setDefaults() {
	if c.TTL <= 0 {
		c.TTL = 15 * time.Second
	}
	if c.ScrapeInterval <= 0 {
		c.ScrapeInterval = 5 * time.Second
	}
	if c.ScrapeTimeout <= 0 {
		c.ScrapeTimeout = min(c.ScrapeInterval, 3*time.Second)
	}
	if c.Forget <= 0 {
		c.Forget = 24 * time.Hour
	}
	if c.Events <= 0 {
		c.Events = 1000
	}
}

// fleetEntry is one daemon: what it registered, its state, and the last
// two scrapes (rates are deltas between them).
type fleetEntry struct {
	api.FleetDaemon
	last *sample
}

// fleetState is what the state file holds.
type fleetState struct {
	Seq     int64             `json:"seq"`
	Daemons []api.FleetDaemon `json:"daemons"`
	Events  []api.FleetEvent  `json:"events"`
}

// fleetRegistry is the membership of opskit daemons: join, leave and
// rejoin events as the naming service keeps them for hosts. Heartbeats stay
// in memory; changes of state are written to the state file.
type fleetRegistry struct {
	cfg     FleetConfig
	now     func() time.Time
	onEvent func(api.FleetEvent)

	mu      sync.Mutex
	daemons map[string]*fleetEntry
	events  []api.FleetEvent
	seq     int64
	changed chan struct{} // closed and replaced on every event
}

func newFleetRegistry(cfg FleetConfig, now func() time.Time) (*fleetRegistry, error) {
	cfg.setDefaults()
	f := &fleetRegistry{cfg: cfg, now: now, daemons: map[string]*fleetEntry{}, changed: make(chan struct{})}
	if cfg.StateFile == "" {
		return f, nil
	}
	data, err := os.ReadFile(cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var st fleetState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("fleet: state file %s: %w", cfg.StateFile, err)
	}
	start := now().UTC()
	for _, d := range st.Daemons {
		// A restart of configd is not the daemons' fault: every up one
		// gets a full TTL to heartbeat again.
		if d.State == api.DaemonUp {
			d.LastSeen = start
		}
		d.Stats = nil
		f.daemons[d.ID] = &fleetEntry{FleetDaemon: d}
	}
	f.events, f.seq = st.Events, st.Seq
	return f, nil
}

// validateRegistration checks what a daemon sends about itself.
func validateRegistration(reg api.DaemonRegistration) error {
	switch {
	case reg.ID == "" || len(reg.ID) > 256:
		return errors.New("id must be 1 to 256 characters")
	case reg.Kind == "" || api.ValidateFileName(reg.Kind) != nil:
		return fmt.Errorf("kind %q: want a daemon name", reg.Kind)
	case reg.Host == "" || len(reg.Host) > 256:
		return errors.New("host must be 1 to 256 characters")
	case reg.PID < 0:
		return fmt.Errorf("pid %d", reg.PID)
	case reg.HeartbeatSeconds < 0:
		return fmt.Errorf("heartbeat_seconds %v", reg.HeartbeatSeconds)
	}
	if _, _, err := net.SplitHostPort(reg.Addr); err != nil {
		return fmt.Errorf("addr %q: want HOST:PORT", reg.Addr)
	}
	if len(reg.Listeners) > 64 {
		return errors.New("more than 64 listeners")
	}
	for name, a := range reg.Listeners {
		if _, _, err := net.SplitHostPort(a); err != nil || name == "" {
			return fmt.Errorf("listener %q %q: want a name and HOST:PORT", name, a)
		}
	}
	return nil
}

// register records a registration or heartbeat: a new daemon joins, one
// down or stopped rejoins.
func (f *fleetRegistry) register(reg api.DaemonRegistration) (api.FleetDaemon, error) {
	if err := validateRegistration(reg); err != nil {
		return api.FleetDaemon{}, err
	}
	now := f.now().UTC()
	f.mu.Lock()
	defer f.mu.Unlock()
	e, known := f.daemons[reg.ID]
	var ev *api.FleetEvent
	switch {
	case !known:
		e = &fleetEntry{FleetDaemon: api.FleetDaemon{Joined: now}}
		f.daemons[reg.ID] = e
		ev = f.event("join", reg, "")
	case e.State != api.DaemonUp:
		e.Joined = now
		ev = f.event("rejoin", reg, "")
	case e.PID != reg.PID || !e.Started.Equal(reg.Started):
		// Restarted within its TTL (by a supervisor, say): still worth
		// an event, since the process was gone.
		e.Joined = now
		ev = f.event("rejoin", reg, "restarted")
	}
	changed := ev != nil || !sameRegistration(e.DaemonRegistration, reg)
	if known && (e.PID != reg.PID || !e.Started.Equal(reg.Started)) {
		// Another process on the same address: its counters start afresh.
		e.last, e.Stats = nil, nil
	}
	e.DaemonRegistration, e.State, e.LastSeen = reg, api.DaemonUp, now
	if changed {
		if err := f.persist(ev); err != nil {
			return api.FleetDaemon{}, err
		}
	}
	return f.view(e, now), nil
}

func sameRegistration(a, b api.DaemonRegistration) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.Host == b.Host && a.Version == b.Version && a.PID == b.PID &&
		a.Addr == b.Addr && a.Started.Equal(b.Started) && a.HeartbeatSeconds == b.HeartbeatSeconds && maps.Equal(a.Listeners, b.Listeners)
}

// leave records a graceful stop. It reports false for an unknown id.
func (f *fleetRegistry) leave(id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.daemons[id]
	if !ok {
		return false, nil
	}
	if e.State == api.DaemonStopped {
		return true, nil
	}
	e.State, e.LastSeen, e.Stats, e.last = api.DaemonStopped, f.now().UTC(), nil, nil
	return true, f.persist(f.event("leave", e.DaemonRegistration, "stopped"))
}

// ttlOf is how long a daemon may stay silent.
func (f *fleetRegistry) ttlOf(reg api.DaemonRegistration) time.Duration {
	return max(f.cfg.TTL, time.Duration(3*reg.HeartbeatSeconds*float64(time.Second)))
}

// sweep marks silent daemons down and forgets long-gone ones.
func (f *fleetRegistry) sweep() error {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for id, e := range f.daemons {
		switch {
		case e.State == api.DaemonUp && now.Sub(e.LastSeen) > f.ttlOf(e.DaemonRegistration):
			e.State, e.Stats, e.last = api.DaemonDown, nil, nil
			errs = append(errs, f.persist(f.event("leave", e.DaemonRegistration, "timeout")))
		case e.State != api.DaemonUp && now.Sub(e.LastSeen) > f.cfg.Forget:
			delete(f.daemons, id)
			errs = append(errs, f.persist(nil))
		}
	}
	return errors.Join(errs...)
}

// event numbers a new event; the caller persists it with persist.
func (f *fleetRegistry) event(kind string, reg api.DaemonRegistration, reason string) *api.FleetEvent {
	f.seq++
	return &api.FleetEvent{Seq: f.seq, Time: f.now().UTC(), Type: kind, ID: reg.ID, Kind: reg.Kind, Host: reg.Host, Reason: reason}
}

// persist appends ev (if any), wakes event watchers and writes the state
// file. Called with mu held.
func (f *fleetRegistry) persist(ev *api.FleetEvent) error {
	if ev != nil {
		f.events = append(f.events, *ev)
		if len(f.events) > f.cfg.Events {
			f.events = slices.Clone(f.events[len(f.events)-f.cfg.Events:])
		}
		close(f.changed)
		f.changed = make(chan struct{})
		if f.onEvent != nil {
			f.onEvent(*ev)
		}
	}
	if f.cfg.StateFile == "" {
		return nil
	}
	st := fleetState{Seq: f.seq, Events: f.events, Daemons: make([]api.FleetDaemon, 0, len(f.daemons))}
	for _, e := range f.daemons {
		d := e.FleetDaemon
		d.Stats = nil
		st.Daemons = append(st.Daemons, d)
	}
	sort.Slice(st.Daemons, func(i, j int) bool { return st.Daemons[i].ID < st.Daemons[j].ID })
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := atomicfile.WriteFile(f.cfg.StateFile, data, 0o640); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}

// view is a daemon as the API shows it. Called with mu held.
func (f *fleetRegistry) view(e *fleetEntry, now time.Time) api.FleetDaemon {
	d := e.FleetDaemon
	d.UptimeSeconds = 0
	if d.State == api.DaemonUp && !d.Started.IsZero() {
		d.UptimeSeconds = max(0, now.Sub(d.Started).Seconds())
	}
	if e.Stats != nil {
		st := *e.Stats
		d.Stats = &st
	}
	return d
}

// list returns every daemon known, ordered by kind, then host, then id.
func (f *fleetRegistry) list() []api.FleetDaemon {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.FleetDaemon, 0, len(f.daemons))
	for _, e := range f.daemons {
		out = append(out, f.view(e, now))
	}
	sortDaemons(out)
	return out
}

func sortDaemons(ds []api.FleetDaemon) {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		return a.ID < b.ID
	})
}

// eventsAfter returns the events after seq and a channel closed at the
// next one. gone reports that events after seq were already dropped.
func (f *fleetRegistry) eventsAfter(seq int64) (evs []api.FleetEvent, next <-chan struct{}, last int64, gone bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) > 0 && seq < f.events[0].Seq-1 {
		gone = true
	}
	for _, e := range f.events {
		if e.Seq > seq {
			evs = append(evs, e)
		}
	}
	return evs, f.changed, f.seq, gone
}

// counts returns how many daemons are in each state.
func (f *fleetRegistry) counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{api.DaemonUp: 0, api.DaemonDown: 0, api.DaemonStopped: 0}
	for _, e := range f.daemons {
		out[e.State]++
	}
	return out
}

// scrapeTargets are the up daemons: id and main address.
func (f *fleetRegistry) scrapeTargets() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for id, e := range f.daemons {
		if e.State == api.DaemonUp {
			out[id] = e.Addr
		}
	}
	return out
}

// recordScrape stores a scrape's sample and the stats computed against
// the previous one. A scrape of a process that has since been replaced or
// gone down is dropped.
func (f *fleetRegistry) recordScrape(id string, pid int, cur *sample, health, detail string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.daemons[id]
	if !ok || e.State != api.DaemonUp || e.PID != pid {
		return
	}
	st := &api.DaemonStats{Scraped: cur.at.UTC(), Health: health, Detail: detail}
	if cur.ok {
		st.HeapBytes, st.Goroutines = cur.heap, cur.goroutines
		st.Rates = kindRates(e.Kind, e.last, cur)
		st.Hops = hopStats(e.last, cur)
		e.last = cur
	}
	// A failed scrape shows no figures rather than stale ones; the last
	// good sample stays the base of the next rates.
	e.Stats = st
}

// pidOf returns the registered pid of an up daemon.
func (f *fleetRegistry) pidOf(id string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.daemons[id]
	if !ok || e.State != api.DaemonUp {
		return 0, false
	}
	return e.PID, true
}

// choose returns the daemons dest names: all, a kind, a host or an id.
// Stopped daemons are left out; down ones are included (the caller reports
// them as failed).
func (f *fleetRegistry) choose(dest string) []api.FleetDaemon {
	var out []api.FleetDaemon
	for _, d := range f.list() {
		if d.State == api.DaemonStopped {
			continue
		}
		if dest == "all" || d.Kind == dest || d.Host == dest || d.ID == dest {
			out = append(out, d)
		}
	}
	return out
}
