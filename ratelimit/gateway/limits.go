package gateway

import "fmt"

// Report is what /admin/limits shows.
type Report struct {
	Zones     []ZoneReport     `json:"zones"`
	Routes    []RouteReport    `json:"routes"`
	Upstreams []UpstreamReport `json:"upstreams"`
	// Key is the state of one key, when asked for.
	Key *KeyReport `json:"key,omitempty"`
}

// ZoneReport is one zone's definition and table.
type ZoneReport struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	Rate string `json:"rate"`
	// RateNow is this gateway's share of Rate in cluster mode.
	RateNow string `json:"rate_now"`
	Burst   int    `json:"burst,omitempty"`
	Key     string `json:"key"`
	Keys    int    `json:"keys"`
	MaxKeys int    `json:"max_keys"`
	Expired uint64 `json:"expired"`
	Evicted uint64 `json:"evicted"`
	Full    uint64 `json:"full_refusals"`
}

// RouteReport is one route's limits.
type RouteReport struct {
	Name     string        `json:"name"`
	Upstream string        `json:"upstream"`
	DryRun   bool          `json:"dry_run"`
	Status   int           `json:"status"`
	Limits   []LimitConfig `json:"limits"`
}

// UpstreamReport is one pool's servers and concurrency limiter.
type UpstreamReport struct {
	Name     string         `json:"name"`
	Balance  string         `json:"balance"`
	Servers  []ServerReport `json:"servers"`
	Adaptive any            `json:"adaptive,omitempty"`
}

// ServerReport is one server.
type ServerReport struct {
	Addr     string `json:"addr"`
	Live     bool   `json:"live"`
	InFlight int64  `json:"in_flight"`
}

// KeyReport is a key's state in a zone: nginx mode gives the excess in
// requests (as nginx logs it), bucket mode the tokens left.
type KeyReport struct {
	Zone   string   `json:"zone"`
	Key    string   `json:"key"`
	Held   bool     `json:"held"`
	Excess *float64 `json:"excess,omitempty"`
	Tokens *float64 `json:"tokens,omitempty"`
}

// Limits reports the zones, routes and pools; with zone and key, also that
// key's current state.
func (g *Gateway) Limits(zoneName, key string) Report {
	st := g.state.Load()
	var rep Report
	for _, name := range sortedKeys(st.zones) {
		z := st.zones[name]
		zr := ZoneReport{Name: name, Mode: modeOf(z.cfg), Rate: z.cfg.Rate, Burst: z.cfg.Burst, Key: z.cfg.Key.String()}
		if z.ng != nil {
			zr.RateNow = z.ng.Rate().String()
			s := z.ng.Stats()
			zr.Keys, zr.MaxKeys, zr.Expired, zr.Evicted, zr.Full = s.Keys, s.MaxKeys, s.Expired, s.Evicted, s.Full
		} else {
			zr.RateNow = fmt.Sprintf("%g/s", z.bk.Rate())
			s := z.bk.Stats()
			zr.Keys, zr.MaxKeys, zr.Expired, zr.Evicted = s.Keys, s.MaxKeys, s.Expired, s.Evicted
		}
		rep.Zones = append(rep.Zones, zr)
	}
	for _, r := range st.routes {
		status := r.status
		rep.Routes = append(rep.Routes, RouteReport{Name: r.cfg.Name, Upstream: r.cfg.Upstream, DryRun: r.cfg.DryRun, Status: status, Limits: r.cfg.Limits})
	}
	for _, name := range sortedKeys(st.pools) {
		p := st.pools[name]
		ur := UpstreamReport{Name: name, Balance: p.cfg.Balance}
		if ur.Balance == "" {
			ur.Balance = "round_robin"
		}
		for _, s := range p.servers {
			ur.Servers = append(ur.Servers, ServerReport{Addr: s.addr, Live: s.live(g.opts.Now().UnixNano()), InFlight: s.inflight.Load()})
		}
		if p.limiter != nil {
			ur.Adaptive = p.limiter.Snapshot()
		}
		rep.Upstreams = append(rep.Upstreams, ur)
	}
	if zoneName != "" {
		kr := &KeyReport{Zone: zoneName, Key: key}
		if z := st.zones[zoneName]; z != nil {
			if z.ng != nil {
				if e, ok := z.ng.Excess(key); ok {
					v := float64(e) / 1000
					kr.Held, kr.Excess = true, &v
				}
			} else if tok, ok := z.bk.Tokens(key); ok {
				kr.Held, kr.Tokens = true, &tok
			}
		}
		rep.Key = kr
	}
	return rep
}
