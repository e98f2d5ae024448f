package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/sdk"
)

type discard struct{}

func (discard) Append([]events.Event) error { return nil }

// BenchmarkAssignHandler is GET /v1/assign without the network: query
// parsing, assignment in two experiments, exposure dedup and queueing, JSON.
func BenchmarkAssignHandler(b *testing.B) {
	c, _ := sdk.ParseConfig([]byte(config))
	a, _ := sdk.New(c)
	s := New(a, Options{Sink: discard{}, ExposureQueue: 1 << 20})
	mux := http.NewServeMux()
	s.Register(mux)
	reqs := make([]*http.Request, 1024)
	for i := range reqs {
		reqs[i] = httptest.NewRequest("GET", "/v1/assign?unit=u"+strconv.Itoa(i)+"&attr.country=US", nil)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, reqs[i&1023])
		if i%4096 == 0 {
			b.StopTimer()
			s.exposures.Drain(nil)
			b.StartTimer()
		}
	}
}
