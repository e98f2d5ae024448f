package host

import (
	"bytes"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"os"
	"testing"
	"time"
)

func TestProcessUsageOfSelf(t *testing.T) {
	// Burn a little CPU so that the figure cannot be 0.
	deadline := time.Now().Add(30 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
	}
	u, err := ProcessUsage(os.Getpid())
	if err != nil || u.RSSBytes < 1<<20 || u.CPUSeconds <= 0 {
		t.Fatalf("%+v %v", u, err)
	}
	if _, err := ProcessUsage(1 << 30); err == nil {
		t.Fatal("usage of a missing pid")
	}
}

func TestViewHasHostMetrics(t *testing.T) {
	set := metrics.NewSet()
	v := NewView(set)
	v.Collect(time.Now())
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), "opskit_deploy_host_load_1min ") {
		t.Errorf("no opskit_deploy_host_load_1min in /metrics:\n%.500s", buf.String())
	}
	_, samples, _ := v.Snapshot()
	seen := map[string]bool{}
	for _, s := range samples {
		seen[s.Metric] = true
	}
	for _, want := range []string{"load.1min", "mem.memtotal", "agent.alive"} {
		if !seen[want] {
			t.Errorf("no %s among %d samples", want, len(samples))
		}
	}
}
