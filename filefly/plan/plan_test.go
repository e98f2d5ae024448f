package plan

import (
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
