package clickhouse_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func push(t *testing.T, base string, t0 int64, step, series int) {
	t.Helper()
	var items []map[string]any
	for s := 0; s < series; s++ {
		items = append(items, map[string]any{"endpoint": fmt.Sprintf("web-%d", s), "metric": "ch.load", "timestamp": t0 + int64(step)*60,
			"step": 60, "value": float64(step*1000+s) + 0.5, "counterType": "GAUGE", "tags": fmt.Sprintf("dc=eu,run=%d,pad=%x", step, sha256.Sum256([]byte{byte(step), byte(s), byte(s >> 8)}))})
	}
	body, _ := json.Marshal(items)
	resp, err := http.Post(base+"/api/push", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d", resp.StatusCode)
	}
}

func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(text), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// count counts the rows matching where; 0 while the sink has not created
// the table yet.
func count(t *testing.T, ch *testkit.ClickHouseServer, where string) uint64 {
	t.Helper()
	var n uint64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.Conn(t).QueryRow(ctx, "SELECT count() FROM samples WHERE "+where).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "doesn't exist") {
			return 0
		}
		t.Fatal(err)
	}
	return n
}

// TestClickHouseSinkOutage runs the transfer daemon with --clickhouse-addr
// against Debian's ClickHouse 18.16 through a proxy the test can cut: rows
// arrive with their labels, an outage is buffered in the bounded spool with
// drops beyond it counted, and inserts resume once ClickHouse is reachable.
func TestClickHouseSinkOutage(t *testing.T) {
	ch := testkit.SharedClickHouse(t)
	proxy := testkit.NewCutProxy(t, ch.NativeAddr())
	const spoolBound = 128 << 10
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "",
		"--clickhouse-addr", proxy.Addr(), "--clickhouse-database", ch.Database(),
		"--spool-max-bytes", fmt.Sprint(spoolBound), "--forward-timeout", "2s",
		"--forward-min-backoff", "50ms", "--forward-max-backoff", "200ms")
	base := "http://" + p.Addr
	now := time.Now().Unix()
	t0 := now - now%60 - 3600
	for step := 0; step < 3; step++ {
		push(t, base, t0, step, 20)
	}
	waitFor(t, "the first rows", func() bool { return count(t, ch, "metric = 'ch.load'") == 60 })
	var names, values []string
	var value float64
	var stepCol int32
	var ctype, series string
	row := ch.Conn(t).QueryRow(context.Background(), "SELECT label_names, label_values, value, step, counter_type, series FROM samples WHERE series LIKE '%web-7\"%' AND timestamp = toDateTime(?)", t0+60)
	if err := row.Scan(&names, &values, &value, &stepCol, &ctype, &series); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "dc,endpoint,pad,run" || values[0] != "eu" || values[1] != "web-7" || values[3] != "1" || value != 1007.5 || stepCol != 60 || ctype != "GAUGE" {
		t.Fatalf("row: %v %v %v %v %v %s", names, values, value, stepCol, ctype, series)
	}

	proxy.SetCut(true)
	for step := 3; step < 40; step++ {
		push(t, base, t0, step, 200)
	}
	dropped := metricValue(t, base, `opskit_transfer_forward_points_dropped_total{kind="clickhouse",dest="samples",reason="full"}`)
	spooled := metricValue(t, base, `opskit_transfer_forward_spool_bytes{kind="clickhouse",dest="samples"}`)
	if dropped <= 0 || spooled > spoolBound {
		t.Fatalf("during the outage: %v points dropped, %v bytes spooled (bound %d)", dropped, spooled, spoolBound)
	}
	proxy.SetCut(false)
	waitFor(t, "the spool to drain", func() bool {
		return metricValue(t, base, `opskit_transfer_forward_spool_points{kind="clickhouse",dest="samples"}`) == 0
	})
	newest := count(t, ch, fmt.Sprintf("timestamp = toDateTime(%d)", t0+39*60))
	if newest != 200 {
		t.Fatalf("newest step has %d rows after the outage; want 200", newest)
	}
	total := count(t, ch, "metric = 'ch.load'")
	t.Logf("ClickHouse outage: %v points dropped and counted; %d rows stored", dropped, total)
	if want := uint64(60 + 37*200 - int(dropped)); total < want {
		t.Fatalf("%d rows; want at least %d (pushed minus dropped)", total, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
