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
	app := r.PathValue("app")
	return longPollEvents(s, w, r, func(after int64) ([]api.MemberEvent, <-chan struct{}, int64, bool) {
		return s.members.eventsAfter(app, after)
	}, func(last int64, evs []api.MemberEvent, gone bool) any {
		return api.EventsResponse{Last: last, Events: evs, Gone: gone}
	})
}

// longPollEvents answers a long poll for events after ?after=SEQ: at once
// when there are some (or the cursor is gone, or ?timeout=0s), else when
// the next one comes, the timeout passes or the server stops. fetch returns
// the events after a sequence number, a channel closed on the next one, the
// last sequence number and whether the cursor fell out of the kept events.
func longPollEvents[E any](s *Server, w http.ResponseWriter, r *http.Request,
	fetch func(after int64) (evs []E, next <-chan struct{}, last int64, gone bool),
	answer func(last int64, evs []E, gone bool) any) error {
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
		evs, next, last, gone := fetch(after)
		if len(evs) > 0 || gone || timeout == 0 {
			if evs == nil {
				evs = []E{}
			}
			writeJSON(w, http.StatusOK, answer(last, evs, gone))
			return nil
		}
		select {
		case <-next:
		case <-timer.C:
			writeJSON(w, http.StatusOK, answer(last, []E{}, false))
			return nil
		case <-s.stopped:
			writeJSON(w, http.StatusOK, answer(last, []E{}, false))
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
