package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage/wal"
)

func labels(name string, kv ...string) metric.Labels {
	ls := []metric.Label{{Name: metric.NameLabel, Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, metric.Label{Name: kv[i], Value: kv[i+1]})
	}
	return metric.New(ls...)
}

func testSchema(t testing.TB) Schema {
	s, err := NewSchema("test", "", "60s:2h,5m:6h,20m:1d", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openTest(t testing.TB, dir string, opts Options) *Engine {
	t.Helper()
	if opts.Schemas == nil {
		opts.Schemas = []Schema{testSchema(t)}
	}
	if opts.SeriesPerSlab == 0 {
		opts.SeriesPerSlab = 8
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Millisecond
	}
	e, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return e
}

// crash abandons the engine as kill -9 would: no checkpoint; what reached
// the page cache (data files, written WAL) stays, nothing else is done.
func crash(t testing.TB, e *Engine) {
	t.Helper()
	e.closeOnce.Do(func() {
		close(e.stop)
		<-e.loopDone
		e.closed.Store(true)
		e.wal.Close()
		e.slabs.close()
		e.lockFile.Close() // the kernel releases the lock of a killed process
	})
}

// fetchAll returns every archive and CF of series id over its whole span.
func fetchAll(t testing.TB, e *Engine, id uint64, last int64) [][]float64 {
	t.Helper()
	var out [][]float64
	for _, a := range []int64{60, 300, 1200} {
		for _, cf := range []CF{Average, Max, Min} {
			r, err := e.Fetch(id, cf, last-86400+1200, last, a)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r.Values)
		}
	}
	return out
}

func sameSeries(a, b [][]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if !sameValue(a[i][j], b[i][j]) {
				return false
			}
		}
	}
	return true
}

func selectOne(t testing.TB, e *Engine, name string) SeriesRef {
	t.Helper()
	refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, name)})
	if err != nil || len(refs) != 1 {
		t.Fatalf("select %s: %v %v", name, refs, err)
	}
	return refs[0]
}

func TestAppendRejectsBadPointsAndKeepsTheRest(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	pts := []metric.Point{
		{Labels: labels("ok"), Time: t0, Value: 1},
		{Labels: labels(""), Time: t0, Value: 1},
		{Labels: labels("ok2"), Time: 0, Value: 1},
		{Labels: labels("ok3"), Time: t0, Value: math.Inf(1)},
		{Labels: labels("ok"), Time: t0, Value: 2}, // not newer
		{Labels: labels("ok"), Time: t0 + 60, Value: 3},
	}
	res, err := e.AppendWait(context.Background(), pts)
	if err != nil {
		t.Fatal(err)
	}
	wantErr := map[int]error{1: ErrNoName, 2: ErrBadTime, 3: ErrBadValue, 4: ErrTooOld}
	if len(res.Rejected) != len(wantErr) {
		t.Fatalf("rejected %v", res.Rejected)
	}
	for _, r := range res.Rejected {
		if !errors.Is(r.Err, wantErr[r.Index]) {
			t.Errorf("point %d: %v, want %v", r.Index, r.Err, wantErr[r.Index])
		}
	}
	if res.Accepted() != 2 || res.Values[0] != 1 || res.Values[5] != 3 {
		t.Errorf("accepted %d values %v", res.Accepted(), res.Values)
	}
	if st := e.Stats(); st.PointsAppended != 2 || st.PointsRejected != 4 || st.Series != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := e.Append(pts); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
	if _, err := e.Fetch(1, Average, t0, t0+60, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("fetch after close: %v", err)
	}
}

