package storage

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/testkit"
)

// t0 is aligned to every step used below (60 s, 5 min, 20 min, 1 h).
const t0 = 1_700_002_800

type rawPoint struct {
	t int64
	v float64
}

// TestMatchesRRDtool feeds the same points into Debian's rrdtool and into the
// engine and compares `rrdtool fetch` with Fetch slot by slot, for every
// archive and the consolidation functions whose meaning is the same in both
// for that input (see README.md, "Compared with rrdtool").
func TestMatchesRRDtool(t *testing.T) {
	rrdtool := testkit.RequireBinary(t, "rrdtool", "rrdtool")
	const retentions = "60s:2h,5m:6h,20m:1d"
	cases := []struct {
		name      string
		kind      metric.CounterType
		points    []rawPoint
		cfs       []CF
		heartbeat int64   // 0: 120
		xff       float64 // 0: 0.5
	}{
		{
			name: "gauge aligned with gaps longer than the heartbeat",
			kind: metric.Gauge,
			points: regular(t0, 60, 400, func(i int) (float64, bool) {
				if (i >= 50 && i < 53) || (i >= 100 && i < 130) || i == 200 || i == 202 {
					return 0, false
				}
				return float64(i%17) * 1.5, true
			}),
			cfs: []CF{Average, Max, Min},
		},
		{
			name: "gauge several points per slot",
			kind: metric.Gauge,
			points: regular(t0, 20, 1200, func(i int) (float64, bool) {
				if i >= 300 && i < 320 {
					return 0, false
				}
				return math.Sin(float64(i)/7) * 100, true
			}),
			cfs: []CF{Average},
		},
		{
			name: "gauge unaligned timestamps",
			kind: metric.Gauge,
			points: regular(t0+17, 60, 400, func(i int) (float64, bool) {
				if i >= 150 && i < 160 {
					return 0, false
				}
				return float64((i * 37) % 101), true
			}),
			cfs: []CF{Average},
		},
		{
			name:   "gauge irregular intervals",
			kind:   metric.Gauge,
			points: irregular(t0, 500),
			cfs:    []CF{Average},
		},
		{
			name: "gauge with unknown values, long heartbeat, strict xff",
			kind: metric.Gauge,
			points: regular(t0, 60, 400, func(i int) (float64, bool) {
				if i%11 == 3 || (i >= 200 && i < 204) {
					return math.NaN(), true // rrdtool's U
				}
				if i >= 300 && i < 304 {
					return 0, false // a gap shorter than the heartbeat
				}
				return float64(i % 13), true
			}),
			cfs:       []CF{Average, Max, Min},
			heartbeat: 300,
			xff:       0.2,
		},
		{
			name: "derive with a reset and a gap",
			kind: metric.Derive,
			points: func() []rawPoint {
				var out []rawPoint
				total := 1000.0
				for i := 0; i < 400; i++ {
					if i >= 250 && i < 260 {
						continue
					}
					total += float64((i*13)%50) * 60
					if i == 120 {
						total = 7 // counter reset
					}
					out = append(out, rawPoint{t0 + int64(i)*60, total})
				}
				return out
			}(),
			cfs: []CF{Average, Max, Min},
		},
	}
	archives, err := ParseRetentions(retentions)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.heartbeat == 0 {
				tc.heartbeat = 120
			}
			if tc.xff == 0 {
				tc.xff = 0.5
			}
			dir := t.TempDir()
			schema, err := NewSchema("test", "", retentions, time.Duration(tc.heartbeat)*time.Second, tc.xff)
			if err != nil {
				t.Fatal(err)
			}
			e, err := Open(filepath.Join(dir, "engine"), Options{Schemas: []Schema{schema}, SeriesPerSlab: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			labels := metric.New(metric.Label{Name: metric.NameLabel, Value: "m"})
			pts := make([]metric.Point, len(tc.points))
			for i, p := range tc.points {
				pts[i] = metric.Point{Labels: labels, Time: p.t, Value: p.v, Type: tc.kind}
			}
			res, err := e.Append(pts)
			if err != nil || len(res.Rejected) > 0 {
				t.Fatalf("append: %v %v", err, res.Rejected)
			}
			refs, err := e.Select([]*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "m")})
			if err != nil || len(refs) != 1 {
				t.Fatalf("select: %v %v", refs, err)
			}

			file := filepath.Join(dir, "ref.rrd")
			dsType := fmt.Sprintf("GAUGE:%d:U:U", tc.heartbeat)
			if tc.kind == metric.Derive {
				dsType = fmt.Sprintf("DERIVE:%d:0:U", tc.heartbeat)
			}
			args := []string{"create", file, "--start", strconv.FormatInt(tc.points[0].t-60, 10), "--step", "60", "DS:v:" + dsType}
			for _, a := range archives {
				for _, cf := range []CF{Average, Max, Min} {
					args = append(args, fmt.Sprintf("RRA:%s:%g:%d:%d", cf, tc.xff, a.Step/60, a.Rows))
				}
			}
			run(t, rrdtool, args...)
			for i := 0; i < len(tc.points); i += 400 {
				up := []string{"update", file}
				for _, p := range tc.points[i:min(i+400, len(tc.points))] {
					v := strconv.FormatFloat(p.v, 'f', -1, 64)
					if math.IsNaN(p.v) {
						v = "U"
					}
					up = append(up, fmt.Sprintf("%d:%s", p.t, v))
				}
				run(t, rrdtool, up...)
			}

			last := tc.points[len(tc.points)-1].t
			for _, a := range archives {
				calEnd := last - last%a.Step
				start, end := calEnd-a.Span()+a.Step, last
				for _, cf := range tc.cfs {
					want := rrdFetch(t, rrdtool, file, cf, a.Step, start, end)
					got, err := e.Fetch(refs[0].ID, cf, start, end, a.Step)
					if err != nil {
						t.Fatal(err)
					}
					if got.Step != a.Step {
						t.Fatalf("%s step %d: fetch chose step %d", cf, a.Step, got.Step)
					}
					known := compareFetch(t, fmt.Sprintf("%s step %d", cf, a.Step), want, got)
					if known < 10 {
						t.Errorf("%s step %d: only %d known slots; the case tests too little", cf, a.Step, known)
					}
				}
			}
		})
	}
}

