package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// Options configure the query API. The zero value is usable.
type Options struct {
	// Schemas are the storage engine's schemas (storage.Options.Schemas).
	// They choose the archive read for a query step and the lookback delta.
	// Default: storage.DefaultSchemas().
	Schemas []storage.Schema
	// Timeout bounds every query; a request's own timeout parameter can
	// only shorten it. Default 2m, as Prometheus's --query.timeout.
	Timeout time.Duration
	// MaxSamples bounds the samples one query may hold in memory at once,
	// and the samples one selector may load from storage. Default
	// 50,000,000, as Prometheus's --query.max-samples.
	MaxSamples int
	// MaxConcurrent bounds the queries evaluated at once; more wait for a
	// turn within their timeout. Default 20, as Prometheus's
	// --query.max-concurrency. With MaxSamples it bounds query memory.
	MaxConcurrent int
	// MaxBodyBytes bounds a request body (form or JSON). Default 16 MiB.
	MaxBodyBytes int64
	// Version is reported by /api/v1/status/buildinfo as the Prometheus
	// version whose API is served. Default "3.0.0".
	Version string
	// Revision is reported as the build revision (opskit's own version).
	Revision string
	// Metrics receives opskit_transfer_query_requests_total{api,code} and
	// opskit_transfer_query_duration_seconds{api}. Default: a private set.
	Metrics *metrics.Set
	// Logger receives query failures. Default: discard.
	Logger *slog.Logger
	// Now is the clock for queries without a time. Default time.Now.
	Now func() time.Time
}

// maxPointsPerSeries is Prometheus's limit on the steps of a range query.
const maxPointsPerSeries = 11000

// API serves the Prometheus HTTP query API and open-falcon's graph API over
// a Reader.
type API struct {
	reader    Reader
	queryable *Queryable
	engine    *promql.Engine
	parser    parser.Parser
	opts      Options
	started   time.Time
	// turns holds one token per query being evaluated.
	turns chan struct{}
}

// NewAPI returns the query API over r.
func NewAPI(r Reader, opts Options) *API {
	if len(opts.Schemas) == 0 {
		opts.Schemas = storage.DefaultSchemas()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = 50_000_000
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 20
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	if opts.Version == "" {
		opts.Version = "3.0.0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{
		Logger:               opts.Logger,
		MaxSamples:           opts.MaxSamples,
		Timeout:              opts.Timeout,
		LookbackDelta:        minLookback,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		// A subquery without a step evaluates every minute, Prometheus's
		// default evaluation interval and transfer's finest archive.
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		Parser:                   p,
	})
	queryable := NewQueryable(r, opts.Schemas, opts.Now)
	queryable.maxSamples = opts.MaxSamples
	return &API{
		reader:    r,
		queryable: queryable,
		engine:    engine,
		parser:    p,
		opts:      opts,
		started:   opts.Now(),
		turns:     make(chan struct{}, opts.MaxConcurrent),
	}
}

// Queryable returns the storage adapter the API evaluates PromQL on.
func (a *API) Queryable() *Queryable { return a.queryable }

