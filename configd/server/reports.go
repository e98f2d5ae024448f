package server

import (
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// reports keeps each host's latest apply report per namespace (in memory:
// agents report again after a server restart) and the time each host took
// to apply each release.
type reports struct {
	mu   sync.Mutex
	byNS map[string]map[string]*hostReport
}

type hostReport struct {
	last api.Report
	// applied maps a release to the seconds from its publish to this host
	// holding it.
	applied map[int64]float64
}

func newReports() *reports { return &reports{byNS: map[string]map[string]*hostReport{}} }

func (r *reports) add(rep api.Report, published, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hosts := r.byNS[rep.Namespace]
	if hosts == nil {
		hosts = map[string]*hostReport{}
		r.byNS[rep.Namespace] = hosts
	}
	h := hosts[rep.Host]
	if h == nil {
		h = &hostReport{applied: map[int64]float64{}}
		hosts[rep.Host] = h
	}
	h.last = rep
	if rep.OK && rep.Applied == rep.Version && !published.IsZero() {
		if _, seen := h.applied[rep.Version]; !seen {
			h.applied[rep.Version] = max(now.Sub(published).Seconds(), 0)
		}
	}
	// Keep the record small: only recent releases matter for the view.
	if len(h.applied) > 64 {
		for v := range h.applied {
			if v < rep.Version-32 {
				delete(h.applied, v)
			}
		}
	}
}

func (r *reports) convergence(ns string, version int64) api.Convergence {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := api.Convergence{Namespace: ns, Version: version, Applied: []string{}, Failed: []string{}, Other: []string{}}
	var lat []float64
	for host, h := range r.byNS[ns] {
		switch {
		case h.last.Applied == version:
			c.Applied = append(c.Applied, host)
			if d, ok := h.applied[version]; ok {
				lat = append(lat, d)
			}
		case h.last.Version == version && !h.last.OK:
			c.Failed = append(c.Failed, host)
		default:
			c.Other = append(c.Other, host)
		}
	}
	sort.Strings(c.Applied)
	sort.Strings(c.Failed)
	sort.Strings(c.Other)
	sort.Float64s(lat)
	c.P50, c.P99 = quantile(lat, 0.5), quantile(lat, 0.99)
	return c
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}