func TestCounterRatesAreReturnedAndStored(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	ls := labels("bytes", "endpoint", "h1")
	raw := []float64{100, 160, 280, 10, 70}
	var pts []metric.Point
	for i, v := range raw {
		pts = append(pts, metric.Point{Labels: ls, Time: t0 + int64(i)*60, Value: v, Type: metric.Counter})
	}
	res, err := e.Append(pts)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{math.NaN(), 1, 2, math.NaN(), 1}
	for i := range want {
		if !sameValue(res.Values[i], want[i]) {
			t.Errorf("rate %d = %v, want %v", i, res.Values[i], want[i])
		}
	}
	ref := selectOne(t, e, "bytes")
	got, err := e.Fetch(ref.ID, Average, t0, t0+240, 60)
	if err != nil {
		t.Fatal(err)
	}
	// Slots stamped t0+60 ... : the rate of the interval each closes.
	stored := map[int64]float64{t0: math.NaN(), t0 + 60: 1, t0 + 120: 2, t0 + 180: math.NaN(), t0 + 240: 1}
	for i, v := range got.Values {
		ts := got.Start + int64(i)*got.Step
		if w, ok := stored[ts]; ok && !sameValue(v, w) {
			t.Errorf("slot %d = %v, want %v", ts, v, w)
		}
	}
	if ts, v, ok := e.Last(ref.ID); !ok || ts != t0+240 || v != 1 {
		t.Errorf("last = %d %v %v", ts, v, ok)
	}
}

func TestSelectAndLabels(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	var pts []metric.Point
	for _, ls := range []metric.Labels{
		labels("cpu.idle", "endpoint", "h1", "core", "0"),
		labels("cpu.idle", "endpoint", "h2"),
		labels("mem.used", "endpoint", "h1"),
	} {
		pts = append(pts, metric.Point{Labels: ls, Time: t0, Value: 1})
	}
	if _, err := e.Append(pts); err != nil {
		t.Fatal(err)
	}
	m := metric.MustMatcher
	cases := []struct {
		name string
		ms   []*metric.Matcher
		want []string
	}{
		{"by name", []*metric.Matcher{m(metric.MatchEqual, "__name__", "cpu.idle")}, []string{`cpu.idle{core="0",endpoint="h1"}`, `cpu.idle{endpoint="h2"}`}},
		{"regexp", []*metric.Matcher{m(metric.MatchRegexp, "__name__", "cpu.*|mem.*"), m(metric.MatchEqual, "endpoint", "h1")}, []string{`cpu.idle{core="0",endpoint="h1"}`, `mem.used{endpoint="h1"}`}},
		{"absent label", []*metric.Matcher{m(metric.MatchEqual, "__name__", "cpu.idle"), m(metric.MatchEqual, "core", "")}, []string{`cpu.idle{endpoint="h2"}`}},
		{"not equal only", []*metric.Matcher{m(metric.MatchNotEqual, "endpoint", "h1")}, []string{`cpu.idle{endpoint="h2"}`}},
		{"no match", []*metric.Matcher{m(metric.MatchEqual, "endpoint", "h9")}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refs, err := e.Select(tc.ms)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.Labels.String())
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := e.Select(nil); !errors.Is(err, ErrNoMatchers) {
		t.Errorf("select without matchers: %v", err)
	}
	names, _ := e.LabelNames(nil)
	if strings.Join(names, ",") != "__name__,core,endpoint" {
		t.Errorf("names %v", names)
	}
	names, _ = e.LabelNames([]*metric.Matcher{m(metric.MatchEqual, "__name__", "mem.used")})
	if strings.Join(names, ",") != "__name__,endpoint" {
		t.Errorf("names of mem.used %v", names)
	}
	values, _ := e.LabelValues("endpoint", nil)
	if strings.Join(values, ",") != "h1,h2" {
		t.Errorf("values %v", values)
	}
	values, _ = e.LabelValues("endpoint", []*metric.Matcher{m(metric.MatchEqual, "__name__", "mem.used")})
	if strings.Join(values, ",") != "h1" {
		t.Errorf("values of mem.used %v", values)
	}
}

// feed appends n points per series every 60 s (with a 20 s offset on odd
// series) starting at from, in batches, and returns the last time.
func feed(t testing.TB, e *Engine, names []string, from int64, n int) int64 {
	t.Helper()
	var last int64
	for i := 0; i < n; i++ {
		var pts []metric.Point
		for k, name := range names {
			ts := from + int64(i)*60 + int64(k%2)*20
			kind := metric.Gauge
			v := float64((i*7+k)%23) + 0.5
			if strings.HasPrefix(name, "ctr") {
				kind = metric.Derive
				v = float64(i*i*10 + k)
			}
			pts = append(pts, metric.Point{Labels: labels(name), Time: ts, Value: v, Type: kind})
			last = max(last, ts)
		}
		if _, err := e.AppendWait(context.Background(), pts); err != nil {
			t.Fatal(err)
		}
	}
	return last
}

// TestReplayRestoresExactly crashes an engine between checkpoints and checks
// the reopened engine answers exactly like one that never crashed, and that
// replaying the same WAL again changes nothing.
func TestReplayRestoresExactly(t *testing.T) {
	names := []string{"g1", "g2", "ctr1", "ctr2"}
	refDir, dir := t.TempDir(), t.TempDir()

	ref := openTest(t, refDir, Options{})
	defer ref.Close()
	feed(t, ref, names, t0, 100)
	refLast := feed(t, ref, names, t0+100*60, 100)

	e := openTest(t, dir, Options{})
	feed(t, e, names, t0, 100)
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	last := feed(t, e, names, t0+100*60, 100)
	crash(t, e)

	e = openTest(t, dir, Options{})
	defer func() { e.Close() }()
	if st := e.Stats(); st.ReplayedRecords == 0 || st.Series != 4 {
		t.Fatalf("after reopen: %+v", st)
	}
	if last != refLast {
		t.Fatal("feeds differ")
	}
	want := map[string][][]float64{}
	for _, name := range names {
		want[name] = fetchAll(t, ref, selectOne(t, ref, name).ID, last)
		if got := fetchAll(t, e, selectOne(t, e, name).ID, last); !sameSeries(got, want[name]) {
			t.Errorf("%s differs after replay", name)
		}
	}

	// Apply the whole WAL a second time over the live state: no change.
	segs, _ := wal.Segments(filepath.Join(dir, "wal"))
	var rec walRecord
	e.applyMu.Lock()
	for _, n := range segs {
		_, err := wal.ReplaySegment(filepath.Join(dir, "wal"), n, func(p []byte) error {
			if err := decodeRecord(p, &rec); err != nil {
				return err
			}
			return e.applyRecord(&rec)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	e.applyMu.Unlock()
	for _, name := range names {
		if got := fetchAll(t, e, selectOne(t, e, name).ID, last); !sameSeries(got, want[name]) {
			t.Errorf("%s changed by a second replay", name)
		}
	}

	// Crash again straight after the replay, and once more after a clean close.
	crash(t, e)
	e = openTest(t, dir, Options{})
	for _, name := range names {
		if got := fetchAll(t, e, selectOne(t, e, name).ID, last); !sameSeries(got, want[name]) {
			t.Errorf("%s differs after a second crash", name)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, Options{})
	if st := e.Stats(); st.ReplayedRecords != 0 {
		t.Errorf("a clean close left %d records to replay", st.ReplayedRecords)
	}
	for _, name := range names {
		if got := fetchAll(t, e, selectOne(t, e, name).ID, last); !sameSeries(got, want[name]) {
			t.Errorf("%s differs after a clean close", name)
		}
	}
	// The counter state survived: the next counter point gives a rate.
	res, err := e.Append([]metric.Point{{Labels: labels("ctr1"), Time: last + 60, Value: 199*199*10 + 1990, Type: metric.Derive}})
	if err != nil || math.IsNaN(res.Values[0]) {
		t.Errorf("counter after restart: %v %v", res.Values, err)
	}
}

func TestTornWALTailIsCutOff(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, Options{})
	last := feed(t, e, []string{"g1", "ctr1"}, t0, 50)
	want := fetchAll(t, e, selectOne(t, e, "g1").ID, last)
	crash(t, e)

	segs, err := wal.Segments(filepath.Join(dir, "wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments %v %v", segs, err)
	}
	path := filepath.Join(dir, "wal", wal.SegmentName(segs[len(segs)-1]))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A record whose header promises more than was written, as after a
	// crash in the middle of a write.
	torn := wal.AppendFrame(nil, appendExpire(nil, 1))
	data = append(data, torn[:len(torn)-1]...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	good := int64(len(data) - len(torn) + 1)

	e = openTest(t, dir, Options{})
	defer e.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() != good {
		t.Errorf("torn tail not cut: %v", err)
	}
	if got := fetchAll(t, e, selectOne(t, e, "g1").ID, last); !sameSeries(got, want) {
		t.Error("data differs after cutting the torn tail")
	}
	if e.Stats().Series != 2 {
		t.Error("the torn expire record was applied")
	}
}

func TestExpiryFreesTheSlot(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(t0, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	opts := Options{IdleExpiry: time.Hour, Now: clock, SeriesPerSlab: 2}
	e := openTest(t, dir, opts)
	feed(t, e, []string{"old", "kept"}, t0, 3)
	if err := e.Checkpoint(); err != nil { // old is in the checkpoint; its expiry only in the WAL
		t.Fatal(err)
	}
	disk := e.Stats().DiskBytes
	if disk != 2*SlotSize(testSchema(t).Retentions) {
		t.Fatalf("disk %d for one slab of two slots", disk)
	}
	advance(50 * time.Minute)
	feed(t, e, []string{"kept"}, t0+600, 1)
	advance(20 * time.Minute)
	n, err := e.ExpireIdle()
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v", n, err)
	}
	if refs, _ := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "old")}); len(refs) != 0 {
		t.Fatalf("old still selectable: %v", refs)
	}
	if values, _ := e.LabelValues(metric.NameLabel, nil); strings.Join(values, ",") != "kept" {
		t.Errorf("names after expiry %v", values)
	}
	// A new series takes the freed slot: no new slab file.
	feed(t, e, []string{"new"}, t0+7200, 3)
	if st := e.Stats(); st.DiskBytes != disk || st.Series != 2 || st.SeriesExpired != 1 {
		t.Errorf("after reuse: %+v", st)
	}
	// The reused slot shows nothing of the old series.
	newRef := selectOne(t, e, "new")
	r, err := e.Fetch(newRef.ID, Average, t0+7000, t0+7200+120, 60)
	if err != nil {
		t.Fatal(err)
	}
	known := 0
	for _, v := range r.Values {
		if !math.IsNaN(v) {
			known++
		}
	}
	if known != 3 {
		t.Errorf("new series in a reused slot has %d known slots, want 3", known)
	}
	// The expiry survives a crash (it is in the WAL) and a clean restart,
	// and the new series in the reused slot keeps its data.
	wantNew := fetchAll(t, e, newRef.ID, t0+7320)
	crash(t, e)
	e = openTest(t, dir, opts)
	if st := e.Stats(); st.Series != 2 {
		t.Errorf("after crash: %d series", st.Series)
	}
	if refs, _ := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "old")}); len(refs) != 0 {
		t.Errorf("old back after crash: %v", refs)
	}
	if got := fetchAll(t, e, selectOne(t, e, "new").ID, t0+7320); !sameSeries(got, wantNew) {
		t.Error("new series differs after crash")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, opts)
	defer e.Close()
	if st := e.Stats(); st.Series != 2 || st.DiskBytes != disk {
		t.Errorf("after restart: %+v", st)
	}
}

