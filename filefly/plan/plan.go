// Package plan lays hosts out in a relay: each host gets a parent to fetch
// pieces from, and behind it the chain of ancestors up to the server that it
// re-attaches to when the parent dies or stalls.
package plan

import (
	"fmt"

	"github.com/opskit/opskit/filefly/api"
)

// Server is the name of the root in the ancestor lists.
const Server = ""

// Ancestors returns, for each host (by index), its ancestors nearest first,
// ending with Server. fanout is the children per node of a tree.
func Ancestors(hosts []string, topology string, fanout int) ([][]string, error) {
	if fanout < 1 {
		fanout = 2
	}
	parent := make([]int, len(hosts)) // -1 = the server
	for i := range hosts {
		switch topology {
		case api.TopologyTree, "":
			// Node i+1 in a heap rooted at the server (node 0).
			parent[i] = (i+1-1)/fanout - 1
		case api.TopologyChain:
			parent[i] = i - 1
		case api.TopologyStar:
			parent[i] = -1
		default:
			return nil, fmt.Errorf("unknown topology %q (tree, chain or star)", topology)
		}
	}
	out := make([][]string, len(hosts))
	for i := range hosts {
		var chain []string
		for p := parent[i]; p >= 0; p = parent[p] {
			chain = append(chain, hosts[p])
		}
		out[i] = append(chain, Server)
	}
	return out, nil
}
