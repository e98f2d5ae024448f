package storage

import (
	"slices"
	"sort"
	"sync"

	"github.com/opskit/opskit/internal/metric"
)

// postings is the inverted index: label name → value → ids of the series
// carrying that pair, each list sorted ascending.
type postings struct {
	mu sync.RWMutex
	m  map[string]map[string][]uint64
}

func newPostings() *postings { return &postings{m: map[string]map[string][]uint64{}} }

func (p *postings) add(id uint64, ls metric.Labels) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range ls {
		values := p.m[l.Name]
		if values == nil {
			values = map[string][]uint64{}
			p.m[l.Name] = values
		}
		list := values[l.Value]
		// Ids grow, so appending keeps the list sorted except after a replay
		// that recreates an older id; insert in place then.
		if n := len(list); n == 0 || list[n-1] < id {
			values[l.Value] = append(list, id)
			continue
		}
		i, found := slices.BinarySearch(list, id)
		if !found {
			values[l.Value] = slices.Insert(list, i, id)
		}
	}
}

func (p *postings) remove(id uint64, ls metric.Labels) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range ls {
		values := p.m[l.Name]
		list := values[l.Value]
		i, found := slices.BinarySearch(list, id)
		if !found {
			continue
		}
		list = slices.Delete(list, i, i+1)
		if len(list) == 0 {
			delete(values, l.Value)
			if len(values) == 0 {
				delete(p.m, l.Name)
			}
			continue
		}
		values[l.Value] = list
	}
}

// candidates returns the ids that can match ms, sorted, or all=true when no
// matcher narrows the set (every matcher accepts the empty value).
func (p *postings) candidates(ms []*metric.Matcher) (ids []uint64, all bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	all = true
	for _, m := range ms {
		if m.Matches("") {
			continue // also matches series without the label: filter later
		}
		values := p.m[m.Name]
		var union []uint64
		if m.Type == metric.MatchEqual {
			union = values[m.Value]
		} else {
			var lists [][]uint64
			for v, list := range values {
				if m.Matches(v) {
					lists = append(lists, list)
				}
			}
			union = unionSorted(lists)
		}
		if all {
			ids = slices.Clone(union)
			all = false
		} else {
			ids = intersectSorted(ids, union)
		}
		if len(ids) == 0 {
			return nil, false
		}
	}
	return ids, all
}

func (p *postings) names() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]string, 0, len(p.m))
	for name := range p.m {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func (p *postings) values(name string) []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]string, 0, len(p.m[name]))
	for v := range p.m[name] {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func intersectSorted(a, b []uint64) []uint64 {
	out := a[:0]
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

func unionSorted(lists [][]uint64) []uint64 {
	switch len(lists) {
	case 0:
		return nil
	case 1:
		return lists[0]
	}
	var out []uint64
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// compareLabels orders label sets as Prometheus does: pair by pair.
func compareLabels(a, b metric.Labels) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].Name != b[i].Name {
			if a[i].Name < b[i].Name {
				return -1
			}
			return 1
		}
		if a[i].Value != b[i].Value {
			if a[i].Value < b[i].Value {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}
