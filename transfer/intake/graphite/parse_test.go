package graphite

import (
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

const now = 1_700_000_000

func lbl(pairs ...string) metric.Labels {
	var ls []metric.Label
	for i := 0; i < len(pairs); i += 2 {
		ls = append(ls, metric.Label{Name: pairs[i], Value: pairs[i+1]})
	}
	return metric.New(ls...)
}

func TestParseLine(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		reason string
		labels metric.Labels
		time   int64
		value  float64
	}{
		{name: "plain", line: "servers.web1.cpu.idle 93.5 1699999999", labels: lbl("__name__", "servers.web1.cpu.idle"), time: 1699999999, value: 93.5},
		{name: "CRLF", line: "a.b 1 1699999999\r", labels: lbl("__name__", "a.b"), time: 1699999999, value: 1},
		{name: "tabs and runs of spaces", line: "  a.b\t\t2   1699999999  ", labels: lbl("__name__", "a.b"), time: 1699999999, value: 2},
		{name: "timestamp -1 means now", line: "a.b 3 -1", labels: lbl("__name__", "a.b"), time: now, value: 3},
		{name: "missing timestamp means now", line: "a.b 3", labels: lbl("__name__", "a.b"), time: now, value: 3},
		{name: "fractional timestamp truncated", line: "a.b 3 1699999999.75", labels: lbl("__name__", "a.b"), time: 1699999999, value: 3},
		{name: "scientific value", line: "a.b -1.5e3 1699999999", labels: lbl("__name__", "a.b"), time: 1699999999, value: -1500},
		{name: "huge value", line: "a.b 1e308 1699999999", labels: lbl("__name__", "a.b"), time: 1699999999, value: 1e308},
		{
			name:   "tagged",
			line:   "disk.used;host=web1;mount=/var 42 1699999999",
			labels: lbl("__name__", "disk.used", "host", "web1", "mount", "/var"),
			time:   1699999999, value: 42,
		},
		{
			name:   "tag value holding = and ~ after the first byte",
			line:   "m;expr=a=b~c 1 1699999999",
			labels: lbl("__name__", "m", "expr", "a=b~c"),
			time:   1699999999, value: 1,
		},
		{name: "unicode", line: "温度.机房;城市=北京 1 1699999999", labels: lbl("__name__", "温度.机房", "城市", "北京"), time: 1699999999, value: 1},
		{name: "one field", line: "a.b", reason: intake.ReasonBadLine},
		{name: "four fields", line: "a.b 1 2 3", reason: intake.ReasonBadLine},
		{name: "value not a number", line: "a.b x 1699999999", reason: intake.ReasonBadValue},
		{name: "NaN value", line: "a.b nan 1699999999", reason: intake.ReasonBadValue},
		{name: "Inf value", line: "a.b -Inf 1699999999", reason: intake.ReasonBadValue},
		{name: "overflowing value", line: "a.b 1e999 1699999999", reason: intake.ReasonBadValue},
		{name: "bad timestamp", line: "a.b 1 yesterday", reason: intake.ReasonBadTimestamp},
		{name: "negative timestamp", line: "a.b 1 -5", reason: intake.ReasonBadTimestamp},
		{name: "zero timestamp", line: "a.b 1 0", reason: intake.ReasonBadTimestamp},
		{name: "empty name before tags", line: ";a=b 1 1699999999", reason: intake.ReasonEmptyMetric},
		{name: "name of only tildes", line: "~~ 1 1699999999", reason: intake.ReasonEmptyMetric},
		{name: "tag without value", line: "m;a= 1 1699999999", reason: intake.ReasonBadTags},
		{name: "tag without =", line: "m;a 1 1699999999", reason: intake.ReasonBadTags},
		{name: "empty tag", line: "m;;a=b 1 1699999999", reason: intake.ReasonBadTags},
		{name: "tag name with !", line: "m;a!=b 1 1699999999", reason: intake.ReasonBadTags},
		{name: "tag name with ^", line: "m;a^b=c 1 1699999999", reason: intake.ReasonBadTags},
		{name: "tag value starting with ~", line: "m;a=~b 1 1699999999", reason: intake.ReasonBadTags},
		{name: "tag named __name__", line: "m;__name__=x 1 1699999999", reason: intake.ReasonBadTags},
		{name: "repeated tag", line: "m;a=1;a=2 1 1699999999", reason: intake.ReasonDuplicateLabel},
		{name: "name over its limit", line: strings.Repeat("n", 300) + " 1 1699999999", reason: intake.ReasonNameTooLong},
		{name: "invalid UTF-8", line: "m\xff\xfe 1 1699999999", reason: intake.ReasonBadLabel},
		{name: "control character", line: "m\x01x 1 1699999999", reason: intake.ReasonBadLabel},
		{name: "too many tags", line: "m" + strings.Repeat(";t=v", 1) + manyTags(70) + " 1 1699999999", reason: intake.ReasonTooManyLabels},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(intake.Limits{}, 0)
			// Twice: the second parse comes from the cache and must agree.
			for round := range 2 {
				pt, rej := p.ParseLine([]byte(tc.line), now)
				if tc.reason != "" {
					if rej == nil || rej.Reason != tc.reason {
						t.Fatalf("round %d: got %+v %v, want reject %q", round, pt, rej, tc.reason)
					}
					continue
				}
				if rej != nil {
					t.Fatalf("round %d: rejected: %v", round, rej)
				}
				if !pt.Labels.Equal(tc.labels) || pt.Time != tc.time || pt.Value != tc.value || pt.Step != 0 || pt.Type != metric.Gauge {
					t.Fatalf("round %d: got %v %d %v, want %v %d %v", round, pt.Labels, pt.Time, pt.Value, tc.labels, tc.time, tc.value)
				}
			}
		})
	}
}

