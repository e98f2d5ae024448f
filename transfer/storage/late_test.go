package storage

import (
	"bytes"
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage/wal"
)

// lateSchema has a 10 s finest archive of 60 rows and two coarser ones
// whose slots (3 and 12 primary slots) it covers, heartbeat 2 × step.
func lateSchema(t testing.TB) Schema {
	s, err := NewSchema("late", "", "10s:10m,30s:30m,2m:2h", 0, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// latePoint is the gauge point number i (1, 2, ...) of the late tests:
// step-aligned, one per 10 s step, with values that are exact in binary.
func latePoint(name string, i int) metric.Point {
	return metric.Point{Labels: labels(name), Time: t0 + int64(i)*10, Value: float64((i*7)%19)*0.5 + 1}
}

// Delivery orders of points 1..n.
func swappedPairs(n int) []int { // 1, 3,2, 5,4, ..., n
	out := []int{1}
	for i := 3; i <= n; i += 2 {
		out = append(out, i, i-1)
	}
	if n%2 == 0 {
		out = append(out, n)
	}
	return out
}

func spoolsOneAfterTheOther(n, firstParity int) []int { // one node's spool, then the other's
	var out []int
	for _, parity := range []int{firstParity, 1 - firstParity} {
		for i := 1; i <= n; i++ {
			if i%2 == parity {
				out = append(out, i)
			}
		}
	}
	return out
}

func spoolsInChunks(n, chunk int) []int { // both spools draining, a few points at a time each
	var odd, even, out []int
	for i := 1; i <= n; i++ {
		if i%2 == 1 {
			odd = append(odd, i)
		} else {
			even = append(even, i)
		}
	}
	for len(odd)+len(even) > 0 {
		k := min(chunk, len(odd))
		out, odd = append(out, odd[:k]...), odd[k:]
		k = min(chunk, len(even))
		out, even = append(out, even[:k]...), even[k:]
	}
	return out
}

// seriesBytes returns the state block and every row of a series.
func seriesBytes(t testing.TB, e *Engine, name string) []byte {
	t.Helper()
	s := e.seriesByID(selectOne(t, e, name).ID)
	return bytes.Clone(s.view.buf)
}

// fetchEvery reads every archive and CF of a series over each archive's
// whole retention up to to.
func fetchEvery(t testing.TB, e *Engine, name string, to int64) [][]float64 {
	t.Helper()
	id := selectOne(t, e, name).ID
	var out [][]float64
	for _, ar := range lateSchema(t).Retentions {
		step := ar.Step
		from := to - mod(to, step) - ar.Span()
		for _, cf := range []CF{Average, Max, Min} {
			r, err := e.Fetch(id, cf, from, to, step)
			if err != nil {
				t.Fatal(err)
			}
			if r.Step != step {
				t.Fatalf("fetch at %d s answered %d s", step, r.Step)
			}
			out = append(out, r.Values)
		}
	}
	return out
}

func identical(a, b [][]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if math.Float64bits(a[i][j]) != math.Float64bits(b[i][j]) && !(math.IsNaN(a[i][j]) && math.IsNaN(b[i][j])) {
				return false
			}
		}
	}
	return true
}

func appendOne(t testing.TB, e *Engine, p metric.Point) error {
	t.Helper()
	res, err := e.AppendWait(context.Background(), []metric.Point{p})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) > 0 {
		return res.Rejected[0].Err
	}
	return nil
}

