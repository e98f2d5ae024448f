package query

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// openEngine opens a storage engine in a temporary directory whose clock
// stands at testNow.
func openEngine(t testing.TB) *storage.Engine {
	t.Helper()
	e, err := storage.Open(t.TempDir(), storage.Options{Now: func() time.Time { return time.Unix(testNow, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close storage: %v", err)
		}
	})
	return e
}

// seriesDef is one series to load: labels as pairs and a value per time.
type seriesDef struct {
	pairs []string
	typ   metric.CounterType
	value func(t int64) float64
}

// load appends every series every step from from to to (inclusive), one
// batch per timestamp, and waits until it is durable.
func load(t testing.TB, e *storage.Engine, from, to, step int64, defs []seriesDef) {
	t.Helper()
	lsets := make([]metric.Labels, len(defs))
	for i, d := range defs {
		var ls []metric.Label
		for j := 0; j+1 < len(d.pairs); j += 2 {
			ls = append(ls, metric.Label{Name: d.pairs[j], Value: d.pairs[j+1]})
		}
		lsets[i] = metric.New(ls...)
	}
	batch := make([]metric.Point, len(defs))
	var last storage.Result
	for ts := from; ts <= to; ts += step {
		for i, d := range defs {
			batch[i] = metric.Point{Labels: lsets[i], Time: ts, Value: d.value(ts), Step: int32(step), Type: d.typ}
		}
		res, err := e.Append(batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rejected) > 0 {
			t.Fatalf("append at %d: %v", ts, res.Rejected[0])
		}
		last = res
	}
	if err := e.Wait(context.Background(), last); err != nil {
		t.Fatal(err)
	}
}

// hostSeries are the series the real-storage tests share:
//
//	cpu.idle{endpoint=h1}         1 + (minute mod 5), a gauge
//	cpu.idle{endpoint=h2}         20
//	requests_total{endpoint=h1}   a raw counter written as a gauge (as
//	                              remote_write does), growing 6 a minute
//	net.if.in.bytes{endpoint=h1,iface=eth0}  an open-falcon COUNTER growing
//	                              600 bytes a minute: stored as 10 bytes/s
var hostSeries = []seriesDef{
	{pairs: []string{"__name__", "cpu.idle", "endpoint", "h1"}, value: func(t int64) float64 { return float64(1 + (t/60)%5) }},
	{pairs: []string{"__name__", "cpu.idle", "endpoint", "h2"}, value: func(int64) float64 { return 20 }},
	{pairs: []string{"__name__", "requests_total", "endpoint", "h1"}, value: func(t int64) float64 { return float64(t/60) * 6 }},
	{pairs: []string{"__name__", "net.if.in.bytes", "endpoint", "h1", "iface", "eth0"}, typ: metric.Counter, value: func(t int64) float64 { return float64(t/60) * 600 }},
}

func newStorageAPI(t testing.TB) *API {
	t.Helper()
	e := openEngine(t)
	load(t, e, testNow-2*86400, testNow, 60, hostSeries)
	return NewAPI(e, Options{Now: func() time.Time { return time.Unix(testNow, 0) }})
}

func TestOnRealStorage(t *testing.T) {
	api := newStorageAPI(t)
	h := api.Handler()
	now := sec(testNow)
	dayAgo := testNow - 86400
	tests := []struct {
		name     string
		path     string
		form     url.Values
		wantBody string
	}{
		{
			name: "instant, dotted name",
			path: "/api/v1/query", form: url.Values{"query": {`{__name__="cpu.idle"}`}, "time": {now}},
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"value":[1699999200,"1"]},` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h2"},"value":[1699999200,"20"]}]}}`,
		},
		{
			name: "range over the 1-minute archive",
			path: "/api/v1/query_range", form: url.Values{"query": {`{"cpu.idle",endpoint="h1"}`},
				"start": {sec(testNow - 240)}, "end": {now}, "step": {"60"}},
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699998960,"2"],[1699999020,"3"],[1699999080,"4"],[1699999140,"5"],[1699999200,"1"]]}]}}`,
		},
		{
			name: "a day back: 5-minute archive, average by default",
			path: "/api/v1/query_range", form: url.Values{"query": {`{"cpu.idle",endpoint="h1"}`},
				"start": {sec(dayAgo)}, "end": {sec(dayAgo + 600)}, "step": {"300"}},
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"3"],[1699913100,"3"],[1699913400,"3"]]}]}}`,
		},
		{
			name: "__cf__ max",
			path: "/api/v1/query_range", form: url.Values{"query": {`{"cpu.idle",endpoint="h1",__cf__="max"}`},
				"start": {sec(dayAgo)}, "end": {sec(dayAgo + 600)}, "step": {"300"}},
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"5"],[1699913100,"5"],[1699913400,"5"]]}]}}`,
		},
		{
			name: "__cf__ min",
			path: "/api/v1/query_range", form: url.Values{"query": {`{"cpu.idle",endpoint="h1",__cf__="min"}`},
				"start": {sec(dayAgo)}, "end": {sec(dayAgo + 600)}, "step": {"300"}},
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[` +
				`{"metric":{"__name__":"cpu.idle","endpoint":"h1"},"values":[` +
				`[1699912800,"1"],[1699913100,"1"],[1699913400,"1"]]}]}}`,
		},
		{
			name: "rate over a raw counter",
			path: "/api/v1/query", form: url.Values{"query": {`rate(requests_total[5m])`}, "time": {now}},
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"endpoint":"h1"},"value":[1699999200,"0.1"]}]}}`,
		},
		{
			name: "an open-falcon COUNTER reads as its rate",
			path: "/api/v1/query", form: url.Values{"query": {`{"net.if.in.bytes"}`}, "time": {now}},
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"__name__":"net.if.in.bytes","endpoint":"h1","iface":"eth0"},"value":[1699999200,"10"]}]}}`,
		},
		{
			name: "sum by",
			path: "/api/v1/query", form: url.Values{"query": {`sum by (endpoint) ({__name__="cpu.idle"})`}, "time": {now}},
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[` +
				`{"metric":{"endpoint":"h1"},"value":[1699999200,"1"]},{"metric":{"endpoint":"h2"},"value":[1699999200,"20"]}]}}`,
		},
		{
			name: "series",
			path: "/api/v1/series", form: url.Values{"match[]": {`{endpoint="h1"}`}, "start": {sec(testNow - 3600)}},
			wantBody: `{"status":"success","data":[{"__name__":"cpu.idle","endpoint":"h1"},` +
				`{"__name__":"net.if.in.bytes","endpoint":"h1","iface":"eth0"},{"__name__":"requests_total","endpoint":"h1"}]}`,
		},
		{
			name: "series after the newest point",
			path: "/api/v1/series", form: url.Values{"match[]": {`{endpoint="h1"}`}, "start": {sec(testNow + 3600)}},
			wantBody: `{"status":"success","data":[]}`,
		},
		{
			name: "labels with match[]",
			path: "/api/v1/labels", form: url.Values{"match[]": {`{"net.if.in.bytes"}`}},
			wantBody: `{"status":"success","data":["__name__","endpoint","iface"]}`,
		},
		{
			name:     "labels",
			path:     "/api/v1/labels",
			wantBody: `{"status":"success","data":["__name__","endpoint","iface"]}`,
		},
		{
			name:     "label values",
			path:     "/api/v1/label/__name__/values",
			wantBody: `{"status":"success","data":["cpu.idle","net.if.in.bytes","requests_total"]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, h, "GET", tt.path, tt.form)
			if code != 200 || body != tt.wantBody {
				t.Errorf("got %d %s\nwant 200 %s", code, body, tt.wantBody)
			}
		})
	}

	t.Run("a day at a 1-minute step has a value at every step", func(t *testing.T) {
		m := queryMatrix(t, h, url.Values{"query": {`{"cpu.idle",endpoint="h2"}`},
			"start": {sec(dayAgo)}, "end": {now}, "step": {"60"}})
		if len(m.Result) != 1 || len(m.Result[0].Values) != 1441 {
			t.Fatalf("got %d series, %d points; want 1 series of 1441", len(m.Result), len(m.Result[0].Values))
		}
	})

	t.Run("open-falcon history and last point", func(t *testing.T) {
		code, body := postJSON(t, h, "/api/v1/graph/history", fmt.Sprintf(
			`{"hostnames":["h1"],"counters":["net.if.in.bytes/iface=eth0"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":60}`,
			testNow-120, testNow))
		want := `[{"endpoint":"h1","counter":"net.if.in.bytes/iface=eth0","dstype":"GAUGE","step":60,"Values":[` +
			`{"timestamp":1699999080,"value":10},{"timestamp":1699999140,"value":10},{"timestamp":1699999200,"value":10}]}]`
		if code != 200 || body != want {
			t.Errorf("history: got %d %s\nwant 200 %s", code, body, want)
		}
		code, body = postJSON(t, h, "/api/v1/graph/lastpoint", `[{"endpoint":"h1","counter":"cpu.idle"},{"endpoint":"h1","counter":"cpu.idle/a=b"}]`)
		want = `[{"endpoint":"h1","counter":"cpu.idle","value":{"timestamp":1699999200,"value":1}},` +
			`{"endpoint":"h1","counter":"cpu.idle/a=b","value":{"timestamp":0,"value":null}}]`
		if code != 200 || body != want {
			t.Errorf("lastpoint: got %d %s\nwant 200 %s", code, body, want)
		}
	})
}
