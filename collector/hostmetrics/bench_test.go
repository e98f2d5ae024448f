package hostmetrics

import (
	"testing"
	"time"
)

// BenchmarkCollectLive measures one round of host metrics on this machine's
// /proc and /sys (the agent's work per interval).
func BenchmarkCollectLive(b *testing.B) {
	c := New(Config{})
	now := time.Now()
	c.Collect(now)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Collect(now.Add(time.Duration(i+1) * time.Second))
	}
}
