package query

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// testNow is aligned to the hour so slots of every archive end on it.
const testNow = int64(1_699_999_200)

// newTestAPI serves a fake storage holding:
//
//	cpu.idle{endpoint=h1}   1 + (minute mod 5), every minute for 8 days
//	cpu.idle{endpoint=h2}   20, every minute for 8 days
//	requests_total{endpoint=h1}  a raw counter growing 6 per minute (0.1/s)
//	stale.metric{endpoint=h3}    one point 3 days ago
func newTestAPI(t *testing.T, opts Options) (*API, *fakeReader) {
	t.Helper()
	f := newFakeReader(testNow, storage.DefaultRetentions)
	from := testNow - 8*86400
	f.add(every(from, testNow, 60, func(t int64) float64 { return float64(1 + (t/60)%5) }),
		"__name__", "cpu.idle", "endpoint", "h1")
	f.add(every(from, testNow, 60, func(int64) float64 { return 20 }),
		"__name__", "cpu.idle", "endpoint", "h2")
	f.add(every(testNow-3600, testNow, 60, func(t int64) float64 { return float64(t-testNow+3600) / 10 }),
		"__name__", "requests_total", "endpoint", "h1")
	f.add(map[int64]float64{testNow - 3*86400: 7}, "__name__", "stale.metric", "endpoint", "h3")
	opts.Now = func() time.Time { return time.Unix(testNow, 0) }
	return NewAPI(f, opts), f
}

func sec(t int64) string { return strconv.FormatInt(t, 10) }

