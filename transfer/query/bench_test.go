package query

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
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
	load(b, e, testNow-86400-3600, testNow, 60, defs) // an hour more, so the first 5-minute slot of the day is whole
	h := NewAPI(e, Options{Now: func() time.Time { return time.Unix(testNow, 0) }}).Handler()
	form := url.Values{
		"query": {`{__name__="cpu.idle"}`},
		"start": {sec(testNow - 86400)}, "end": {sec(testNow)}, "step": {"60"},
	}.Encode()

	// Check the answer once, in full.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+form, nil))
	m := decodeMatrix(b, rec.Code, rec.Body.String())
	if len(m.Result) != series || len(m.Result[0].Values) != 1441 {
		b.Fatalf("got %d series of %d points, want %d of 1441", len(m.Result), len(m.Result[0].Values), series)
	}
	size := rec.Body.Len()

	// Then time it writing to a sink, as to a socket: the recorder's growing
	// buffer would add copies a real connection does not make.
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		w := &sinkWriter{header: http.Header{}}
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+form, nil))
		if w.code != http.StatusOK || w.n != size {
			b.Fatalf("query_range: %d, %d bytes, want 200 and %d", w.code, w.n, size)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "ms/median")
	b.ReportMetric(float64(size)/1e6, "MB/answer")
}

// sinkWriter is a ResponseWriter that counts and drops the body.
type sinkWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *sinkWriter) Header() http.Header { return w.header }
func (w *sinkWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *sinkWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
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
	load(b, e, testNow-86400-3600, testNow, 60, defs) // an hour more, so the first 5-minute slot of the day is whole
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

// BenchmarkEncodeMatrix is the JSON encoding alone of the answer
// BenchmarkQueryRange times: 1,000 series × 1,441 points.
func BenchmarkEncodeMatrix(b *testing.B) {
	m := make(promql.Matrix, 1000)
	for i := range m {
		m[i].Metric = labels.FromStrings("__name__", "cpu.idle", "endpoint", "host"+string(rune('a'+i%26)))
		for k := 0; k < 1441; k++ {
			m[i].Floats = append(m[i].Floats, promql.FPoint{T: (testNow - 86400 + int64(k)*60) * 1000, F: float64((k+i)%100) + 0.5})
		}
	}
	b.ResetTimer()
	for range b.N {
		rw := &resultWriter{w: io.Discard, buf: make([]byte, 0, 2*flushAt), times: newStepTimes((testNow-86400)*1000, testNow*1000, 60000)}
		rw.writeResult(m)
		rw.flush()
	}
}
