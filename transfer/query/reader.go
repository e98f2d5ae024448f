// Package query answers queries over transfer's round-robin storage: the
// Prometheus HTTP API, evaluated by the upstream PromQL engine over a
// Queryable adapter, and open-falcon's graph history and last-point API.
//
// See README.md in this folder for the endpoints, the __cf__ matcher, how
// an archive is chosen and why the lookback delta follows the archive step.
package query

import (
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// Reader is what the query layer needs from transfer's storage engine.
// *storage.Engine implements it; tests may use a fake.
type Reader interface {
	// Select returns the series matching every matcher; it needs at least one.
	Select(ms []*metric.Matcher) ([]storage.SeriesRef, error)
	// LabelNames returns the sorted label names of the matching series, or of
	// all series when ms is empty.
	LabelNames(ms []*metric.Matcher) ([]string, error)
	// LabelValues returns the sorted values of name among the matching series.
	LabelValues(name string, ms []*metric.Matcher) ([]string, error)
	// Fetch reads one consolidation function of a series between start and
	// end (Unix seconds) from the finest archive that covers start and has a
	// step of at least minStep.
	Fetch(id uint64, cf storage.CF, start, end, minStep int64) (storage.FetchResult, error)
	// Last returns the newest stored point of a series.
	Last(id uint64) (t int64, v float64, ok bool)
}

// BatchFetcher is an optional extension of Reader for readers where one
// call per series is costly, such as transfer's cluster-wide reader (one
// request per node instead of one per series). The PromQL adapter fetches
// all the series of a selector with one FetchBatch call when the Reader
// implements it.
type BatchFetcher interface {
	// FetchBatch is Fetch for each of ids: results[i] and errs[i] are what
	// Fetch(ids[i], ...) would return.
	FetchBatch(ids []uint64, cf storage.CF, start, end, minStep int64) (results []storage.FetchResult, errs []error)
}
