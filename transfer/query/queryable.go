package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	promstorage "github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage"
)

// CFLabel is the pseudo-label that chooses the consolidation function of a
// selector: {__name__="cpu.idle",__cf__="max"}. It must be an equality
// matcher with the value average (or avg), max or min; without it a selector
// reads AVERAGE. It is taken out before the storage sees the matchers and is
// not a label of the returned series.
const CFLabel = "__cf__"

// Queryable lets the PromQL engine read transfer's storage. It implements
// github.com/prometheus/prometheus/storage.Queryable.
type Queryable struct {
	reader Reader
	plan   archivePlan
	now    func() time.Time
	// maxSamples bounds the samples one Select may load; 0 is no bound.
	// The engine's own limit applies only after Select returns.
	maxSamples int
}

// NewQueryable returns a Queryable over r. schemas are the storage engine's
// (storage.Options.Schemas); they decide the minStep passed to Fetch. With
// none, storage.DefaultSchemas is assumed. now is the clock that bounds
// fetches to the time storage can hold; nil means time.Now.
func NewQueryable(r Reader, schemas []storage.Schema, now func() time.Time) *Queryable {
	if now == nil {
		now = time.Now
	}
	return &Queryable{reader: r, plan: newArchivePlan(schemas), now: now}
}

// maxFuture is how far past now a fetch may reach, for clocks that disagree.
const maxFuture = 24 * time.Hour

// fetchWindow narrows [start, end] (Unix seconds) to what the storage can
// hold: nothing older than the longest retention, nothing far in the future.
// A query over centuries thus reads a few hundred slots, not billions.
// ok is false when nothing is left.
func (q *Queryable) fetchWindow(start, end int64) (int64, int64, bool) {
	now := q.now()
	oldest := now.Add(-q.plan.longestReach()).Unix()
	newest := now.Add(maxFuture).Unix()
	start, end = max(start, oldest), min(end, newest)
	return start, end, start <= end
}

var _ promstorage.Queryable = (*Queryable)(nil)

// Querier returns a querier for samples between mint and maxt (milliseconds).
func (q *Queryable) Querier(mint, maxt int64) (promstorage.Querier, error) {
	return &querier{q: q, mint: mint, maxt: maxt}, nil
}

type querier struct {
	q          *Queryable
	mint, maxt int64
}