// call sends one request to h: GET with the form in the URL, POST as a
// url-encoded body.
func call(t *testing.T, h http.Handler, method, path string, form url.Values) (int, string) {
	t.Helper()
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		u := path
		if len(form) > 0 {
			u += "?" + form.Encode()
		}
		req = httptest.NewRequest(method, u, nil)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestPrometheusAPIGolden(t *testing.T) {
	api, _ := newTestAPI(t, Options{})
	h := api.Handler()
	now := sec(testNow)
	tests := []struct {
		name     string
		method   string
		path     string
		form     url.Values
		wantCode int
		wantBody string
	}{
		{
			name: "instant vector, dotted name", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`{__name__="cpu.idle"}`}, "time": {now}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"value":[1699999200,"1"]},` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h2"},"value":[1699999200,"20"]}]}}`,
		},
		{
			name: "quoted dotted name, POST form", method: "POST", path: "/api/v1/query",
			form:     url.Values{"query": {`{"cpu.idle",endpoint="h2"}`}, "time": {now + ".5"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h2"},"value":[1699999200.500,"20"]}]}}`,
		},
		{
			name: "scalar, as Grafana's health check", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {"1+1"}, "time": {"4"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}`,
		},
		{
			name: "sum", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`sum({__name__="cpu.idle"})`}, "time": {now}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1699999200,"21"]}]}}`,
		},
		{
			name: "sum by endpoint over a regexp on the name", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`sort(sum by (endpoint) ({__name__=~"cpu\\..*|requests_total"}))`}, "time": {now}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"endpoint":"h2"},"value":[1699999200,"20"]},` +
				`{"metric":{"endpoint":"h1"},"value":[1699999200,"361"]}]}}`,
		},
		{
			name: "rate over a raw counter", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`rate(requests_total[5m])`}, "time": {now}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"endpoint":"h1"},"value":[1699999200,"0.1"]}]}}`,
		},
		{
			name: "range over the finest archive", method: "GET", path: "/api/v1/query_range",
			form: url.Values{"query": {`{__name__="cpu.idle",endpoint="h1"}`},
				"start": {sec(testNow - 240)}, "end": {now}, "step": {"60"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699998960,"2"],[1699999020,"3"],[1699999080,"4"],[1699999140,"5"],[1699999200,"1"]]}]}}`,
		},
		{
			name: "__cf__ max over the 5-minute archive", method: "POST", path: "/api/v1/query_range",
			form: url.Values{"query": {`{__name__="cpu.idle",endpoint="h1",__cf__="max"}`},
				"start": {sec(testNow - 86400)}, "end": {sec(testNow - 86400 + 600)}, "step": {"300"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"5"],[1699913100,"5"],[1699913400,"5"]]}]}}`,
		},
		{
			name: "__cf__ min", method: "GET", path: "/api/v1/query_range",
			form: url.Values{"query": {`{__name__="cpu.idle",endpoint="h1",__cf__="min"}`},
				"start": {sec(testNow - 86400)}, "end": {sec(testNow - 86400 + 600)}, "step": {"300"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"1"],[1699913100,"1"],[1699913400,"1"]]}]}}`,
		},
		{
			name: "average is the default", method: "GET", path: "/api/v1/query_range",
			form: url.Values{"query": {`{__name__="cpu.idle",endpoint="h1"}`},
				"start": {sec(testNow - 86400)}, "end": {sec(testNow - 86400 + 600)}, "step": {"300"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"3"],[1699913100,"3"],[1699913400,"3"]]}]}}`,
		},
		{
			name: "series with match[] and a start bound leaves out idle series", method: "GET", path: "/api/v1/series",
			form:     url.Values{"match[]": {`{endpoint=~"h.*"}`}, "start": {sec(testNow - 3600)}, "end": {now}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[` +
				`{"__name__":"cpu.idle","endpoint":"h1"},{"__name__":"cpu.idle","endpoint":"h2"},` +
				`{"__name__":"requests_total","endpoint":"h1"}]}`,
		},
		{
			name: "series without bounds, two match[], POST", method: "POST", path: "/api/v1/series",
			form:     url.Values{"match[]": {`{__name__="stale.metric"}`, `{"cpu.idle",endpoint="h2"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[` +
				`{"__name__":"cpu.idle","endpoint":"h2"},{"__name__":"stale.metric","endpoint":"h3"}]}`,
		},
		{
			name: "series limit warns", method: "GET", path: "/api/v1/series",
			form:     url.Values{"match[]": {`{endpoint!=""}`}, "limit": {"1"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[{"__name__":"cpu.idle","endpoint":"h1"}],"warnings":["results truncated due to limit"]}`,
		},
		{
			name: "labels", method: "GET", path: "/api/v1/labels",
			wantCode: 200,
			wantBody: `{"status":"success","data":["__name__","endpoint"]}`,
		},
		{
			name: "label values of __name__", method: "GET", path: "/api/v1/label/__name__/values",
			wantCode: 200,
			wantBody: `{"status":"success","data":["cpu.idle","requests_total","stale.metric"]}`,
		},
		{
			name: "label values with match[] and a start bound", method: "GET", path: "/api/v1/label/endpoint/values",
			form:     url.Values{"match[]": {`{__name__=~".+"}`}, "start": {sec(testNow - 3600)}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["h1","h2"]}`,
		},
		{
			name: "label values with match[] and no bound", method: "GET", path: "/api/v1/label/endpoint/values",
			form:     url.Values{"match[]": {`{__name__=~"stale.*"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["h3"]}`,
		},
		{
			name: "label values of an unknown label is an empty list", method: "GET", path: "/api/v1/label/nope/values",
			wantCode: 200,
			wantBody: `{"status":"success","data":[]}`,
		},
		{
			name: "buildinfo has no features, so Grafana sees Prometheus", method: "GET", path: "/api/v1/status/buildinfo",
			wantCode: 200,
			wantBody: `{"status":"success","data":{"version":"3.0.0","revision":"","branch":"opskit","buildUser":"","buildDate":"","goVersion":"` + goVersion() + `"}}`,
		},
		{name: "metadata", method: "GET", path: "/api/v1/metadata", wantCode: 200, wantBody: `{"status":"success","data":{}}`},
		{name: "exemplars", method: "POST", path: "/api/v1/query_exemplars", wantCode: 200, wantBody: `{"status":"success","data":[]}`},
		{name: "rules", method: "GET", path: "/api/v1/rules", wantCode: 200, wantBody: `{"status":"success","data":{"groups":[]}}`},
		{name: "alerts", method: "GET", path: "/api/v1/alerts", wantCode: 200, wantBody: `{"status":"success","data":{"alerts":[]}}`},
		{
			name: "format_query", method: "GET", path: "/api/v1/format_query",
			form:     url.Values{"query": {`sum(rate(x[5m]))by(a)`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":"sum by (a) (rate(x[5m]))"}`,
		},

		// Errors, in Prometheus's shapes and codes.
		{
			name: "empty query", method: "GET", path: "/api/v1/query", form: url.Values{"time": {now}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": unknown position: parse error: no expression found in input"}`,
		},
		{
			name: "bad time", method: "GET", path: "/api/v1/query", form: url.Values{"query": {"1"}, "time": {"yesterday"}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": invalid time value for 'time': cannot parse \"yesterday\" to a valid timestamp"}`,
		},
		{
			name: "__cf__ must be an equality", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`{__name__="cpu.idle",__cf__=~"max"}`}, "time": {now}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": the __cf__ matcher must be an equality: __cf__=\"average\", \"max\" or \"min\""}`,
		},
		{
			name: "unknown __cf__", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`{__name__="cpu.idle",__cf__="last"}`}, "time": {now}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": __cf__: unknown consolidation function \"last\" (want average, max or min)"}`,
		},
		{
			name: "__cf__ alone selects nothing", method: "GET", path: "/api/v1/query",
			form:     url.Values{"query": {`{__cf__="max"}`}, "time": {now}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": a selector needs a matcher other than __cf__ that does not match the empty string"}`,
		},
		{
			name: "zero step", method: "GET", path: "/api/v1/query_range",
			form:     url.Values{"query": {"1"}, "start": {"0"}, "end": {"60"}, "step": {"0"}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"}`,
		},
		{
			name: "end before start", method: "GET", path: "/api/v1/query_range",
			form:     url.Values{"query": {"1"}, "start": {"60"}, "end": {"0"}, "step": {"15"}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"end\": end timestamp must not be before start time"}`,
		},
		{
			name: "too many points", method: "GET", path: "/api/v1/query_range",
			form:     url.Values{"query": {"1"}, "start": {"0"}, "end": {"11001"}, "step": {"1"}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}`,
		},
		{
			name: "type error is an execution error", method: "GET", path: "/api/v1/query_range",
			form:     url.Values{"query": {`"text"`}, "start": {"0"}, "end": {"60"}, "step": {"15"}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": invalid expression type \"string\" for range query, must be Scalar or instant Vector"}`,
		},
		{
			name: "series needs match[]", method: "GET", path: "/api/v1/series",
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}`,
		},
		{
			name: "match[] matching everything", method: "GET", path: "/api/v1/series",
			form:     url.Values{"match[]": {`{endpoint=~".*"}`}},
			wantCode: 400,
			wantBody: `{"status":"error","errorType":"bad_data","error":"match[] must contain at least one non-empty matcher"}`,
		},
		{
			name: "query with the wrong method", method: "DELETE", path: "/api/v1/query",
			wantCode: 405,
			wantBody: "Method Not Allowed\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, h, tt.method, tt.path, tt.form)
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("%s %s\n got %d %s\nwant %d %s", tt.method, tt.path, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

// promResponse is the envelope of every Prometheus API answer.
type promResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

type matrixData struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
	} `json:"result"`
}

