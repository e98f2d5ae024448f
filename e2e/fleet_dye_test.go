package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/internal/dye"
)

// hopItems reads opskit_hop_items_total by to= from a daemon's /metrics.
func hopItems(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	re := regexp.MustCompile(`(?m)^opskit_hop_items_total\{to="([^"]+)"\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	return out
}

// TestFleetDyeTrace: a dye rule set with `configd fleet dye` on every
// daemon of a running collector -> transfer -> judge -> alarm pipeline
// follows a point pushed to collector: `configd fleet trace` shows its
// hops through collector, transfer, judge (evaluation and the alert it
// raised) and alarm (intake and notification), in that order; every daemon
// logs it with dye=ID; each daemon's /metrics counts items acknowledged by
// its next hop under to=.
func TestFleetDyeTrace(t *testing.T) {
	f := startFleetPipeline(t)
	judgeWait(t, 20*time.Second, "the four daemons up in the fleet", func() bool {
		ds := f.daemons(t)
		for _, k := range []string{"collector", "transfer", "judge", "alarm"} {
			if ds[k].State != api.DaemonUp {
				return false
			}
		}
		return true
	})
	const id = "e2e-dye"
	out, errs, code := f.cli(t, "fleet", "dye", "endpoint=dye-web,metric=cpu.busy", "--for", "5m", "--id", id, "--fleet-admin-token", fleetAdminToken)
	if code != 0 || strings.TrimSpace(out) != id {
		t.Fatalf("configd fleet dye: exit %d, out %q, err %s", code, out, errs)
	}

	// Two busy points of the dyed series raise judge's alert (all(#2) > 90);
	// a point of another host passes undyed.
	ts := time.Now().Unix() - 600
	for i, endpoint := range []string{"dye-web", "plain-web", "dye-web"} {
		body := fmt.Sprintf(`[{"endpoint":%q,"metric":"cpu.busy","timestamp":%d,"step":30,"value":97,"counterType":"GAUGE","tags":"core=all"}]`, endpoint, ts+int64(30*(i/2)))
		resp, err := http.Post("http://"+f.collector.Addr+"/v1/push", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("push: %d", resp.StatusCode)
		}
		time.Sleep(300 * time.Millisecond) // one point per transfer batch, in order
	}

	wantHops := []string{
		"collector intake", "collector send " + f.transfer.Addr,
		"transfer intake", "transfer send judge " + f.judge.Addr,
		"judge evaluate", "judge send " + f.alarm.Addr,
		"alarm intake", "alarm notify hook",
	}
	var records []dye.Record
	judgeWait(t, 30*time.Second, "every hop of the dyed point in the trace", func() bool {
		out, _, code := f.cli(t, "fleet", "trace", id, "--json", "--fleet-admin-token", fleetAdminToken)
		if code != 0 {
			return false
		}
		records = records[:0]
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r dye.Record
			if json.Unmarshal([]byte(line), &r) == nil {
				records = append(records, r)
			}
		}
		for _, w := range wantHops {
			if firstHop(records, w) < 0 {
				return false
			}
		}
		return true
	})
	// The journey in order: each stage first seen after the one before.
	for i := 1; i < len(wantHops); i++ {
		if firstHop(records, wantHops[i]) < firstHop(records, wantHops[i-1]) {
			t.Fatalf("%q before %q in the trace:\n%s", wantHops[i], wantHops[i-1], traceText(records))
		}
	}
	for _, r := range records {
		if r.Dye != id || strings.Contains(r.Item, "plain-web") {
			t.Fatalf("record of another item in the trace: %+v", r)
		}
	}
	// The text form: one line per hop, in time order.
	out, _, _ = f.cli(t, "fleet", "trace", id, "--fleet-admin-token", fleetAdminToken)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != len(records) || !strings.Contains(lines[0], "collector") {
		t.Fatalf("text trace:\n%s", out)
	}
	for _, p := range []interface{ Logs() string }{f.collector, f.transfer, f.judge, f.alarm} {
		if !strings.Contains(p.Logs(), "dye="+id) {
			t.Fatalf("a daemon did not log the dyed item with dye=%s:\n%s", id, p.Logs())
		}
	}

	// Hop statistics: every daemon counts what its next hop acknowledged.
	for _, c := range []struct{ kind, addr, to string }{
		{"collector", f.collector.Addr, f.transfer.Addr},
		{"transfer", f.transfer.Addr, f.judge.Addr},
		{"judge", f.judge.Addr, f.alarm.Addr},
	} {
		if got := hopItems(t, c.addr); got[c.to] <= 0 {
			t.Errorf("%s: opskit_hop_items_total{to=%q} not above 0: %v", c.kind, c.to, got)
		}
	}
	judgeWait(t, 10*time.Second, "alarm's hop to the webhook counted", func() bool {
		for to, v := range hopItems(t, f.alarm.Addr) {
			if strings.HasPrefix(to, "127.0.0.1:") && to != f.alarm.Addr && v > 0 {
				return true
			}
		}
		return false
	})
}

// firstHop is the index of the first record whose "daemon hop" starts with
// want, or -1.
func firstHop(records []dye.Record, want string) int {
	for i, r := range records {
		if strings.HasPrefix(r.Daemon+" "+r.Hop, want) {
			return i
		}
	}
	return -1
}

func traceText(records []dye.Record) string {
	var sb strings.Builder
	for _, r := range records {
		fmt.Fprintf(&sb, "%s %s %s %s %s\n", r.Time.Format(time.RFC3339Nano), r.Daemon, r.Instance, r.Hop, r.Item)
	}
	return sb.String()
}
