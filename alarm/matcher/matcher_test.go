package matcher

import (
	"errors"
	"testing"

	"github.com/opskit/opskit/internal/metric"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want string // Format of the result
	}{
		{``, `{}`},
		{`{}`, `{}`},
		{`alertname=Disk`, `{alertname="Disk"}`},
		{`{alertname="Disk"}`, `{alertname="Disk"}`},
		{` { a = "x" , b!="y", c=~"w.*" ,d!~ "z|q" } `, `{a="x", b!="y", c=~"w.*", d!~"z|q"}`},
		{`a=x,b=y`, `{a="x", b="y"}`},
		{`a=x y ,b=`, `{a="x y", b=""}`},
		{`{a="x,y}"}`, `{a="x,y}"}`},
		{`a="say \"hi\"\\\n"`, `{a="say \"hi\"\\\n"}`},
		{`{"service.name"="api"}`, `{"service.name"="api"}`},
		{`job:rate=1`, `{"job:rate"="1"}`},
		{`{a=b,}`, `{a="b"}`},
		{`a="δ"`, `{a="δ"}`},
	}
	for _, tt := range tests {
		ms, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := Format(ms); got != tt.want {
			t.Errorf("Parse(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		`{a="b"`, `a`, `=b`, `a=="b"`, `a="b`, `a="b\x"`, `{a="b"} x`, `a=~"("`, `a=b"c"`,
		`1a=b`, `{a="b" c="d"}`, `""="x"`, `a="b` + "\xff" + `"`,
	} {
		if ms, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", in, Format(ms))
		} else if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) error %v does not wrap ErrSyntax", in, err)
		}
	}
}

func TestMatches(t *testing.T) {
	ms, err := Parse(`{severity=~"warn|crit", instance!="web01", absent=""}`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"severity": "crit", "instance": "web02"}, true},
		{map[string]string{"severity": "critical", "instance": "web02"}, false}, // anchored
		{map[string]string{"severity": "warn", "instance": "web01"}, false},
		{map[string]string{"severity": "warn", "absent": "x"}, false},
	}
	for _, tt := range tests {
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(tt.labels[m.Name])
		}
		if ok != tt.want {
			t.Errorf("%v: got %v, want %v", tt.labels, ok, tt.want)
		}
	}
}

func TestParseOne(t *testing.T) {
	m, err := ParseOne(`team!=ops`)
	if err != nil || m.Type != metric.MatchNotEqual || m.Name != "team" || m.Value != "ops" {
		t.Fatalf("ParseOne = %v, %v", m, err)
	}
	if _, err := ParseOne(`a=b,c=d`); err == nil {
		t.Fatal("two matchers accepted by ParseOne")
	}
}
