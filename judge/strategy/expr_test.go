package strategy

import (
	"math"
	"strings"
	"testing"
)

func TestExpr(t *testing.T) {
	cases := []struct {
		text    string
		metrics string
		vals    []float64
		value   float64
		held    bool
		ok      bool
	}{
		{"disk.used / disk.total > 0.9", "disk.used,disk.total", []float64{95, 100}, 0.95, true, true},
		{"disk.used / disk.total > 0.9", "disk.used,disk.total", []float64{5, 100}, 0.05, false, true},
		{"disk.used / disk.total > 0.9", "disk.used,disk.total", []float64{5, 0}, 0, false, false},
		{"(a + b) * 2 - c >= 10", "a,b,c", []float64{1, 2, -4}, 10, true, true},
		{"a - b - c == 0", "a,b,c", []float64{3, 2, 1}, 0, true, true}, // left associative
		{"a / b / c < 1", "a,b,c", []float64{8, 2, 2}, 2, false, true},
		{"-a + 2 * a_b.c != 1", "a,a_b.c", []float64{1, 1}, 1, false, true},
		{"100 * x.used / (x.used + x.free) > 80", "x.used,x.free", []float64{9, 1}, 90, true, true},
	}
	for _, c := range cases {
		x, err := ParseExpr(c.text)
		if err != nil {
			t.Fatalf("%s: %v", c.text, err)
		}
		if strings.Join(x.Metrics, ",") != c.metrics {
			t.Errorf("%s: metrics %v", c.text, x.Metrics)
		}
		v, held, ok := x.Eval(c.vals)
		if held != c.held || ok != c.ok || math.Abs(v-c.value) > 1e-9 {
			t.Errorf("%s on %v = %v %v %v; want %v %v %v", c.text, c.vals, v, held, ok, c.value, c.held, c.ok)
		}
		again, err := ParseExpr(x.String())
		if err != nil || again.String() != x.String() {
			t.Errorf("%s does not round trip: %v", x.String(), err)
		}
	}
	for _, bad := range []string{"a / b", "a / b > x", "(a / b > 1", "a b > 1", "> 1", "1 + 2 > 1", "a + > 1", "a $ b > 1",
		strings.Repeat("(", 100) + "a" + strings.Repeat(")", 100) + " > 1"} {
		if _, err := ParseExpr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExpressionStrategy(t *testing.T) {
	set, err := Parse("s", []byte("strategies:\n- name: disk_full\n  expression: disk.used / disk.total > 0.9\n  tags: ['mount=/']\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.ForMetric("disk.used")) != 1 || len(set.ForMetric("disk.total")) != 1 || set.List[0].Window() != 0 {
		t.Fatalf("index %v", set.byMetric)
	}
	if _, err := Parse("s", []byte("strategies:\n- name: x\n  metric: a\n  expression: a / b > 1\n"), nil); err == nil || !strings.Contains(err.Error(), "alone") {
		t.Fatalf("expression with metric: %v", err)
	}
}

func FuzzParseExpr(f *testing.F) {
	for _, s := range []string{"disk.used / disk.total > 0.9", "(a+b)*-c <= 1", "a/(b-b) == 0", "((a)) != 2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		x, err := ParseExpr(s)
		if err != nil {
			return
		}
		again, err := ParseExpr(x.String())
		if err != nil || len(again.Metrics) != len(x.Metrics) {
			t.Fatalf("%q prints %q which parses as %v, %v", s, x.String(), again, err)
		}
		x.Eval(make([]float64, len(x.Metrics)))
	})
}
