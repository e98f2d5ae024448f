package agent

import (
	"strings"
	"testing"
)

func FuzzParseHeld(f *testing.F) {
	f.Add("web/prod/app:3\nother/x/y")
	f.Add("a/b/c:-5")
	f.Add(":::")
	f.Fuzz(func(t *testing.T, in string) {
		held, err := parseHeld(strings.Split(in, "\n"))
		if err != nil {
			return
		}
		for name := range held {
			if strings.Count(name, "/") != 2 || strings.Contains(name, ":") {
				t.Fatalf("accepted namespace %q", name)
			}
		}
	})
}
