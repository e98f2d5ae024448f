package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/query"
	"github.com/opskit/opskit/transfer/ring"
	"github.com/opskit/opskit/transfer/storage"
)

// Reader answers queries for the whole cluster: it implements query.Reader
// by asking every node of the current ring (this node through its local
// reader) and merging. A series stored on several nodes (replicas, or a
// former owner's history after a ring change) is one series whose slots are
// merged: a slot unknown on one copy is taken from another.
//
// A node that does not answer is left out while fewer nodes than the
// replica count are missing (every series then still has a copy);
// otherwise the query fails rather than return silently incomplete data.
//
// Series IDs handed out by Select are the ring hash of the series key; the
// Reader remembers, for each, the nodes and node-local IDs that hold it.
type Reader struct {
	c     *Cluster
	local query.Reader

	mu     sync.Mutex
	series map[uint64]*located
}

type located struct {
	labels metric.Labels
	at     []location
	// The newest point over every copy as Select saw it, and when: the
	// API asks Last right after Select, and this saves a request per
	// series and node.
	lastT    int64
	lastV    float64
	lastOK   bool
	selected time.Time
}

// lastFresh is how long the newest point seen by Select answers Last.
const lastFresh = 2 * time.Second

// selected is one series as a node's Select answered it.
type selected struct {
	ref    storage.SeriesRef
	lastT  int64
	lastV  float64
	lastOK bool
}

type location struct {
	node string
	id   uint64
}

// maxRemembered bounds the Reader's memory of selected series; past it
// the memory starts afresh (a query running across that moment re-selects
// nothing and may miss series it selected before).
const maxRemembered = 1 << 21

// NewReader returns the cluster-wide reader over c, with local as this
// node's own storage.
func NewReader(c *Cluster, local query.Reader) *Reader {
	return &Reader{c: c, local: local, series: map[uint64]*located{}}
}

var _ query.Reader = (*Reader)(nil)

// nodeResult is one node's answer in a fan-out.
type nodeResult[T any] struct {
	node string
	val  T
	err  error
}

// fanOut calls fn for every node of the ring at once and gathers the
// answers, failing when too many nodes failed.
func fanOut[T any](r *Reader, fn func(ctx context.Context, node ring.Node) (T, error)) ([]nodeResult[T], error) {
	nodes := r.c.Ring().Nodes()
	out := make([]nodeResult[T], len(nodes))
	ctx, cancel := context.WithTimeout(context.Background(), r.c.cfg.QueryTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := fn(ctx, n)
			out[i] = nodeResult[T]{node: n.Name, val: v, err: err}
		}()
	}
	wg.Wait()
	var failed []string
	var errs []error
	for _, res := range out {
		if res.err != nil {
			failed = append(failed, res.node)
			errs = append(errs, fmt.Errorf("%s: %w", res.node, res.err))
		}
	}
	if len(failed) > 0 {
		r.c.cfg.Metrics.GetOrCreateCounter(`opskit_transfer_cluster_query_node_failures_total`).Add(len(failed))
		if len(failed) >= r.c.cfg.Replicas {
			return nil, fmt.Errorf("nodes %s did not answer and %d replicas cannot cover them: %w", strings.Join(failed, ", "), r.c.cfg.Replicas, errors.Join(errs...))
		}
		r.c.log.Warn("query answered without some nodes; replicas cover them", "nodes", failed, "err", errors.Join(errs...))
	}
	return out, nil
}