func TestSchemaChosenByPattern(t *testing.T) {
	fast, err := NewSchema("fast", `^app\.`, "10s:1h,1m:1d", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := NewSchema("slow", `^app\.|^batch\.`, "5m:7d", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	e := openTest(t, t.TempDir(), Options{Schemas: []Schema{fast, slow, DefaultSchema()}})
	defer e.Close()
	if _, err := e.Append([]metric.Point{
		{Labels: labels("app.req"), Time: t0, Value: 1},
		{Labels: labels("batch.jobs"), Time: t0, Value: 1},
		{Labels: labels("cpu.idle"), Time: t0, Value: 1, Step: 300},
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		steps     []int64
		heartbeat int64
	}{
		{"app.req", []int64{10, 60}, 20},
		{"batch.jobs", []int64{300}, 600},
		{"cpu.idle", []int64{60, 300, 1200, 10800, 43200}, 600}, // heartbeat from the point's step
	}
	for _, tc := range cases {
		s := e.seriesByID(selectOne(t, e, tc.name).ID)
		var steps []int64
		for _, a := range s.lay.archives {
			steps = append(steps, a.Step)
		}
		if len(steps) != len(tc.steps) || s.lay.heartbeat != tc.heartbeat {
			t.Errorf("%s: steps %v heartbeat %d, want %v %d", tc.name, steps, s.lay.heartbeat, tc.steps, tc.heartbeat)
			continue
		}
		for i := range steps {
			if steps[i] != tc.steps[i] {
				t.Errorf("%s: steps %v, want %v", tc.name, steps, tc.steps)
			}
		}
	}
	if got := MatchSchema([]Schema{fast}, "other").Name; got != "default" {
		t.Errorf("no match gave %q", got)
	}
}

func TestParseRetentions(t *testing.T) {
	good := []struct {
		in   string
		want []Retention
	}{
		{DefaultRetentions, []Retention{{60, 720}, {300, 576}, {1200, 504}, {10800, 720}, {43200, 730}}},
		{"10:360, 60:1440", []Retention{{10, 360}, {60, 1440}}},
		{"1m:1w,1h:1y", []Retention{{60, 10080}, {3600, 8760}}},
	}
	for _, tc := range good {
		got, err := ParseRetentions(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v", tc.in, got)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
			}
		}
	}
	bad := []struct{ in, msg string }{
		{"", "empty"},
		{"60s", "want step:length"},
		{"60x:1h", "unknown unit"},
		{"s:1h", "want a number"},
		{"60s:0", "0 rows"},
		{"7s:1m", "not a multiple of the step"},
		{"5m:1d,1m:2d", "must be larger than the previous"},
		{"60s:1d,90s:3d", "not a multiple of the finest"},
		{"60s:1d,5m:1h", "not more than the previous"},
		{"60s:99999999999999999999", "length"},
		{"0s:1h", "out of range"},
	}
	for _, tc := range bad {
		_, err := ParseRetentions(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want it to mention %q", tc.in, err, tc.msg)
		}
	}
	if _, err := NewSchema("x", "(", "60s:1h", 0, -1); err == nil {
		t.Error("bad pattern accepted")
	}
	if _, err := NewSchema("x", "", "60s:1h", 0, 1.5); err == nil {
		t.Error("xff 1.5 accepted")
	}
}

func TestDiskSizeFormula(t *testing.T) {
	rs, err := ParseRetentions(DefaultRetentions)
	if err != nil {
		t.Fatal(err)
	}
	// 48 + 32·5 + 32·(720+576+504+720+730), as README.md states.
	if got := SlotSize(rs); got != 104_208 {
		t.Errorf("default slot %d bytes, want 104208", got)
	}
	dir := t.TempDir()
	e := openTest(t, dir, Options{Schemas: DefaultSchemas(), SeriesPerSlab: 4})
	for i := 0; i < 6; i++ {
		if _, err := e.Append([]metric.Point{{Labels: labels("m", "i", string(rune('a'+i))), Time: t0, Value: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var files, total int64
	matches, _ := filepath.Glob(filepath.Join(dir, "data", "slab-*.dat"))
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		files++
		total += fi.Size()
	}
	if files != 2 || total != 2*4*104_208 {
		t.Errorf("%d slab files, %d bytes; want 2 files of 4 slots of 104208 bytes", files, total)
	}
}

func TestChooseArchive(t *testing.T) {
	rs, _ := ParseRetentions(DefaultRetentions)
	last := int64(t0)
	cases := []struct {
		start, minStep int64
		want           int
	}{
		{last - 3600, 0, 0},
		{last - 3600, 60, 0},
		{last - 3600, 61, 1},
		{last - 13*3600, 0, 1},
		{last - 3*86400, 0, 2},
		{last - 30*86400, 0, 3},
		{last - 200*86400, 0, 4},
		{last - 5*365*86400, 0, 4},
		{last - 3600, 86400, 4},
	}
	for _, tc := range cases {
		if got := chooseArchive(rs, last, tc.start, tc.minStep); got != tc.want {
			t.Errorf("start %d minStep %d: archive %d, want %d", last-tc.start, tc.minStep, got, tc.want)
		}
	}
}

func TestConcurrentAppendsAllLand(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				var pts []metric.Point
				for k := 0; k < 20; k++ {
					pts = append(pts, metric.Point{Labels: labels("c", "g", string(rune('a'+g)), "k", string(rune('a'+k))), Time: t0 + int64(i)*60, Value: float64(i)})
				}
				if _, err := e.AppendWait(context.Background(), pts); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if st := e.Stats(); st.Series != 160 || st.PointsAppended != 8000 || st.WALSyncs == 0 || st.WALSyncs >= 400 {
		t.Errorf("stats %+v (want 160 series, 8000 points, fsyncs shared between batches)", st)
	}
}

func TestCheckpointWhenTheWALGrows(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{CheckpointInterval: time.Hour, CheckpointWALBytes: 4096})
	defer e.Close()
	feed(t, e, []string{"a", "b", "c", "d"}, t0, 100)
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Checkpoints == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint with %d WAL bytes", e.Stats().WALBytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := e.Stats(); st.WALBytes >= 4096+1024 {
		t.Errorf("WAL still %d bytes after the checkpoint", st.WALBytes)
	}
}

// TestReadsDuringWrites runs Fetch, Last and Select beside appends and
// checkpoints (meant for -race).
func TestReadsDuringWrites(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	names := []string{"r1", "r2", "r3"}
	feed(t, e, names, t0, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchRegexp, metric.NameLabel, "r.")})
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range refs {
				if _, err := e.Fetch(r.ID, Max, t0, t0+7200, 60); err != nil {
					t.Error(err)
					return
				}
				e.Last(r.ID)
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 5; i++ {
			if err := e.Checkpoint(); err != nil {
				t.Error(err)
			}
		}
	}()
	feed(t, e, names, t0+60, 100)
	close(done)
	wg.Wait()
}

func TestParseSchemas(t *testing.T) {
	conf := `
# carbon's own metrics
[carbon]
pattern = ^carbon\.
retentions = 60:90d

[app]
pattern = ^app\.
retentions = 10s:6h,1m:7d
heartbeat = 30s
xFilesFactor = 0.3
`
	ss, err := ParseSchemas(conf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 || ss[0].Name != "carbon" || ss[1].Heartbeat != 30 || ss[1].XFF != 0.3 || ss[0].XFF != DefaultXFF ||
		len(ss[1].Retentions) != 2 || ss[0].Retentions[0] != (Retention{60, 129600}) {
		t.Fatalf("parsed %+v", ss)
	}
	if got := MatchSchema(ss, "app.req").Name; got != "app" {
		t.Errorf("app.req matched %q", got)
	}
	if got := MatchSchema(ss, "cpu.idle").Name; got != "default" {
		t.Errorf("cpu.idle matched %q", got)
	}
	bad := []struct{ conf, msg string }{
		{"pattern = x", "line 1: \"pattern = x\" outside a [section]"},
		{"[a]\npattern = x", "line 1: [a] has no retentions"},
		{"[a]\nretentions = 60s:1d", "line 1: [a] has no pattern"},
		{"[a]\npattern = (\nretentions = 60s:1d", "line 1: schema \"a\": pattern"},
		{"[a]\npattern = x\nretentions = 60s:1d\ncolour = red", "line 4: unknown key"},
		{"[a]\npattern = x\npattern = y", "line 3: pattern given twice"},
		{"[a]\npattern = x\nretentions = 60s:1d\nxff = 2", "line 4: xFilesFactor"},
		{"[a]\npattern = x\nretentions = 60s:1d\nheartbeat = soon", "line 4: heartbeat"},
		{"[a\n", "line 1: section header"},
		{"[a]\njunk", "line 2: \"junk\": want key = value"},
		{"[a]\npattern = x\nretentions = 5m:1d,1m:2d", "line 1: schema \"a\": retention 2"},
	}
	for _, tc := range bad {
		_, err := ParseSchemas(tc.conf)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want %q", tc.conf, err, tc.msg)
		}
	}
}

// TestReadsDoNotWaitForWriters holds the writers' lock, as a long batch
// does, and checks reads still answer.
func TestReadsDoNotWaitForWriters(t *testing.T) {
	e := openTest(t, t.TempDir(), Options{})
	defer e.Close()
	last := feed(t, e, []string{"r"}, t0, 10)
	ref := selectOne(t, e, "r")
	e.applyMu.Lock()
	done := make(chan error, 1)
	go func() {
		_, err := e.Fetch(ref.ID, Average, t0, last, 60)
		e.Last(ref.ID)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Fetch waited for the writers' lock")
	}
	e.applyMu.Unlock()
}

func TestOpenRefusesABusyOrDamagedDirectory(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, Options{})
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second open of a busy directory: %v", err)
	}
	feed(t, e, []string{"a"}, t0, 3)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, checkpointFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("open with a damaged checkpoint: %v", err)
	}
}