func manyTags(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(";t")
		b.WriteString(strings.Repeat("x", i+1))
		b.WriteString("=v")
	}
	return b.String()
}

func TestParserCacheBound(t *testing.T) {
	p := NewParser(intake.Limits{}, 4)
	for i := range 10 {
		line := "m" + strings.Repeat("x", i) + " 1 1699999999"
		if _, rej := p.ParseLine([]byte(line), now); rej != nil {
			t.Fatal(rej)
		}
		if len(p.cache) > 4 {
			t.Fatalf("cache holds %d paths, bound is 4", len(p.cache))
		}
	}
}

func TestParseLineAllocs(t *testing.T) {
	p := NewParser(intake.Limits{}, 0)
	line := []byte("servers.web1.cpu.idle;dc=bj 93.5 1699999999")
	if _, rej := p.ParseLine(line, now); rej != nil {
		t.Fatal(rej)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, rej := p.ParseLine(line, now); rej != nil {
			t.Fatal(rej)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per repeated line, want 0", allocs)
	}
}

func TestParseBody(t *testing.T) {
	body := "a.b 1 1699999999\n\nbad line here x\r\nc.d;k=v 2 -1\r\n   \nnovalue\ne.f 3 1699999999"
	pts, lines, rejected := ParseBody([]byte(body), now, intake.Limits{})
	if len(lines) != 3 || lines[0] != 1 || lines[1] != 4 || lines[2] != 7 {
		t.Fatalf("line numbers %v, want [1 4 7]", lines)
	}
	if len(pts) != 3 {
		t.Fatalf("accepted %d points, want 3: %+v", len(pts), pts)
	}
	if pts[1].Time != now || pts[1].Labels.Get("k") != "v" {
		t.Fatalf("second point %+v", pts[1])
	}
	if len(rejected) != 2 || rejected[0].Index != 3 || rejected[1].Index != 6 {
		t.Fatalf("rejected %+v, want lines 3 and 6", rejected)
	}
}