// Select asks every node for the matching series and merges them by label set.
func (r *Reader) Select(ms []*metric.Matcher) ([]storage.SeriesRef, error) {
	if len(ms) == 0 {
		return nil, storage.ErrNoMatchers
	}
	res, err := fanOut(r, func(ctx context.Context, n ring.Node) ([]selected, error) {
		if n.Name == r.c.cfg.Self {
			refs, err := r.local.Select(ms)
			if err != nil {
				return nil, err
			}
			out := make([]selected, len(refs))
			for i, ref := range refs {
				t, v, ok := r.local.Last(ref.ID)
				out[i] = selected{ref: ref, lastT: t, lastV: v, lastOK: ok}
			}
			return out, nil
		}
		var ans selectAnswer
		if err := r.call(ctx, n.Name, PathSelect, selectRequest{Matchers: toWireMatchers(ms)}, &ans); err != nil {
			return nil, err
		}
		out := make([]selected, len(ans.Series))
		for i, s := range ans.Series {
			ls := make(metric.Labels, len(s.Labels))
			for j, l := range s.Labels {
				ls[j] = metric.Label{Name: l[0], Value: l[1]}
			}
			out[i] = selected{ref: storage.SeriesRef{ID: s.ID, Labels: ls}}
			if s.Last != nil {
				out[i].lastT, out[i].lastV, out[i].lastOK = s.Last.T, s.Last.V, true
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	merged := map[uint64]*located{}
	var key []byte
	for _, nr := range res {
		for _, sel := range nr.val {
			key = sel.ref.Labels.AppendKey(key[:0])
			id := ring.Hash(key)
			l := merged[id]
			if l == nil {
				l = &located{labels: sel.ref.Labels, selected: now}
				merged[id] = l
			}
			l.at = append(l.at, location{node: nr.node, id: sel.ref.ID})
			if sel.lastOK && (!l.lastOK || sel.lastT > l.lastT) {
				l.lastT, l.lastV, l.lastOK = sel.lastT, sel.lastV, true
			}
		}
	}
	out := make([]storage.SeriesRef, 0, len(merged))
	r.mu.Lock()
	if len(r.series)+len(merged) > maxRemembered {
		r.series = map[uint64]*located{}
	}
	for id, l := range merged {
		r.series[id] = l
		out = append(out, storage.SeriesRef{ID: id, Labels: l.labels})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b storage.SeriesRef) int { return compareLabels(a.Labels, b.Labels) })
	return out, nil
}

func compareLabels(a, b metric.Labels) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := strings.Compare(a[i].Name, b[i].Name); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// LabelNames merges every node's label names.
func (r *Reader) LabelNames(ms []*metric.Matcher) ([]string, error) {
	return r.labels("", ms)
}

// LabelValues merges every node's values of name.
func (r *Reader) LabelValues(name string, ms []*metric.Matcher) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	return r.labels(name, ms)
}

func (r *Reader) labels(name string, ms []*metric.Matcher) ([]string, error) {
	res, err := fanOut(r, func(ctx context.Context, n ring.Node) ([]string, error) {
		if n.Name == r.c.cfg.Self {
			if name == "" {
				return r.local.LabelNames(ms)
			}
			return r.local.LabelValues(name, ms)
		}
		var ans labelsAnswer
		err := r.call(ctx, n.Name, PathLabels, labelsRequest{Name: name, Matchers: toWireMatchers(ms)}, &ans)
		return ans.Values, err
	})
	if err != nil {
		return nil, err
	}
	var all []string
	for _, nr := range res {
		all = append(all, nr.val...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func (r *Reader) lookup(id uint64) (*located, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.series[id]
	return l, ok
}

// Fetch reads a series from every node that holds it and merges the copies.
func (r *Reader) Fetch(id uint64, cf storage.CF, start, end, minStep int64) (storage.FetchResult, error) {
	res, errs := r.FetchBatch([]uint64{id}, cf, start, end, minStep)
	return res[0], errs[0]
}

var _ query.BatchFetcher = (*Reader)(nil)

// FetchBatch reads many series with one request per node holding any of
// them, and merges the copies of each series.
func (r *Reader) FetchBatch(ids []uint64, cf storage.CF, start, end, minStep int64) ([]storage.FetchResult, []error) {
	results := make([]storage.FetchResult, len(ids))
	errs := make([]error, len(ids))
	// copies[i] are the answers for ids[i], one per location.
	type answer struct {
		res storage.FetchResult
		err error
	}
	copies := make([][]answer, len(ids))
	type want struct{ series, copy int }
	perNode := map[string][]want{}
	locs := make([]*located, len(ids))
	for i, id := range ids {
		l, ok := r.lookup(id)
		if !ok {
			errs[i] = storage.ErrUnknownSeries
			continue
		}
		locs[i] = l
		copies[i] = make([]answer, len(l.at))
		for k, loc := range l.at {
			perNode[loc.node] = append(perNode[loc.node], want{i, k})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.c.cfg.QueryTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for node, wants := range perNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if node == r.c.cfg.Self {
				for _, w := range wants {
					res, err := r.local.Fetch(locs[w.series].at[w.copy].id, cf, start, end, minStep)
					copies[w.series][w.copy] = answer{res, err}
				}
				return
			}
			req := fetchRequest{IDs: make([]uint64, len(wants)), CF: cf.String(), Start: start, End: end, MinStep: minStep}
			for k, w := range wants {
				req.IDs[k] = locs[w.series].at[w.copy].id
			}
			var ans fetchAnswer
			err := r.call(ctx, node, PathFetch, req, &ans)
			if err == nil && len(ans.Results) != len(wants) {
				err = fmt.Errorf("%s answered %d results for %d series", node, len(ans.Results), len(wants))
			}
			for k, w := range wants {
				switch {
				case err != nil:
					copies[w.series][w.copy] = answer{err: err}
				case ans.Results[k].Unknown:
					copies[w.series][w.copy] = answer{err: storage.ErrUnknownSeries}
				default:
					wf := ans.Results[k]
					res := storage.FetchResult{Start: wf.Start, Step: wf.Step, Values: make([]float64, len(wf.Values))}
					for v, x := range wf.Values {
						res.Values[v] = math.NaN()
						if x != nil {
							res.Values[v] = *x
						}
					}
					copies[w.series][w.copy] = answer{res: res}
				}
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if locs[i] == nil {
			continue
		}
		var merged *storage.FetchResult
		var failures []error
		unknown := 0
		for _, a := range copies[i] {
			switch {
			case errors.Is(a.err, storage.ErrUnknownSeries):
				unknown++
			case a.err != nil:
				failures = append(failures, a.err)
			case merged == nil:
				res := a.res
				merged = &res
			default:
				mergeFetch(merged, a.res)
			}
		}
		switch {
		case merged != nil:
			results[i] = *merged
		case unknown == len(copies[i]):
			errs[i] = storage.ErrUnknownSeries
		default:
			errs[i] = fmt.Errorf("fetch %s: %w", locs[i].labels, errors.Join(failures...))
		}
	}
	return results, errs
}

// mergeFetch fills the unknown slots of dst from src when both cover the
// same slots; otherwise it keeps the copy with more known slots.
func mergeFetch(dst *storage.FetchResult, src storage.FetchResult) {
	if dst.Start == src.Start && dst.Step == src.Step && len(dst.Values) == len(src.Values) {
		for i, v := range dst.Values {
			if math.IsNaN(v) && !math.IsNaN(src.Values[i]) {
				dst.Values[i] = src.Values[i]
			}
		}
		return
	}
	if known(src.Values) > known(dst.Values) {
		*dst = src
	}
}

func known(vs []float64) int {
	n := 0
	for _, v := range vs {
		if !math.IsNaN(v) {
			n++
		}
	}
	return n
}

// Last returns the newest point any copy of the series holds.
func (r *Reader) Last(id uint64) (int64, float64, bool) {
	l, ok := r.lookup(id)
	if !ok {
		return 0, 0, false
	}
	if time.Since(l.selected) < lastFresh {
		return l.lastT, l.lastV, l.lastOK
	}
	var bestT int64
	var bestV float64
	found := false
	ctx, cancel := context.WithTimeout(context.Background(), r.c.cfg.QueryTimeout)
	defer cancel()
	for _, loc := range l.at {
		var t int64
		var v float64
		var ok bool
		if loc.node == r.c.cfg.Self {
			t, v, ok = r.local.Last(loc.id)
		} else {
			var ans lastAnswer
			if err := r.call(ctx, loc.node, PathLast, lastRequest{IDs: []uint64{loc.id}}, &ans); err == nil && len(ans.Points) == 1 {
				t, v, ok = ans.Points[0].T, ans.Points[0].V, ans.Points[0].OK
			}
		}
		if ok && (!found || t > bestT) {
			bestT, bestV, found = t, v, true
		}
	}
	return bestT, bestV, found
}

// call posts a JSON request to a peer's node-to-node API.
func (r *Reader) call(ctx context.Context, node, path string, req, ans any) error {
	addr := r.c.addr(node)
	if addr == "" {
		return fmt.Errorf("no address for node %s", node)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := r.c.cfg.Client.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s%s: HTTP %d: %s", addr, path, resp.StatusCode, bytes.TrimSpace(msg))
	}
	if err := json.NewDecoder(resp.Body).Decode(ans); err != nil {
		return fmt.Errorf("%s%s: %w", addr, path, err)
	}
	return nil
}
