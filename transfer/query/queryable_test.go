package query

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	promstorage "github.com/prometheus/prometheus/storage"

	"github.com/opskit/opskit/transfer/storage"
)

func selectAll(t *testing.T, q *Queryable, sorted bool, hints *promstorage.SelectHints, ms ...*labels.Matcher) ([]labels.Labels, [][]int64, error) {
	t.Helper()
	qr, err := q.Querier(hints.Start, hints.End)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	ss := qr.Select(context.Background(), sorted, hints, ms...)
	var sets []labels.Labels
	var times [][]int64
	for ss.Next() {
		s := ss.At()
		sets = append(sets, s.Labels())
		var ts []int64
		it := s.Iterator(nil)
		for it.Next() != 0 {
			tm, v := it.At()
			if math.IsNaN(v) {
				t.Errorf("%v: NaN sample at %d", s.Labels(), tm)
			}
			ts = append(ts, tm)
		}
		times = append(times, ts)
	}
	return sets, times, ss.Err()
}

func TestQueryableSelect(t *testing.T) {
	f := newFakeReader(testNow, storage.DefaultRetentions)
	// Added in reverse order, so only sorting puts them in order.
	f.add(every(testNow-600, testNow, 60, func(int64) float64 { return 2 }), "__name__", "m", "endpoint", "b")
	withGap := every(testNow-600, testNow, 60, func(int64) float64 { return 1 })
	delete(withGap, testNow-60)
	f.add(withGap, "__name__", "m", "endpoint", "a")
	f.add(every(testNow-600, testNow, 60, func(int64) float64 { return 3 }), "__name__", "other", "endpoint", "a")
	q := NewQueryable(f, nil, func() time.Time { return time.Unix(testNow, 0) })
	hints := &promstorage.SelectHints{Start: (testNow - 180) * 1000, End: testNow * 1000, Step: 60_000}

	sets, times, err := selectAll(t, q, true, hints,
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"),
		labels.MustNewMatcher(labels.MatchEqual, CFLabel, "max"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || sets[0].Get("endpoint") != "a" || sets[1].Get("endpoint") != "b" {
		t.Fatalf("sorted select gave %v", sets)
	}
	// The slot at testNow-60 is unknown: no sample, not NaN, not zero.
	wantA := []int64{(testNow - 180) * 1000, (testNow - 120) * 1000, testNow * 1000}
	if len(times[0]) != len(wantA) || times[0][0] != wantA[0] || times[0][1] != wantA[1] || times[0][2] != wantA[2] {
		t.Errorf("series a samples at %v, want %v", times[0], wantA)
	}
	for _, ms := range f.selects {
		for _, m := range ms {
			if m.Name == CFLabel {
				t.Errorf("__cf__ reached the storage: %v", ms)
			}
		}
	}
	for _, fe := range f.fetches {
		if fe.cf != storage.Max {
			t.Errorf("%v: want MAX", fe)
		}
	}

	// Without sorting the storage's order stands.
	sets, _, err = selectAll(t, q, false, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	if err != nil || len(sets) != 2 || sets[0].Get("endpoint") != "b" {
		t.Errorf("unsorted select gave %v, %v", sets, err)
	}

	// Regexp matchers are anchored, as in PromQL.
	sets, _, err = selectAll(t, q, true, hints, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "oth"))
	if err != nil || len(sets) != 0 {
		t.Errorf("regexp oth matched %v, %v", sets, err)
	}

	// A series without samples in the range is not returned.
	old := &promstorage.SelectHints{Start: (testNow - 7200) * 1000, End: (testNow - 3600) * 1000, Step: 60_000}
	sets, _, err = selectAll(t, q, true, old, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	if err != nil || len(sets) != 0 {
		t.Errorf("select before the data gave %v, %v", sets, err)
	}

	// The load is bounded: 3 + 4 samples pass a bound of 7, not of 6.
	q.maxSamples = 7
	if _, _, err := selectAll(t, q, true, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")); err != nil {
		t.Errorf("7 samples with a bound of 7: %v", err)
	}
	q.maxSamples = 6
	var tooMany promql.ErrTooManySamples
	if _, _, err := selectAll(t, q, true, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")); !errors.As(err, &tooMany) {
		t.Errorf("7 samples with a bound of 6: %v, want ErrTooManySamples", err)
	}
	q.maxSamples = 0

	// __cf__ alone reaches nothing.
	if _, _, err := selectAll(t, q, true, hints, labels.MustNewMatcher(labels.MatchEqual, CFLabel, "min")); err == nil {
		t.Error("a selector of only __cf__ should fail")
	}
}

func TestFetchWindowIsBounded(t *testing.T) {
	f := newFakeReader(testNow, storage.DefaultRetentions)
	f.add(map[int64]float64{testNow: 1}, "__name__", "m")
	q := NewQueryable(f, nil, func() time.Time { return time.Unix(testNow, 0) })
	// A selection over ten thousand years reads about a year of storage.
	huge := &promstorage.SelectHints{Start: -5000 * 365 * 86400 * 1000, End: 5000 * 365 * 86400 * 1000}
	sets, _, err := selectAll(t, q, false, huge, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	if err != nil || len(sets) != 1 {
		t.Fatalf("got %v, %v; want the series", sets, err)
	}
	fe := f.fetches[len(f.fetches)-1]
	if span := fe.end - fe.start; span > 366*86400+86400+43200 {
		t.Errorf("%v spans %ds, more than the longest retention and a day", fe, span)
	}
	// Entirely before what storage can hold: no fetch at all.
	n := len(f.fetches)
	old := &promstorage.SelectHints{Start: 0, End: 1000 * 1000}
	if sets, _, err := selectAll(t, q, false, old, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")); err != nil || len(sets) != 0 {
		t.Errorf("got %v, %v; want nothing", sets, err)
	}
	if len(f.fetches) != n {
		t.Errorf("fetched %v for a window storage cannot hold", f.fetches[n:])
	}
}
