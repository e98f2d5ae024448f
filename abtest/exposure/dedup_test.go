package exposure

import (
	"fmt"
	"testing"
)

func TestDedup(t *testing.T) {
	d := NewDedup(1000)
	if !d.First("u1", "e") || d.First("u1", "e") {
		t.Fatal("second exposure of u1 in e not deduplicated")
	}
	if !d.First("u1", "f") || !d.First("u2", "e") {
		t.Fatal("different pairs treated as the same")
	}
	// Units and experiments do not run together: ("ab","c") != ("a","bc").
	if !d.First("ab", "c") || !d.First("a", "bc") {
		t.Fatal("pair boundaries ignored")
	}
}

func TestDedupIsBounded(t *testing.T) {
	d := NewDedup(6400)
	for i := range 100_000 {
		d.First(fmt.Sprint("u", i), "e")
	}
	total := 0
	for i := range d.shards {
		total += len(d.shards[i].cur) + len(d.shards[i].old)
	}
	if total > 2*6400+2*shards {
		t.Fatalf("%d pairs remembered, bound %d", total, 2*6400)
	}
	// The most recent pairs are still remembered.
	if d.First("u99999", "e") {
		t.Fatal("recent pair forgotten")
	}
}