// Register adds every endpoint of the API to mux: the Prometheus query API
// under /api/v1/ and open-falcon's /api/v1/graph/history and
// /api/v1/graph/lastpoint. Paths are registered one by one, so the same mux
// can carry other /api/v1/ endpoints such as remote write.
func (a *API) Register(mux *http.ServeMux) {
	both := func(path string, h http.HandlerFunc) {
		mux.HandleFunc("GET "+path, h)
		mux.HandleFunc("POST "+path, h)
	}
	both("/api/v1/query", a.instrument("query", a.handleQuery))
	both("/api/v1/query_range", a.instrument("query_range", a.handleQueryRange))
	both("/api/v1/series", a.instrument("series", a.handleSeries))
	both("/api/v1/labels", a.instrument("labels", a.handleLabels))
	mux.HandleFunc("GET /api/v1/label/{name}/values", a.instrument("label_values", a.handleLabelValues))
	both("/api/v1/format_query", a.handleFormatQuery)
	mux.HandleFunc("GET /api/v1/status/buildinfo", a.handleBuildInfo)
	mux.HandleFunc("GET /api/v1/status/runtimeinfo", a.handleRuntimeInfo)

	// What Grafana's Prometheus data source asks for besides queries, and
	// what transfer has nothing of: empty successes in Prometheus's shapes.
	empty := func(data string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { a.respond(w, []byte(data), nil, "") }
	}
	mux.HandleFunc("GET /api/v1/metadata", empty(`{}`))
	both("/api/v1/query_exemplars", empty(`[]`))
	mux.HandleFunc("GET /api/v1/rules", empty(`{"groups":[]}`))
	mux.HandleFunc("GET /api/v1/alerts", empty(`{"alerts":[]}`))
	mux.HandleFunc("GET /api/v1/targets", empty(`{"activeTargets":[],"droppedTargets":[]}`))
	mux.HandleFunc("GET /api/v1/targets/metadata", empty(`[]`))
	mux.HandleFunc("GET /api/v1/alertmanagers", empty(`{"activeAlertmanagers":[],"droppedAlertmanagers":[]}`))
	mux.HandleFunc("GET /api/v1/status/flags", empty(`{}`))
	mux.HandleFunc("GET /api/v1/status/config", empty(`{"yaml":""}`))

	mux.HandleFunc("POST /api/v1/graph/history", a.instrument("falcon_history", a.handleFalconHistory))
	mux.HandleFunc("POST /api/v1/graph/lastpoint", a.instrument("falcon_lastpoint", a.handleFalconLastPoint))
}

// instrument counts the requests of one endpoint by status code and times
// them.
func (a *API) instrument(api string, h http.HandlerFunc) http.HandlerFunc {
	duration := a.opts.Metrics.GetOrCreateHistogram(`opskit_transfer_query_duration_seconds{api="` + api + `"}`)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		duration.UpdateDuration(start)
		a.opts.Metrics.GetOrCreateCounter(`opskit_transfer_query_requests_total{api="` + api + `",code="` + strconv.Itoa(sw.code) + `"}`).Inc()
	}
}

// statusWriter remembers the status code a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Handler returns an http.Handler serving only this API.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux)
	return mux
}

// Prometheus's error types and the HTTP codes it answers them with.
const (
	errorBadData   = "bad_data"
	errorExec      = "execution"
	errorCanceled  = "canceled"
	errorTimeout   = "timeout"
	errorInternal  = "internal"
	errorNotFound  = "not_found"
	statusCanceled = 499 // nginx's "client closed request", as Prometheus uses
)

type apiError struct {
	typ string
	err error
}