func queryMatrix(t *testing.T, h http.Handler, form url.Values) matrixData {
	t.Helper()
	code, body := call(t, h, "GET", "/api/v1/query_range", form)
	return decodeMatrix(t, code, body)
}

func decodeMatrix(t testing.TB, code int, body string) matrixData {
	t.Helper()
	if code != 200 {
		t.Fatalf("query_range: %d %s", code, body[:min(len(body), 500)])
	}
	var resp promResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	var m matrixData
	if err := json.Unmarshal(resp.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLookbackFollowsArchive: six days back only the 20-minute archive
// holds data. With Prometheus's 5 m lookback a 1-minute step would see each
// sample for 5 minutes out of 20; the chosen lookback fills every step.
func TestLookbackFollowsArchive(t *testing.T) {
	api, f := newTestAPI(t, Options{})
	h := api.Handler()
	start, end := testNow-6*86400, testNow-6*86400+2*3600
	form := url.Values{"query": {`{"cpu.idle",endpoint="h2"}`}, "start": {sec(start)}, "end": {sec(end)}, "step": {"60"}}
	m := queryMatrix(t, h, form)
	if len(m.Result) != 1 {
		t.Fatalf("got %d series, want 1", len(m.Result))
	}
	if got, want := len(m.Result[0].Values), int((end-start)/60+1); got != want {
		t.Errorf("got %d points, want one at each of the %d steps", got, want)
	}
	last := f.fetches[len(f.fetches)-1]
	if last.step != 1200 {
		t.Errorf("read the %ds archive, want the 20-minute one (%v)", last.step, last)
	}

	form.Set("lookback_delta", "5m")
	m = queryMatrix(t, h, form)
	if got, full := len(m.Result[0].Values), int((end-start)/60+1); got >= full/2 {
		t.Errorf("with a 5m lookback got %d of %d points; the test no longer shows the gaps", got, full)
	}
}

func TestArchiveChoiceFromStep(t *testing.T) {
	tests := []struct {
		name        string
		query       string
		start, end  int64
		step        string
		wantMinStep int64
	}{
		{"1-minute step reads the finest", `{"cpu.idle"}`, testNow - 3600, testNow, "60", 60},
		{"10-minute step reads 5-minute slots", `{"cpu.idle"}`, testNow - 3600, testNow, "600", 300},
		{"15-second step cannot be finer than 1 minute", `{"cpu.idle"}`, testNow - 3600, testNow, "15", 0},
		{"range selector wants two samples in its window", `rate({"cpu.idle"}[5m])`, testNow - 86400, testNow, "3600", 60},
		{"1-hour step reads 20-minute slots", `{"cpu.idle"}`, testNow - 86400, testNow, "3600", 1200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, f := newTestAPI(t, Options{})
			queryMatrix(t, api.Handler(), url.Values{"query": {tt.query}, "start": {sec(tt.start)}, "end": {sec(tt.end)}, "step": {tt.step}})
			if len(f.fetches) == 0 {
				t.Fatal("no fetch")
			}
			for _, fe := range f.fetches {
				if fe.minStep != tt.wantMinStep {
					t.Errorf("%v: minStep %d, want %d", fe, fe.minStep, tt.wantMinStep)
				}
			}
		})
	}
}

func TestQueryErrorsFromEngineAndStorage(t *testing.T) {
	t.Run("max samples is an execution error", func(t *testing.T) {
		api, _ := newTestAPI(t, Options{MaxSamples: 10})
		code, body := call(t, api.Handler(), "GET", "/api/v1/query_range", url.Values{
			"query": {`{"cpu.idle"}`}, "start": {sec(testNow - 3600)}, "end": {sec(testNow)}, "step": {"60"}})
		want := `{"status":"error","errorType":"execution","error":"expanding series: query processing would load too many samples into memory in series fetch"}`
		if code != 422 || body != want {
			t.Errorf("got %d %s\nwant 422 %s", code, body, want)
		}
	})
	t.Run("storage failure is internal", func(t *testing.T) {
		api := NewAPI(&failingReader{}, Options{})
		code, body := call(t, api.Handler(), "GET", "/api/v1/query", url.Values{"query": {`{"cpu.idle"}`}})
		want := `{"status":"error","errorType":"internal","error":"expanding series: select [__name__=\"cpu.idle\"]: disk on fire"}`
		if code != 500 || body != want {
			t.Errorf("got %d %s\nwant 500 %s", code, body, want)
		}
	})
	t.Run("a query waiting for a turn times out", func(t *testing.T) {
		api, _ := newTestAPI(t, Options{MaxConcurrent: 1})
		api.turns <- struct{}{} // the only turn is taken
		code, body := call(t, api.Handler(), "GET", "/api/v1/query", url.Values{"query": {"1"}, "timeout": {"0.05"}})
		want := `{"status":"error","errorType":"timeout","error":"waiting for a query slot: context deadline exceeded"}`
		if code != 503 || body != want {
			t.Errorf("got %d %s\nwant 503 %s", code, body, want)
		}
		<-api.turns
		if code, body := call(t, api.Handler(), "GET", "/api/v1/query", url.Values{"query": {"1"}}); code != 200 {
			t.Errorf("with the turn free: %d %s", code, body)
		}
	})
	t.Run("the wait for a turn is bounded by Options.Timeout too", func(t *testing.T) {
		api, _ := newTestAPI(t, Options{MaxConcurrent: 1, Timeout: 50 * time.Millisecond})
		api.turns <- struct{}{}
		defer func() { <-api.turns }()
		code, body := call(t, api.Handler(), "GET", "/api/v1/query", url.Values{"query": {"1"}})
		if code != 503 || !strings.Contains(body, `"errorType":"timeout"`) {
			t.Errorf("got %d %s, want 503 timeout", code, body)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		api, _ := newTestAPI(t, Options{})
		code, body := call(t, api.Handler(), "GET", "/api/v1/query", url.Values{"query": {`{"cpu.idle"}`}, "timeout": {"0.000000001"}})
		var resp promResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		if code != 503 || resp.ErrorType != "timeout" {
			t.Errorf("got %d %s, want 503 timeout", code, body)
		}
	})
}

type failingReader struct{ fakeReader }

func (*failingReader) Select([]*metric.Matcher) ([]storage.SeriesRef, error) {
	return nil, errors.New("disk on fire")
}

func TestAppendValueMatchesPrometheus(t *testing.T) {
	tenth := 0.1 // a variable, so that 0.1 + 0.2 is float arithmetic, not an exact constant
	tests := []struct {
		in   float64
		want string
	}{
		{1, `"1"`}, {0.1, `"0.1"`}, {-2.5, `"-2.5"`}, {1e-7, `"1e-07"`}, {1e21, `"1e+21"`},
		{123456789012, `"123456789012"`}, {math.NaN(), `"NaN"`}, {math.Inf(1), `"+Inf"`}, {math.Inf(-1), `"-Inf"`},
		{tenth + 0.2, `"0.30000000000000004"`}, {-0.005, `"-0.005"`}, {12.345, `"12.345"`}, {-12.34, `"-12.34"`},
		{999999999999.999, `"999999999999.999"`}, {1e12 + 0.5, `"1000000000000.5"`}, {0.0005, `"0.0005"`}, {math.Copysign(0, -1), `"-0"`},
	}
	for _, tt := range tests {
		if got := string(appendValue(nil, tt.in)); got != tt.want {
			t.Errorf("appendValue(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for in, want := range map[int64]string{0: "0", 1500: "1.500", 1005: "1.005", 1050: "1.050", -1500: "-1.500"} {
		if got := string(appendTimestamp(nil, in)); got != want {
			t.Errorf("appendTimestamp(%d) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"a\"b": `"a\"b"`, "\x01\n": `"\u0001\n"`, "é": `"é"`, "\xff": `"\ufffd"`} {
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
	}
}

func goVersion() string { return runtime.Version() }

func TestMetrics(t *testing.T) {
	set := metrics.NewSet()
	api, _ := newTestAPI(t, Options{Metrics: set})
	h := api.Handler()
	call(t, h, "GET", "/api/v1/query", url.Values{"query": {"1"}})
	call(t, h, "GET", "/api/v1/query", url.Values{"query": {"("}})
	postJSON(t, h, "/api/v1/graph/lastpoint", `[]`)
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, want := range []string{
		`opskit_transfer_query_requests_total{api="query",code="200"} 1`,
		`opskit_transfer_query_requests_total{api="query",code="400"} 1`,
		`opskit_transfer_query_requests_total{api="falcon_lastpoint",code="200"} 1`,
		`opskit_transfer_query_duration_seconds_count{api="query"} 2`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
}

func TestStepTimes(t *testing.T) {
	st := newStepTimes(1000, 5500, 1500)
	for in, want := range map[int64]string{1000: "1", 2500: "2.500", 5500: "5.500", 3000: "3", 7000: "7", 0: "0", -1500: "-1.500"} {
		if got := string(st.appendTimestamp(nil, in)); got != want {
			t.Errorf("appendTimestamp(%d) = %s, want %s", in, got, want)
		}
	}
	if newStepTimes(0, 1000, 0) != nil || newStepTimes(0, 1e12, 1) != nil {
		t.Error("no table for a bad step or too many steps")
	}
	var none *stepTimes
	if got := string(none.appendTimestamp(nil, 1500)); got != "1.500" {
		t.Errorf("nil table: %s", got)
	}
}
