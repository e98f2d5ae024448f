package remotewrite

import (
	"bytes"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

func series(samples []prompb.Sample, kv ...string) prompb.TimeSeries {
	ts := prompb.TimeSeries{Samples: samples}
	for i := 0; i < len(kv); i += 2 {
		ts.Labels = append(ts.Labels, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return ts
}

func encode(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func TestDecode(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]prompb.Sample{{Value: 1, Timestamp: 1699999999500}, {Value: 2, Timestamp: 1700000000999}},
			"__name__", "up", "job", "node", "instance", "web1:9100"),
		series([]prompb.Sample{{Value: math.Float64frombits(value.StaleNaN), Timestamp: 1700000000000}, {Value: 3, Timestamp: 1700000001000}},
			"__name__", "node_load1", "instance", "web1:9100"),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "job", "no-name"),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "__name__", "dup", "a", "1", "a", "2"),
		series([]prompb.Sample{{Value: math.NaN(), Timestamp: 1700000000000}, {Value: math.Inf(1), Timestamp: 1700000000000}, {Value: 5, Timestamp: 1700000000000}},
			"__name__", "cpu.idle", "empty", ""),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "__name__", strings.Repeat("n", 300)),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "zz", "last", "__name__", "unsorted", "aa", "first"),
		{Labels: []prompb.Label{{Name: "__name__", Value: "hist"}}, Histograms: []prompb.Histogram{{Timestamp: 1700000000000}}},
	}}
	res, err := NewDecoder(intake.Limits{}).Decode(encode(t, req))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		labels string
		time   int64
		value  float64
	}
	wantPts := []want{
		{`up{instance="web1:9100",job="node"}`, 1699999999, 1},
		{`up{instance="web1:9100",job="node"}`, 1700000000, 2},
		{`node_load1{instance="web1:9100"}`, 1700000001, 3},
		{`cpu.idle{}`, 1700000000, 5},
		{`unsorted{aa="first",zz="last"}`, 1700000000, 9},
	}
	if len(res.Points) != len(wantPts) {
		t.Fatalf("got %d points, want %d: %+v", len(res.Points), len(wantPts), res.Points)
	}
	for i, w := range wantPts {
		p := res.Points[i]
		if p.Labels.String() != w.labels || p.Time != w.time || p.Value != w.value || p.Labels.Name() == "" {
			t.Errorf("point %d = %s %d %v, want %s %d %v", i, p.Labels, p.Time, p.Value, w.labels, w.time, w.value)
		}
	}
	if res.Stale != 1 {
		t.Errorf("stale = %d, want 1", res.Stale)
	}
	wantRej := []intake.Rejection{
		{Index: 2, Reason: intake.ReasonEmptyMetric},
		{Index: 3, Reason: intake.ReasonDuplicateLabel},
		{Index: 4, Reason: intake.ReasonBadValue},
		{Index: 4, Reason: intake.ReasonBadValue},
		{Index: 5, Reason: intake.ReasonNameTooLong},
		{Index: 7, Reason: intake.ReasonUnsupported},
	}
	if len(res.Rejected) != len(wantRej) {
		t.Fatalf("rejected %+v, want %+v", res.Rejected, wantRej)
	}
	for i, w := range wantRej {
		if res.Rejected[i].Index != w.Index || res.Rejected[i].Reason != w.Reason {
			t.Errorf("rejected[%d] = %+v, want %+v", i, res.Rejected[i], w)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]prompb.Sample{{Value: 1, Timestamp: 1}}, "__name__", "m")}})
	tests := []struct {
		name    string
		body    []byte
		max     int64
		tooBig  bool
		decodes bool
	}{
		{name: "valid", body: valid, decodes: true},
		{name: "empty body is an empty request", body: snappy.Encode(nil, nil), decodes: true},
		{name: "not snappy", body: []byte("hello world, not snappy at all")},
		{name: "snappy of garbage protobuf", body: snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})},
		{name: "truncated", body: valid[:len(valid)-3]},
		{name: "uncompressed protobuf", body: func() []byte {
			b, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series(nil, "__name__", "m")}}).Marshal()
			return b
		}()},
		{name: "claims an impossible length", body: []byte{0x80, 0x80, 0x40, 0x00, 0x01}},
		{name: "decompresses beyond the limit", body: snappy.Encode(nil, bytes.Repeat([]byte{0}, 4096)), max: 1024, tooBig: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDecoder(intake.Limits{MaxBodyBytes: tc.max}).Decode(tc.body)
			if tc.decodes != (err == nil) {
				t.Fatalf("err = %v, want decodes=%v", err, tc.decodes)
			}
			if tc.tooBig != errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want too big = %v", err, tc.tooBig)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	good := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]prompb.Sample{{Value: 1, Timestamp: 1700000000000}}, "__name__", "up", "job", "a"),
		series([]prompb.Sample{{Value: 1, Timestamp: 1700000000000}}, "job", "nameless"),
	}})
	tests := []struct {
		name      string
		body      []byte
		header    map[string]string
		appendErr error
		maxBody   int64
		wantCode  int
		stored    int
		counter   string
	}{
		{name: "stored", body: good, wantCode: 204, stored: 1, counter: `opskit_transfer_points_rejected_total{proto="remote_write",reason="empty_metric"}`},
		{name: "garbage is 400 and counted", body: []byte("garbage"), wantCode: 400, counter: `opskit_transfer_points_rejected_total{proto="remote_write",reason="bad_body"}`},
		{name: "append failure is 503", body: good, appendErr: errors.New("wal down"), wantCode: 503, counter: `opskit_transfer_append_errors_total{proto="remote_write"}`},
		{name: "over the body limit is 413", body: good, maxBody: 10, wantCode: 413},
		{name: "remote write 2.0 is 415", body: good, header: map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}, wantCode: 415},
		{name: "gzip is 415", body: good, header: map[string]string{"Content-Encoding": "gzip"}, wantCode: 415},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := intaketest.NewAppender()
			app.SetErr(tc.appendErr)
			set := metrics.NewSet()
			h := NewHandler(app, intake.NewRecorder(set, nil), intake.Limits{MaxBodyBytes: tc.maxBody})
			req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-protobuf")
			req.Header.Set("Content-Encoding", "snappy")
			req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rw := httptest.NewRecorder()
			h.ServeHTTP(rw, req)
			if rw.Code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", rw.Code, tc.wantCode, rw.Body)
			}
			if got := len(app.Points()); got != tc.stored {
				t.Fatalf("stored %d, want %d", got, tc.stored)
			}
			if tc.counter != "" {
				if got := intaketest.Counter(set, tc.counter); got != 1 {
					t.Fatalf("%s = %v, want 1", tc.counter, got)
				}
			}
			if got := intaketest.Counter(set, `opskit_transfer_requests_total{proto="remote_write",code="`+strconv.Itoa(tc.wantCode)+`"}`); got != 1 {
				t.Fatalf("request counter for %d = %v", tc.wantCode, got)
			}
		})
	}
}

