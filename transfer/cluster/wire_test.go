package cluster

import (
	"math"
	"testing"

	"github.com/opskit/opskit/internal/metric"
)

func testPoints() []metric.Point {
	web := metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: "web-1"}, metric.Label{Name: "dc", Value: "eu"})
	db := metric.New(metric.Label{Name: metric.NameLabel, Value: "net.if.in.bytes"}, metric.Label{Name: metric.EndpointLabel, Value: "db-1"})
	return []metric.Point{
		{Labels: web, Time: 1_700_000_000, Value: 12.5, Step: 60, Type: metric.Gauge},
		{Labels: web, Time: 1_700_000_060, Value: -3, Step: 60, Type: metric.Gauge},
		{Labels: db, Time: 1_700_000_000, Value: 1e12, Step: 10, Type: metric.Counter},
		{Labels: db, Time: -5, Value: math.Inf(1), Step: 0, Type: metric.Derive},
	}
}

func TestBlockRoundTrip(t *testing.T) {
	pts := testPoints()
	var body []byte
	body = AppendFrame(body, EncodeBlock(pts[:2]))
	body = AppendFrame(body, EncodeBlock(pts[2:]))
	body = AppendFrame(body, EncodeBlock(nil))
	got, err := DecodeBody(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pts) {
		t.Fatalf("decoded %d points; want %d", len(got), len(pts))
	}
	for i := range pts {
		w, g := pts[i], got[i]
		if !w.Labels.Equal(g.Labels) || w.Time != g.Time || w.Value != g.Value || w.Step != g.Step || w.Type != g.Type {
			t.Errorf("point %d = %+v; want %+v", i, g, w)
		}
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	good := EncodeBlock(testPoints())
	unsorted := EncodeBlock([]metric.Point{{Labels: metric.Labels{{Name: "b", Value: "1"}, {Name: "a", Value: "2"}}, Time: 1}})
	badType := EncodeBlock([]metric.Point{{Labels: metric.Labels{{Name: "a", Value: "1"}}, Time: 1, Type: 9}})
	tests := []struct {
		name string
		body []byte
	}{
		{"frame longer than body", AppendFrame(nil, good)[:len(good)/2]},
		{"not snappy", AppendFrame(nil, []byte("hello world"))},
		{"unsorted labels", AppendFrame(nil, unsorted)},
		{"unknown counter type", AppendFrame(nil, badType)},
		{"bad frame length", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for _, tc := range tests {
		if _, err := DecodeBody(nil, tc.body); err == nil {
			t.Errorf("%s: decoded without error", tc.name)
		}
	}
}

func TestToFalcon(t *testing.T) {
	got := ToFalcon(testPoints()[0])
	want := FalconItem{Endpoint: "web-1", Metric: "cpu.idle", Tags: "dc=eu", Timestamp: 1_700_000_000, Step: 60, Value: 12.5, CounterType: "GAUGE"}
	if got != want {
		t.Fatalf("ToFalcon = %+v; want %+v", got, want)
	}
	// A Graphite point has no step; judge's intake requires one.
	graphite := testPoints()[0]
	graphite.Step = 0
	if got := ToFalcon(graphite); got.Step != defaultJudgeStep {
		t.Fatalf("ToFalcon of a stepless point: step %d; want %d", got.Step, defaultJudgeStep)
	}
}

func FuzzDecodeBody(f *testing.F) {
	f.Add(AppendFrame(nil, EncodeBlock(testPoints())))
	f.Add(AppendFrame(AppendFrame(nil, EncodeBlock(nil)), EncodeBlock(testPoints()[:1])))
	f.Add([]byte{0x05, 0x01, 0x02})
	f.Fuzz(func(t *testing.T, body []byte) {
		pts, err := DecodeBody(nil, body)
		if err != nil {
			return
		}
		// What decodes re-encodes to points that decode the same.
		again, err := DecodeBody(nil, AppendFrame(nil, EncodeBlock(pts)))
		if err != nil || len(again) != len(pts) {
			t.Fatalf("re-decoding %d points: %d, %v", len(pts), len(again), err)
		}
	})
}

func benchPoints(n int) []metric.Point {
	pts := make([]metric.Point, n)
	for i := range pts {
		pts[i] = metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "bench.m" + string(rune('a'+i%26))},
			metric.Label{Name: metric.EndpointLabel, Value: "host-" + string(rune('a'+i/26%26))}), Time: 1_700_000_000, Value: float64(i), Step: 60}
	}
	return pts
}

func BenchmarkEncodeBlock(b *testing.B) {
	pts := benchPoints(1000)
	b.ReportAllocs()
	for b.Loop() {
		EncodeBlock(pts)
	}
}

func BenchmarkDecodeBody(b *testing.B) {
	body := AppendFrame(nil, EncodeBlock(benchPoints(1000)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBody(nil, body); err != nil {
			b.Fatal(err)
		}
	}
}