func TestMaxSeriesRefusesNewSeriesOnly(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, Options{MaxSeries: 3})
	var pts []metric.Point
	for i := 0; i < 5; i++ {
		pts = append(pts, metric.Point{Labels: labels("flood", "i", fmt.Sprint(i)), Time: 1_000_020, Value: 1})
	}
	res, err := e.AppendWait(context.Background(), pts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted() != 3 || len(res.Rejected) != 2 || !errors.Is(res.Rejected[0].Err, ErrSeriesLimit) || res.Rejected[0].Index != 3 {
		t.Fatalf("accepted %d, rejected %+v; want 3 and points 3, 4 refused by the series limit", res.Accepted(), res.Rejected)
	}
	// Existing series still take points at the limit.
	res, err = e.AppendWait(context.Background(), []metric.Point{{Labels: labels("flood", "i", "0"), Time: 1_000_080, Value: 2}})
	if err != nil || res.Accepted() != 1 {
		t.Fatalf("point of an existing series at the limit: %+v, %v", res, err)
	}
	if st := e.Stats(); st.Series != 3 || st.PointsRejected != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Replay restores the acknowledged series even with a lower limit.
	crash(t, e)
	e2 := openTest(t, dir, Options{MaxSeries: 1})
	if st := e2.Stats(); st.Series != 3 {
		t.Fatalf("series after replay with a lower limit = %d; want 3", st.Series)
	}
}

