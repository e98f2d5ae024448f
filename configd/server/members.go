package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// hostStore persists membership; *store.Store implements it.
type hostStore interface {
	SaveHost(h api.Host, events []api.MemberEvent) error
	Hosts() ([]api.Host, error)
	MemberEvents(limit int) ([]api.MemberEvent, error)
	PruneMemberEvents(keep int) error
}

// members is the naming service: which hosts serve which app, whether they
// are up, and the ordered stream of join / leave / rejoin events. Heartbeats
// stay in memory; only changes of state are written to disk.
type members struct {
	store     hostStore
	ttl       time.Duration
	keep      int
	now       func() time.Time
	mu        sync.Mutex
	hosts     map[string]*api.Host
	events    []api.MemberEvent
	seq       int64
	changed   chan struct{} // closed and replaced on every event
	onEvent   func(api.MemberEvent)
	persisted int
}

func newMembers(st hostStore, ttl time.Duration, keep int, now func() time.Time) (*members, error) {
	m := &members{store: st, ttl: ttl, keep: keep, now: now, hosts: map[string]*api.Host{}, changed: make(chan struct{})}
	hosts, err := st.Hosts()
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	start := now()
	for i := range hosts {
		h := hosts[i]
		// A restart is not the hosts' fault: give every up host a full TTL
		// to heartbeat again before calling it down.
		if h.State == api.HostUp {
			h.LastSeen = start
		}
		m.hosts[h.Host] = &h
	}
	if m.events, err = st.MemberEvents(keep); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	if n := len(m.events); n > 0 {
		m.seq = m.events[n-1].Seq
	}
	return m, nil
}

// register records a heartbeat. A new host joins each of its apps, a down
// host rejoins, an up host that adds or drops apps joins or leaves them.
func (m *members) register(reg api.Host) (api.Host, error) {
	if reg.Host == "" {
		return api.Host{}, fmt.Errorf("host name is empty")
	}
	if err := api.ValidateFileName(reg.Host); err != nil {
		return api.Host{}, fmt.Errorf("host name: %w", err)
	}
	for _, app := range reg.Apps {
		if err := api.ValidateFileName(app); err != nil {
			return api.Host{}, fmt.Errorf("app name: %w", err)
		}
	}
	apps := slices.Clone(reg.Apps)
	sort.Strings(apps)
	apps = slices.Compact(apps)
	now := m.now().UTC()

	m.mu.Lock()
	defer m.mu.Unlock()
	h, known := m.hosts[reg.Host]
	var evs []api.MemberEvent
	switch {
	case !known:
		h = &api.Host{Host: reg.Host, Joined: now}
		m.hosts[reg.Host] = h
		for _, app := range apps {
			evs = append(evs, m.event("join", app, reg))
		}
	case h.State == api.HostDown:
		h.Joined = now
		for _, app := range apps {
			kind := "rejoin"
			if !slices.Contains(h.Apps, app) {
				kind = "join"
			}
			evs = append(evs, m.event(kind, app, reg))
		}
	default:
		for _, app := range apps {
			if !slices.Contains(h.Apps, app) {
				evs = append(evs, m.event("join", app, reg))
			}
		}
		for _, app := range h.Apps {
			if !slices.Contains(apps, app) {
				evs = append(evs, m.event("leave", app, reg))
			}
		}
	}
	changed := !known || h.State != api.HostUp || !slices.Equal(h.Apps, apps) || h.Addr != reg.Addr || !mapsEqual(h.Labels, reg.Labels)
	h.Apps, h.Addr, h.Labels, h.State, h.LastSeen = apps, reg.Addr, reg.Labels, api.HostUp, now
	if changed {
		if err := m.persist(*h, evs); err != nil {
			return api.Host{}, err
		}
	}
	return *h, nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// event numbers a new event; the caller persists it with persist.
func (m *members) event(kind, app string, h api.Host) api.MemberEvent {
	m.seq++
	return api.MemberEvent{Seq: m.seq, Time: m.now().UTC(), Type: kind, App: app, Host: h.Host, Addr: h.Addr}
}

func (m *members) persist(h api.Host, evs []api.MemberEvent) error {
	if err := m.store.SaveHost(h, evs); err != nil {
		return fmt.Errorf("members: %w", err)
	}
	if len(evs) == 0 {
		return nil
	}
	m.events = append(m.events, evs...)
	if len(m.events) > m.keep {
		m.events = slices.Clone(m.events[len(m.events)-m.keep:])
	}
	m.persisted += len(evs)
	if m.persisted > m.keep {
		m.persisted = 0
		if err := m.store.PruneMemberEvents(m.keep); err != nil {
			return fmt.Errorf("members: %w", err)
		}
	}
	close(m.changed)
	m.changed = make(chan struct{})
	for _, e := range evs {
		if m.onEvent != nil {
			m.onEvent(e)
		}
	}
	return nil
}

// sweep marks hosts silent for longer than the TTL as down.
func (m *members) sweep() error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.hosts {
		if h.State != api.HostUp || now.Sub(h.LastSeen) <= m.ttl {
			continue
		}
		h.State = api.HostDown
		var evs []api.MemberEvent
		for _, app := range h.Apps {
			evs = append(evs, m.event("leave", app, *h))
		}
		if err := m.persist(*h, evs); err != nil {
			return err
		}
	}
	return nil
}

func (m *members) runSweeper(ctx context.Context, every time.Duration, onErr func(error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.sweep(); err != nil {
				onErr(err)
			}
		}
	}
}

// list returns the hosts of app ("" = all apps), up ones only unless all.
func (m *members) list(app string, all bool) []api.Host {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Host
	for _, h := range m.hosts {
		if (app == "" || slices.Contains(h.Apps, app)) && (all || h.State == api.HostUp) {
			out = append(out, *h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// labelsOf returns a registered host's labels.
func (m *members) labelsOf(host string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.hosts[host]; h != nil {
		return h.Labels
	}
	return nil
}

// eventsAfter returns app's events after seq ("" = all apps), and a channel
// closed at the next event. gone reports that events after seq were already
// pruned, so the watcher should re-list the hosts.
func (m *members) eventsAfter(app string, seq int64) (evs []api.MemberEvent, next <-chan struct{}, last int64, gone bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) > 0 && seq < m.events[0].Seq-1 {
		gone = true
	}
	for _, e := range m.events {
		if e.Seq > seq && (app == "" || e.App == app) {
			evs = append(evs, e)
		}
	}
	return evs, m.changed, m.seq, gone
}

func (m *members) counts() (up, down int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.hosts {
		if h.State == api.HostUp {
			up++
		} else {
			down++
		}
	}
	return up, down
}
