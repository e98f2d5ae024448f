package logmetrics

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opskit/opskit/collector/tail"
)

type sinkhole struct{ n int }

func (s *sinkhole) Emit(context.Context, *tail.Event) error { s.n++; return nil }
func (s *sinkhole) Flush(context.Context) error             { return nil }

func TestCountsSumsAndAverages(t *testing.T) {
	in := &tail.Input{Name: "web", Metrics: []tail.LineMetric{
		{Name: "errors", Pattern: `ERROR`},
		{Name: "latency", Pattern: `took (?P<ms>\d+)ms`, Value: "ms", Aggregate: "avg"},
		{Name: "bytes", Pattern: `sent (\d+) bytes`, Value: "1"},
	}}
	other := &tail.Input{Name: "quiet"}
	next := &sinkhole{}
	c, err := New([]*tail.Input{in, other}, next)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ path, line string }{
		{"/a", "ERROR took 10ms sent 100 bytes"},
		{"/a", "INFO took 30ms"},
		{"/b", "ERROR disk full"},
		{"/a", "sent 5 bytes"},
	} {
		c.Emit(context.Background(), &tail.Event{Input: in, Path: l.path, Line: []byte(l.line)})
	}
	c.Emit(context.Background(), &tail.Event{Input: other, Path: "/q", Line: []byte("ERROR")})
	if next.n != 5 {
		t.Fatalf("%d events passed on", next.n)
	}
	got := map[string]float64{}
	for _, p := range c.Points(time.Unix(100, 0), time.Minute) {
		got[fmt.Sprintf("%s %s %s", p.Labels.Name(), p.Labels.Get("path"), p.Type)] = p.Value
		if p.Time != 100 || p.Step != 60 || p.Labels.Get("input") != "web" {
			t.Errorf("point %+v", p)
		}
	}
	want := map[string]float64{
		"log.errors.count /a COUNTER": 1, "log.errors.count /b COUNTER": 1,
		"log.latency.count /a COUNTER": 2, "log.latency.avg /a GAUGE": 20,
		"log.bytes.count /a COUNTER": 2, "log.bytes.sum /a COUNTER": 105,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("points\n%v\nwant\n%v", got, want)
	}
	// Next interval: totals carry on, the average starts over.
	c.Emit(context.Background(), &tail.Event{Input: in, Path: "/a", Line: []byte("ERROR")})
	var names []string
	for _, p := range c.Points(time.Unix(160, 0), time.Minute) {
		if p.Labels.Name() == "log.errors.count" && p.Labels.Get("path") == "/a" && p.Value != 2 {
			t.Errorf("running count %v", p.Value)
		}
		names = append(names, p.Labels.Name())
	}
	if slices.Contains(names, "log.latency.avg") {
		t.Error("an average reported for an interval without values")
	}
}

func TestRuleErrors(t *testing.T) {
	for _, m := range []tail.LineMetric{
		{Name: "", Pattern: "x"},
		{Name: "bad name!", Pattern: "x"},
		{Name: "n", Pattern: "("},
		{Name: "n", Pattern: "x", Aggregate: "max"},
		{Name: "n", Pattern: "(x)", Value: "2"},
		{Name: "n", Pattern: "(x)", Value: "missing"},
	} {
		if _, err := New([]*tail.Input{{Name: "i", Metrics: []tail.LineMetric{m}}}, &sinkhole{}); err == nil {
			t.Errorf("%+v: no error", m)
		}
	}
	if c, err := New([]*tail.Input{{Name: "i"}}, &sinkhole{}); c != nil || err != nil {
		t.Errorf("no rules: %v %v", c, err)
	}
}
