package query

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// fakeReader is an in-memory Reader that behaves like the RRD engine: raw
// points are consolidated on Fetch into slots stamped with the end of their
// interval, from the finest archive whose span covers start (counted back
// from now) and whose step is at least minStep.
type fakeReader struct {
	now      int64
	archives []storage.Retention
	series   []fakeSeries
	fetches  []fakeFetch         // what Fetch was asked, for assertions
	selects  [][]*metric.Matcher // what Select was asked
}

type fakeSeries struct {
	labels metric.Labels
	points map[int64]float64 // Unix seconds -> value
}

type fakeFetch struct {
	id                  uint64
	cf                  storage.CF
	start, end, minStep int64
	step                int64
}

func newFakeReader(now int64, retentions string) *fakeReader {
	rs, err := storage.ParseRetentions(retentions)
	if err != nil {
		panic(err)
	}
	return &fakeReader{now: now, archives: rs}
}

// add stores points of a series given as alternating name, value pairs.
func (f *fakeReader) add(points map[int64]float64, pairs ...string) {
	var ls []metric.Label
	for i := 0; i+1 < len(pairs); i += 2 {
		ls = append(ls, metric.Label{Name: pairs[i], Value: pairs[i+1]})
	}
	f.series = append(f.series, fakeSeries{labels: metric.New(ls...), points: points})
}

func (f *fakeReader) Select(ms []*metric.Matcher) ([]storage.SeriesRef, error) {
	f.selects = append(f.selects, ms)
	if len(ms) == 0 {
		return nil, storage.ErrNoMatchers
	}
	var out []storage.SeriesRef
	for i, s := range f.series {
		if metric.MatchesLabels(s.labels, ms) {
			out = append(out, storage.SeriesRef{ID: uint64(i), Labels: s.labels})
		}
	}
	return out, nil
}

func (f *fakeReader) LabelNames(ms []*metric.Matcher) ([]string, error) {
	var out []string
	for _, s := range f.series {
		if metric.MatchesLabels(s.labels, ms) {
			for _, l := range s.labels {
				out = append(out, l.Name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (f *fakeReader) LabelValues(name string, ms []*metric.Matcher) ([]string, error) {
	var out []string
	for _, s := range f.series {
		if v := s.labels.Get(name); v != "" && metric.MatchesLabels(s.labels, ms) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (f *fakeReader) Fetch(id uint64, cf storage.CF, start, end, minStep int64) (storage.FetchResult, error) {
	if id >= uint64(len(f.series)) {
		return storage.FetchResult{}, storage.ErrUnknownSeries
	}
	ar := f.archives[len(f.archives)-1]
	for _, a := range f.archives {
		if a.Step >= minStep && f.now-a.Span() <= start {
			ar = a
			break
		}
	}
	f.fetches = append(f.fetches, fakeFetch{id: id, cf: cf, start: start, end: end, minStep: minStep, step: ar.Step})
	first := (start + ar.Step - 1) / ar.Step * ar.Step
	res := storage.FetchResult{Start: first, Step: ar.Step}
	pts := f.series[id].points
	times := make([]int64, 0, len(pts))
	for t := range pts {
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	for slot := first; slot <= end; slot += ar.Step {
		v, n := math.NaN(), 0
		for _, t := range times {
			if t <= slot-ar.Step || t > slot {
				continue
			}
			p := pts[t]
			switch {
			case n == 0:
				v = p
			case cf == storage.Max:
				v = max(v, p)
			case cf == storage.Min:
				v = min(v, p)
			default:
				v += p
			}
			n++
		}
		if cf == storage.Average && n > 0 {
			v /= float64(n)
		}
		res.Values = append(res.Values, v)
	}
	return res, nil
}

func (f *fakeReader) Last(id uint64) (int64, float64, bool) {
	if id >= uint64(len(f.series)) {
		return 0, 0, false
	}
	var lt int64
	for t := range f.series[id].points {
		lt = max(lt, t)
	}
	if lt == 0 {
		return 0, 0, false
	}
	return lt, f.series[id].points[lt], true
}

// every returns points from start to end (inclusive) every step, valued by fn.
func every(start, end, step int64, fn func(t int64) float64) map[int64]float64 {
	m := make(map[int64]float64)
	for t := start; t <= end; t += step {
		m[t] = fn(t)
	}
	return m
}

func (f fakeFetch) String() string {
	return fmt.Sprintf("fetch(id=%d cf=%v %d..%d minStep=%d -> step %d)", f.id, f.cf, f.start, f.end, f.minStep, f.step)
}