func (e *apiError) code() int {
	switch e.typ {
	case errorBadData:
		return http.StatusBadRequest
	case errorExec:
		return http.StatusUnprocessableEntity
	case errorCanceled:
		return statusCanceled
	case errorTimeout:
		return http.StatusServiceUnavailable
	case errorNotFound:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func badData(err error) *apiError { return &apiError{errorBadData, err} }

func invalidParam(name string, err error) *apiError {
	return badData(fmt.Errorf("invalid parameter %q: %w", name, err))
}

// engineError classifies an error of query evaluation as Prometheus does.
func engineError(err error) *apiError {
	var (
		canceled promql.ErrQueryCanceled
		timeout  promql.ErrQueryTimeout
		storeErr promql.ErrStorage
	)
	switch {
	case errors.As(err, &canceled):
		return &apiError{errorCanceled, err}
	case errors.As(err, &timeout):
		return &apiError{errorTimeout, err}
	case errors.As(err, &storeErr):
		return &apiError{errorInternal, err}
	case errors.Is(err, context.Canceled):
		return &apiError{errorCanceled, err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{errorTimeout, err}
	}
	return &apiError{errorExec, err}
}

// respond writes a success with data already encoded as JSON.
func (a *API) respond(w http.ResponseWriter, data []byte, ws annotations.Annotations, query string) {
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"status":"success","data":`...)
	b = append(b, data...)
	b = appendWarnings(b, ws, query)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// respondResult streams a successful query result.
func (a *API) respondResult(w http.ResponseWriter, v parser.Value, ws annotations.Annotations, query string, times *stepTimes) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rw := &resultWriter{w: w, buf: make([]byte, 0, 2*flushAt), times: times}
	rw.buf = append(rw.buf, `{"status":"success","data":`...)
	rw.writeResult(v)
	rw.buf = appendWarnings(rw.buf, ws, query)
	rw.flush()
	if rw.err != nil {
		a.opts.Logger.Debug("writing query result", "err", rw.err)
	}
}

// appendWarnings ends the envelope: warnings and infos, then the brace.
func appendWarnings(b []byte, ws annotations.Annotations, query string) []byte {
	if len(ws) > 0 {
		warnings, infos := ws.AsStrings(query, 10, 10)
		if len(warnings) > 0 {
			b = append(b, `,"warnings":`...)
			b = appendStrings(b, warnings)
		}
		if len(infos) > 0 {
			b = append(b, `,"infos":`...)
			b = appendStrings(b, infos)
		}
	}
	return append(b, '}')
}

func (a *API) respondError(w http.ResponseWriter, e *apiError) {
	b := []byte(`{"status":"error","errorType":`)
	b = appendString(b, e.typ)
	b = append(b, `,"error":`...)
	b = appendString(b, e.err.Error())
	b = append(b, '}')
	if e.typ == errorInternal {
		a.opts.Logger.Warn("query failed", "err", e.err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.code())
	_, _ = w.Write(b)
}

// parseForm reads the URL query and, for POST, a url-encoded form body.
func (a *API) parseForm(w http.ResponseWriter, r *http.Request) *apiError {
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)
	}
	if err := r.ParseForm(); err != nil {
		return badData(fmt.Errorf("error parsing form values: %w", err))
	}
	return nil
}

// Prometheus's bounds for an absent start or end.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// parseTime accepts a Unix time in seconds (with decimals) or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
		}
		sec, frac := math.Modf(f)
		ns := math.Round(frac*1000) / 1000
		return time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTime.Format(time.RFC3339Nano):
		return minTime, nil
	case maxTime.Format(time.RFC3339Nano):
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseDuration accepts seconds (with decimals) or a Prometheus duration.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ns := f * float64(time.Second)
		if math.IsNaN(ns) || ns >= float64(math.MaxInt64) || ns < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ns), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func timeParam(r *http.Request, name string, def time.Time) (time.Time, *apiError) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, invalidParam(name, fmt.Errorf("invalid time value for '%s': %w", name, err))
	}
	return t, nil
}

// queryContext applies the request's timeout parameter.
func queryContext(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	ctx := r.Context()
	v := r.FormValue("timeout")
	if v == "" {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, nil
	}
	d, err := parseDuration(v)
	if err != nil {
		return nil, nil, invalidParam("timeout", err)
	}
	if d <= 0 {
		return nil, nil, invalidParam("timeout", fmt.Errorf("timeout must be positive, got %s", v))
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

// queryOpts chooses the lookback delta of one query (see archivePlan.lookback)
// and checks the __cf__ matchers, which the engine would only report as an
// execution error.
func (a *API) queryOpts(r *http.Request, qs string, start, end time.Time, step time.Duration) (promql.QueryOpts, *apiError) {
	if v := r.FormValue("lookback_delta"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return nil, invalidParam("lookback_delta", err)
		}
		return promql.NewPrometheusQueryOpts(false, d, nil), nil
	}
	expr, err := a.parser.ParseExpr(qs)
	if err != nil {
		// Let the engine report it in its own words.
		return promql.NewPrometheusQueryOpts(false, 0, nil), nil
	}
	var cfErr error
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok && cfErr == nil {
			_, _, cfErr = convertMatchers(vs.LabelMatchers)
			if cfErr == nil && !hasSelectingMatcher(vs.LabelMatchers) {
				cfErr = errOnlyCF
			}
		}
		return nil
	})
	if cfErr != nil {
		return nil, invalidParam("query", cfErr)
	}
	expr, err = promql.PreprocessExpr(expr, start, end, step)
	if err != nil {
		return promql.NewPrometheusQueryOpts(false, 0, nil), nil
	}
	// With a zero lookback, FindMinMaxTime gives the oldest time any
	// selector reads: the start less ranges and offsets.
	mint, _ := promql.FindMinMaxTime(&parser.EvalStmt{Expr: expr, Start: start, End: end, Interval: step})
	if mint == math.MaxInt64 {
		return promql.NewPrometheusQueryOpts(false, 0, nil), nil // no selectors
	}
	lb := a.queryable.plan.lookback(a.opts.Now(), time.UnixMilli(mint), step)
	return promql.NewPrometheusQueryOpts(false, lb, nil), nil
}

func (a *API) handleQuery(w http.ResponseWriter, r *http.Request) {
	if e := a.parseForm(w, r); e != nil {
		a.respondError(w, e)
		return
	}
	ts, e := timeParam(r, "time", a.opts.Now())
	if e != nil {
		a.respondError(w, e)
		return
	}
	ctx, cancel, e := queryContext(r)
	if e != nil {
		a.respondError(w, e)
		return
	}
	defer cancel()
	qs := r.FormValue("query")
	opts, e := a.queryOpts(r, qs, ts, ts, 0)
	if e != nil {
		a.respondError(w, e)
		return
	}
	qry, err := a.engine.NewInstantQuery(ctx, a.queryable, opts, qs, ts)
	if err != nil {
		a.respondError(w, invalidParam("query", err))
		return
	}
	a.exec(ctx, w, qry, qs, nil)
}

func (a *API) handleQueryRange(w http.ResponseWriter, r *http.Request) {
	if e := a.parseForm(w, r); e != nil {
		a.respondError(w, e)
		return
	}
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		a.respondError(w, invalidParam("start", err))
		return
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		a.respondError(w, invalidParam("end", err))
		return
	}
	if end.Before(start) {
		a.respondError(w, invalidParam("end", errors.New("end timestamp must not be before start time")))
		return
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		a.respondError(w, invalidParam("step", err))
		return
	}
	if step <= 0 {
		a.respondError(w, invalidParam("step", errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer")))
		return
	}
	if end.Sub(start)/step > maxPointsPerSeries {
		a.respondError(w, badData(errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")))
		return
	}
	ctx, cancel, e := queryContext(r)
	if e != nil {
		a.respondError(w, e)
		return
	}
	defer cancel()
	qs := r.FormValue("query")
	opts, e := a.queryOpts(r, qs, start, end, step)
	if e != nil {
		a.respondError(w, e)
		return
	}
	qry, err := a.engine.NewRangeQuery(ctx, a.queryable, opts, qs, start, end, step)
	if err != nil {
		a.respondError(w, invalidParam("query", err))
		return
	}
	a.exec(ctx, w, qry, qs, newStepTimes(start.UnixMilli(), end.UnixMilli(), step.Milliseconds()))
}

// exec runs a query, once a turn is free, and writes its result before the
// engine reclaims it.
func (a *API) exec(ctx context.Context, w http.ResponseWriter, qry promql.Query, qs string, times *stepTimes) {
	defer qry.Close()
	// The wait for a turn counts against the query's timeout.
	waitCtx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	select {
	case a.turns <- struct{}{}:
		defer func() { <-a.turns }()
	case <-waitCtx.Done():
		a.respondError(w, engineError(fmt.Errorf("waiting for a query slot: %w", waitCtx.Err())))
		return
	}
	res := qry.Exec(ctx)
	if res.Err != nil {
		a.respondError(w, engineError(res.Err))
		return
	}
	a.respondResult(w, res.Value, res.Warnings, qs, times)
}

// matcherSets parses match[] as Prometheus does: each selector needs one
// matcher that does not match the empty string. __cf__ is dropped.
func (a *API) matcherSets(r *http.Request) ([][]*metric.Matcher, *apiError) {
	var out [][]*metric.Matcher
	for _, s := range r.Form["match[]"] {
		pms, err := a.parser.ParseMetricSelector(s)
		if err != nil {
			return nil, badData(err)
		}
		if !hasSelectingMatcher(pms) {
			return nil, badData(errors.New("match[] must contain at least one non-empty matcher"))
		}
		_, ms, err := convertMatchers(pms)
		if err != nil {
			return nil, badData(err)
		}
		out = append(out, ms)
	}
	return out, nil
}

// errOnlyCF: PromQL accepts {__cf__="max"}, but it selects nothing.
var errOnlyCF = errors.New("a selector needs a matcher other than __cf__ that does not match the empty string")

// hasSelectingMatcher reports whether a selector has a matcher, other than
// __cf__, that rules out the empty string: PromQL's rule for a selector.
func hasSelectingMatcher(pms []*labels.Matcher) bool {
	return slices.ContainsFunc(pms, func(m *labels.Matcher) bool { return m.Name != CFLabel && !m.Matches("") })
}

func limitParam(r *http.Request) (int, *apiError) {
	v := r.FormValue("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, invalidParam("limit", errors.New("limit must be a non-negative number"))
	}
	return n, nil
}

// metaParams are the parameters shared by series, labels and label values.
type metaParams struct {
	sets     [][]*metric.Matcher
	start    time.Time
	hasStart bool
	limit    int
}

func (a *API) parseMetaParams(w http.ResponseWriter, r *http.Request) (metaParams, *apiError) {
	var p metaParams
	if e := a.parseForm(w, r); e != nil {
		return p, e
	}
	var e *apiError
	if p.limit, e = limitParam(r); e != nil {
		return p, e
	}
	if p.start, e = timeParam(r, "start", minTime); e != nil {
		return p, e
	}
	end, e := timeParam(r, "end", maxTime)
	if e != nil {
		return p, e
	}
	if end.Before(p.start) {
		return p, invalidParam("end", errors.New("end timestamp must not be before start time"))
	}
	p.hasStart = r.FormValue("start") != "" && p.start.After(minTime)
	p.sets, e = a.matcherSets(r)
	return p, e
}

// selectLive returns the series matching any of the sets, once each, leaving
// out those whose newest point is older than start when a start is given.
// An RRD keeps every slot of its retention, so "has data in the range" is
// judged by the newest point.
func (a *API) selectLive(ctx context.Context, p metaParams) ([]storage.SeriesRef, error) {
	seen := make(map[uint64]struct{})
	var out []storage.SeriesRef
	for _, ms := range p.sets {
		refs, err := a.reader.Select(ms)
		if err != nil {
			return nil, fmt.Errorf("select %v: %w", ms, err)
		}
		for _, ref := range refs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if _, dup := seen[ref.ID]; dup {
				continue
			}
			seen[ref.ID] = struct{}{}
			if p.hasStart {
				if t, _, ok := a.reader.Last(ref.ID); !ok || t < p.start.Unix() {
					continue
				}
			}
			out = append(out, ref)
		}
	}
	return out, nil
}

func storageError(err error) *apiError {
	if errors.Is(err, context.Canceled) {
		return &apiError{errorCanceled, err}
	}
	return &apiError{errorInternal, err}
}

func truncated(n, limit int) bool { return limit > 0 && n > limit }

var errTruncated = errors.New("results truncated due to limit")

func (a *API) handleSeries(w http.ResponseWriter, r *http.Request) {
	p, e := a.parseMetaParams(w, r)
	if e != nil {
		a.respondError(w, e)
		return
	}
	if len(p.sets) == 0 {
		a.respondError(w, badData(errors.New("no match[] parameter provided")))
		return
	}
	refs, err := a.selectLive(r.Context(), p)
	if err != nil {
		a.respondError(w, storageError(err))
		return
	}
	sets := make([]labels.Labels, len(refs))
	for i, ref := range refs {
		sets[i] = toPromLabels(ref.Labels)
	}
	slices.SortFunc(sets, labels.Compare)
	var ws annotations.Annotations
	if truncated(len(sets), p.limit) {
		sets = sets[:p.limit]
		ws = ws.Add(errTruncated)
	}
	b := []byte{'['}
	for i, ls := range sets {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendLabels(b, ls)
	}
	b = append(b, ']')
	a.respond(w, b, ws, "")
}

func (a *API) handleLabels(w http.ResponseWriter, r *http.Request) {
	p, e := a.parseMetaParams(w, r)
	if e != nil {
		a.respondError(w, e)
		return
	}
	names, err := a.labelNames(r.Context(), p)
	if err != nil {
		a.respondError(w, storageError(err))
		return
	}
	a.respondStrings(w, names, p.limit)
}

// labelNames answers from the storage index, or, when match[] and a start
// bound are both given, from the matching series that have recent data.
// Without match[] the time bounds are not applied: every retained series
// counts (idle series expire in storage).
func (a *API) labelNames(ctx context.Context, p metaParams) ([]string, error) {
	if len(p.sets) == 0 {
		return a.reader.LabelNames(nil)
	}
	if p.hasStart {
		refs, err := a.selectLive(ctx, p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, ref := range refs {
			for _, l := range ref.Labels {
				names = append(names, l.Name)
			}
		}
		return sortUnique(names), nil
	}
	var names []string
	for _, ms := range p.sets {
		ns, err := a.reader.LabelNames(ms)
		if err != nil {
			return nil, fmt.Errorf("label names %v: %w", ms, err)
		}
		names = append(names, ns...)
	}
	return sortUnique(names), nil
}

func (a *API) handleLabelValues(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		a.respondError(w, badData(fmt.Errorf("invalid label name: %q", name)))
		return
	}
	p, e := a.parseMetaParams(w, r)
	if e != nil {
		a.respondError(w, e)
		return
	}
	values, err := a.labelValues(r.Context(), name, p)
	if err != nil {
		a.respondError(w, storageError(err))
		return
	}
	a.respondStrings(w, values, p.limit)
}

// labelValues follows the same rules as labelNames.
func (a *API) labelValues(ctx context.Context, name string, p metaParams) ([]string, error) {
	if len(p.sets) == 0 {
		return a.reader.LabelValues(name, nil)
	}
	var values []string
	if p.hasStart {
		refs, err := a.selectLive(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			if v := ref.Labels.Get(name); v != "" {
				values = append(values, v)
			}
		}
		return sortUnique(values), nil
	}
	for _, ms := range p.sets {
		vs, err := a.reader.LabelValues(name, ms)
		if err != nil {
			return nil, fmt.Errorf("label values %q %v: %w", name, ms, err)
		}
		values = append(values, vs...)
	}
	return sortUnique(values), nil
}

func (a *API) respondStrings(w http.ResponseWriter, ss []string, limit int) {
	var ws annotations.Annotations
	if truncated(len(ss), limit) {
		ss = ss[:limit]
		ws = ws.Add(errTruncated)
	}
	if ss == nil {
		ss = []string{}
	}
	a.respond(w, appendStrings(nil, ss), ws, "")
}

func sortUnique(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}

func (a *API) handleFormatQuery(w http.ResponseWriter, r *http.Request) {
	if e := a.parseForm(w, r); e != nil {
		a.respondError(w, e)
		return
	}
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		a.respondError(w, invalidParam("query", err))
		return
	}
	a.respond(w, appendString(nil, expr.Pretty(0)), nil, "")
}

func (a *API) handleBuildInfo(w http.ResponseWriter, _ *http.Request) {
	b := []byte(`{"version":`)
	b = appendString(b, a.opts.Version)
	b = append(b, `,"revision":`...)
	b = appendString(b, a.opts.Revision)
	b = append(b, `,"branch":"opskit","buildUser":"","buildDate":"","goVersion":`...)
	b = appendString(b, runtime.Version())
	b = append(b, '}')
	a.respond(w, b, nil, "")
}

func (a *API) handleRuntimeInfo(w http.ResponseWriter, _ *http.Request) {
	host, _ := os.Hostname()
	now := a.opts.Now().UTC()
	b := []byte(`{"startTime":`)
	b = appendString(b, a.started.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"CWD":"","hostname":`...)
	b = appendString(b, host)
	b = append(b, `,"serverTime":`...)
	b = appendString(b, now.Format(time.RFC3339Nano))
	b = append(b, `,"reloadConfigSuccess":true,"lastConfigTime":`...)
	b = appendString(b, a.started.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"corruptionCount":0,"goroutineCount":`...)
	b = strconv.AppendInt(b, int64(runtime.NumGoroutine()), 10)
	b = append(b, `,"GOMAXPROCS":`...)
	b = strconv.AppendInt(b, int64(runtime.GOMAXPROCS(0)), 10)
	b = append(b, `,"GOMEMLIMIT":`...)
	b = strconv.AppendInt(b, debug.SetMemoryLimit(-1), 10)
	b = append(b, `,"GOGC":`...)
	b = appendString(b, os.Getenv("GOGC"))
	b = append(b, `,"GODEBUG":`...)
	b = appendString(b, os.Getenv("GODEBUG"))
	b = append(b, `,"storageRetention":`...)
	b = appendString(b, a.retentionText())
	b = append(b, '}')
	a.respond(w, b, nil, "")
}

// retentionText describes the longest retention of the schemas.
func (a *API) retentionText() string {
	var longest time.Duration
	for _, s := range a.queryable.plan.schemas {
		longest = max(longest, s[len(s)-1].retention)
	}
	return model.Duration(longest).String()
}
