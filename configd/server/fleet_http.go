package server

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/configd/api"
)

//go:embed web/fleet.html
var fleetPage []byte

// fleet is the fleet view: registry, scraper and command broadcast.
type fleet struct {
	reg        *fleetRegistry
	scraper    *fleetScraper
	client     *http.Client
	adminToken string
}

func newFleet(cfg FleetConfig, now func() time.Time, log *slog.Logger, m *metrics.Set) (*fleet, error) {
	reg, err := newFleetRegistry(cfg, now)
	if err != nil {
		return nil, err
	}
	reg.onEvent = func(e api.FleetEvent) {
		log.Info("fleet membership", "event", e.Type, "kind", e.Kind, "id", e.ID, "host", e.Host, "reason", e.Reason, "seq", e.Seq)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	ok := m.NewCounter(`opskit_configd_fleet_scrapes_total{result="ok"}`)
	failed := m.NewCounter(`opskit_configd_fleet_scrapes_total{result="failed"}`)
	for _, state := range []string{api.DaemonUp, api.DaemonDown, api.DaemonStopped} {
		m.NewGauge(fmt.Sprintf(`opskit_configd_fleet_daemons{state=%q}`, state), func() float64 { return float64(reg.counts()[state]) })
	}
	f := &fleet{reg: reg, client: client, adminToken: cfg.AdminToken}
	f.scraper = &fleetScraper{reg: reg, client: client, wanted: wantedMetrics(), now: now, parallel: 32,
		onScrape: func(good bool) {
			if good {
				ok.Inc()
			} else {
				failed.Inc()
			}
		}}
	return f, nil
}

// RunFleet marks silent daemons down and scrapes the up ones until ctx
// ends. A replica does nothing: the primary keeps the fleet.
func (s *Server) RunFleet(ctx context.Context) error {
	if s.Replica() {
		return nil
	}
	cfg := s.fleet.reg.cfg
	sweep := time.NewTicker(max(cfg.TTL/4, 10*time.Millisecond))
	defer sweep.Stop()
	scrape := time.NewTicker(cfg.ScrapeInterval)
	defer scrape.Stop()
	scrapeDone := make(chan struct{}, 1)
	scrapeDone <- struct{}{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			if err := s.fleet.reg.sweep(); err != nil {
				s.log.Error("fleet sweep", "err", err)
			}
		case <-scrape.C:
			// A slow round is not stacked on: the next tick waits for it.
			select {
			case <-scrapeDone:
				go func() {
					defer func() { scrapeDone <- struct{}{} }()
					s.fleet.scraper.scrapeAll(ctx)
				}()
			default:
			}
		}
	}
}

func (s *Server) registerFleet(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/fleet/daemons", primary, s.agent(s.fleetRegister))
	s.handle(mux, "DELETE /v1/fleet/daemons/{id}", primary, s.agent(s.fleetLeave))
	s.handle(mux, "GET /v1/fleet", primary, s.read(s.fleetList))
	s.handle(mux, "GET /v1/fleet/events", primary, s.read(s.fleetEvents))
	s.handle(mux, "POST /v1/fleet/send", primary, s.admin(s.fleetSend))
	s.handle(mux, "GET /v1/topology", primary, s.read(s.topology))
	// The page holds no data: it fetches /v1/topology with the token
	// given in its URL fragment (#token=...).
	mux.HandleFunc("GET /fleet", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(fleetPage)
	})
}

func (s *Server) fleetRegister(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var reg api.DaemonRegistration
	// Unknown fields are allowed: a newer daemon may tell more.
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&reg); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("registration: %v", err)
	}
	got, err := s.fleet.reg.register(reg)
	if err != nil {
		return badRequest("registration: %v", err)
	}
	writeJSON(w, http.StatusOK, got)
	return nil
}

func (s *Server) fleetLeave(w http.ResponseWriter, r *http.Request, _ Identity) error {
	found, err := s.fleet.reg.leave(r.PathValue("id"))
	if err != nil {
		return err
	}
	if !found {
		return &httpError{http.StatusNotFound, fmt.Errorf("no daemon %q is registered", r.PathValue("id"))}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) fleetList(w http.ResponseWriter, r *http.Request, _ Identity) error {
	writeJSON(w, http.StatusOK, s.fleet.reg.list())
	return nil
}

func (s *Server) topology(w http.ResponseWriter, r *http.Request, _ Identity) error {
	writeJSON(w, http.StatusOK, buildTopology(s.fleet.reg.list(), s.cfg.Now()))
	return nil
}

// fleetEvents long-polls daemon membership events after ?after=SEQ;
// ?timeout=0s answers at once.
func (s *Server) fleetEvents(w http.ResponseWriter, r *http.Request, _ Identity) error {
	return longPollEvents(s, w, r, s.fleet.reg.eventsAfter, func(last int64, evs []api.FleetEvent, gone bool) any {
		return api.FleetEventsResponse{Last: last, Events: evs, Gone: gone}
	})
}

// fleetSend runs an admin command on the daemons the request chooses and
// answers with each one's result. It is audited like a publish.
func (s *Server) fleetSend(w http.ResponseWriter, r *http.Request, id Identity) error {
	var req api.FleetSendRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if req.Dest == "" {
		return badRequest("dest: give all, a kind, a host name or an instance id")
	}
	if err := validAdminCommand(req.Command); err != nil {
		return badRequest("%v", err)
	}
	chosen := s.fleet.reg.choose(req.Dest)
	entry := api.AuditEntry{Time: s.cfg.Now().UTC(), Who: id.Name, Role: id.Role, Action: "fleet send", Target: req.Dest, Remote: r.RemoteAddr}
	command := strings.TrimSpace(req.Command + " " + strings.Join(req.Args, " "))
	if len(chosen) == 0 {
		entry.Detail = command + ": no daemon matches"
		s.audit(entry)
		return &httpError{http.StatusNotFound, fmt.Errorf("no registered daemon matches dest %q (a kind, a host name, an instance id or all)", req.Dest)}
	}
	results := broadcast(r.Context(), s.fleet.client, s.fleet.adminToken, chosen, req.Command, req.Args)
	failed := 0
	for _, res := range results {
		if !res.OK {
			failed++
		}
	}
	entry.OK = failed == 0
	entry.Detail = fmt.Sprintf("%s: %d daemons, %d failed", command, len(results), failed)
	s.audit(entry)
	s.log.Info("fleet send", "dest", req.Dest, "command", req.Command, "daemons", len(results), "failed", failed, "who", id.Name)
	writeJSON(w, http.StatusOK, api.FleetSendResponse{Results: results})
	return nil
}

func (s *Server) audit(e api.AuditEntry) {
	if err := s.store.Audit(e); err != nil {
		s.log.Error("audit", "err", err)
	}
}
