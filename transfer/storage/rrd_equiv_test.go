package storage

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/opskit/opskit/internal/metric"
)

// The update path was rewritten for speed (precomputed layout offsets, ring
// walks instead of a division per row, fewer divisions per point, inlined
// min/max). TestUpdateMatchesReferenceArithmetic proves it bit for bit
// against the straightforward version kept below, over random layouts and
// random point streams (gaps, resets, unknown values, unaligned times).

// refUpdate is the plain form of rrdView.update.
func refUpdate(v rrdView, t int64, raw float64) (float64, bool) {
	st := v.state()
	if t <= st.LastUpdate {
		return math.NaN(), false
	}
	interval := t - st.LastUpdate
	rate := raw
	if v.lay.kind.IsRate() {
		rate = math.NaN()
		if !math.IsNaN(st.LastRaw) && !math.IsNaN(raw) {
			rate = (raw - st.LastRaw) / float64(interval)
			if rate < 0 {
				rate = math.NaN()
			}
		}
		st.LastRaw = raw
	}
	if interval > v.lay.heartbeat {
		rate = math.NaN()
	}
	returned := rate
	if !v.lay.kind.IsRate() {
		returned = raw
	}
	step := v.lay.archives[0].Step
	procStart := st.LastUpdate - mod(st.LastUpdate, step)
	occuStart := t - mod(t, step)
	if occuStart == procStart {
		if math.IsNaN(rate) {
			st.PDPUnknown += interval
		} else {
			refAddRate(st, rate, interval)
		}
		st.LastUpdate = t
		return returned, true
	}
	firstPart := procStart + step - st.LastUpdate
	var firstUnknown int64
	if math.IsNaN(rate) {
		firstUnknown = firstPart
	} else {
		refAddRate(st, rate, firstPart)
	}
	pdp, pmax, pmin := math.NaN(), math.NaN(), math.NaN()
	if 2*st.PDPUnknown <= step {
		pdp = st.PDPSum / float64(step-st.PDPUnknown-firstUnknown)
		if math.IsNaN(pdp) || math.IsInf(pdp, 0) {
			pdp = math.NaN()
		} else {
			pmax, pmin = st.PDPMax, st.PDPMin
		}
	}
	elapsed := (occuStart - procStart) / step
	procPDP := procStart / step
	refAddPDPs(v, procPDP, 1, pdp, pmax, pmin)
	if elapsed > 1 {
		refAddPDPs(v, procPDP+1, elapsed-1, rate, rate, rate)
	}
	postInt := t - occuStart
	st.PDPMax, st.PDPMin = math.Inf(-1), math.Inf(1)
	if math.IsNaN(rate) {
		st.PDPUnknown = postInt
		st.PDPSum = math.NaN()
	} else {
		st.PDPUnknown = 0
		st.PDPSum = rate * float64(postInt)
		if postInt > 0 {
			st.PDPMax, st.PDPMin = rate, rate
		}
	}
	st.LastUpdate = t
	return returned, true
}

func refAddRate(st *pdpState, rate float64, seconds int64) {
	if math.IsNaN(st.PDPSum) {
		st.PDPSum = 0
	}
	st.PDPSum += rate * float64(seconds)
	if seconds > 0 {
		st.PDPMax = math.Max(st.PDPMax, rate)
		st.PDPMin = math.Min(st.PDPMin, rate)
	}
}

func refRowsOf(v rrdView, a int) []row {
	off := stateSize + cdpSize*int64(len(v.lay.archives))
	for i := 0; i < a; i++ {
		off += rowSize * v.lay.archives[i].Rows
	}
	return unsafe.Slice((*row)(unsafe.Pointer(&v.buf[off])), v.lay.archives[a].Rows)
}

func refAddPDPs(v rrdView, procPDP, elapsed int64, pdp, pmax, pmin float64) {
	step := v.lay.archives[0].Step
	known := !math.IsNaN(pdp)
	for a, ar := range v.lay.archives {
		perRow := ar.Step / step
		rows := refRowsOf(v, a)
		if perRow == 1 {
			n := min(elapsed, ar.Rows)
			refWriteRows(v, rows, ar, (procPDP+elapsed-n+1)*step, n, pdp, pmax, pmin)
			continue
		}
		c := v.cdp(a)
		startOffset := perRow - procPDP%perRow
		if startOffset > elapsed {
			if known {
				c.Sum += pdp * float64(elapsed)
				c.Max = math.Max(c.Max, pmax)
				c.Min = math.Min(c.Min, pmin)
			} else {
				c.Unknown += elapsed
			}
			continue
		}
		steps := (elapsed-startOffset)/perRow + 1
		if !known {
			c.Unknown += startOffset
		}
		first := (procPDP + startOffset) * step
		if float64(c.Unknown) > float64(perRow)*v.lay.xff {
			refWriteRows(v, rows, ar, first, 1, math.NaN(), math.NaN(), math.NaN())
		} else {
			avg := c.Sum
			mx, mn := c.Max, c.Min
			if known {
				avg += pdp * float64(startOffset)
				mx, mn = math.Max(mx, pmax), math.Min(mn, pmin)
			}
			refWriteRows(v, rows, ar, first, 1, avg/float64(perRow-c.Unknown), mx, mn)
		}
		if steps > 1 {
			fill := min(steps-1, ar.Rows)
			refWriteRows(v, rows, ar, first+(steps-fill)*ar.Step, fill, pdp, pmax, pmin)
		}
		carry := (elapsed - startOffset) % perRow
		*c = cdpState{Max: math.Inf(-1), Min: math.Inf(1)}
		if !known {
			c.Unknown = carry
		} else if carry > 0 {
			c.Sum = pdp * float64(carry)
			c.Max, c.Min = pmax, pmin
		}
	}
}

