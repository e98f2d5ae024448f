package query

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/transfer/storage"
)

// The fuzz targets feed wire input to the parsers of this package; seed
// corpora live in testdata/fuzz/<target>/.

func FuzzFalconHistory(f *testing.F) {
	f.Add(`{"hostnames":["h1"],"counters":["df.bytes.free.percent/mount=/"],"consol_fun":"AVERAGE","start_time":1699998960,"end_time":1699999200,"step":60}`)
	f.Add(`{"hostnames":[],"counters":null}`)
	h := newFalconAPI(f)
	f.Fuzz(func(t *testing.T, body string) {
		code, resp := postJSON(t, h, "/api/v1/graph/history", body)
		checkFalconAnswer(t, code, resp)
		if code == 200 {
			var items []struct {
				Values []struct {
					Timestamp int64    `json:"timestamp"`
					Value     *float64 `json:"value"`
				} `json:"Values"`
			}
			if err := json.Unmarshal([]byte(resp), &items); err != nil {
				t.Fatalf("history answer %s: %v", resp, err)
			}
		}
	})
}

func FuzzFalconLastPoint(f *testing.F) {
	f.Add(`[{"endpoint":"h2","counter":"load.1min"},{"endpoint":"h1","counter":"df.bytes.free.percent/mount=/"}]`)
	f.Add(`[{"endpoint":"","counter":"/"}]`)
	h := newFalconAPI(f)
	f.Fuzz(func(t *testing.T, body string) {
		code, resp := postJSON(t, h, "/api/v1/graph/lastpoint", body)
		checkFalconAnswer(t, code, resp)
	})
}

// checkFalconAnswer: a success or a 400 with {"error":...}, always JSON.
func checkFalconAnswer(t *testing.T, code int, resp string) {
	t.Helper()
	if !json.Valid([]byte(resp)) {
		t.Fatalf("answer is not JSON: %q", resp)
	}
	switch code {
	case 200:
	case 400:
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(resp), &e); err != nil || e.Error == "" {
			t.Fatalf("400 without an error message: %s", resp)
		}
	default:
		t.Fatalf("unexpected status %d: %s", code, resp)
	}
}

func FuzzParseCounter(f *testing.F) {
	for _, s := range []string{"cpu.idle", "df.bytes.free.percent/mount=/", "net.if.in.bytes/iface=eth0,x=y", "/a=b", "m/=", "m/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, counter string) {
		name, tags, err := parseCounter(counter)
		if err != nil {
			return
		}
		if name == "" || strings.Contains(name, "/") {
			t.Fatalf("parseCounter(%q) gave name %q", counter, name)
		}
		for _, l := range tags {
			if l.Name == "" {
				t.Fatalf("parseCounter(%q) gave an empty tag name", counter)
			}
		}
	})
}

func FuzzParseTimeAndDuration(f *testing.F) {
	for _, s := range []string{"1699999200", "1699999200.5", "2023-11-14T22:00:00Z", "-1", "NaN", "1e300", "5m", "1h30m", "0.001", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := parseTime(s)
		if n, ferr := strconv.ParseFloat(s, 64); ferr == nil && math.Abs(n) < 1e12 {
			// A number of seconds within reach must parse, to that second.
			if err != nil {
				t.Fatalf("parseTime(%q): %v", s, err)
			}
			if diff := ts.Unix() - int64(n); diff < -1 || diff > 1 {
				t.Fatalf("parseTime(%q) = %v (%d), want about %d", s, ts, ts.Unix(), int64(n))
			}
		}
		if d, err := parseDuration(s); err == nil && s == "" {
			t.Fatalf("parseDuration(%q) = %v without error", s, d)
		}
	})
}

// FuzzAppendFloat: the fast path for values with few decimals prints what
// strconv prints, as Prometheus does.
func FuzzAppendFloat(f *testing.F) {
	for _, v := range []float64{0, 1, -1, 0.5, 12.345, 0.1 + 0.2, 1e-7, 1e21, 999999999999.999, 123.0001} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		format := byte('f')
		if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			format = 'e'
		}
		want := strconv.FormatFloat(v, format, -1, 64)
		if got := string(appendFloat(nil, v)); got != want {
			t.Fatalf("appendFloat(%v) = %s, want %s", v, got, want)
		}
	})
}

// FuzzPrometheusAPI sends arbitrary parameters to the query and metadata
// endpoints: every answer is JSON in Prometheus's envelope with a status
// Prometheus would give, never a panic or an internal error.
func FuzzPrometheusAPI(f *testing.F) {
	f.Add(`{__name__="m"}`, "1699999000", "1699999200", "60")
	f.Add(`rate(m[5m]) / on() group_left sum(m)`, "2023-11-14T21:00:00Z", "1699999200.5", "1m")
	f.Add(`{__name__="m",__cf__="max"}[10m:1m]`, "-1e9", "1e9", "1e5")
	f.Add(`m @ end() offset -1h`, "0", "0", "0.001")
	f.Add(`{endpoint=~"("}`, "NaN", "Inf", "-5")
	r := newFakeReader(testNow, storage.DefaultRetentions)
	r.add(map[int64]float64{testNow - 600: 1, testNow - 300: 2, testNow: 3}, "__name__", "m", "endpoint", "h1")
	h := NewAPI(r, Options{Timeout: 2 * time.Second, MaxSamples: 100_000,
		Now: func() time.Time { return time.Unix(testNow, 0) }}).Handler()
	f.Fuzz(func(t *testing.T, query, start, end, step string) {
		forms := []struct {
			path string
			form url.Values
		}{
			{"/api/v1/query_range", url.Values{"query": {query}, "start": {start}, "end": {end}, "step": {step}}},
			{"/api/v1/query", url.Values{"query": {query}, "time": {end}, "timeout": {step}}},
			{"/api/v1/series", url.Values{"match[]": {query}, "start": {start}, "end": {end}, "limit": {step}}},
			{"/api/v1/labels", url.Values{"match[]": {query}, "start": {start}}},
			{"/api/v1/label/" + url.PathEscape(step) + "/values", url.Values{"match[]": {query}, "end": {end}}},
		}
		for _, c := range forms {
			method := http.MethodPost
			if strings.HasPrefix(c.path, "/api/v1/label/") {
				method = http.MethodGet
			}
			code, body := call(t, h, method, c.path, c.form)
			if strings.HasPrefix(c.path, "/api/v1/label/") && (code == http.StatusTemporaryRedirect ||
				code == http.StatusMovedPermanently || code == http.StatusNotFound) {
				continue // the name made a path the router cleans or does not route
			}
			var resp promResponse
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatalf("%s %v: %d, not JSON: %q", c.path, c.form, code, body)
			}
			switch {
			case code == 200 && resp.Status == "success":
			case (code == 400 || code == 422 || code == 503 || code == 404) && resp.Status == "error" && resp.Error != "":
			default:
				t.Fatalf("%s %v: %d %s", c.path, c.form, code, body)
			}
		}
	})
}
