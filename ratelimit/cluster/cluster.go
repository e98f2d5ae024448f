// Package cluster lets N gateways enforce one configured rate together
// without talking on the request path: each polls the others' /readyz, and
// while n gateways are live each enforces 1/n of every zone's rate. When a
// peer goes away or comes back the shares are recomputed.
//
// This is exact when the load balancer in front spreads each key's
// requests evenly over the gateways (round robin, random) and approximate
// otherwise: a key whose requests all reach one gateway gets only that
// gateway's share. Bursts are not divided: the cluster as a whole admits
// up to n × burst above the rate. Between a peer's failure and its
// detection (one poll interval plus the timeout) the survivors enforce the
// old, smaller shares: the cluster under-admits, never over-admits, except
// when a peer returns, for the same short time.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ParsePeers reads "host:port,host:port" (the peers' admin addresses).
func ParsePeers(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(p); err != nil {
			return nil, fmt.Errorf("peer %q: want host:port", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// Members tracks which peers are live.
type Members struct {
	peers    []string
	interval time.Duration
	client   *http.Client
	log      *slog.Logger
	live     atomic.Int32

	mu sync.Mutex
	up []bool
}

// New watches peers (admin addresses of the other gateways, not this one).
func New(peers []string, interval, timeout time.Duration, log *slog.Logger) *Members {
	m := &Members{peers: peers, interval: interval, client: &http.Client{Timeout: timeout}, log: log, up: make([]bool, len(peers))}
	m.live.Store(1)
	return m
}

// Live is the number of live gateways, this one included.
func (m *Members) Live() int { return int(m.live.Load()) }

// Peers reports each peer's state.
func (m *Members) Peers() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for i, p := range m.peers {
		out[p] = m.up[i]
	}
	return out
}

// Run polls the peers until ctx ends, calling changed(live) at the first
// poll and whenever the count moves.
func (m *Members) Run(ctx context.Context, changed func(live int)) {
	last := -1
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		up := make([]bool, len(m.peers))
		for i, p := range m.peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				up[i] = m.ready(ctx, p)
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		live := 1
		m.mu.Lock()
		for i, u := range up {
			if u {
				live++
			}
			if u != m.up[i] && last >= 0 {
				m.log.Warn("cluster peer changed", "peer", m.peers[i], "live", u)
			}
		}
		m.up = up
		m.mu.Unlock()
		m.live.Store(int32(live))
		if live != last {
			m.log.Info("cluster share", "live_gateways", live, "share", fmt.Sprintf("1/%d", live))
			changed(live)
			last = live
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Members) ready(ctx context.Context, peer string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+peer+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
