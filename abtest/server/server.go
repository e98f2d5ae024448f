// Package server is abtest's HTTP API: assignment (GET and batch POST
// /v1/assign) with exposure logging, event intake (POST /v1/events), reports
// (GET /v1/report/{experiment}) and the experiment list (GET /v1/experiments).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/exposure"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/internal/queue"
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
	dedup     *exposure.Dedup
	exposures *queue.Queue[events.Event]

	assigns, exposuresLogged, dupExposures *metrics.Counter
	eventsAccepted, eventsRejected         *metrics.Counter
	writeErrors                            *metrics.Counter
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
		opt:             opt,
		dedup:           exposure.NewDedup(opt.DedupCapacity),
		exposures:       queue.New[events.Event](opt.ExposureQueue, m.NewCounter(`opskit_abtest_exposures_dropped_total{reason="queue_full"}`)),
		assigns:         m.NewCounter("opskit_abtest_assignments_total"),
		exposuresLogged: m.NewCounter("opskit_abtest_exposures_total"),
		dupExposures:    m.NewCounter("opskit_abtest_exposures_deduplicated_total"),
		eventsAccepted:  m.NewCounter("opskit_abtest_events_accepted_total"),
		eventsRejected:  m.NewCounter("opskit_abtest_events_rejected_total"),
		writeErrors:     m.NewCounter("opskit_abtest_event_write_errors_total"),
	}
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

// RunExposureWriter writes queued exposures in batches until ctx ends, then
// drains the queue. Run it in the background.
func (s *Server) RunExposureWriter(ctx context.Context) error {
	// Large batches let one fsync cover many exposures when the disk is
	// slow; the linger applies only to small ones.
	const maxBatch, smallBatch = 65536, 1024
	batch := make([]events.Event, 0, 4096)
	var more []events.Event
	stopped := false
	for {
		var err error
		popCtx := ctx
		if stopped {
			popCtx = context.Background()
		}
		batch, err = s.exposures.PopBatch(popCtx, batch, maxBatch)
		if err == nil && len(batch) < smallBatch && s.opt.ExposureLinger > 0 && !stopped {
			select {
			case <-ctx.Done():
			case <-time.After(s.opt.ExposureLinger):
			}
			if s.exposures.Len() > 0 {
				more, _ = s.exposures.PopBatch(context.Background(), more, maxBatch-len(batch))
				batch = append(batch, more...)
			}
		}
		if len(batch) > 0 {
			if werr := s.opt.Sink.Append(batch); werr != nil {
				s.writeErrors.Inc()
				s.opt.Log.Error("exposures not written", "count", len(batch), "err", werr)
			}
		}
		switch {
		case errors.Is(err, queue.ErrClosed):
			return nil
		case ctx.Err() != nil && !stopped:
			// Stop taking exposures, then drain what is queued.
			stopped = true
			s.exposures.Close()
		case err != nil && !stopped:
			return err
		}
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

func (s *Server) assign(req AssignRequest, now time.Time) AssignResponse {
	resp := AssignResponse{Unit: req.Unit, Assignments: []Assignment{}}
	if req.Unit == "" || len(req.Unit) > events.MaxUnitLen {
		resp.Error = fmt.Sprintf("unit must be 1 to %d bytes", events.MaxUnitLen)
		return resp
	}
	a := s.assigner.Load()
	u := sdk.Unit{ID: req.Unit, Attributes: req.Attributes}
	var results []sdk.Result
	if len(req.Experiments) == 0 {
		results = a.AssignAll(make([]sdk.Result, 0, 8), u, now)
	} else {
		for _, key := range req.Experiments {
			if r := a.Evaluate(key, u, now); r.InExperiment {
				results = append(results, r)
			}
		}
	}
	s.assigns.Add(len(results))
	for _, r := range results {
		resp.Assignments = append(resp.Assignments, Assignment{Experiment: r.Experiment, Layer: r.Layer, Variant: r.Variant,
			Index: r.Index, Forced: r.Forced, Bucket: r.Bucket})
		// The exposure is the hashed unit (which may differ from the id).
		if !s.dedup.First(r.HashValue, r.Experiment) {
			s.dupExposures.Inc()
			continue
		}
		if s.exposures.TryPush(events.Event{Kind: events.Exposure, Unit: r.HashValue, Experiment: r.Experiment,
			Variant: r.Variant, Time: now, Forced: r.Forced}) {
			s.exposuresLogged.Inc()
		}
	}
	return resp
}

// handleAssignGet: GET /v1/assign?unit=U&attr.k=v&experiment=E...
func (s *Server) handleAssignGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := AssignRequest{Unit: q.Get("unit"), Experiments: q["experiment"]}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, "attr."); ok && len(vs) > 0 {
			if req.Attributes == nil {
				req.Attributes = map[string]any{}
			}
			req.Attributes[name] = QueryValue(vs[0])
		}
	}
	resp := s.assign(req, s.opt.Now())
	if resp.Error != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": resp.Error})
		return
	}
	writeJSON(w, http.StatusOK, resp)
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
	if f, err := strconv.ParseFloat(v, 64); err == nil && strings.TrimSpace(v) == v {
		return f
	}
	return v
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
	for i, req := range body.Units {
		out[i] = s.assign(req, now)
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
