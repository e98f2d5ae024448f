package query

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promstorage "github.com/prometheus/prometheus/storage"

	"github.com/opskit/opskit/transfer/storage"
)

// batchReader is a fakeReader that also fetches in batches and counts how.
type batchReader struct {
	*fakeReader
	batches, singles int
}

func (b *batchReader) Fetch(id uint64, cf storage.CF, start, end, minStep int64) (storage.FetchResult, error) {
	b.singles++
	return b.fakeReader.Fetch(id, cf, start, end, minStep)
}

func (b *batchReader) FetchBatch(ids []uint64, cf storage.CF, start, end, minStep int64) ([]storage.FetchResult, []error) {
	b.batches++
	res := make([]storage.FetchResult, len(ids))
	errs := make([]error, len(ids))
	for i, id := range ids {
		res[i], errs[i] = b.fakeReader.Fetch(id, cf, start, end, minStep)
	}
	return res, errs
}

func TestSelectUsesBatchFetcher(t *testing.T) {
	f := newFakeReader(testNow, storage.DefaultRetentions)
	for _, ep := range []string{"a", "b", "c"} {
		f.add(every(testNow-600, testNow, 60, func(int64) float64 { return 1 }), "__name__", "m", "endpoint", ep)
	}
	b := &batchReader{fakeReader: f}
	q := NewQueryable(b, nil, func() time.Time { return time.Unix(testNow, 0) })
	hints := &promstorage.SelectHints{Start: (testNow - 180) * 1000, End: testNow * 1000, Step: 60_000}
	sets, times, err := selectAll(t, q, true, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 3 || len(times[0]) != 4 {
		t.Fatalf("got %v %v", sets, times)
	}
	if b.batches != 1 || b.singles != 0 {
		t.Fatalf("%d batch fetches and %d single fetches; want 1 and 0", b.batches, b.singles)
	}
}
