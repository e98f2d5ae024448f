package server

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// maxWatchNamespaces bounds the namespaces one watch may name.
const maxWatchNamespaces = 1000

type watchQuery struct {
	held   map[string]int64
	names  []string
	host   string
	labels map[string]string
}

// parseWatchQuery reads ?ns=NAME:VERSION (repeated), ?host= and ?label=k=v.
func parseWatchQuery(q url.Values) (watchQuery, error) {
	wq := watchQuery{held: map[string]int64{}, host: q.Get("host")}
	for _, item := range q["ns"] {
		name, ver := item, int64(0)
		if i := strings.LastIndexByte(item, ':'); i >= 0 {
			name = item[:i]
			v, err := strconv.ParseInt(item[i+1:], 10, 64)
			if err != nil || v < 0 {
				return watchQuery{}, badRequest("ns %q: want NAME:VERSION", item)
			}
			ver = v
		}
		if err := api.ValidateNamespace(name); err != nil {
			return watchQuery{}, badRequest("%v", err)
		}
		if _, dup := wq.held[name]; !dup {
			wq.names = append(wq.names, name)
		}
		wq.held[name] = ver
	}
	if len(wq.names) == 0 {
		return watchQuery{}, badRequest("give ?ns=app/env/name:VERSION (repeat for more) or ?rev=N")
	}
	if len(wq.names) > maxWatchNamespaces {
		return watchQuery{}, badRequest("%d namespaces in one watch; at most %d", len(wq.names), maxWatchNamespaces)
	}
	labels, err := parseLabels(q["label"])
	if err != nil {
		return watchQuery{}, err
	}
	wq.labels = labels
	return wq, nil
}

// watchTimeout is the request's ?timeout (capped by the server's), with up
// to 10% taken off at random so watchers that started together do not all
// come back together.
func (s *Server) watchTimeout(r *http.Request) (time.Duration, error) {
	return s.watchTimeoutOf(r.URL.Query())
}

// watchTimeoutOf is watchTimeout from the parsed query.
func (s *Server) watchTimeoutOf(q url.Values) (time.Duration, error) {
	d := s.cfg.WatchTimeout
	if t := q.Get("timeout"); t != "" {
		v, err := time.ParseDuration(t)
		if err != nil || v <= 0 {
			return 0, badRequest("timeout %q: want a duration such as 30s", t)
		}
		d = min(d, v)
	}
	return d - time.Duration(rand.Int64N(int64(d)/10+1)), nil
}

// namespaceWatch parses a namespace watch and subscribes it. check returns
// the encoded answer and whether this host's version of a namespace differs
// from the one held. The caller unsubscribes the waiter (or parks it).
func (s *Server) namespaceWatch(q url.Values) (*waiter, func() ([]byte, bool, error), error) {
	wq, err := parseWatchQuery(q)
	if err != nil {
		return nil, nil, err
	}
	held, names, host, labels := wq.held, wq.names, wq.host, wq.labels
	withContent := q.Get("content") != ""
	if labels == nil && !s.Replica() {
		labels = s.members.labelsOf(host)
	}
	wt := s.hub.subscribe(names, false)
	check := func() ([]byte, bool, error) {
		var out []api.Change
		for _, n := range names {
			h, _ := s.head(n)
			if v := h.VersionFor(host, labels); v != held[n] {
				out = append(out, api.Change{Namespace: n, Version: v})
			}
		}
		if len(out) == 0 {
			return nil, false, nil
		}
		b, err := s.changesJSON(out, withContent)
		return b, true, err
	}
	return wt, check, nil
}

// watch long-polls. With ?ns=NAME:VERSION (repeated) it answers 200 with
// the namespaces whose version for this host (?host=, ?label=) differs from
// the one held, at once or when one changes, else 304 at the timeout. With
// ?rev=N it answers the namespaces changed after server rev N (replicas).
func (s *Server) watch(w http.ResponseWriter, r *http.Request, _ Identity) error {
	q := r.URL.Query()
	timeout, err := s.watchTimeoutOf(q)
	if err != nil {
		return err
	}
	// check returns the encoded answer and whether there is a change.
	var check func() ([]byte, bool, error)
	var wt *waiter
	if rv := q.Get("rev"); rv != "" {
		rev, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			return badRequest("rev %q: want a number", rv)
		}
		wt = s.hub.subscribe(nil, true)
		check = func() ([]byte, bool, error) {
			now, names, err := s.store.ChangedSince(rev)
			if err != nil || len(names) == 0 {
				return nil, false, err
			}
			b, err := json.Marshal(api.RevChanges{Rev: now, Namespaces: names})
			return b, true, err
		}
	} else if wt, check, err = s.namespaceWatch(q); err != nil {
		return err
	}
	parked := false
	defer func() {
		if !parked {
			s.hub.unsubscribe(wt)
		}
	}()
	var timer *time.Timer
	for {
		body, changed, err := check()
		if err != nil {
			return err
		}
		if changed {
			s.watchChanged.Inc()
			writeRaw(w, body)
			return nil
		}
		if timer == nil {
			// Namespace watches wait parked; replicas' rev watches are few.
			if !q.Has("rev") && s.park(w, r, wt, check, timeout) {
				parked = true
				return nil
			}
			timer = time.NewTimer(timeout)
			defer timer.Stop()
		}
		select {
		case <-wt.ch:
		case <-timer.C:
			s.watchTimeouts.Inc()
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-s.stopped:
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}
