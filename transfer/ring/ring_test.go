package ring

import (
	"fmt"
	"slices"
	"testing"

	"github.com/opskit/opskit/internal/metric"
)

func nodes(names ...string) []Node {
	out := make([]Node, len(names))
	for i, n := range names {
		out[i] = Node{Name: n, Addr: fmt.Sprintf("10.0.0.%d:7120", i+1)}
	}
	return out
}

func series(endpoint string) metric.Labels {
	return metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: endpoint})
}

// TestPinnedAssignments pins version v1 of the hash and the placement: if
// this test fails, every existing cluster would reshard on upgrade. Do not
// update the expectations; add a new Version instead.
func TestPinnedAssignments(t *testing.T) {
	if got := Hash(nil); got != 0xf52a15e9a9b5e89b {
		t.Errorf("Hash(\"\") = %#x", got)
	}
	if got := Hash([]byte("node-1#0")); got != 0xb1ce3759b1b79f1 {
		t.Errorf("Hash(node-1#0) = %#x", got)
	}
	// Addresses do not matter, nor does the order of the list.
	r, err := New([]Node{{"d", "x:1"}, {"b", "y:2"}, {"a", "z:3"}, {"c", "w:4"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		endpoint string
		want     []string
	}{
		{"web-1", []string{"a", "c"}},
		{"web-2", []string{"b", "d"}},
		{"db-1", []string{"d", "a"}},
		{"cache-9", []string{"a", "b"}},
		{"lb-3", []string{"b", "d"}},
	}
	for _, tc := range tests {
		if got := r.OwnersOf(series(tc.endpoint), 2); !slices.Equal(got, tc.want) {
			t.Errorf("owners of %s = %v; want %v", tc.endpoint, got, tc.want)
		}
	}
}

func TestOwnersDistinctAndBounded(t *testing.T) {
	r, _ := New(nodes("n1", "n2", "n3"), 16)
	for i := 0; i < 200; i++ {
		key := series(fmt.Sprint("h", i)).AppendKey(nil)
		for n := 1; n <= 5; n++ {
			got := r.Owners(nil, key, n)
			if len(got) != min(n, 3) {
				t.Fatalf("Owners(n=%d) = %v", n, got)
			}
			if len(got) != len(slices.Compact(slices.Sorted(slices.Values(got)))) {
				t.Fatalf("owners repeat a node: %v", got)
			}
			if got[0] != r.Primary(key) {
				t.Fatalf("primary %s is not the first owner %v", r.Primary(key), got)
			}
		}
	}
	empty, _ := New(nil, 0)
	if got := empty.Owners(nil, []byte("x"), 1); len(got) != 0 || empty.Primary([]byte("x")) != "" {
		t.Fatalf("empty ring owners: %v", got)
	}
}

func TestNewRejectsBadMembership(t *testing.T) {
	for _, ns := range [][]Node{{{Name: ""}}, {{Name: "a"}, {Name: "a"}}} {
		if _, err := New(ns, 0); err == nil {
			t.Errorf("New(%v) accepted", ns)
		}
	}
}

// TestJoinAndLeaveMoveAboutOneNth adds a fifth node to four and checks that
// only series now owned by the newcomer moved, about 1/5 of them; removing a
// node moves only that node's share.
func TestJoinAndLeaveMoveAboutOneNth(t *testing.T) {
	before, _ := New(nodes("a", "b", "c", "d"), 0)
	after, _ := New(nodes("a", "b", "c", "d", "e"), 0)
	const n = 20000
	moved := 0
	for i := 0; i < n; i++ {
		key := series(fmt.Sprint("host-", i)).AppendKey(nil)
		p0, p1 := before.Primary(key), after.Primary(key)
		if p0 != p1 {
			moved++
			if p1 != "e" {
				t.Fatalf("series moved from %s to %s, not to the new node", p0, p1)
			}
		}
	}
	frac := float64(moved) / n
	if frac < 0.15 || frac > 0.25 {
		t.Fatalf("%.3f of series moved on join; want about 1/5", frac)
	}
	// Leave: the same comparison the other way round.
	for i := 0; i < n; i++ {
		key := series(fmt.Sprint("host-", i)).AppendKey(nil)
		if p0, p1 := after.Primary(key), before.Primary(key); p0 != p1 && p0 != "e" {
			t.Fatalf("series of %s moved when e left", p0)
		}
	}
}

func TestBalance(t *testing.T) {
	r, _ := New(nodes("a", "b", "c", "d", "e", "f", "g", "h"), 0)
	load := map[string]int{}
	const n = 80000
	for i := 0; i < n; i++ {
		load[r.Primary(series(fmt.Sprint("host-", i)).AppendKey(nil))]++
	}
	mean := float64(n) / 8
	for name, l := range load {
		if float64(l) > 1.25*mean || float64(l) < 0.75*mean {
			t.Errorf("node %s holds %d series; mean %.0f", name, l, mean)
		}
	}
}

func TestParseNodes(t *testing.T) {
	tests := []struct {
		in      string
		want    []Node
		wantErr bool
	}{
		{"a=h1:1,b=h2:2", []Node{{"a", "h1:1"}, {"b", "h2:2"}}, false},
		{"# peers\na = h1:1\n\nb=h2:2 # second\n", []Node{{"a", "h1:1"}, {"b", "h2:2"}}, false},
		{"", nil, false},
		{"a", nil, true},
		{"a=", nil, true},
		{"=h:1", nil, true},
		{"a=h:1,a=h:2", nil, true},
		{"a#1=h:1", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseNodes(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("ParseNodes(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseNodes(f *testing.F) {
	f.Add("a=h1:1,b=h2:2")
	f.Add("# c\na = h:1 b=h:2\n")
	f.Fuzz(func(t *testing.T, s string) {
		ns, err := ParseNodes(s)
		if err != nil {
			return
		}
		if _, err := New(ns, 4); err != nil {
			t.Fatalf("parsed nodes %v do not make a ring: %v", ns, err)
		}
	})
}

func BenchmarkOwners(b *testing.B) {
	r, _ := New(nodes("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t"), 0)
	key := series("web-123").AppendKey(nil)
	dst := make([]string, 0, 2)
	for b.Loop() {
		dst = r.Owners(dst[:0], key, 2)
	}
}
