package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTransferClusterLatePointsThroughTwoEntryNodes feeds every series
// through two entry nodes in turn (step s through node s%2, as a collector's
// relay failing over between transfers does) while the third node is down.
// Each entry node spools its half of the owner's share; when the owner
// returns the two spools drain one batch at a time each, so the owner
// receives the points of a series out of time order. With --late-points
// merge (the default) every acknowledged point is then queryable with its
// value from every node and through both query APIs, and nothing is
// refused; with --late-points refuse the same run refuses points, which
// shows the run does deliver late points.
func TestTransferClusterLatePointsThroughTwoEntryNodes(t *testing.T) {
	for _, tc := range []struct {
		policy string
		steps  int
	}{
		{"merge", 60},
		{"refuse", 30},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			r := startTransferRing(t, 3, "--late-points", tc.policy)
			cw := newClusterWriter(30)
			alternate := func(step int) string { return r.base(step % 2) }
			cw.run(0, 0, 10, alternate, nil)
			r.waitDrained(20*time.Second, 0, 1, 2)
			r.procs[2].Kill()
			cw.run(0, 10, tc.steps-10, alternate, nil)
			if cw.refused > 0 || cw.ackedBatches() != tc.steps-10 {
				t.Fatalf("intake while n2 was down: %d batches acknowledged, %d refused", cw.ackedBatches(), cw.refused)
			}
			if r.spooled(0, "n2") == 0 || r.spooled(1, "n2") == 0 {
				t.Fatalf("n2's share is not spooled on both entry nodes: %d, %d", r.spooled(0, "n2"), r.spooled(1, "n2"))
			}
			r.start(2)
			r.waitDrained(30*time.Second, 0, 1, 2)
			cw.run(0, tc.steps-10, tc.steps, alternate, nil)
			r.waitDrained(20*time.Second, 0, 1, 2)

			_, text := get(t, r.base(2)+"/metrics")
			// clusterMetric gives -1 for a counter never incremented.
			refused := clusterMetric(text, "opskit_transfer_forward_received_refused_total")
			merged := clusterMetric(text, `opskit_transfer_storage_late_points_total{outcome="merged"}`)
			t.Logf("n2 with --late-points %s: %v late points merged, %v forwarded points refused", tc.policy, merged, refused)
			if tc.policy == "refuse" {
				if refused <= 0 {
					t.Fatal("no point was refused: the spools did not deliver late points, so this test proves nothing")
				}
				return
			}
			if refused > 0 {
				t.Fatalf("n2 refused %v forwarded points", refused)
			}
			if merged <= 0 {
				t.Fatal("n2 merged no late point: the spools did not deliver out of order")
			}
			for i := range r.names {
				cw.check(t, r.base(i), tc.steps-1)
			}
			checkFalconHistory(t, r.base(0), cw, "w0-h0", tc.steps)
		})
	}
}

// checkFalconHistory reads one series through the open-falcon graph API and
// requires every step's value.
func checkFalconHistory(t *testing.T, base string, cw *clusterWriter, endpoint string, steps int) {
	t.Helper()
	hist := fmt.Sprintf(`{"hostnames":[%q],"counters":["e2e.cluster"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":60}`,
		endpoint, cw.t0, cw.t0+int64(steps-1)*60)
	resp, err := http.Post(base+"/api/v1/graph/history", "application/json", strings.NewReader(hist))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var series []struct {
		Values []struct {
			Timestamp int64    `json:"timestamp"`
			Value     *float64 `json:"value"`
		} `json:"Values"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&series); err != nil || len(series) != 1 || len(series[0].Values) != steps {
		t.Fatalf("graph/history of %s: %v %+v", endpoint, err, series)
	}
	for _, v := range series[0].Values {
		step := (v.Timestamp - cw.t0) / 60
		if v.Value == nil || *v.Value != float64(step) {
			t.Fatalf("graph/history of %s at step %d: %v", endpoint, step, v.Value)
		}
	}
}
