package relay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
)

func TestHopCountsAndDyeTraceOnAcknowledgement(t *testing.T) {
	ft := newFakeTransfer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Millisecond) // a transfer that takes its time
			h.ServeHTTP(w, r)
		})
	})
	dead := httptest.NewServer(http.NotFoundHandler())
	defer dead.Close()
	hopSet := metrics.NewSet()
	backlog := hop.NewBacklog(0, time.Now())
	tr := dye.New(dye.Options{Daemon: "collector"})
	match, _ := dye.ParseMatch("metric=seq,i=7")
	if err := tr.Set(dye.Rule{ID: "d1", Match: match, Until: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	h := start(t, Config{Targets: []string{dead.URL, ft.addr()}, Hops: hop.NewSet(hopSet), Backlog: backlog, Dye: tr}, "")
	h.w.Backlog, h.w.Dye = backlog, tr
	if err := h.w.Write(context.Background(), seqPoints(0, 10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "10 points", func() bool { return len(ft.got()) == 10 })
	waitFor(t, "backlog emptied", func() bool { return backlog.Len() == 0 })

	var sb strings.Builder
	hopSet.WritePrometheus(&sb)
	out := sb.String()
	for _, want := range []string{
		`opskit_hop_items_total{to="` + ft.addr() + `"} 10`,
		`opskit_hop_errors_total{to="` + strings.TrimPrefix(dead.URL, "http://") + `"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("hop metrics lack %s:\n%s", want, out)
		}
	}
	latency := metricValue(t, out, `opskit_hop_latency_seconds_total{to="`+ft.addr()+`"}`)
	if latency < 10*0.02 {
		t.Errorf("latency sum %v s for 10 points that waited 20ms each at least", latency)
	}

	recs := tr.Trace("d1")
	if len(recs) != 2 || recs[0].Hop != "intake" || recs[1].Hop != "send "+ft.addr() || !strings.Contains(recs[1].Item, `i="7"`) {
		t.Fatalf("trace = %+v", recs)
	}
	if recs[1].Duration < 0.02 {
		t.Errorf("send hop took %v s, want at least the transfer's 20ms", recs[1].Duration)
	}
}

func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in\n%s", series, text)
	return 0
}
