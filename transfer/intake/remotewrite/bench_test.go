package remotewrite

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// benchRequest is a batch as Prometheus sends it by default: 2,000 series
// of one sample each (max_samples_per_send), with typical labels.
func benchRequest(b *testing.B) []byte {
	req := &prompb.WriteRequest{}
	for i := range 2000 {
		req.Timeseries = append(req.Timeseries, series(
			[]prompb.Sample{{Value: float64(i) + 0.5, Timestamp: 1700000000000 + int64(i)}},
			"__name__", fmt.Sprintf("node_network_receive_bytes_total_%d", i%50),
			"device", fmt.Sprintf("eth%d", i%4),
			"instance", fmt.Sprintf("web%d.example.com:9100", i/50),
			"job", "node",
		))
	}
	return encode(b, req)
}

// BenchmarkDecode decodes the same batch again and again: the steady state
// of a Prometheus sending the same series every scrape, label sets cached.
func BenchmarkDecode(b *testing.B) {
	body := benchRequest(b)
	d := NewDecoder(intake.Limits{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		res, err := d.Decode(body)
		if err != nil || len(res.Points) != 2000 {
			b.Fatalf("%v, %d points", err, len(res.Points))
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkDecodeCold reads every series for the first time (a fresh
// decoder each round), the cost of new series.
func BenchmarkDecodeCold(b *testing.B) {
	body := benchRequest(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		res, err := NewDecoder(intake.Limits{}).Decode(body)
		if err != nil || len(res.Points) != 2000 {
			b.Fatalf("%v, %d points", err, len(res.Points))
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "points/s")
}

func BenchmarkHandler(b *testing.B) {
	body := benchRequest(b)
	h := NewHandler(intake.AppenderFunc(discard), intake.NewRecorder(nil, nil), intake.Limits{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rw := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		h.ServeHTTP(rw, req)
		if rw.Code != http.StatusNoContent {
			b.Fatal(rw.Code, rw.Body)
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "points/s")
}

func discard(context.Context, []metric.Point) error { return nil }
