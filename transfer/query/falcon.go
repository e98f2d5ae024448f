package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// open-falcon's query API, as its api module serves it:
//
//	POST /api/v1/graph/history
//	  {"hostnames":[...],"counters":["metric/tag=v,..."],"consol_fun":"AVERAGE",
//	   "start_time":s,"end_time":s,"step":s}
//	  -> [{"endpoint":..,"counter":..,"dstype":..,"step":..,"Values":[{"timestamp":..,"value":..}]}]
//	POST /api/v1/graph/lastpoint
//	  [{"endpoint":..,"counter":..}]
//	  -> [{"endpoint":..,"counter":..,"value":{"timestamp":..,"value":..}}]
//
// Errors are {"error":"..."} with status 400, as there. An unknown value is
// null. A host/counter pair with no series is left out of a history answer
// (open-falcon skips counters its index does not know); its last point is
// {"timestamp":0,"value":null}.

// maxFalconPairs bounds hostnames × counters of one history request.
const maxFalconPairs = 10_000

type historyRequest struct {
	Hostnames []string `json:"hostnames"`
	Counters  []string `json:"counters"`
	ConsolFun string   `json:"consol_fun"`
	StartTime int64    `json:"start_time"`
	EndTime   int64    `json:"end_time"`
	Step      int64    `json:"step"`

	cf storage.CF
}

// parseHistoryRequest decodes and checks a history request body.
func parseHistoryRequest(body []byte) (historyRequest, error) {
	var req historyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return req, fmt.Errorf("decode request: %w", err)
	}
	switch {
	case len(req.Hostnames) == 0:
		return req, errors.New("hostnames is required")
	case len(req.Counters) == 0:
		return req, errors.New("counters is required")
	case req.ConsolFun == "":
		return req, errors.New("consol_fun is required")
	case req.StartTime <= 0 || req.EndTime <= 0:
		return req, errors.New("start_time and end_time are required (Unix seconds)")
	case req.EndTime < req.StartTime:
		return req, errors.New("end_time is before start_time")
	case req.Step < 0:
		return req, errors.New("step must not be negative")
	case len(req.Hostnames)*len(req.Counters) > maxFalconPairs:
		return req, fmt.Errorf("%d hostname/counter pairs: at most %d", len(req.Hostnames)*len(req.Counters), maxFalconPairs)
	}
	cf, err := storage.ParseCF(req.ConsolFun)
	if err != nil {
		return req, fmt.Errorf("consol_fun: %w", err)
	}
	req.cf = cf
	for _, c := range req.Counters {
		if _, _, err := parseCounter(c); err != nil {
			return req, err
		}
	}
	return req, nil
}

type lastPointParam struct {
	Endpoint string `json:"endpoint"`
	Counter  string `json:"counter"`
}

// parseLastPointRequest decodes and checks a last-point request body.
func parseLastPointRequest(body []byte) ([]lastPointParam, error) {
	var params []lastPointParam
	if err := json.Unmarshal(body, &params); err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	if len(params) > maxFalconPairs {
		return nil, fmt.Errorf("%d endpoint/counter pairs: at most %d", len(params), maxFalconPairs)
	}
	for i, p := range params {
		if p.Endpoint == "" {
			return nil, fmt.Errorf("item %d: endpoint is required", i)
		}
		if _, _, err := parseCounter(p.Counter); err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
	}
	return params, nil
}

// parseCounter splits an open-falcon counter "metric/tag=v,tag2=v2" (or
// just "metric") into the metric name and its tags.
func parseCounter(counter string) (string, []metric.Label, error) {
	name, tagText, _ := strings.Cut(counter, "/")
	name = strings.TrimSpace(name)
	if name == "" {
		return "", nil, fmt.Errorf("counter %q: empty metric", counter)
	}
	tags, err := metric.ParseTags(nil, tagText)
	if err != nil {
		return "", nil, fmt.Errorf("counter %q: %w", counter, err)
	}
	return name, tags, nil
}

