package lru

import (
	"fmt"
	"testing"
)

func keys[V any](t *Table[V]) []string {
	var out []string
	t.Range(func(k string, _ *V) bool { out = append(out, k); return true })
	return out
}

func TestOrderAndReuse(t *testing.T) {
	tab := New[int](3)
	for i, k := range []string{"a", "b", "c"} {
		*tab.Insert(k) = i
	}
	if tab.Insert("d") != nil {
		t.Fatal("insert into a full table succeeded")
	}
	if v, ok := tab.Get("a"); !ok || *v != 0 {
		t.Fatalf("Get(a) = %v %v", v, ok)
	}
	if got := fmt.Sprint(keys(tab)); got != "[a c b]" {
		t.Fatalf("order after Get(a) = %s", got)
	}
	if k, _, _ := tab.Oldest(); k != "b" {
		t.Fatalf("oldest = %s", k)
	}
	tab.RemoveOldest()
	*tab.Insert("d") = 3
	if got := fmt.Sprint(keys(tab)); got != "[d a c]" {
		t.Fatalf("order after evict and insert = %s", got)
	}
	if tab.used != 3 {
		t.Fatalf("slots = %d, want the freed slot reused", tab.used)
	}
	tab.Remove("a")
	tab.Remove("zz")
	if got := fmt.Sprint(keys(tab)); got != "[d c]" || tab.Len() != 2 {
		t.Fatalf("after Remove = %s len %d", got, tab.Len())
	}
	if _, ok := tab.Peek("a"); ok {
		t.Fatal("removed key still found")
	}
	tab.RemoveOldest()
	tab.RemoveOldest()
	tab.RemoveOldest()
	if _, _, ok := tab.Oldest(); ok || tab.Len() != 0 {
		t.Fatal("table not empty")
	}
}

func TestValuesStayPutAsTheTableGrows(t *testing.T) {
	tab := New[int](5000)
	first := tab.Insert("k0")
	*first = 42
	for i := 1; i < 5000; i++ {
		*tab.Insert(fmt.Sprint("k", i)) = i
	}
	if *first != 42 {
		t.Fatalf("value moved: %d", *first)
	}
	if v, _ := tab.Peek("k4999"); *v != 4999 {
		t.Fatalf("k4999 = %d", *v)
	}
}
