package query

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/transfer/storage"
)

func postJSON(t *testing.T, h http.Handler, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func newFalconAPI(t testing.TB) http.Handler {
	t.Helper()
	f := newFakeReader(testNow, storage.DefaultRetentions)
	// df.bytes.free.percent{endpoint=h1,mount=/} every minute, with a gap.
	pts := every(testNow-600, testNow, 60, func(t int64) float64 { return float64(t-testNow+600) / 60 })
	delete(pts, testNow-120)
	f.add(pts, "__name__", "df.bytes.free.percent", "endpoint", "h1", "mount", "/")
	// The same metric with one more tag is another series.
	f.add(every(testNow-600, testNow, 60, func(int64) float64 { return 99 }),
		"__name__", "df.bytes.free.percent", "endpoint", "h1", "mount", "/", "fstype", "ext4")
	f.add(every(testNow-600, testNow, 60, func(int64) float64 { return 0.25 }),
		"__name__", "load.1min", "endpoint", "h2")
	return NewAPI(f, Options{Now: func() time.Time { return time.Unix(testNow, 0) }}).Handler()
}

func TestFalconHistory(t *testing.T) {
	h := newFalconAPI(t)
	start, end := testNow-240, testNow
	tests := []struct {
		name     string
		body     string
		wantCode int
		wantBody string
	}{
		{
			name:     "one counter with tags, unknown slot as null",
			body:     fmt.Sprintf(`{"hostnames":["h1"],"counters":["df.bytes.free.percent/mount=/"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":60}`, start, end),
			wantCode: 200,
			wantBody: `[{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/","dstype":"GAUGE","step":60,"Values":[` +
				`{"timestamp":1699998960,"value":6},{"timestamp":1699999020,"value":7},{"timestamp":1699999080,"value":null},` +
				`{"timestamp":1699999140,"value":9},{"timestamp":1699999200,"value":10}]}]`,
		},
		{
			name:     "hosts times counters, unknown pairs left out, MAX",
			body:     fmt.Sprintf(`{"hostnames":["h1","h2","h9"],"counters":["load.1min","nope/a=b"],"consol_fun":"max","start_time":%d,"end_time":%d,"step":60}`, testNow-60, end),
			wantCode: 200,
			wantBody: `[{"endpoint":"h2","counter":"load.1min","dstype":"GAUGE","step":60,"Values":[` +
				`{"timestamp":1699999140,"value":0.25},{"timestamp":1699999200,"value":0.25}]}]`,
		},
		{
			name:     "a coarser step reads a coarser archive",
			body:     fmt.Sprintf(`{"hostnames":["h2"],"counters":["load.1min"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":300}`, testNow-300, end),
			wantCode: 200,
			wantBody: `[{"endpoint":"h2","counter":"load.1min","dstype":"GAUGE","step":300,"Values":[` +
				`{"timestamp":1699998900,"value":0.25},{"timestamp":1699999200,"value":0.25}]}]`,
		},
		{
			name:     "nothing found is an empty list",
			body:     fmt.Sprintf(`{"hostnames":["h9"],"counters":["load.1min"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d}`, start, end),
			wantCode: 200,
			wantBody: `[]`,
		},
		{
			name:     "a window storage cannot hold has no values",
			body:     `{"hostnames":["h2"],"counters":["load.1min"],"consol_fun":"AVERAGE","start_time":1,"end_time":1000,"step":60}`,
			wantCode: 200,
			wantBody: `[{"endpoint":"h2","counter":"load.1min","dstype":"GAUGE","step":60,"Values":[]}]`,
		},
		{name: "missing hostnames", body: `{"counters":["x"],"consol_fun":"AVERAGE","start_time":1,"end_time":2}`, wantCode: 400, wantBody: `{"error":"hostnames is required"}`},
		{name: "bad consol_fun", body: `{"hostnames":["h"],"counters":["x"],"consol_fun":"LAST","start_time":1,"end_time":2}`, wantCode: 400,
			wantBody: `{"error":"consol_fun: unknown consolidation function \"LAST\" (want average, max or min)"}`},
		{name: "bad counter", body: `{"hostnames":["h"],"counters":["/a=b"],"consol_fun":"AVERAGE","start_time":1,"end_time":2}`, wantCode: 400,
			wantBody: `{"error":"counter \"/a=b\": empty metric"}`},
		{name: "end before start", body: `{"hostnames":["h"],"counters":["x"],"consol_fun":"AVERAGE","start_time":3,"end_time":2}`, wantCode: 400,
			wantBody: `{"error":"end_time is before start_time"}`},
		{name: "not JSON", body: `hostnames=h`, wantCode: 400,
			wantBody: `{"error":"decode request: invalid character 'h' looking for beginning of value"}`},
	}
	t.Run("a window reaching far into the future is cut at a day ahead", func(t *testing.T) {
		code, body := postJSON(t, h, "/api/v1/graph/history", fmt.Sprintf(
			`{"hostnames":["h2"],"counters":["load.1min"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":60}`, testNow, int64(1)<<50))
		var items []struct {
			Values []struct {
				Timestamp int64
				Value     *float64
			}
		}
		if err := json.Unmarshal([]byte(body), &items); code != 200 || err != nil || len(items) != 1 {
			t.Fatalf("got %d %.300s (%v)", code, body, err)
		}
		vs := items[0].Values
		if len(vs) != 1441 || vs[0].Value == nil || *vs[0].Value != 0.25 || vs[1].Value != nil || vs[1440].Timestamp != testNow+86400 {
			t.Errorf("got %d values from %+v to %+v; want the known one, then a day of nulls", len(vs), vs[0], vs[len(vs)-1])
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := postJSON(t, h, "/api/v1/graph/history", tt.body)
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("got %d %s\nwant %d %s", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestFalconLastPoint(t *testing.T) {
	h := newFalconAPI(t)
	tests := []struct {
		name     string
		body     string
		wantCode int
		wantBody string
	}{
		{
			name:     "known and unknown series in request order",
			body:     `[{"endpoint":"h2","counter":"load.1min"},{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/"},{"endpoint":"h1","counter":"df.bytes.free.percent"}]`,
			wantCode: 200,
			wantBody: `[{"endpoint":"h2","counter":"load.1min","value":{"timestamp":1699999200,"value":0.25}},` +
				`{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/","value":{"timestamp":1699999200,"value":10}},` +
				`{"endpoint":"h1","counter":"df.bytes.free.percent","value":{"timestamp":0,"value":null}}]`,
		},
		{
			name:     "tags in any order name the same series",
			body:     `[{"endpoint":"h1","counter":"df.bytes.free.percent/fstype=ext4,mount=/"},{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/,fstype=ext4"}]`,
			wantCode: 200,
			wantBody: `[{"endpoint":"h1","counter":"df.bytes.free.percent/fstype=ext4,mount=/","value":{"timestamp":1699999200,"value":99}},` +
				`{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/,fstype=ext4","value":{"timestamp":1699999200,"value":99}}]`,
		},
		{name: "empty list", body: `[]`, wantCode: 200, wantBody: `[]`},
		{name: "missing endpoint", body: `[{"counter":"x"}]`, wantCode: 400, wantBody: `{"error":"item 0: endpoint is required"}`},
		{name: "object instead of list", body: `{"endpoint":"h"}`, wantCode: 400,
			wantBody: `{"error":"decode request: json: cannot unmarshal object into Go value of type []query.lastPointParam"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := postJSON(t, h, "/api/v1/graph/lastpoint", tt.body)
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("got %d %s\nwant %d %s", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}
