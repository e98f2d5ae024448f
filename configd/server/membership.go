package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/opskit/opskit/configd/api"
)

func (s *Server) register(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var h api.Host
	if err := s.decode(w, r, &h); err != nil {
		return err
	}
	got, err := s.members.register(h)
	if err != nil {
		return badRequest("%v", err)
	}
	writeJSON(w, http.StatusOK, got)
	return nil
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, _ Identity) error {
	hosts := s.members.list(r.PathValue("app"), r.URL.Query().Get("all") != "")
	if hosts == nil {
		hosts = []api.Host{}
	}
	writeJSON(w, http.StatusOK, hosts)
	return nil
}

// events long-polls membership events after ?after=SEQ (for one app or
// all); ?timeout=0s answers at once.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ Identity) error {
	q := r.URL.Query()
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	var timeout time.Duration
	if t := q.Get("timeout"); t != "0" && t != "0s" {
		var err error
		if timeout, err = s.watchTimeout(r); err != nil {
			return err
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		evs, next, last, gone := s.members.eventsAfter(r.PathValue("app"), after)
		if len(evs) > 0 || gone || timeout == 0 {
			if evs == nil {
				evs = []api.MemberEvent{}
			}
			writeJSON(w, http.StatusOK, api.EventsResponse{Last: last, Events: evs, Gone: gone})
			return nil
		}
		select {
		case <-next:
		case <-timer.C:
			writeJSON(w, http.StatusOK, api.EventsResponse{Last: last, Events: []api.MemberEvent{}})
			return nil
		case <-s.stopped:
			writeJSON(w, http.StatusOK, api.EventsResponse{Last: last, Events: []api.MemberEvent{}})
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

func (s *Server) report(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var rep api.Report
	if err := s.decode(w, r, &rep); err != nil {
		return err
	}
	if rep.Host == "" || api.ValidateNamespace(rep.Namespace) != nil {
		return badRequest("report needs host and namespace")
	}
	var published time.Time
	if rel, err := s.store.Release(rep.Namespace, rep.Version); err == nil {
		published = rel.Time
	}
	s.reports.add(rep, published, s.cfg.Now())
	if !rep.OK {
		s.log.Warn("apply failed on host", "host", rep.Host, "namespace", rep.Namespace, "version", rep.Version, "in_force", rep.Applied, "err", rep.Error)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) releaseStatus(w http.ResponseWriter, r *http.Request, _ Identity) error {
	v, err := pathVersion(r)
	if err != nil {
		return err
	}
	name := nsName(r)
	if _, err := s.store.Release(name, v); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.reports.convergence(name, v))
	return nil
}