// Select fetches the matching series. Every series is read completely here
// (a few hundred slots each, by the fixed size of an archive), so iteration
// cannot fail later.
func (qr *querier) Select(ctx context.Context, sortSeries bool, hints *promstorage.SelectHints, pms ...*labels.Matcher) promstorage.SeriesSet {
	cf, ms, err := convertMatchers(pms)
	if err != nil {
		return promstorage.ErrSeriesSet(err)
	}
	if len(ms) == 0 {
		return promstorage.ErrSeriesSet(errOnlyCF)
	}
	refs, err := qr.q.reader.Select(ms)
	if err != nil {
		// ErrStorage makes the API answer 500 "internal", as for a TSDB fault.
		return promstorage.ErrSeriesSet(promql.ErrStorage{Err: fmt.Errorf("select %v: %w", ms, err)})
	}
	startMs, endMs := qr.mint, qr.maxt
	var want time.Duration
	if hints != nil {
		startMs, endMs = hints.Start, hints.End
		want = time.Duration(hints.Step) * time.Millisecond
		if hints.Range > 0 {
			// A range selector needs a few samples inside its window, whatever
			// the query step: at least two for rate() and friends.
			half := time.Duration(hints.Range) * time.Millisecond / 2
			if want == 0 || half < want {
				want = half
			}
		}
	}
	minStep := qr.q.plan.minStepFor(want)
	// Like rrdtool fetch, the storage answers from the first slot stamped
	// after start; one second earlier includes a slot stamped at start.
	start, end, ok := qr.q.fetchWindow(floorDiv(startMs, 1000)-1, ceilDiv(endMs, 1000))
	if !ok {
		return promstorage.EmptySeriesSet()
	}

	out := make([]promql.Series, 0, len(refs))
	loaded := 0
	var batchResults []storage.FetchResult
	var batchErrs []error
	if bf, ok := qr.q.reader.(BatchFetcher); ok && len(refs) > 0 {
		ids := make([]uint64, len(refs))
		for i, ref := range refs {
			ids[i] = ref.ID
		}
		batchResults, batchErrs = bf.FetchBatch(ids, cf, start, end, minStep)
		if len(batchResults) != len(ids) || len(batchErrs) != len(ids) {
			return promstorage.ErrSeriesSet(promql.ErrStorage{Err: fmt.Errorf("batch fetch answered %d results for %d series", len(batchResults), len(ids))})
		}
	}
	for i, ref := range refs {
		if err := ctx.Err(); err != nil {
			return promstorage.ErrSeriesSet(err)
		}
		var res storage.FetchResult
		var err error
		if batchResults != nil {
			res, err = batchResults[i], batchErrs[i]
		} else {
			res, err = qr.q.reader.Fetch(ref.ID, cf, start, end, minStep)
		}
		if err != nil {
			if errors.Is(err, storage.ErrUnknownSeries) {
				continue // expired between Select and Fetch
			}
			return promstorage.ErrSeriesSet(promql.ErrStorage{Err: fmt.Errorf("fetch %s: %w", ref.Labels, err)})
		}
		s := fetchedSeries(ref.Labels, res, startMs, endMs)
		if len(s.Floats) == 0 {
			continue // like the TSDB, a series without samples in range is not returned
		}
		if loaded += len(s.Floats); qr.q.maxSamples > 0 && loaded > qr.q.maxSamples {
			return promstorage.ErrSeriesSet(promql.ErrTooManySamples("series fetch"))
		}
		out = append(out, s)
	}
	if sortSeries {
		slices.SortFunc(out, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	}
	return &seriesSet{series: out, i: -1}
}

// LabelValues is served for PromQL's label functions; the HTTP API reads the
// Reader directly.
func (qr *querier) LabelValues(_ context.Context, name string, hints *promstorage.LabelHints, pms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	_, ms, err := convertMatchers(pms)
	if err != nil {
		return nil, nil, err
	}
	vs, err := qr.q.reader.LabelValues(name, ms)
	if err != nil {
		return nil, nil, fmt.Errorf("label values of %q: %w", name, err)
	}
	vs, _ = hints.ApplyLimit(vs)
	return vs, nil, nil
}

// LabelNames returns the label names of the matching series.
func (qr *querier) LabelNames(_ context.Context, hints *promstorage.LabelHints, pms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	_, ms, err := convertMatchers(pms)
	if err != nil {
		return nil, nil, err
	}
	ns, err := qr.q.reader.LabelNames(ms)
	if err != nil {
		return nil, nil, fmt.Errorf("label names: %w", err)
	}
	ns, _ = hints.ApplyLimit(ns)
	return ns, nil, nil
}

func (qr *querier) Close() error { return nil }

// errCFMatcher explains the only accepted spelling of the __cf__ matcher.
var errCFMatcher = errors.New(`the __cf__ matcher must be an equality: __cf__="average", "max" or "min"`)

// convertMatchers turns PromQL matchers into storage matchers, taking out the
// __cf__ pseudo-label and returning the consolidation function it chose.
func convertMatchers(pms []*labels.Matcher) (storage.CF, []*metric.Matcher, error) {
	cf := storage.Average
	ms := make([]*metric.Matcher, 0, len(pms))
	for _, pm := range pms {
		if pm.Name == CFLabel {
			if pm.Type != labels.MatchEqual {
				return cf, nil, errCFMatcher
			}
			c, err := storage.ParseCF(pm.Value)
			if err != nil {
				return cf, nil, fmt.Errorf("__cf__: %w", err)
			}
			cf = c
			continue
		}
		var t metric.MatchType
		switch pm.Type {
		case labels.MatchEqual:
			t = metric.MatchEqual
		case labels.MatchNotEqual:
			t = metric.MatchNotEqual
		case labels.MatchRegexp:
			t = metric.MatchRegexp
		case labels.MatchNotRegexp:
			t = metric.MatchNotRegexp
		default:
			return cf, nil, fmt.Errorf("unsupported matcher type %v", pm.Type)
		}
		m, err := metric.NewMatcher(t, pm.Name, pm.Value)
		if err != nil {
			return cf, nil, err
		}
		ms = append(ms, m)
	}
	return cf, ms, nil
}

// toPromLabels converts a sorted storage label set.
func toPromLabels(ls metric.Labels) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	return b.Labels() // storage labels are already sorted by name
}

// fetchedSeries converts the known slots of a fetch inside [startMs, endMs]
// into PromQL samples; unknown slots become gaps.
func fetchedSeries(ls metric.Labels, res storage.FetchResult, startMs, endMs int64) promql.Series {
	n := 0
	for _, v := range res.Values {
		if !math.IsNaN(v) {
			n++
		}
	}
	s := promql.Series{Metric: toPromLabels(ls), Floats: make([]promql.FPoint, 0, n)}
	for i, v := range res.Values {
		if math.IsNaN(v) {
			continue
		}
		ts := (res.Start + int64(i)*res.Step) * 1000
		if ts < startMs || ts > endMs {
			continue
		}
		s.Floats = append(s.Floats, promql.FPoint{T: ts, F: v})
	}
	return s
}

type seriesSet struct {
	series []promql.Series
	i      int
}

func (ss *seriesSet) Next() bool {
	ss.i++
	return ss.i < len(ss.series)
}
func (ss *seriesSet) At() promstorage.Series            { return promql.NewStorageSeries(ss.series[ss.i]) }
func (ss *seriesSet) Err() error                        { return nil }
func (ss *seriesSet) Warnings() annotations.Annotations { return nil }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }
