// Package ring is transfer's consistent-hash ring: it maps a series to the
// nodes that store it. Nodes are placed on the ring by their *names* (never
// their addresses), so a node can move to new hardware without resharding.
//
// The hash and the virtual-node scheme are fixed and versioned: every node
// of a cluster must compute the same owners for a series, across releases.
// A change to either is a new Version, never an edit of an existing one.
//
// Version 1 ("v1"):
//   - hash(b) = mix64(FNV-1a-64(b)), where mix64 is the splitmix64/murmur3
//     finalizer (x ^= x>>30; x *= 0xbf58476d1ce4e5b9; x ^= x>>27;
//     x *= 0x94d049bb133111eb; x ^= x>>31), which spreads FNV's weak low
//     bits over the whole word;
//   - node N gets VirtualNodes points at hash(N + "#" + decimal(i)) for
//     i in [0, VirtualNodes);
//   - a series' key is its label set's canonical key (metric.Labels.Key:
//     each name and value followed by 0xff, labels sorted by name); its
//     position is hash(key), and its owners are the first Replicas distinct
//     nodes met walking clockwise (increasing positions, wrapping) from the
//     first point at or after that position. Ties between equal points are
//     broken by node name.
package ring

import (
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/opskit/opskit/internal/metric"
)

// Version names the hash and placement scheme implemented here.
const Version = "v1"

// DefaultVirtualNodes is the number of points each node gets on the ring:
// enough for a max/mean load near 1.1 with 20 nodes.
const DefaultVirtualNodes = 256

// Node is one member of the ring.
type Node struct {
	Name string // stable identity, hashed onto the ring
	Addr string // where to reach it (HOST:PORT); not hashed
}

// Ring is an immutable consistent-hash ring; build a new one when the
// membership changes. It is safe for concurrent use.
type Ring struct {
	nodes  []Node // sorted by name
	points []point
	vnodes int
}

type point struct {
	hash uint64
	node int32 // index into nodes
}

// New builds a ring of nodes with vnodes virtual nodes each (0 means
// DefaultVirtualNodes). Names must be unique and non-empty.
func New(nodes []Node, vnodes int) (*Ring, error) {
	if vnodes <= 0 {
		vnodes = DefaultVirtualNodes
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for i, n := range sorted {
		if n.Name == "" {
			return nil, errors.New("ring: a node without a name")
		}
		if i > 0 && sorted[i-1].Name == n.Name {
			return nil, fmt.Errorf("ring: node %q listed twice", n.Name)
		}
	}
	r := &Ring{nodes: sorted, vnodes: vnodes, points: make([]point, 0, len(sorted)*vnodes)}
	var buf []byte
	for i, n := range sorted {
		for v := 0; v < vnodes; v++ {
			buf = append(append(append(buf[:0], n.Name...), '#'), strconv.Itoa(v)...)
			r.points = append(r.points, point{hash: Hash(buf), node: int32(i)})
		}
	}
	sort.Slice(r.points, func(i, j int) bool {
		a, b := r.points[i], r.points[j]
		if a.hash != b.hash {
			return a.hash < b.hash
		}
		return a.node < b.node // nodes are sorted by name
	})
	return r, nil
}

// Hash is the ring's hash function (version v1).
func Hash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Nodes returns the members sorted by name.
func (r *Ring) Nodes() []Node { return slices.Clone(r.nodes) }

// Len is the number of members.
func (r *Ring) Len() int { return len(r.nodes) }

// Node returns the member called name.
func (r *Ring) Node(name string) (Node, bool) {
	i, ok := slices.BinarySearchFunc(r.nodes, name, func(n Node, name string) int { return strings.Compare(n.Name, name) })
	if !ok {
		return Node{}, false
	}
	return r.nodes[i], true
}

// Owners appends to dst the names of the n distinct nodes that own the
// series with this canonical key (metric.Labels.AppendKey), primary first.
// With fewer than n members, every member is returned.
func (r *Ring) Owners(dst []string, key []byte, n int) []string {
	if len(r.points) == 0 || n <= 0 {
		return dst
	}
	n = min(n, len(r.nodes))
	h := Hash(key)
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	start := len(dst)
	for k := 0; k < len(r.points) && len(dst)-start < n; k++ {
		p := r.points[(i+k)%len(r.points)]
		name := r.nodes[p.node].Name
		if !slices.Contains(dst[start:], name) {
			dst = append(dst, name)
		}
	}
	return dst
}

// OwnersOf is Owners for a label set.
func (r *Ring) OwnersOf(ls metric.Labels, n int) []string {
	return r.Owners(nil, ls.AppendKey(nil), n)
}

// Primary returns the first owner of the key ("" on an empty ring).
func (r *Ring) Primary(key []byte) string {
	o := r.Owners(make([]string, 0, 1), key, 1)
	if len(o) == 0 {
		return ""
	}
	return o[0]
}

var spacedEquals = regexp.MustCompile(`\s*=\s*`)

// ParseNodes parses a node list "name=host:port,name2=host:port" (commas or
// white space between entries, # comments to the end of a line, as in a
// peers file).
func ParseNodes(s string) ([]Node, error) {
	var out []Node
	seen := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = spacedEquals.ReplaceAllString(line, "=")
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			name, addr, ok := strings.Cut(f, "=")
			name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
			if !ok || name == "" || addr == "" {
				return nil, fmt.Errorf("node %q: want name=host:port", f)
			}
			if strings.ContainsAny(name, "#=/") {
				return nil, fmt.Errorf("node name %q: must not contain '#', '=' or '/'", name)
			}
			if seen[name] {
				return nil, fmt.Errorf("node %q listed twice", name)
			}
			seen[name] = true
			out = append(out, Node{Name: name, Addr: addr})
		}
	}
	return out, nil
}
