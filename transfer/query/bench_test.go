package query

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkQueryRange: query_range over 1,000 series × 1 day at a 60 s step
// through the HTTP handler on real storage. A day back is past the 12 h of
// the 1-minute archive, so each series is read from the 5-minute archive
// (289 slots) and the engine evaluates 1,441 steps per series. Reports the
// median latency; the target is under 100 ms.
//
//	go test ./transfer/query -run '^$' -bench BenchmarkQueryRange -benchtime 20x
func BenchmarkQueryRange(b *testing.B) {
	const series = 1000
	e := openEngine(b)
	defs := make([]seriesDef, series)
	for i := range defs {
		host := "host" + strconv.Itoa(i)
		defs[i] = seriesDef{
			pairs: []string{"__name__", "cpu.idle", "endpoint", host},
			value: func(t int64) float64 { return float64((t/60+int64(i))%100) + 0.5 },
		}
	}
	load(b, e, testNow-86400, testNow, 60, defs)
	h := NewAPI(e, Options{Now: func() time.Time { return time.Unix(testNow, 0) }}).Handler()
	form := url.Values{
		"query": {`{__name__="cpu.idle"}`},
		"start": {sec(testNow - 86400)}, "end": {sec(testNow)}, "step": {"60"},
	}.Encode()

	run := func() int {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+form, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("query_range: %d %s", rec.Code, rec.Body.String()[:min(rec.Body.Len(), 500)])
		}
		return rec.Body.Len()
	}
	size := run() // warm up, and check the answer once
	b.ReportMetric(float64(size)/1e6, "MB/answer")

	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		run()
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "ms/median")
}

// BenchmarkQueryRangeEngine is the same query through the PromQL engine
// alone, without JSON encoding.
func BenchmarkQueryRangeEngine(b *testing.B) {
	const series = 1000
	e := openEngine(b)
	defs := make([]seriesDef, series)
	for i := range defs {
		host := "host" + strconv.Itoa(i)
		defs[i] = seriesDef{
			pairs: []string{"__name__", "cpu.idle", "endpoint", host},
			value: func(t int64) float64 { return float64((t/60+int64(i))%100) + 0.5 },
		}
	}
	load(b, e, testNow-86400, testNow, 60, defs)
	api := NewAPI(e, Options{Now: func() time.Time { return time.Unix(testNow, 0) }})
	start, end := time.Unix(testNow-86400, 0), time.Unix(testNow, 0)
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		opts, _ := api.queryOpts(req, `{__name__="cpu.idle"}`, start, end, time.Minute)
		q, err := api.engine.NewRangeQuery(b.Context(), api.queryable, opts, `{__name__="cpu.idle"}`, start, end, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		res := q.Exec(b.Context())
		if res.Err != nil {
			b.Fatal(res.Err)
		}
		q.Close()
		durations = append(durations, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "ms/median")
}