// findSeries returns the series whose identity is exactly endpoint plus
// counter: no label more, no label less.
func (a *API) findSeries(endpoint, counter string) (storage.SeriesRef, bool, error) {
	name, tags, err := parseCounter(counter)
	if err != nil {
		return storage.SeriesRef{}, false, err
	}
	want := metric.New(append(tags,
		metric.Label{Name: metric.NameLabel, Value: name},
		metric.Label{Name: metric.EndpointLabel, Value: endpoint})...)
	ms := make([]*metric.Matcher, 0, len(want))
	for _, l := range want {
		ms = append(ms, metric.MustMatcher(metric.MatchEqual, l.Name, l.Value))
	}
	refs, err := a.reader.Select(ms)
	if err != nil {
		return storage.SeriesRef{}, false, fmt.Errorf("select %s: %w", want, err)
	}
	for _, ref := range refs {
		if ref.Labels.Equal(want) {
			return ref, true, nil
		}
	}
	return storage.SeriesRef{}, false, nil
}

func (a *API) readFalconBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	if err != nil {
		falconError(w, http.StatusBadRequest, fmt.Errorf("read request: %w", err))
		return nil, false
	}
	return body, true
}

func falconError(w http.ResponseWriter, code int, err error) {
	b := []byte(`{"error":`)
	b = appendString(b, err.Error())
	b = append(b, '}')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func falconOK(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// appendFalconPoint writes {"timestamp":t,"value":v}, v null when unknown.
func appendFalconPoint(b []byte, t int64, v float64) []byte {
	b = append(b, `{"timestamp":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"value":`...)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendFloat(b, v, 'f', -1, 64)
	}
	return append(b, '}')
}

func (a *API) handleFalconHistory(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readFalconBody(w, r)
	if !ok {
		return
	}
	req, err := parseHistoryRequest(body)
	if err != nil {
		falconError(w, http.StatusBadRequest, err)
		return
	}
	b := []byte{'['}
	n := 0
	for _, host := range req.Hostnames {
		for _, counter := range req.Counters {
			if err := r.Context().Err(); err != nil {
				return // the client is gone
			}
			ref, found, err := a.findSeries(host, counter)
			if err != nil {
				falconError(w, http.StatusInternalServerError, err)
				return
			}
			if !found {
				continue
			}
			// One second before start_time, so that a slot stamped at it is
			// included (the storage starts after the given start, as rrdtool).
			res := storage.FetchResult{Step: req.Step}
			if start, end, ok := a.queryable.fetchWindow(req.StartTime-1, req.EndTime); ok {
				res, err = a.reader.Fetch(ref.ID, req.cf, start, end, req.Step)
				if errors.Is(err, storage.ErrUnknownSeries) {
					continue
				}
				if err != nil {
					falconError(w, http.StatusInternalServerError, fmt.Errorf("fetch %s: %w", ref.Labels, err))
					return
				}
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = append(b, `{"endpoint":`...)
			b = appendString(b, host)
			b = append(b, `,"counter":`...)
			b = appendString(b, counter)
			// Counters are stored as per-second rates, so every series reads
			// back as a gauge.
			b = append(b, `,"dstype":"GAUGE","step":`...)
			b = strconv.AppendInt(b, res.Step, 10)
			b = append(b, `,"Values":[`...)
			first := true
			for i, v := range res.Values {
				t := res.Start + int64(i)*res.Step
				if t < req.StartTime || t > req.EndTime {
					continue
				}
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendFalconPoint(b, t, v)
			}
			b = append(b, "]}"...)
		}
	}
	b = append(b, ']')
	falconOK(w, b)
}

func (a *API) handleFalconLastPoint(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readFalconBody(w, r)
	if !ok {
		return
	}
	params, err := parseLastPointRequest(body)
	if err != nil {
		falconError(w, http.StatusBadRequest, err)
		return
	}
	b := []byte{'['}
	for i, p := range params {
		ref, found, err := a.findSeries(p.Endpoint, p.Counter)
		if err != nil {
			falconError(w, http.StatusInternalServerError, err)
			return
		}
		t, v := int64(0), math.NaN()
		if found {
			if lt, lv, ok := a.reader.Last(ref.ID); ok {
				t, v = lt, lv
			}
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"endpoint":`...)
		b = appendString(b, p.Endpoint)
		b = append(b, `,"counter":`...)
		b = appendString(b, p.Counter)
		b = append(b, `,"value":`...)
		b = appendFalconPoint(b, t, v)
		b = append(b, '}')
	}
	b = append(b, ']')
	falconOK(w, b)
}