// TestLateGaugePointsReadBackAsInOrder delivers step-aligned gauge points
// out of order (as two entry nodes' spools drain) and requires every
// archive, every CF and the open consolidation state to be bit for bit what
// the in-order delivery gives.
func TestLateGaugePointsReadBackAsInOrder(t *testing.T) {
	const n = 50 // within the finest archive's 60 rows
	cases := []struct {
		name  string
		order []int
	}{
		{"10,30,20,50,40,60", []int{1, 3, 2, 5, 4, 6}},
		{"swapped pairs", swappedPairs(n)},
		{"odd spool then even spool", spoolsOneAfterTheOther(n, 1)},
		{"even spool then odd spool", spoolsOneAfterTheOther(n, 0)},
		{"both spools in chunks of 4", spoolsInChunks(n, 4)},
		{"both spools in chunks of 7", spoolsInChunks(n, 7)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Schemas: []Schema{lateSchema(t)}, LatePoints: LateMerge}
			inOrder := openTest(t, t.TempDir(), opts)
			defer inOrder.Close()
			late := openTest(t, t.TempDir(), opts)
			defer late.Close()
			newest := 0
			for _, i := range tc.order {
				newest = max(newest, i)
				if err := appendOne(t, late, latePoint("g", i)); err != nil {
					t.Fatalf("point %d: %v", i, err)
				}
			}
			for i := 1; i <= newest; i++ {
				if err := appendOne(t, inOrder, latePoint("g", i)); err != nil {
					t.Fatal(err)
				}
			}
			wantLate := 0
			for k, i := range tc.order {
				if k > 0 && i < slicesMax(tc.order[:k]) {
					wantLate++
				}
			}
			if st := late.Stats(); st.Late.Merged != uint64(wantLate) || st.PointsRejected != 0 {
				t.Errorf("late stats %+v, want %d merged", st.Late, wantLate)
			}
			check := func(when string) {
				t.Helper()
				to := t0 + int64(newest)*10
				if got, want := fetchEvery(t, late, "g", to), fetchEvery(t, inOrder, "g", to); !identical(got, want) {
					t.Errorf("%s: fetched slots differ\n got %v\nwant %v", when, got, want)
				}
				if got, want := seriesBytes(t, late, "g"), seriesBytes(t, inOrder, "g"); !bytes.Equal(got, want) {
					t.Errorf("%s: series bytes differ", when)
				}
			}
			check("after the out-of-order delivery")
			// Later points close the open coarse slots from the state the
			// merges left.
			for i, end := newest+1, newest+30; i <= end; i++ {
				for _, e := range []*Engine{late, inOrder} {
					if err := appendOne(t, e, latePoint("g", i)); err != nil {
						t.Fatal(err)
					}
				}
				newest = i
			}
			check("after in-order points closed the coarse slots")
		})
	}
}

