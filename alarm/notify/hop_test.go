package notify

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
)

func TestDeliveryCountsHopAndTracesDyes(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHook(t)
	set := metrics.NewSet()
	tr := dye.New(dye.Options{Daemon: "alarm", Now: c.now})
	n, _, _ := setup(t, t.TempDir(), h.srv.URL, c, Options{Hops: hop.NewSet(set), Dye: tr})
	dyed := firingAlert(c, "web01")
	dyed.Annotations[dye.Annotation] = "d1"
	if err := n.Notify(context.Background(), group(dyed, firingAlert(c, "web02"))); err != nil {
		t.Fatal(err)
	}
	h.wait(t, 1)
	to := strings.TrimPrefix(h.srv.URL, "http://")
	deadline := time.Now().Add(5 * time.Second)
	for {
		var sb strings.Builder
		set.WritePrometheus(&sb)
		if strings.Contains(sb.String(), `opskit_hop_items_total{to="`+to+`"} 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hop metrics:\n%s", sb.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	recs := tr.Trace("d1")
	if len(recs) != 1 || recs[0].Hop != "notify team "+to || !strings.Contains(recs[0].Item, "(2 alerts)") {
		t.Fatalf("trace = %+v", recs)
	}
	if got := tr.Trace(""); len(got) != 1 {
		t.Fatalf("an undyed notification was traced: %+v", got)
	}
}
