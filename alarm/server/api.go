package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/alarm/notify"
	"github.com/opskit/opskit/alarm/silence"
	"github.com/opskit/opskit/internal/buildinfo"
	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/metric"
)

// Register serves the API on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v2/alerts", s.postAlerts)
	mux.HandleFunc("GET /api/v2/alerts", s.getAlerts)
	mux.HandleFunc("GET /api/v2/alerts/groups", s.getGroups)
	mux.HandleFunc("GET /api/v2/silences", s.getSilences)
	mux.HandleFunc("POST /api/v2/silences", s.postSilence)
	mux.HandleFunc("GET /api/v2/silence/{id}", s.getSilence)
	mux.HandleFunc("DELETE /api/v2/silence/{id}", s.deleteSilence)
	mux.HandleFunc("GET /api/v2/status", s.getStatus)
	mux.HandleFunc("GET /api/v2/receivers", s.getReceivers)
	mux.HandleFunc("GET /api/alarm/deadletters", s.getDeadLetters)
	mux.HandleFunc("GET /api/alarm/outbox", s.getOutbox)
	mux.HandleFunc("GET /api/alarm/history", s.getHistory)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError answers with a JSON string, as Alertmanager's API does.
func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, err.Error())
}

// rejected is one refused alert in a POST answer.
type rejected struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

func (s *Server) postAlerts(w http.ResponseWriter, r *http.Request) {
	opt := s.opt.Load()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, opt.MaxBodyBytes))
	if err != nil {
		s.invalidBodies.Inc()
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("body over %d bytes (--max-body-bytes)", opt.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, err)
		return
	}
	alerts, bad, err := alert.Decode(body, opt.Now(), opt.ResolveTimeout, opt.Limits)
	if err != nil {
		s.invalidBodies.Inc()
		writeError(w, http.StatusBadRequest, err)
		return
	}
	start := time.Now()
	if err := s.Ingest(r.Context(), alerts); err != nil {
		s.log.Error("storing alerts failed", "alerts", len(alerts), "err", err)
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if opt.Dye != nil {
		took := time.Since(start)
		for _, a := range alerts {
			if id := a.Annotations[dye.Annotation]; id != "" {
				opt.Dye.Hop(id, "intake", notify.AlertSummary(a), took)
			}
		}
	}
	if len(bad) > 0 {
		s.refused.Add(len(bad))
		out := struct {
			Error    string     `json:"error"`
			Accepted int        `json:"accepted"`
			Rejected []rejected `json:"rejected"`
		}{Error: fmt.Sprintf("%d of %d alerts refused", len(bad), len(bad)+len(alerts)), Accepted: len(alerts)}
		for _, b := range bad {
			out.Rejected = append(out.Rejected, rejected{b.Index, b.Err.Error()})
		}
		s.log.Warn("alerts refused", "refused", len(bad), "accepted", len(alerts), "first", bad[0].Error())
		writeJSON(w, http.StatusBadRequest, out)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type receiverRef struct {
	Name string `json:"name"`
}

type alertStatus struct {
	State       string   `json:"state"`
	SilencedBy  []string `json:"silencedBy"`
	InhibitedBy []string `json:"inhibitedBy"`
}

type gettableAlert struct {
	Labels       alert.Labels  `json:"labels"`
	Annotations  alert.Labels  `json:"annotations"`
	StartsAt     time.Time     `json:"startsAt"`
	EndsAt       time.Time     `json:"endsAt"`
	UpdatedAt    time.Time     `json:"updatedAt"`
	GeneratorURL string        `json:"generatorURL,omitempty"`
	Fingerprint  string        `json:"fingerprint"`
	Receivers    []receiverRef `json:"receivers"`
	Status       alertStatus   `json:"status"`
}

func (s *Server) gettable(a *alert.Alert) gettableAlert {
	st := alertStatus{State: "active", SilencedBy: append(s.Silences.MutedBy(a.Labels), s.maintenanceFor(a.Labels)...), InhibitedBy: s.inhibitor.Load().InhibitedBy(a.Labels)}
	if st.SilencedBy == nil {
		st.SilencedBy = []string{}
	}
	if st.InhibitedBy == nil {
		st.InhibitedBy = []string{}
	}
	if len(st.SilencedBy) > 0 || len(st.InhibitedBy) > 0 {
		st.State = "suppressed"
	}
	g := gettableAlert{
		Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: a.EndsAt,
		UpdatedAt: a.UpdatedAt, GeneratorURL: a.GeneratorURL, Fingerprint: a.Fingerprint().String(),
		Receivers: []receiverRef{}, Status: st,
	}
	for _, name := range s.Dispatcher.Receivers(a.Labels) {
		g.Receivers = append(g.Receivers, receiverRef{name})
	}
	return g
}

// alertFilter is the query of GET /api/v2/alerts and /alerts/groups.
type alertFilter struct {
	matchers                    []*metric.Matcher
	receiver                    *regexp.Regexp
	active, silenced, inhibited bool
	// unprocessed is accepted for compatibility: alarm routes every alert
	// as it is stored, so none is ever unprocessed.
	unprocessed bool
}

func parseAlertFilter(r *http.Request) (*alertFilter, error) {
	q := r.URL.Query()
	f := &alertFilter{active: true, silenced: true, inhibited: true, unprocessed: true}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"active", &f.active}, {"silenced", &f.silenced}, {"inhibited", &f.inhibited}, {"unprocessed", &f.unprocessed}} {
		if v := q.Get(b.name); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: want true or false", b.name, v)
			}
			*b.dst = x
		}
	}
	for _, fs := range q["filter"] {
		ms, err := matcher.Parse(fs)
		if err != nil {
			return nil, fmt.Errorf("filter: %w", err)
		}
		f.matchers = append(f.matchers, ms...)
	}
	if v := q.Get("receiver"); v != "" {
		re, err := regexp.Compile("^(?:" + v + ")$")
		if err != nil {
			return nil, fmt.Errorf("receiver: %w", err)
		}
		f.receiver = re
	}
	return f, nil
}

