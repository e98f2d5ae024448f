package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/judge/engine"
)

func TestDyedAlertAnnotatedCountedAndTraced(t *testing.T) {
	var mu sync.Mutex
	var got []Alert
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var as []Alert
		json.Unmarshal(body, &as)
		mu.Lock()
		got = append(got, as...)
		mu.Unlock()
	}))
	defer srv.Close()
	tr := dye.New(dye.Options{Daemon: "judge"})
	m, _ := dye.ParseMatch("endpoint=web01,metric=cpu.idle")
	tr.Set(dye.Rule{ID: "d1", Match: m, Until: time.Now().Add(time.Minute)})
	set := metrics.NewSet()
	now := time.Now()
	src := &fakeSource{alerts: []engine.Alert{
		{Strategy: "idle", State: engine.StateFiring, StartsAt: now, Labels: map[string]string{"alertname": "idle", "endpoint": "web01"},
			Series: map[string]string{"__name__": "cpu.idle", "endpoint": "web01"}},
		{Strategy: "idle", State: engine.StateResolved, StartsAt: now, EndsAt: now, Labels: map[string]string{"alertname": "idle", "endpoint": "web02"},
			Series: map[string]string{"__name__": "cpu.idle", "endpoint": "web02"}},
	}}
	s, err := New(Config{Addrs: []string{srv.URL}, Hops: hop.NewSet(set), Dye: tr}, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendOnce(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Annotations[dye.Annotation] != "d1" || got[1].Annotations[dye.Annotation] != "" {
		t.Fatalf("sent %+v", got)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	to := strings.TrimPrefix(srv.URL, "http://")
	if !strings.Contains(sb.String(), `opskit_hop_items_total{to="`+to+`"} 2`) {
		t.Fatalf("metrics:\n%s", sb.String())
	}
	recs := tr.Trace("d1")
	if len(recs) != 1 || recs[0].Hop != "send "+to || !strings.Contains(recs[0].Item, "web01") {
		t.Fatalf("trace = %+v", recs)
	}
}
