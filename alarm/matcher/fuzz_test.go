package matcher

import "testing"

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives a Format/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{a="b"}`, `a=b,c!~"d|e"`, `{"x.y"=~".*"}`, `a="\"\\\n"`, `{}`, `a=`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := Parse(in)
		if err != nil {
			return
		}
		out := Format(ms)
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok but its Format %q does not parse: %v", in, out, err)
		}
		if len(again) != len(ms) {
			t.Fatalf("round trip of %q: %d matchers, then %d", in, len(ms), len(again))
		}
		for i := range ms {
			if again[i].Name != ms[i].Name || again[i].Type != ms[i].Type || again[i].Value != ms[i].Value {
				t.Fatalf("round trip of %q: %v became %v", in, ms[i], again[i])
			}
		}
	})
}