func (f *alertFilter) keep(g *gettableAlert) bool {
	if !silence.Matches(f.matchers, g.Labels) {
		return false
	}
	if f.receiver != nil {
		ok := false
		for _, r := range g.Receivers {
			ok = ok || f.receiver.MatchString(r.Name)
		}
		if !ok {
			return false
		}
	}
	if !f.silenced && len(g.Status.SilencedBy) > 0 {
		return false
	}
	if !f.inhibited && len(g.Status.InhibitedBy) > 0 {
		return false
	}
	if !f.active && g.Status.State == "active" {
		return false
	}
	return true
}

func (s *Server) getAlerts(w http.ResponseWriter, r *http.Request) {
	f, err := parseAlertFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	now := s.opt.Load().Now()
	out := []gettableAlert{}
	for _, a := range s.Alerts.List() {
		if a.Resolved(now) {
			continue
		}
		g := s.gettable(a)
		if f.keep(&g) {
			out = append(out, g)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type alertGroup struct {
	Labels   alert.Labels    `json:"labels"`
	Receiver receiverRef     `json:"receiver"`
	Alerts   []gettableAlert `json:"alerts"`
}

func (s *Server) getGroups(w http.ResponseWriter, r *http.Request) {
	f, err := parseAlertFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	now := s.opt.Load().Now()
	out := []alertGroup{}
	for _, gi := range s.Dispatcher.Groups() {
		if f.receiver != nil && !f.receiver.MatchString(gi.Receiver) {
			continue
		}
		ag := alertGroup{Labels: gi.Labels, Receiver: receiverRef{gi.Receiver}, Alerts: []gettableAlert{}}
		for _, a := range gi.Alerts {
			if a.Resolved(now) {
				continue
			}
			g := s.gettable(a)
			if f.keep(&g) {
				ag.Alerts = append(ag.Alerts, g)
			}
		}
		if len(ag.Alerts) > 0 {
			out = append(out, ag)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type gettableSilence struct {
	silence.Silence
	Status struct {
		State string `json:"state"`
	} `json:"status"`
}

func (s *Server) gettableSilence(sil silence.Silence) gettableSilence {
	g := gettableSilence{Silence: sil}
	g.Status.State = sil.State(s.opt.Load().Now())
	if g.Matchers == nil {
		g.Matchers = []silence.Matcher{}
	}
	return g
}

func (s *Server) getSilences(w http.ResponseWriter, r *http.Request) {
	var ms []*metric.Matcher
	for _, fs := range r.URL.Query()["filter"] {
		got, err := matcher.Parse(fs)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("filter: %w", err))
			return
		}
		ms = append(ms, got...)
	}
	out := []gettableSilence{}
	for _, sil := range s.Silences.List() {
		if len(ms) > 0 && !silenceMatchesFilter(sil, ms) {
			continue
		}
		out = append(out, s.gettableSilence(sil))
	}
	writeJSON(w, http.StatusOK, out)
}

// silenceMatchesFilter keeps a silence when every filter matcher accepts the
// value that one of the silence's equality matchers sets for that label.
func silenceMatchesFilter(sil silence.Silence, ms []*metric.Matcher) bool {
	ls := alert.Labels{}
	for _, m := range sil.Matchers {
		if !m.IsRegex && (m.IsEqual == nil || *m.IsEqual) {
			ls[m.Name] = m.Value
		}
	}
	return silence.Matches(ms, ls)
}

func (s *Server) postSilence(w http.ResponseWriter, r *http.Request) {
	var in silence.Silence
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("silence body: %w", err))
		return
	}
	id, err := s.Silences.Set(in)
	switch {
	case errors.Is(err, silence.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
		return
	case errors.Is(err, silence.ErrInvalid):
		writeError(w, http.StatusBadRequest, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if s.History != nil {
		sil, _ := s.Silences.Get(id)
		s.History.RecordSilence("silence_set", silenceLabels(sil), fmt.Sprintf("silence %s by %s: %s", id, sil.CreatedBy, sil.Comment))
	}
	writeJSON(w, http.StatusOK, map[string]string{"silenceID": id})
}

func silenceLabels(sil silence.Silence) alert.Labels {
	ls := alert.Labels{}
	for _, m := range sil.Matchers {
		if !m.IsRegex && (m.IsEqual == nil || *m.IsEqual) {
			ls[m.Name] = m.Value
		}
	}
	return ls
}

func (s *Server) getSilence(w http.ResponseWriter, r *http.Request) {
	sil, err := s.Silences.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, s.gettableSilence(sil))
}

func (s *Server) deleteSilence(w http.ResponseWriter, r *http.Request) {
	err := s.Silences.Expire(r.PathValue("id"))
	switch {
	case errors.Is(err, silence.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, silence.ErrInvalid):
		writeError(w, http.StatusBadRequest, err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	default:
		if s.History != nil {
			sil, _ := s.Silences.Get(r.PathValue("id"))
			s.History.RecordSilence("silence_expired", silenceLabels(sil), "silence "+sil.ID)
		}
		w.WriteHeader(http.StatusOK)
	}
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	opt := s.opt.Load()
	writeJSON(w, http.StatusOK, map[string]any{
		"cluster": map[string]any{"name": "", "status": "disabled", "peers": []any{}},
		"config":  map[string]string{"original": opt.ConfigText},
		"uptime":  s.started,
		"versionInfo": map[string]string{
			"branch": "", "buildDate": "", "buildUser": "opskit", "goVersion": runtime.Version(),
			"revision": buildinfo.Commit, "version": buildinfo.Version,
		},
	})
}

func (s *Server) getReceivers(w http.ResponseWriter, r *http.Request) {
	out := []receiverRef{}
	for _, n := range s.Notifier.Receivers() {
		out = append(out, receiverRef{n})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDeadLetters(w http.ResponseWriter, r *http.Request) {
	dl, err := s.Notifier.DeadLetters()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if dl == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, dl)
}

func (s *Server) getOutbox(w http.ResponseWriter, r *http.Request) {
	p, err := s.Notifier.Pending()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if p == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// getHistory answers ?since=24h (or an RFC 3339 time) &match=MATCHERS &limit=N.
func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	if s.History == nil {
		writeError(w, http.StatusNotFound, errors.New("history is off"))
		return
	}
	q := r.URL.Query()
	now := s.opt.Load().Now()
	since, err := ParseSince(q.Get("since"), now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var ms []*metric.Matcher
	for _, m := range q["match"] {
		got, err := matcher.Parse(m)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		ms = append(ms, got...)
	}
	limit := 10000
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit=%q: want a count", v))
			return
		}
	}
	events, err := s.History.Query(since, ms, limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, e := range events {
		enc.Encode(e)
	}
}

// ParseSince reads a look-back ("24h", "7d") or an RFC 3339 time; "" is 24h.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return now.Add(-24 * time.Hour), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := parseLookback(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("since=%q: want a duration such as 24h or an RFC 3339 time", v)
	}
	return now.Add(-d), nil
}

func parseLookback(v string) (time.Duration, error) {
	if strings.HasSuffix(v, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(v, "d"))
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(v)
}
