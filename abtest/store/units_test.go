package store

import (
	"fmt"
	"testing"
)

// TestUnitDict numbers units in order of appearance, with real hashes and
// with every hash colliding (the names then tell the units apart).
func TestUnitDict(t *testing.T) {
	for _, c := range []struct {
		name string
		hash func(string) uint64
	}{
		{"maphash", nil},
		{"every hash the same", func(string) uint64 { return 7 }},
		{"two hashes", func(s string) uint64 { return uint64(len(s) % 2) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newUnitDict([]string{"a", "bb"})
			if c.hash != nil {
				d = unitDict{hash: c.hash, byHash: map[uint64]uint32{}, collided: map[string]uint32{}}
				for _, n := range []string{"a", "bb"} {
					_, _, slot := d.lookup(n)
					d.add(n, slot)
				}
			}
			add := func(name string) uint32 {
				id, ok, slot := d.lookup(name)
				if !ok {
					id = d.add(name, slot)
				}
				return id
			}
			for i := range 100 {
				if got := add(fmt.Sprint("u", i)); got != uint32(i+2) {
					t.Fatalf("u%d numbered %d, want %d", i, got, i+2)
				}
			}
			for i, name := range []string{"a", "bb", "u0", "u99"} {
				want := []uint32{0, 1, 2, 101}[i]
				if id, ok, _ := d.lookup(name); !ok || id != want {
					t.Fatalf("lookup %s = %d, %v; want %d", name, id, ok, want)
				}
			}
			// A failed append forgets its new units, and only those.
			d.truncate(52)
			if _, ok, _ := d.lookup("u50"); ok {
				t.Fatal("u50 still known after truncate")
			}
			if id, ok, _ := d.lookup("u49"); !ok || id != 51 {
				t.Fatalf("u49 = %d, %v after truncate", id, ok)
			}
			if got := add("u50"); got != 52 {
				t.Fatalf("u50 renumbered %d, want 52", got)
			}
		})
	}
}