// regular makes n points every step seconds from start; gen says the value
// and whether the point is sent at all.
func regular(start, step int64, n int, gen func(i int) (float64, bool)) []rawPoint {
	var out []rawPoint
	for i := 0; i < n; i++ {
		if v, ok := gen(i); ok {
			out = append(out, rawPoint{start + int64(i)*step, v})
		}
	}
	return out
}

// irregular makes points at deterministic uneven intervals of 7 to 150 s.
func irregular(start int64, n int) []rawPoint {
	out := make([]rawPoint, 0, n)
	t := start
	for i := 0; i < n; i++ {
		t += int64(7 + (i*53)%144)
		out = append(out, rawPoint{t, float64((i * 29) % 83)})
	}
	return out
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rrdtool %s: %v\n%s", args[0], err, out)
	}
	return string(out)
}

// rrdFetch returns rrdtool fetch's rows as time → value.
func rrdFetch(t *testing.T, bin, file string, cf CF, step, start, end int64) map[int64]float64 {
	out := run(t, bin, "fetch", file, cf.String(), "-r", strconv.FormatInt(step, 10),
		"-s", strconv.FormatInt(start, 10), "-e", strconv.FormatInt(end, 10))
	rows := map[int64]float64{}
	for _, line := range strings.Split(out, "\n") {
		ts, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		tm, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64)
		if err != nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			v = math.NaN() // "-nan", "nan"
		}
		rows[tm] = v
	}
	if len(rows) == 0 {
		t.Fatalf("rrdtool fetch printed no rows:\n%s", out)
	}
	return rows
}

func compareFetch(t *testing.T, what string, want map[int64]float64, got FetchResult) (known int) {
	t.Helper()
	if len(got.Values) != len(want) {
		t.Errorf("%s: %d slots, rrdtool printed %d", what, len(got.Values), len(want))
	}
	bad := 0
	for i, v := range got.Values {
		ts := got.Start + int64(i)*got.Step
		w, ok := want[ts]
		if !ok {
			t.Errorf("%s: slot %d not printed by rrdtool", what, ts)
			continue
		}
		if !sameValue(v, w) {
			if bad < 5 {
				t.Errorf("%s: slot %d = %v, rrdtool %v", what, ts, v, w)
			}
			bad++
		}
		if !math.IsNaN(v) {
			known++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d slots differ in all", what, bad)
	}
	return known
}

func sameValue(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b))
}