func slicesMax(xs []int) int {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// TestLatePointOutcomes checks what is refused, why, and how it is counted.
func TestLatePointOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		policy  LatePolicy
		kind    metric.CounterType
		times   []int64 // seconds after t0, in order
		late    int64
		wantErr error
		count   func(LateStats) uint64
	}{
		{"gauge in a closed slot", LateMerge, metric.Gauge, []int64{10, 20, 30}, 20, nil, func(s LateStats) uint64 { return s.Merged }},
		{"gauge repeating the newest aligned point", LateMerge, metric.Gauge, []int64{10, 20}, 20, nil, func(s LateStats) uint64 { return s.Merged }},
		{"gauge before the series' first point", LateMerge, metric.Gauge, []int64{50, 60}, 30, nil, func(s LateStats) uint64 { return s.Merged }},
		{"counter", LateMerge, metric.Counter, []int64{10, 20, 30}, 20, ErrLateCounter, func(s LateStats) uint64 { return s.RefusedCounter }},
		{"derive", LateMerge, metric.Derive, []int64{10, 20, 30}, 20, ErrLateCounter, func(s LateStats) uint64 { return s.RefusedCounter }},
		{"gauge in the open primary slot", LateMerge, metric.Gauge, []int64{10, 15, 18}, 12, ErrLateOpenSlot, func(s LateStats) uint64 { return s.RefusedOpenSlot }},
		{"gauge repeating the newest unaligned point", LateMerge, metric.Gauge, []int64{10, 15}, 15, ErrLateOpenSlot, func(s LateStats) uint64 { return s.RefusedOpenSlot }},
		{"gauge older than the finest archive", LateMerge, metric.Gauge, []int64{1000, 1010, 1020}, 420, ErrLateTooOld, func(s LateStats) uint64 { return s.TooOld }},
		{"gauge just inside the finest archive", LateMerge, metric.Gauge, []int64{1000, 1010, 1020}, 430, nil, func(s LateStats) uint64 { return s.Merged }},
		{"refuse policy", LateRefuse, metric.Gauge, []int64{10, 20, 30}, 20, ErrTooOld, func(s LateStats) uint64 { return s.Refused }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := openTest(t, t.TempDir(), Options{Schemas: []Schema{lateSchema(t)}, LatePoints: tc.policy})
			defer e.Close()
			for _, ts := range tc.times {
				if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + ts, Value: float64(ts), Type: tc.kind}); err != nil {
					t.Fatal(err)
				}
			}
			before := seriesBytes(t, e, "x")
			err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + tc.late, Value: 1234, Type: tc.kind})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr != nil && !errors.Is(err, ErrTooOld)) {
				t.Fatalf("late point: %v, want %v", err, tc.wantErr)
			}
			st := e.Stats()
			if tc.count(st.Late) != 1 {
				t.Errorf("late stats %+v", st.Late)
			}
			if tc.wantErr != nil {
				if !bytes.Equal(before, seriesBytes(t, e, "x")) {
					t.Error("a refused point changed the series")
				}
				return
			}
			slot := t0 + tc.late
			if r, err := e.Fetch(selectOne(t, e, "x").ID, Max, slot-10, slot-10, 10); err != nil || r.Values[0] != 1234 {
				t.Errorf("slot %d reads %v %v, want 1234", slot, r.Values, err)
			}
		})
	}
}

// TestLatePointBeyondTheFinestRing: when the finest archive no longer holds
// every primary slot of a coarser slot, that slot's AVERAGE stays and only
// MAX and MIN take in the late value.
func TestLatePointBeyondTheFinestRing(t *testing.T) {
	// 5 rows of 10 s; a 60 s slot needs 6, so it is never wholly covered.
	s, err := NewSchema("short", "", "10s:50s,60s:1h", 0, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	e := openTest(t, t.TempDir(), Options{Schemas: []Schema{s}, LatePoints: LateMerge})
	defer e.Close()
	for i := 1; i <= 9; i++ { // slots t0+10 .. t0+90: the 60 s slot t0+60 is closed
		if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + int64(i)*10, Value: float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	id := selectOne(t, e, "x").ID
	read := func(cf CF) float64 {
		r, err := e.Fetch(id, cf, t0, t0, 60)
		if err != nil {
			t.Fatal(err)
		}
		return r.Values[0]
	}
	avg, mn := read(Average), read(Min)
	if avg != 3.5 || read(Max) != 6 {
		t.Fatalf("before: avg %v max %v", avg, read(Max))
	}
	// Slot t0+50 is still in the 10 s ring (t0+50 .. t0+90), t0+10 is not.
	if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + 50, Value: 100}); err != nil {
		t.Fatal(err)
	}
	if got := read(Average); got != avg {
		t.Errorf("AVERAGE changed to %v", got)
	}
	if got := read(Max); got != 100 {
		t.Errorf("MAX %v, want 100", got)
	}
	if got := read(Min); got != mn {
		t.Errorf("MIN changed to %v", got)
	}
	// And into the open 60 s slot (t0+70 .. t0+90 closed so far): its MIN
	// falls to the late value when the slot closes.
	if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + 80, Value: -5}); err != nil {
		t.Fatal(err)
	}
	for i := 10; i <= 12; i++ {
		if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + int64(i)*10, Value: float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := e.Fetch(id, Min, t0+60, t0+60, 60); err != nil || r.Values[0] != -5 {
		t.Errorf("MIN of the next 60 s slot %v %v, want -5", r.Values, err)
	}
}

