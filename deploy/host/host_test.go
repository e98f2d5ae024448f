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
	// Burn CPU until the kernel has accounted at least one tick to us (on a
	// loaded machine 30 ms of wall time can be no CPU time at all); a
	// reader that never sees it fails at the deadline.
	deadline := time.Now().Add(10 * time.Second)
	var u Usage
	var err error
	for {
		spin := time.Now().Add(20 * time.Millisecond)
		for x := 0; time.Now().Before(spin); x++ {
		}
		u, err = ProcessUsage(os.Getpid())
		if err != nil || u.CPUSeconds > 0 || time.Now().After(deadline) {
			break
		}
	}
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