func refWriteRows(v rrdView, rows []row, ar Retention, end int64, n int64, avg, mx, mn float64) {
	for i := int64(0); i < n; i++ {
		t := end + i*ar.Step
		slot := t / ar.Step
		rows[mod(slot, ar.Rows)] = row{Slot: uint32(slot), Owner: v.owner, Avg: avg, Max: mx, Min: mn}
	}
}

// sameFloat is equality that also holds between two NaNs (whose payload
// bits may differ between math.Max and the builtin).
func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

func sameSlot(t *testing.T, got, want []byte) bool {
	t.Helper()
	g := unsafe.Slice((*uint64)(unsafe.Pointer(&got[0])), len(got)/8)
	w := unsafe.Slice((*uint64)(unsafe.Pointer(&want[0])), len(want)/8)
	for i := range g {
		if g[i] != w[i] && !sameFloat(math.Float64frombits(g[i]), math.Float64frombits(w[i])) {
			t.Errorf("word %d (byte %d): got %#x, want %#x", i, i*8, g[i], w[i])
			return false
		}
	}
	return true
}

func TestUpdateMatchesReferenceArithmetic(t *testing.T) {
	layouts := []struct {
		name       string
		retentions []Retention
	}{
		{"default schema", DefaultSchema().Retentions},
		{"one archive", []Retention{{Step: 60, Rows: 30}}},
		{"small rings", []Retention{{Step: 10, Rows: 7}, {Step: 30, Rows: 5}, {Step: 120, Rows: 3}, {Step: 600, Rows: 4}}},
		{"odd steps", []Retention{{Step: 7, Rows: 11}, {Step: 21, Rows: 13}, {Step: 147, Rows: 9}}},
	}
	kinds := []metric.CounterType{metric.Gauge, metric.Counter, metric.Derive}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, lc := range layouts {
		for _, kind := range kinds {
			for trial := 0; trial < 6; trial++ {
				step := lc.retentions[0].Step
				lay := &layout{archives: lc.retentions, heartbeat: step * (1 + rng.Int64N(4)), xff: []float64{0, 0.3, 0.5, 0.99}[trial%4], kind: kind}
				lay.prepare()
				size := SlotSize(lay.archives)
				gotBuf := make([]uint64, size/8) // 8-byte aligned
				wantBuf := make([]uint64, size/8)
				got := rrdView{lay: lay, owner: 9, buf: unsafe.Slice((*byte)(unsafe.Pointer(&gotBuf[0])), size)}
				want := rrdView{lay: lay, owner: 9, buf: unsafe.Slice((*byte)(unsafe.Pointer(&wantBuf[0])), size)}
				// Early starts give negative slot numbers at creation.
				start := []int64{t0 - step, 1 - step, 3, t0 + 13}[trial%4]
				got.init(start)
				want.init(start)
				tm, value := start, 0.0
				for i := 0; i < 3000; i++ {
					switch r := rng.IntN(100); {
					case r < 60:
						tm += step // aligned
					case r < 85:
						tm += 1 + rng.Int64N(step) // several per slot, unaligned
					case r < 95:
						tm += step * (2 + rng.Int64N(6)) // gap, sometimes past the heartbeat
					case r < 98:
						tm += step * rng.Int64N(int64(lc.retentions[len(lc.retentions)-1].Step/step)*5+1) // laps the rings
					default:
						tm -= rng.Int64N(2 * step) // too old (or equal)
					}
					switch r := rng.IntN(100); {
					case r < 5:
						value = math.NaN()
					case r < 10:
						value = rng.Float64() * 10 // counter reset
					case r < 12:
						value = -0.0
					default:
						if math.IsNaN(value) {
							value = 0
						}
						value += rng.Float64() * 1000
					}
					gv, gok := got.update(tm, value)
					wv, wok := refUpdate(want, tm, value)
					if gok != wok || !sameFloat(gv, wv) {
						t.Fatalf("%s %v trial %d point %d (t=%d v=%v): update returned %v %v, reference %v %v", lc.name, kind, trial, i, tm, value, gv, gok, wv, wok)
					}
					if tm < want.state().LastUpdate {
						tm = want.state().LastUpdate
					}
				}
				if !sameSlot(t, got.buf, want.buf) {
					t.Fatalf("%s %v trial %d: slots differ", lc.name, kind, trial)
				}
			}
		}
	}
}

// BenchmarkRRDUpdate is the per-point archive update alone (default schema,
// one point per 60 s slot, a 1,000-series working set), in its current form
// and in the plain reference form, so the two compare in one run.
func BenchmarkRRDUpdate(b *testing.B) {
	for _, bc := range []struct {
		name   string
		update func(v rrdView, t int64, raw float64) (float64, bool)
	}{
		{"current", rrdView.update},
		{"reference", refUpdate},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lay := &layout{archives: DefaultSchema().Retentions, heartbeat: 120, xff: 0.5}
			lay.prepare()
			const nSeries = 1000
			size := SlotSize(lay.archives)
			views := make([]rrdView, nSeries)
			for i := range views {
				mem := make([]uint64, size/8)
				views[i] = rrdView{lay: lay, owner: uint32(i), buf: unsafe.Slice((*byte)(unsafe.Pointer(&mem[0])), size)}
				views[i].init(t0 - 60)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % nSeries
				bc.update(views[k], t0+int64(i/nSeries)*60, float64(i))
			}
		})
	}
}