// TestParallelWritersReplayExactly races writers on the same series (which
// point of a round wins depends on the schedule, and the others are refused
// as too old), creates series from several writers at once and checkpoints
// in the middle, then crashes: the reopened engine must answer exactly as
// before the crash, and a second replay of the WAL must change nothing. This
// holds only if each series' points reach the WAL in the order they were
// applied, whichever apply shard and writer carried them.
func TestParallelWritersReplayExactly(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, Options{})
	const writers, rounds, shared = 4, 60, 40
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				var pts []metric.Point
				for k := 0; k < shared; k++ {
					kind := metric.Gauge
					if k%3 == 0 {
						kind = metric.Derive
					}
					ts := t0 + int64(r)*60 + int64(w)*7
					pts = append(pts, metric.Point{Labels: labels(fmt.Sprintf("p%02d", k)), Time: ts, Value: float64(r*1000 + w*10 + k), Type: kind})
				}
				pts = append(pts, metric.Point{Labels: labels(fmt.Sprintf("own-%d-%d", w, r%7)), Time: t0 + int64(r)*60, Value: float64(r)})
				if _, err := e.AppendWait(context.Background(), pts); err != nil {
					t.Error(err)
					return
				}
				if w == 0 && r == rounds/2 {
					if err := e.Checkpoint(); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	last := int64(t0 + rounds*60 + writers*7)
	refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchRegexp, metric.NameLabel, ".+")})
	if err != nil || len(refs) != shared+writers*7 {
		t.Fatalf("select: %d series, %v", len(refs), err)
	}
	want := map[string][][]float64{}
	for _, r := range refs {
		want[r.Labels.Name()] = fetchAll(t, e, r.ID, last)
	}
	crash(t, e)

	e = openTest(t, dir, Options{})
	defer func() { e.Close() }()
	check := func(when string) {
		t.Helper()
		refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchRegexp, metric.NameLabel, ".+")})
		if err != nil || len(refs) != len(want) {
			t.Fatalf("%s: select %d series, %v", when, len(refs), err)
		}
		for _, r := range refs {
			if !sameSeries(fetchAll(t, e, r.ID, last), want[r.Labels.Name()]) {
				t.Errorf("%s: %s differs", when, r.Labels.Name())
			}
		}
	}
	check("after replay")

	segs, _ := wal.Segments(filepath.Join(dir, "wal"))
	var rec walRecord
	e.applyMu.Lock()
	for _, n := range segs {
		if _, err := wal.ReplaySegment(filepath.Join(dir, "wal"), n, func(p []byte) error {
			if err := decodeRecord(p, &rec); err != nil {
				return err
			}
			return e.applyRecord(&rec)
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.applyMu.Unlock()
	check("after a second replay")
}
