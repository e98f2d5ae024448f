package query

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
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
