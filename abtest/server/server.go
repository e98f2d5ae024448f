// Package server is abtest's HTTP API: assignment (GET and batch POST
// /v1/assign) with exposure logging, event intake (POST /v1/events), reports
// (GET /v1/report/{experiment}) and the experiment list (GET /v1/experiments).
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/exposure"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
)

// Sink stores events durably: when Append returns nil they are kept.
type Sink interface {
	Append(evs []events.Event) error
}

// Options configure a Server.
type Options struct {
	Sink Sink
	// Scanner is where reports read events, unless Report is set.
	Scanner report.Scanner
	// Report computes reports elsewhere (ClickHouse) when set.
	Report  func(ctx context.Context, experiment string, opt report.Options) (*report.Report, error)
	Log     *slog.Logger
	Metrics *metrics.Set
	// ExposureQueue bounds exposures waiting to be written; beyond it they
	// are dropped and counted.
	ExposureQueue int
	// DedupCapacity is how many (unit, experiment) pairs are remembered.
	DedupCapacity int
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// MaxBatch bounds units in one assign POST and events in one events POST.
	MaxBatch int
	// ExposureLinger is how long the exposure writer waits for more
	// exposures after the first of a batch (fewer, larger writes).
	ExposureLinger time.Duration
	// IQRK is the report's default boxplot multiplier.
	IQRK float64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server serves the API for the current experiment config.
type Server struct {
	opt       Options
	assigner  atomic.Pointer[sdk.Assigner]
	exposures *exposure.Buffer
	// scratch holds *assignScratch: what one assignment request needs,
	// reused so that the handler allocates next to nothing.
	scratch     sync.Pool
	contentJSON []string // the Content-Type header value, shared

	assigns, exposuresLogged, dupExposures *metrics.Counter
	droppedExposures                       *metrics.Counter
	eventsAccepted, eventsRejected         *metrics.Counter
	writeErrors                            *metrics.Counter
}

// assignScratch is one request's working memory.
type assignScratch struct {
	query     assignQuery
	attrs     map[string]any
	results   []sdk.Result
	exposures []events.Event
	body      []byte
}

// New builds a server with the given initial config.
func New(a *sdk.Assigner, opt Options) *Server {
	if opt.ExposureQueue <= 0 {
		opt.ExposureQueue = 100_000
	}
	if opt.DedupCapacity <= 0 {
		opt.DedupCapacity = 1_000_000
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 8 << 20
	}
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 10_000
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Metrics == nil {
		opt.Metrics = metrics.NewSet()
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	m := opt.Metrics
	s := &Server{
		opt:              opt,
		exposures:        exposure.NewBuffer(opt.ExposureQueue, opt.DedupCapacity),
		contentJSON:      []string{"application/json"},
		droppedExposures: m.NewCounter(`opskit_abtest_exposures_dropped_total{reason="queue_full"}`),
		assigns:          m.NewCounter("opskit_abtest_assignments_total"),
		exposuresLogged:  m.NewCounter("opskit_abtest_exposures_total"),
		dupExposures:     m.NewCounter("opskit_abtest_exposures_deduplicated_total"),
		eventsAccepted:   m.NewCounter("opskit_abtest_events_accepted_total"),
		eventsRejected:   m.NewCounter("opskit_abtest_events_rejected_total"),
		writeErrors:      m.NewCounter("opskit_abtest_event_write_errors_total"),
	}
	s.scratch.New = func() any { return &assignScratch{attrs: map[string]any{}} }
	s.assigner.Store(a)
	m.NewGauge("opskit_abtest_exposure_queue_length", func() float64 { return float64(s.exposures.Len()) })
	m.NewGauge("opskit_abtest_experiments", func() float64 { return float64(len(s.assigner.Load().Experiments())) })
	return s
}

// SetConfig swaps the experiment config (on reload).
func (s *Server) SetConfig(a *sdk.Assigner) { s.assigner.Store(a) }

// Config is the current experiment config.
func (s *Server) Config() *sdk.Assigner { return s.assigner.Load() }

// Register adds the API to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/assign", s.handleAssignGet)
	mux.HandleFunc("POST /v1/assign", s.handleAssignPost)
	mux.HandleFunc("POST /v1/events", s.handleEvents)
	mux.HandleFunc("GET /v1/experiments", s.handleExperiments)
	mux.HandleFunc("GET /v1/report/{experiment}", s.handleReport)
}

// RunExposureWriter writes logged exposures in batches until ctx ends,
// then stops taking exposures and writes what is left. Run it in the
// background.
func (s *Server) RunExposureWriter(ctx context.Context) error {
	var batch []events.Event
	write := func() {
		batch = s.exposures.Drain(batch[:0])
		if len(batch) == 0 {
			return
		}
		if err := s.opt.Sink.Append(batch); err != nil {
			s.writeErrors.Inc()
			s.opt.Log.Error("exposures not written", "count", len(batch), "err", err)
		}
		clear(batch) // let the GC have the strings
	}
	for {
		if err := s.exposures.Wait(ctx); err != nil {
			s.exposures.Close()
			write()
			return nil
		}
		// Gather more before writing: one write (and fsync) for many
		// exposures.
		if s.opt.ExposureLinger > 0 {
			t := time.NewTimer(s.opt.ExposureLinger)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		write()
	}
}

// AssignRequest is one unit in a batch assign.
type AssignRequest struct {
	Unit       string         `json:"unit"`
	Attributes map[string]any `json:"attributes,omitempty"`
	// Experiments limits the answer to these experiments (all when empty).
	Experiments []string `json:"experiments,omitempty"`
}

// AssignResponse is one unit's assignments.
type AssignResponse struct {
	Unit        string       `json:"unit"`
	Assignments []Assignment `json:"assignments"`
	Error       string       `json:"error,omitempty"`
}

// Assignment is a unit's variant in one experiment.
type Assignment struct {
	Experiment string  `json:"experiment"`
	Layer      string  `json:"layer,omitempty"`
	Variant    string  `json:"variant"`
	Index      int     `json:"index"`
	Forced     bool    `json:"forced,omitempty"`
	Bucket     float64 `json:"bucket"`
}

// unitError is the answer to a unit id that is empty or too long.
func unitError() string { return fmt.Sprintf("unit must be 1 to %d bytes", events.MaxUnitLen) }

// evaluate assigns u in the given experiments (all when empty), appending
// the results to sc.results, and logs their exposures.
func (s *Server) evaluate(sc *assignScratch, u sdk.Unit, experiments []string, now time.Time) {
	a := s.assigner.Load()
	sc.results = sc.results[:0]
	if len(experiments) == 0 {
		sc.results = a.AssignAll(sc.results, u, now)
	} else {
		for _, key := range experiments {
			if r := a.Evaluate(key, u, now); r.InExperiment {
				sc.results = append(sc.results, r)
			}
		}
	}
	s.assigns.Add(len(sc.results))
	sc.exposures = sc.exposures[:0]
	for i := range sc.results {
		r := &sc.results[i]
		// The exposure is the hashed unit (which may differ from the id).
		sc.exposures = append(sc.exposures, events.Event{Kind: events.Exposure, Unit: r.HashValue, Experiment: r.Experiment,
			Variant: r.Variant, Time: now, Forced: r.Forced})
	}
	if len(sc.exposures) > 0 {
		res := s.exposures.Add(sc.exposures)
		s.exposuresLogged.Add(res.Added)
		s.dupExposures.Add(res.Duplicates)
		s.droppedExposures.Add(res.Dropped)
		clear(sc.exposures)
	}
}

func (s *Server) assign(sc *assignScratch, req AssignRequest, now time.Time) AssignResponse {
	resp := AssignResponse{Unit: req.Unit, Assignments: []Assignment{}}
	if req.Unit == "" || len(req.Unit) > events.MaxUnitLen {
		resp.Error = unitError()
		return resp
	}
	s.evaluate(sc, sdk.Unit{ID: req.Unit, Attributes: req.Attributes}, req.Experiments, now)
	for _, r := range sc.results {
		resp.Assignments = append(resp.Assignments, Assignment{Experiment: r.Experiment, Layer: r.Layer, Variant: r.Variant,
			Index: r.Index, Forced: r.Forced, Bucket: r.Bucket})
	}
	return resp
}

// handleAssignGet: GET /v1/assign?unit=U&attr.k=v&experiment=E...
func (s *Server) handleAssignGet(w http.ResponseWriter, r *http.Request) {
	sc := s.scratch.Get().(*assignScratch)
	defer s.putScratch(sc)
	q := &sc.query
	parseAssignQuery(r.URL.RawQuery, q, sc.attrs)
	if q.unit == "" || len(q.unit) > events.MaxUnitLen {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": unitError()})
		return
	}
	s.evaluate(sc, sdk.Unit{ID: q.unit, Attributes: q.attributes}, q.experiments, s.opt.Now())
	sc.body = appendAssignResponse(sc.body[:0], q.unit, sc.results)
	w.Header()["Content-Type"] = s.contentJSON
	_, _ = w.Write(sc.body)
}

// putScratch empties sc (no strings kept alive) and returns it to the pool.
func (s *Server) putScratch(sc *assignScratch) {
	clear(sc.attrs)
	clear(sc.results)
	clear(sc.query.experiments)
	sc.query = assignQuery{experiments: sc.query.experiments[:0]}
	if cap(sc.body) > 64<<10 {
		sc.body = nil // an outsized answer: do not keep its buffer
	}
	s.scratch.Put(sc)
}

// QueryValue types a query attribute the way a JSON body would: numbers
// and booleans become such, anything else stays a string.
func QueryValue(v string) any {
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	if couldBeNumber(v) {
		if f, err := strconv.ParseFloat(v, 64); err == nil && strings.TrimSpace(v) == v {
			return f
		}
	}
	return v
}

// couldBeNumber is false for most strings strconv.ParseFloat rejects: those
// that cannot start a number (a sign, a digit, a point, inf, nan). It saves
// building ParseFloat's error for every word attribute.
func couldBeNumber(v string) bool {
	if v == "" {
		return false
	}
	switch c := v[0]; {
	case c >= '0' && c <= '9', c == '+', c == '-', c == '.', c == 'i', c == 'I', c == 'n', c == 'N':
		return true
	}
	return false
}

// handleAssignPost: POST /v1/assign {"units": [AssignRequest...]}.
func (s *Server) handleAssignPost(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Units []AssignRequest `json:"units"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request body: " + err.Error()})
		return
	}
	if len(body.Units) > s.opt.MaxBatch {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("at most %d units per request", s.opt.MaxBatch)})
		return
	}
	now := s.opt.Now()
	out := make([]AssignResponse, len(body.Units))
	sc := s.scratch.Get().(*assignScratch)
	defer s.putScratch(sc)
	for i, req := range body.Units {
		out[i] = s.assign(sc, req, now)
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// Rejected is an event refused with its reason.
type Rejected struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// handleEvents: POST /v1/events, a JSON array or JSON lines of events.
// Valid events are stored (durably before the answer) even when others in
// the request are rejected.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": err.Error()})
		return
	}
	raws, err := splitEvents(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if len(raws) > s.opt.MaxBatch {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("at most %d events per request", s.opt.MaxBatch)})
		return
	}
	now := s.opt.Now()
	evs := make([]events.Event, 0, len(raws))
	rejected := []Rejected{}
	for i, raw := range raws {
		var e events.Event
		// UnmarshalJSON checks the syntax itself: calling it directly saves
		// encoding/json's separate validation pass over every event.
		if err := e.UnmarshalJSON(raw); err != nil {
			rejected = append(rejected, Rejected{Index: i, Error: err.Error()})
			continue
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		evs = append(evs, e)
	}
	s.eventsRejected.Add(len(rejected))
	if len(evs) > 0 {
		if err := s.opt.Sink.Append(evs); err != nil {
			s.writeErrors.Inc()
			s.opt.Log.Error("events not stored", "count", len(evs), "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "events not stored: " + err.Error()})
			return
		}
	}
	s.eventsAccepted.Add(len(evs))
	status := http.StatusOK
	if len(evs) == 0 && len(rejected) > 0 {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, map[string]any{"accepted": len(evs), "rejected": rejected})
}

// splitEvents accepts a JSON array of objects or one object per line.
func splitEvents(body []byte) ([]json.RawMessage, error) {
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		var list []json.RawMessage
		if err := json.Unmarshal(body, &list); err != nil {
			return nil, fmt.Errorf("bad JSON array: %w", err)
		}
		return list, nil
	}
	var out []json.RawMessage
	for _, line := range strings.Split(trimmed, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, json.RawMessage(line))
		}
	}
	return out, nil
}

func (s *Server) handleExperiments(w http.ResponseWriter, _ *http.Request) {
	a := s.assigner.Load()
	list := []sdk.ExperimentConfig{}
	for _, key := range a.Experiments() {
		ec, _ := a.Experiment(key)
		list = append(list, ec)
	}
	writeJSON(w, http.StatusOK, map[string]any{"experiments": list})
}

// ReportOptions derives report options for experiment from its config.
func ReportOptions(a *sdk.Assigner, experiment, metric string, iqrK float64, cuped bool) report.Options {
	opt := report.Options{Metric: metric, IQRK: iqrK, CUPED: cuped, Variants: a.Variants(experiment), Weights: a.Weights(experiment)}
	if ec, ok := a.Experiment(experiment); ok {
		opt.PreEnd = ec.Start
	}
	return opt
}

// handleReport: GET /v1/report/{experiment}?metric=M&format=html|json|table&iqr_k=1.5&cuped=true
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	experiment := r.PathValue("experiment")
	q := r.URL.Query()
	k := s.opt.IQRK
	if v := q.Get("iqr_k"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "iqr_k must be a number >= 0"})
			return
		}
		k = f
	}
	cuped := q.Get("cuped") == "true" || q.Get("cuped") == "1"
	opt := ReportOptions(s.assigner.Load(), experiment, q.Get("metric"), k, cuped)
	var rep *report.Report
	var err error
	if s.opt.Report != nil {
		rep, err = s.opt.Report(r.Context(), experiment, opt)
	} else {
		rep, err = report.Compute(s.opt.Scanner, experiment, opt)
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	switch q.Get("format") {
	case "json":
		w.Header().Set("Content-Type", "application/json")
		_ = report.WriteJSON(w, rep)
	case "table":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_ = report.WriteTable(w, rep)
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = report.WriteHTML(w, rep)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
