package strategy

import (
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/metric"
)

const sample = `strategies:
- name: cpu_idle_low
  metric: cpu.idle
  condition: all(#3) < 10
  for: 5m
  priority: 1
  endpoints: [web-1]
  groups: [db]
  labels: {team: ops}
  annotations:
    summary: 'idle {{ $value }} on {{ $labels.endpoint }}'
  runbook: https://runbooks.example/cpu
- name: disk_free
  metric: df.bytes.free.percent
  tags: ['mount=~/|/var', 'fstype!=tmpfs']
  endpoint_pattern: 'web-.*'
  condition: max(#2) < 5
  nodata: 3m
`

func series(name, endpoint string, tags ...string) metric.Labels {
	pairs := []metric.Label{{Name: metric.NameLabel, Value: name}, {Name: metric.EndpointLabel, Value: endpoint}}
	for i := 0; i+1 < len(tags); i += 2 {
		pairs = append(pairs, metric.Label{Name: tags[i], Value: tags[i+1]})
	}
	return metric.New(pairs...)
}

func TestParseAndMatch(t *testing.T) {
	set, err := Parse("s.yaml", []byte(sample), Groups{"db": {"db-1", "db-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.List) != 2 || set.MaxWindow() != 3 {
		t.Fatalf("parsed %d strategies, max window %d", len(set.List), set.MaxWindow())
	}
	cpu := set.ForMetric("cpu.idle")
	if len(cpu) != 1 || cpu[0].Priority != 1 || cpu[0].Severity != "critical" || cpu[0].For.Minutes() != 5 {
		t.Fatalf("cpu strategy = %+v", cpu)
	}
	disk := set.ForMetric("df.bytes.free.percent")[0]
	if disk.Priority != DefaultPriority || disk.Severity != "warning" || disk.Nodata.Minutes() != 3 {
		t.Fatalf("disk strategy = %+v", disk)
	}
	cases := []struct {
		st   *Strategy
		ls   metric.Labels
		want bool
	}{
		{cpu[0], series("cpu.idle", "web-1"), true},
		{cpu[0], series("cpu.idle", "db-2"), true}, // by group
		{cpu[0], series("cpu.idle", "web-2"), false},
		{disk, series("df.bytes.free.percent", "web-9", "mount", "/var", "fstype", "ext4"), true},
		{disk, series("df.bytes.free.percent", "web-9", "mount", "/var", "fstype", "tmpfs"), false},
		{disk, series("df.bytes.free.percent", "web-9", "mount", "/boot"), false},
		{disk, series("df.bytes.free.percent", "xweb-9", "mount", "/"), false}, // anchored pattern
	}
	for _, c := range cases {
		if got := c.st.Matches(c.ls); got != c.want {
			t.Errorf("%s matches %v = %v; want %v", c.st.Name, c.ls, got, c.want)
		}
	}
	anns := cpu[0].Render(3.5, map[string]string{"endpoint": "web-1"})
	if anns["summary"] != "idle 3.5 on web-1" || anns["condition"] != "all(#3) < 10" || anns["runbook_url"] != "https://runbooks.example/cpu" {
		t.Fatalf("annotations = %v", anns)
	}
	def := disk.Render(4, map[string]string{"endpoint": "web-9", "metric": "df.bytes.free.percent"})
	if def["summary"] != "web-9 df.bytes.free.percent = 4: disk_free (max(#2) < 5)" {
		t.Fatalf("default summary = %q", def["summary"])
	}
}

func TestParseErrorsSayWhere(t *testing.T) {
	cases := map[string]string{
		"strategies:\n- name: a\n  metric: m\n  condition: all(#3) >\n":                             "strategies[0] (a)",
		"strategies:\n- name: a\n  metric: m\n  condition: all(#3) > 1\n  colour: red\n":            "colour",
		"strategies:\n- name: a\n  condition: all(#3) > 1\n":                                        "metric is missing",
		"strategies:\n- name: 'a b'\n  metric: m\n  condition: all(#3) > 1\n":                       "name",
		"strategies:\n- name: a\n  metric: m\n":                                                     "condition, a nodata",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n- name: a\n  metric: n\n  nodata: 1m\n": "used twice",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  priority: 6\n":                        "priority",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  groups: [x]\n":                        `group "x"`,
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  tags: [mount]\n":                      "tag matcher",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  tags: ['a=~(']\n":                     "matcher",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  for: -1m\n":                           "negative",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  annotations: {x: '{{'}\n":             "annotation x",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  labels: {'a-b': x}\n":                 "label name",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  endpoint_pattern: '('\n":              "endpoint_pattern",
		"strategies:\n- name: a\n  metric: m\n  nodata: 1m\n  flap: {changes: 3}\n":                 "flap",
		"strategies: [1, 2": "s.yaml",
	}
	for in, want := range cases {
		_, err := Parse("s.yaml", []byte(in), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v; want one containing %q", in, err, want)
		}
	}
}

func TestParseMatcher(t *testing.T) {
	for in, want := range map[string]string{"a=b": `a="b"`, "a != b": `a!="b"`, "a=~b.*": `a=~"b.*"`, "a!~b": `a!~"b"`, "a=": `a=""`} {
		m, err := ParseMatcher(in)
		if err != nil || m.String() != want {
			t.Errorf("ParseMatcher(%q) = %v, %v; want %s", in, m, err, want)
		}
	}
}

func TestExamplesLoad(t *testing.T) {
	set, err := Load("../examples/strategies.yaml", "../examples/groups.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.List) != 4 || set.List[1].Expr == nil || !set.List[1].Matches(series("df.bytes.used", "web-2", "mount", "/")) {
		t.Fatalf("examples: %+v", set.List)
	}
}
