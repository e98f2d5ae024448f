package plan

import (
	"fmt"
	"reflect"
	"testing"
)

func TestAncestors(t *testing.T) {
	hosts := []string{"a", "b", "c", "d", "e"}
	tests := []struct {
		topology string
		fanout   int
		want     [][]string
	}{
		{"tree", 2, [][]string{{""}, {""}, {"a", ""}, {"a", ""}, {"b", ""}}},
		{"", 0, [][]string{{""}, {""}, {"a", ""}, {"a", ""}, {"b", ""}}},
		{"tree", 1, [][]string{{""}, {"a", ""}, {"b", "a", ""}, {"c", "b", "a", ""}, {"d", "c", "b", "a", ""}}},
		{"tree", 3, [][]string{{""}, {""}, {""}, {"a", ""}, {"a", ""}}},
		{"chain", 2, [][]string{{""}, {"a", ""}, {"b", "a", ""}, {"c", "b", "a", ""}, {"d", "c", "b", "a", ""}}},
		{"star", 2, [][]string{{""}, {""}, {""}, {""}, {""}}},
	}
	for _, tt := range tests {
		got, err := Ancestors(hosts, tt.topology, tt.fanout)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s/%d = %v, %v; want %v", tt.topology, tt.fanout, got, err, tt.want)
		}
	}
	if _, err := Ancestors(hosts, "mesh", 2); err == nil {
		t.Error("unknown topology accepted")
	}
}

func TestTreeDepthIsLogarithmic(t *testing.T) {
	hosts := make([]string, 30)
	for i := range hosts {
		hosts[i] = string(rune('A' + i))
	}
	got, _ := Ancestors(hosts, "tree", 2)
	deepest := 0
	for _, a := range got {
		deepest = max(deepest, len(a))
	}
	if deepest != 4 { // 30 hosts under a root in a binary heap: levels 1..4
		t.Errorf("deepest ancestor list %d, want 4", deepest)
	}
}

func TestStripesSmallAndOtherLayoutsHaveOneStripe(t *testing.T) {
	hosts := []string{"a", "b", "c", "d", "e"}
	tests := []struct {
		hosts    []string
		topology string
		fanout   int
	}{
		{hosts, "tree1", 2},
		{hosts, "chain", 2},
		{hosts, "star", 2},
		{hosts, "tree", 1}, // a fan-out of 1 cannot keep the inner nodes apart
		{hosts[:2], "tree", 2},
	}
	for _, tt := range tests {
		got, err := Stripes(tt.hosts, tt.topology, tt.fanout)
		want, _ := Ancestors(tt.hosts, tt.topology, tt.fanout)
		if err != nil || len(got) != len(tt.hosts) {
			t.Fatalf("%s/%d: %v, %v", tt.topology, tt.fanout, got, err)
		}
		for i := range got {
			if len(got[i]) != 1 || !reflect.DeepEqual(got[i][0], want[i]) {
				t.Errorf("%s/%d host %d: %v, want one stripe %v", tt.topology, tt.fanout, i, got[i], want[i])
			}
		}
	}
	if _, err := Stripes(hosts, "mesh", 2); err == nil {
		t.Error("unknown topology accepted")
	}
}

func TestStripesSmallTree(t *testing.T) {
	got, err := Stripes([]string{"a", "b", "c", "d", "e"}, "tree", 2)
	if err != nil {
		t.Fatal(err)
	}
	// Stripe 0: a under the server, then c, e, b, d as a heap under a.
	// Stripe 1: b under the server, then d, a, c, e as a heap under b.
	want := [][][]string{
		{{""}, {"b", ""}},
		{{"c", "a", ""}, {""}},
		{{"a", ""}, {"d", "b", ""}},
		{{"c", "a", ""}, {"b", ""}},
		{{"a", ""}, {"d", "b", ""}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// TestStripesKeepInnerNodesApart checks the striped tree's promises for
// many sizes and fan-outs: the server has one child per stripe, every host
// has children in at most one stripe, every host reaches the server in
// every stripe, and the depth stays logarithmic.
func TestStripesKeepInnerNodesApart(t *testing.T) {
	for _, fanout := range []int{2, 3, 4} {
		for n := 3; n <= 70; n++ {
			hosts := make([]string, n)
			for i := range hosts {
				hosts[i] = fmt.Sprintf("h%d", i)
			}
			got, err := Stripes(hosts, "tree", fanout)
			if err != nil {
				t.Fatal(err)
			}
			innerIn := map[string]map[int]bool{}
			for s := 0; s < TreeStripes; s++ {
				children := map[string]int{}
				for i, h := range hosts {
					if len(got[i]) != TreeStripes {
						t.Fatalf("n=%d fanout=%d host %s: %d stripes", n, fanout, h, len(got[i]))
					}
					chain := got[i][s]
					// Reachable: a finite chain of distinct hosts ending at the server.
					seen := map[string]bool{h: true}
					for k, anc := range chain {
						if (anc == Server) != (k == len(chain)-1) || seen[anc] {
							t.Fatalf("n=%d fanout=%d stripe %d host %s: ancestors %v", n, fanout, s, h, chain)
						}
						seen[anc] = true
					}
					// Parent's ancestors are the rest of the chain.
					if len(chain) > 1 {
						p := chain[0]
						var pi int
						fmt.Sscanf(p, "h%d", &pi)
						if !reflect.DeepEqual(got[pi][s], chain[1:]) {
							t.Fatalf("n=%d stripe %d: %s's ancestors %v, its parent's %v", n, s, h, chain, got[pi][s])
						}
					}
					children[chain[0]]++
					if bound := depthBound(n, fanout); len(chain) > bound {
						t.Errorf("n=%d fanout=%d stripe %d host %s: depth %d over %d", n, fanout, s, h, len(chain), bound)
					}
				}
				if children[Server] != 1 {
					t.Errorf("n=%d fanout=%d stripe %d: the server has %d children, want 1", n, fanout, s, children[Server])
				}
				for p, c := range children {
					if p == Server {
						continue
					}
					if c > fanout {
						t.Errorf("n=%d stripe %d: %s has %d children", n, s, p, c)
					}
					if innerIn[p] == nil {
						innerIn[p] = map[int]bool{}
					}
					innerIn[p][s] = true
				}
			}
			for h, stripes := range innerIn {
				if len(stripes) > 1 {
					t.Errorf("n=%d fanout=%d: %s has children in stripes %v", n, fanout, h, stripes)
				}
			}
		}
	}
}

// depthBound is the deepest ancestor list a striped tree of n hosts may
// give: the server, then a heap of n nodes with fanout children each.
func depthBound(n, fanout int) int {
	levels, width, placed := 0, 1, 0
	for placed < n {
		placed += width
		width *= fanout
		levels++
	}
	return levels // the deepest node has levels-1 hosts above it, then the server
}
