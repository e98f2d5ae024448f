package falcon

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// benchBody is a 1,000-item push body like an agent's: ten hosts, a
// hundred metrics each, half with tags, a few values as strings.
func benchBody() []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		tags := ""
		if i%2 == 0 {
			tags = fmt.Sprintf("iface=eth%d,dc=bj", i%4)
		}
		value := fmt.Sprintf("%d.5", i)
		if i%10 == 0 {
			value = fmt.Sprintf("%q", value)
		}
		fmt.Fprintf(&b, `{"endpoint":"host-%03d.example.com","metric":"net.if.in.bytes.%d","timestamp":1699999980,"step":60,"value":%s,"counterType":"GAUGE","tags":%q}`,
			i/100, i%100, value, tags)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func BenchmarkDecode1000(b *testing.B) {
	body := benchBody()
	lim := intake.DefaultLimits()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		res, err := Decode(body, now, lim)
		if err != nil || len(res.Points) != 1000 {
			b.Fatalf("%v, %d points, %+v", err, len(res.Points), res.Rejected)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkHandler1000 adds the HTTP handler's reading, answering and
// counting around the decoder (no network).
func BenchmarkHandler1000(b *testing.B) {
	body := benchBody()
	h := NewHandler(intake.AppenderFunc(discard), intake.NewRecorder(nil, nil), intake.Limits{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/push", bytes.NewReader(body)))
		if rw.Code != 200 {
			b.Fatal(rw.Code, rw.Body)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "points/s")
}

func discard(context.Context, []metric.Point) error { return nil }
