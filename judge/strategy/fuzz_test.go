package strategy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseCondition: the condition parser never panics, and what it
// accepts prints back to a condition that parses to the same thing.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"all(#3) > 90", "lookup(#2,3) <= 1", "stddev(#10) = 3", "c_avg_rate(#3,1d) > 20",
		"happen(#5,2) != 0", "pdiff(#1)<-1e300", "diff(#", "max(#2,", ")(", "kdiff(#1,1000) == 0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			return
		}
		again, err := ParseCondition(c.String())
		if err != nil || *again != *c {
			t.Fatalf("%q parsed as %+v prints %q which parses as %+v, %v", s, c, c.String(), again, err)
		}
		if w := c.Window(); w < 1 || w > MaxWindow+1 {
			t.Fatalf("%q: window %d", s, w)
		}
		vs := make([]float64, c.Window())
		c.Eval(vs, 1)
	})
}

// FuzzParse: the strategy file parser never panics on any input.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(sample))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse("fuzz.yaml", data, Groups{"db": {"db-1"}})
		if err != nil {
			return
		}
		for _, st := range set.List {
			if st.Cond == nil && st.Nodata == 0 {
				t.Fatalf("strategy %s has neither condition nor nodata", st.Name)
			}
			st.Render(1, map[string]string{"endpoint": "e"})
		}
	})
}
