package server

import (
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// buildTopology assembles the fleet's graph from the daemons' hop stats: a
// hop's target that is some daemon's listener becomes an edge to that
// daemon, any other target an external node. Stopped daemons are left out;
// down ones stay, drawn as down.
func buildTopology(daemons []api.FleetDaemon, now time.Time) api.Topology {
	topo := api.Topology{Generated: now.UTC(), Nodes: []api.TopologyNode{}, Edges: []api.TopologyEdge{}}
	byAddr := map[string]string{}     // normalised listener -> daemon id
	byHostPort := map[string]string{} // host name + port -> daemon id
	hostOf := map[string]string{}
	var live []api.FleetDaemon
	for _, d := range daemons {
		if d.State == api.DaemonStopped {
			continue
		}
		live = append(live, d)
		hostOf[d.ID] = d.Host
		addrs := []string{d.Addr, d.ID}
		for _, a := range d.Listeners {
			addrs = append(addrs, a)
		}
		for _, a := range addrs {
			byAddr[normalizeTarget(a)] = d.ID
			if _, port, err := net.SplitHostPort(a); err == nil {
				byHostPort[hostPortKey(d.Host, port)] = d.ID
			}
		}
	}
	external := map[string]bool{}
	linked := map[string]bool{}
	for _, d := range live {
		if d.Stats == nil {
			continue
		}
		for _, h := range d.Stats.Hops {
			to := resolveTarget(h.To, d.Host, byAddr, byHostPort)
			if to == "" {
				to = normalizeTarget(h.To)
				external[to] = true
			}
			topo.Edges = append(topo.Edges, api.TopologyEdge{From: d.ID, To: to, Target: h.To,
				ItemsPerSecond: h.ItemsPerSecond, LatencySeconds: h.LatencySeconds})
			linked[d.ID], linked[to] = true, true
		}
	}
	for _, d := range live {
		n := api.TopologyNode{ID: d.ID, Kind: d.Kind, Host: d.Host, State: d.State, Isolated: !linked[d.ID]}
		if d.Stats != nil {
			n.Health = d.Stats.Health
		}
		topo.Nodes = append(topo.Nodes, n)
	}
	for id := range external {
		topo.Nodes = append(topo.Nodes, api.TopologyNode{ID: id, Kind: "external", External: true})
	}
	sort.Slice(topo.Nodes, func(i, j int) bool { return topo.Nodes[i].ID < topo.Nodes[j].ID })
	sort.Slice(topo.Edges, func(i, j int) bool {
		a, b := topo.Edges[i], topo.Edges[j]
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	return topo
}

// resolveTarget finds the daemon a hop's target names: by its address, or
// for a loopback target by the port on the sender's own host.
func resolveTarget(target, senderHost string, byAddr, byHostPort map[string]string) string {
	norm := normalizeTarget(target)
	if id, ok := byAddr[norm]; ok {
		return id
	}
	host, port, err := net.SplitHostPort(norm)
	if err != nil {
		return ""
	}
	if host == "127.0.0.1" {
		return byHostPort[hostPortKey(senderHost, port)]
	}
	return byHostPort[hostPortKey(host, port)]
}

func hostPortKey(host, port string) string { return strings.ToLower(host) + "\x00" + port }

// normalizeTarget puts an address in one form: an http(s) URL becomes its
// host:port (with the scheme's default port), host names are lower case
// and every loopback or wildcard host is 127.0.0.1. Other schemes (kafka://)
// keep their scheme.
func normalizeTarget(target string) string {
	t := strings.TrimSpace(target)
	scheme := ""
	if i := strings.Index(t, "://"); i >= 0 {
		u, err := url.Parse(t)
		if err != nil || u.Host == "" {
			return t
		}
		scheme, t = strings.ToLower(u.Scheme), u.Host
		if u.Port() == "" {
			switch scheme {
			case "http":
				t = net.JoinHostPort(u.Hostname(), "80")
			case "https":
				t = net.JoinHostPort(u.Hostname(), "443")
			}
		}
	}
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		return prefixScheme(scheme, strings.ToLower(t))
	}
	host = strings.ToLower(host)
	if ip := net.ParseIP(host); host == "localhost" || host == "" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
		host = "127.0.0.1"
	}
	return prefixScheme(scheme, net.JoinHostPort(host, port))
}

func prefixScheme(scheme, hostport string) string {
	if scheme == "" || scheme == "http" || scheme == "https" {
		return hostport
	}
	return scheme + "://" + hostport
}
