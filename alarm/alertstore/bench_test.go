package alertstore

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

// BenchmarkPut100 stores batches of 100 new alerts from parallel writers,
// each batch synced to disk (shared fsyncs).
func BenchmarkPut100(b *testing.B) {
	s, err := Open(b.TempDir(), time.Now, time.Hour, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var next atomic.Int64
	now := time.Now()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			batch := make([]*alert.Alert, 100)
			base := next.Add(100)
			for i := range batch {
				batch[i] = mk(int(base)+i, now)
			}
			if _, err := s.Put(batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "alerts/s")
}