// TestLatePointsReplayExactly merges late points, crashes, and requires the
// replay (with the other policy now set) to give the state before the
// crash; applying the WAL a second time changes nothing.
func TestLatePointsReplayExactly(t *testing.T) {
	opts := Options{Schemas: []Schema{lateSchema(t)}, LatePoints: LateMerge}
	dir := t.TempDir()
	ref := openTest(t, t.TempDir(), opts)
	defer ref.Close()
	e := openTest(t, dir, opts)
	order := spoolsInChunks(60, 5)
	for k, i := range order {
		for _, eng := range []*Engine{ref, e} {
			if err := appendOne(t, eng, latePoint("g", i)); err != nil {
				t.Fatal(err)
			}
		}
		if k == len(order)/2 {
			if err := e.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if e.Stats().Late.Merged == 0 {
		t.Fatal("no late point was merged")
	}
	want := seriesBytes(t, ref, "g")
	to := int64(t0 + 600)
	wantSlots := fetchEvery(t, ref, "g", to)
	crash(t, e)

	e = openTest(t, dir, Options{Schemas: []Schema{lateSchema(t)}, LatePoints: LateRefuse})
	defer func() { e.Close() }()
	if e.Stats().ReplayedRecords == 0 {
		t.Fatal("nothing replayed")
	}
	if !bytes.Equal(seriesBytes(t, e, "g"), want) || !identical(fetchEvery(t, e, "g", to), wantSlots) {
		t.Fatal("replay differs from the state before the crash")
	}
	segs, _ := wal.Segments(filepath.Join(dir, "wal"))
	var rec walRecord
	lateRecords := 0
	e.applyMu.Lock()
	for _, n := range segs {
		if _, err := wal.ReplaySegment(filepath.Join(dir, "wal"), n, func(p []byte) error {
			if err := decodeRecord(p, &rec); err != nil {
				return err
			}
			if rec.Kind == recLate {
				lateRecords++
			}
			return e.applyRecord(&rec)
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.applyMu.Unlock()
	if lateRecords == 0 {
		t.Fatal("the WAL holds no late record")
	}
	if !bytes.Equal(seriesBytes(t, e, "g"), want) {
		t.Error("a second replay changed the series")
	}
}

// TestLatePointAndXFF: a coarser slot consolidated again after a merge
// counts the primary slots a gap left unknown against xff, as the in-order
// update does.
func TestLatePointAndXFF(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{Schemas: []Schema{lateSchema(t)}, LatePoints: LateMerge})
	defer e.Close()
	// Heartbeat 20 s: the 50 s gap leaves primary slots t0+20 .. t0+60 unknown.
	for _, p := range []metric.Point{{Time: t0 + 10, Value: 4}, {Time: t0 + 60, Value: 100}, {Time: t0 + 70, Value: 100}, {Time: t0 + 90, Value: 100}} {
		p.Labels = labels("x")
		if err := appendOne(t, e, p); err != nil {
			t.Fatal(err)
		}
	}
	id := selectOne(t, e, "x").ID
	read := func() []float64 {
		r, err := e.Fetch(id, Average, t0, t0+60, 30)
		if err != nil {
			t.Fatal(err)
		}
		return r.Values // the 30 s slots ending t0+30 and t0+60
	}
	// 30 s slot t0+30: t0+10 known, t0+20 and t0+30 unknown: 2 of 3 > xff 0.5.
	if got := read(); !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Fatalf("before the late point: %v", got)
	}
	if err := appendOne(t, e, metric.Point{Labels: labels("x"), Time: t0 + 30, Value: 8}); err != nil {
		t.Fatal(err)
	}
	// Now 1 of 3 unknown: known, the mean of 4 and 8; t0+60 stays unknown.
	if got := read(); got[0] != 6 || !math.IsNaN(got[1]) {
		t.Fatalf("after the late point: %v, want [6 NaN]", got)
	}
}
