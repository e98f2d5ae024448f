package storage

import (
	"context"
	"testing"
	"unsafe"

	"github.com/opskit/opskit/internal/metric"
)

// BenchmarkMergeLate is the cost of one late gauge point in the archives
// alone (default schema, 1,000 series each holding twelve hours of 60 s
// points): "in-order" is the in-order update of the same working set for
// comparison, "recent" merges into the last hour (the coarser slots are
// recomputed from the finest archive), "tail" into the oldest hour of the
// 12 h finest ring (the 3 h slot and the closed 12 h slot get only their
// MAX and MIN bounds).
func BenchmarkMergeLate(b *testing.B) {
	const nSeries = 1000
	for _, bc := range []struct {
		name    string
		inOrder bool
		back    int64 // how far behind the newest slot the late points fall, in slots
	}{
		{"in-order", true, 0},
		{"recent", false, 1},
		{"tail", false, 660},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lay := &layout{archives: DefaultSchema().Retentions, heartbeat: 120, xff: 0.5}
			lay.prepare()
			size := SlotSize(lay.archives)
			views := make([]rrdView, nSeries)
			newest := int64(t0 + 720*60) // 12 h of points, so the tail case is inside the ring
			for i := range views {
				mem := make([]uint64, size/8)
				views[i] = rrdView{lay: lay, owner: uint32(i), buf: unsafe.Slice((*byte)(unsafe.Pointer(&mem[0])), size)}
				views[i].init(newest - 720*60)
				for s := int64(1); s <= 720; s++ {
					views[i].update(newest-720*60+s*60, float64(s))
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % nSeries
				round := int64(i / nSeries)
				if bc.inOrder {
					views[k].update(newest+(round+1)*60, float64(i))
					continue
				}
				// Walk back over 60 slots so the coarse slots touched vary.
				t := newest - (bc.back+round%60)*60
				if views[k].mergeLate(t, float64(i)) != lateMerged {
					b.Fatal("not merged")
				}
			}
		})
	}
}

// BenchmarkAppendLate is BenchmarkAppendNoWait's path with batches of late
// points: 1,000 series, each batch 1,000 points into past slots of the last
// hour, WAL included.
func BenchmarkAppendLate(b *testing.B) {
	const nSeries, batchSize = 1000, 1000
	e, err := Open(b.TempDir(), Options{LatePoints: LateMerge})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ls := benchLabels(nSeries)
	const steps = 120
	for s := int64(0); s < steps; s++ {
		pts := make([]metric.Point, 0, nSeries)
		for k := range ls {
			pts = append(pts, metric.Point{Labels: ls[k], Time: t0 + s*60, Value: float64(s)})
		}
		if _, err := e.Append(pts); err != nil {
			b.Fatal(err)
		}
	}
	pts := make([]metric.Point, batchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i += batchSize {
		for j := range pts {
			n := i + j
			pts[j] = metric.Point{Labels: ls[n%nSeries], Time: t0 + int64(steps-1-(n/nSeries)%60)*60, Value: float64(n)}
		}
		res, err := e.Append(pts)
		if err != nil || len(res.Rejected) > 0 {
			b.Fatal(err, res.Rejected)
		}
	}
	if err := e.Wait(context.Background(), Result{}); err != nil {
		b.Fatal(err)
	}
}