func TestFloorDiv(t *testing.T) {
	for _, tc := range []struct{ ms, s int64 }{{1999, 1}, {2000, 2}, {0, 0}, {-1, -1}, {-1000, -1}, {-1001, -2}} {
		if got := floorDiv(tc.ms, 1000); got != tc.s {
			t.Errorf("floorDiv(%d) = %d, want %d", tc.ms, got, tc.s)
		}
	}
}

func TestHandlerStorageRefusesSome(t *testing.T) {
	app := intaketest.NewAppender()
	app.SetRefuse(func(p metric.Point) bool { return p.Labels.Name() == "old" })
	set := metrics.NewSet()
	h := NewHandler(app, intake.NewRecorder(set, nil), intake.Limits{})
	body := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]prompb.Sample{{Value: 1, Timestamp: 1700000000000}}, "__name__", "old"),
		series([]prompb.Sample{{Value: 1, Timestamp: 1700000000000}}, "__name__", "new"),
	}})
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body)))
	if rw.Code != 204 {
		t.Fatalf("status %d: the stored rest must not be resent or dropped", rw.Code)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_rejected_total{proto="remote_write",reason="out_of_order"}`); got != 1 {
		t.Fatalf("out_of_order = %v", got)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_received_total{proto="remote_write"}`); got != 1 {
		t.Fatalf("received = %v", got)
	}
}

// TestWireReaderTakesCommonBodies makes sure the fast wire reader, not the
// generated decoder, handles what Prometheus usually sends, and agrees with
// the generated decoder on it.
func TestWireReaderTakesCommonBodies(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]prompb.Sample{{Value: 1, Timestamp: 1699999999500}, {Value: 2, Timestamp: 1700000000999}},
			"__name__", "up", "job", "node", "instance", "web1:9100"),
		series([]prompb.Sample{{Value: math.Float64frombits(value.StaleNaN), Timestamp: 1700000000000}, {Value: -3, Timestamp: 1700000001000}},
			"__name__", "node_load1", "instance", "web1:9100"),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "job", "no-name"),
		series([]prompb.Sample{{Value: math.NaN(), Timestamp: 1700000000000}, {Value: 0, Timestamp: -5000}}, "__name__", "m"),
		series([]prompb.Sample{{Value: 9, Timestamp: 1700000000000}}, "zz", "last", "__name__", "unsorted", "empty", ""),
	}}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder(intake.Limits{})
	for round := range 2 {
		fast, ok := d.walk(raw)
		if !ok {
			t.Fatalf("round %d: wire reader gave up on a common body", round)
		}
		std, err := d.decodeStd(raw)
		if err != nil {
			t.Fatal(err)
		}
		sameResult(t, fast, std)
		if len(fast.Points) != 4 || fast.Stale != 1 || len(fast.Rejected) != 3 {
			t.Fatalf("round %d: %d points, %d stale, rejected %+v", round, len(fast.Points), fast.Stale, fast.Rejected)
		}
	}
	if len(d.cache) != 4 {
		t.Fatalf("cache holds %d label sets, want the 4 valid series", len(d.cache))
	}
}

// TestHandlerConcurrent posts from several goroutines at once, so the race
// detector sees decoders and their caches move between requests.
func TestHandlerConcurrent(t *testing.T) {
	app := intaketest.NewAppender()
	h := NewHandler(app, intake.NewRecorder(metrics.NewSet(), nil), intake.Limits{})
	const workers, requests = 6, 15
	bodies := make([][]byte, workers)
	for w := range bodies {
		bodies[w] = encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]prompb.Sample{{Value: float64(w), Timestamp: 1700000000000}}, "__name__", "m", "worker", strconv.Itoa(w)),
			series([]prompb.Sample{{Value: 1, Timestamp: 1700000000000}}, "__name__", "shared"),
		}})
	}
	errs := make(chan string, workers*requests)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range requests {
				rw := httptest.NewRecorder()
				h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(bodies[w])))
				if rw.Code != http.StatusNoContent {
					errs <- rw.Body.String()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	pts := app.Points()
	if len(pts) != workers*requests*2 {
		t.Fatalf("stored %d points, want %d", len(pts), workers*requests*2)
	}
	for _, p := range pts {
		if w := p.Labels.Get("worker"); w != "" && strconv.Itoa(int(p.Value)) != w {
			t.Fatalf("point %v has value %v: labels crossed between requests", p.Labels, p.Value)
		}
	}
}
