// Package plan lays hosts out in a relay: each host gets a parent to fetch
// pieces from, and behind it the chain of ancestors up to the server that it
// re-attaches to when the parent dies or stalls.
//
// A tree is striped: the pieces are split into stripes (piece n belongs to
// stripe n mod k) and each stripe has its own tree over the same hosts.
// Host i is an inner node (has children) only in stripe i mod k and a leaf
// in every other stripe, so every host uploads about fan-out × S/k, and the
// leaves of one stripe are the relays of another. In a single tree the
// leaves upload nothing and each inner node uploads the file fan-out times.
package plan

import (
	"fmt"

	"github.com/opskit/opskit/filefly/api"
)

// Server is the name of the root in the ancestor lists.
const Server = ""

// TreeStripes is how many stripes a striped tree has.
const TreeStripes = 2

// Ancestors returns, for each host (by index), its ancestors nearest first,
// ending with Server, for a layout with a single stripe. fanout is the
// children per node of a tree. A striped tree is planned with Stripes.
func Ancestors(hosts []string, topology string, fanout int) ([][]string, error) {
	if fanout < 1 {
		fanout = 2
	}
	parent := make([]int, len(hosts)) // -1 = the server
	for i := range hosts {
		switch topology {
		case api.TopologyTree1, api.TopologyTree, "":
			// Node i+1 in a heap rooted at the server (node 0).
			parent[i] = (i+1-1)/fanout - 1
		case api.TopologyChain:
			parent[i] = i - 1
		case api.TopologyStar:
			parent[i] = -1
		default:
			return nil, fmt.Errorf("unknown topology %q (tree, tree1, chain or star)", topology)
		}
	}
	return chains(hosts, parent), nil
}

// Stripes returns, for each host (by index) and each stripe, the host's
// ancestors in that stripe's tree, nearest first, ending with Server. Only
// a tree with a fan-out of 2 or more is striped; every other layout (and a
// tree of fewer than 3 hosts) has one stripe, the layout of Ancestors.
//
// Stripe s's tree has one host under the server, the first host of group s
// (the hosts with index ≡ s mod k), so the server sends each stripe once
// and the whole file once. Below it the stripe is a heap with fanout
// children per node over group s first, then the other hosts: the inner
// nodes of a heap of N nodes number ⌊(N−2)/fanout⌋+1 ≤ ⌊N/k⌋ for
// fanout ≥ k, so they all come from group s.
func Stripes(hosts []string, topology string, fanout int) ([][][]string, error) {
	if fanout < 1 {
		fanout = 2
	}
	if (topology != api.TopologyTree && topology != "") || fanout < TreeStripes || len(hosts) < 3 {
		single, err := Ancestors(hosts, topology, fanout)
		if err != nil {
			return nil, err
		}
		out := make([][][]string, len(hosts))
		for i, a := range single {
			out[i] = [][]string{a}
		}
		return out, nil
	}
	out := make([][][]string, len(hosts))
	for s := 0; s < TreeStripes; s++ {
		// order[p] is the host at heap position p of stripe s.
		order := make([]int, 0, len(hosts))
		for i := range hosts {
			if i%TreeStripes == s {
				order = append(order, i)
			}
		}
		for i := range hosts {
			if i%TreeStripes != s {
				order = append(order, i)
			}
		}
		parent := make([]int, len(hosts)) // by host index; -1 = the server
		for p, i := range order {
			if p == 0 {
				parent[i] = -1
			} else {
				parent[i] = order[(p-1)/fanout]
			}
		}
		for i, a := range chains(hosts, parent) {
			out[i] = append(out[i], a)
		}
	}
	return out, nil
}

// chains turns parent indexes (-1 = the server) into ancestor lists.
func chains(hosts []string, parent []int) [][]string {
	out := make([][]string, len(hosts))
	for i := range hosts {
		var chain []string
		for p := parent[i]; p >= 0; p = parent[p] {
			chain = append(chain, hosts[p])
		}
		out[i] = append(chain, Server)
	}
	return out
}
