package statsd

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		err  error
		want Sample
	}{
		{"hits:1|c", nil, Sample{Name: []byte("hits"), Type: Counter, Value: 1, Rate: 1}},
		{"hits:3|c|@0.1", nil, Sample{Name: []byte("hits"), Type: Counter, Value: 3, Rate: 0.1}},
		{"temp:-4.5|g", nil, Sample{Name: []byte("temp"), Type: Gauge, Value: -4.5, Delta: true, Rate: 1}},
		{"temp:7|g", nil, Sample{Name: []byte("temp"), Type: Gauge, Value: 7, Rate: 1}},
		{"rt:320|ms|@0.5|#route:/login,env:prod", nil, Sample{Name: []byte("rt"), Type: Timer, Value: 320, Rate: 0.5, Tags: []byte("route:/login,env:prod")}},
		{"rt:1.5|h", nil, Sample{Name: []byte("rt"), Type: Timer, Value: 1.5, Rate: 1}},
		{"rt:2|d|#a:b|c:abc123|T1700000000", nil, Sample{Name: []byte("rt"), Type: Timer, Value: 2, Rate: 1, Tags: []byte("a:b")}},
		{"users:alice|s", nil, Sample{Name: []byte("users"), Type: Set, SetMember: []byte("alice"), Rate: 1}},
		{"nocolon", ErrNoValue, Sample{}},
		{"x:1", ErrNoValue, Sample{}},
		{":1|c", ErrBadName, Sample{}},
		{"x:1|q", ErrBadType, Sample{}},
		{"x:|c", ErrBadValue, Sample{}},
		{"x:abc|c", ErrBadValue, Sample{}},
		{"x:NaN|g", ErrBadValue, Sample{}},
		{"x:1|c|@0", ErrBadRate, Sample{}},
		{"x:1|c|@2", ErrBadRate, Sample{}},
		{"x:1|c|#", ErrBadTags, Sample{}},
		{"x:1|c|junk", ErrBadTags, Sample{}},
		{"x:" + strings.Repeat("1", MaxLine) + "|c", ErrBadLength, Sample{}},
	}
	for _, tt := range tests {
		var s Sample
		err := ParseLine([]byte(tt.line), &s)
		if err != tt.err {
			t.Errorf("%q: err %v, want %v", tt.line, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if string(s.Name) != string(tt.want.Name) || s.Type != tt.want.Type || s.Value != tt.want.Value || s.Delta != tt.want.Delta ||
			s.Rate != tt.want.Rate || string(s.Tags) != string(tt.want.Tags) || string(s.SetMember) != string(tt.want.SetMember) {
			t.Errorf("%q: got %+v", tt.line, s)
		}
	}
}

func flushMap(t *testing.T, a *Aggregator, ts int64) map[string]float64 {
	t.Helper()
	pts, _ := a.Flush(ts, 10*time.Second)
	out := map[string]float64{}
	for _, p := range pts {
		k := p.Labels.String()
		if _, dup := out[k]; dup {
			t.Errorf("%s twice", k)
		}
		if p.Time != ts || p.Type != metric.Gauge {
			t.Errorf("point %+v", p)
		}
		out[k] = p.Value
	}
	return out
}

func TestAggregateInterval(t *testing.T) {
	a := New(Config{Percentiles: []float64{50, 99.9}}, 2)
	s0, s1 := a.Shard(0), a.Shard(1)
	var lines []string
	for i := 1; i <= 100; i++ {
		lines = append(lines, fmt.Sprintf("api.latency:%d|ms|#route:login", i))
	}
	s0.AddDatagram([]byte(strings.Join(lines[:50], "\n")), 1)
	s1.AddDatagram([]byte(strings.Join(lines[50:], "\n")+"\n"), 2)
	s0.AddDatagram([]byte("hits:1|c\nhits:2|c|@0.5\r\nhits:oops|c\n\nusers:a|s\nusers:b|s\nusers:a|s"), 3)
	s1.AddDatagram([]byte("hits:5|c\nusers:c|s\nusers:a|s\nmy app/req time:1|c"), 4)
	s0.AddDatagram([]byte("temp:10|g\ntemp:+5|g"), 5)
	s1.AddDatagram([]byte("temp:-2|g"), 6)
	got := flushMap(t, a, 1700000010)
	want := map[string]float64{
		"hits.count{}": 1 + 4 + 5, "hits.rate{}": 1.0,
		"users.count{}":                    3,
		"my_app-req_time.count{}":          1,
		"temp{}":                           13,
		`api.latency.count{route="login"}`: 100, `api.latency.rate{route="login"}`: 10,
		`api.latency.sum{route="login"}`: 5050, `api.latency.mean{route="login"}`: 50.5,
		`api.latency.min{route="login"}`: 1, `api.latency.max{route="login"}`: 100,
		`api.latency.p50{route="login"}`: 50, `api.latency.p99_9{route="login"}`: 100,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	// The next interval: gauges keep their value (and take deltas),
	// counters and timers report 0, until the series expire.
	s0.AddLine([]byte("temp:+1|g"), 7)
	got = flushMap(t, a, 1700000020)
	if got["temp{}"] != 14 || got["hits.count{}"] != 0 || got[`api.latency.count{route="login"}`] != 0 || got["users.count{}"] != 0 {
		t.Errorf("idle interval: %v", got)
	}
	if _, ok := got[`api.latency.p50{route="login"}`]; ok {
		t.Error("an idle timer reports percentiles")
	}
	for range 4 {
		got = flushMap(t, a, 1700000030)
	}
	if len(got) != 1 || got["temp{}"] != 14 {
		t.Errorf("after expiry only the gauge updated last should remain, got %v", got)
	}
	if got = flushMap(t, a, 1700000040); len(got) != 0 {
		t.Errorf("after expiry: %v", got)
	}
}

func TestCountsAndLimits(t *testing.T) {
	a := New(Config{MaxSeries: 2, MaxTimerSamples: 3, MaxSetMembers: 2}, 1)
	s := a.Shard(0)
	s.AddDatagram([]byte("a:1|c\nb:1|c\nc:1|c\nbad\nt:1|c|#__name__:x"), 0)
	for i := range 10 {
		s.AddLine(fmt.Appendf(nil, "a:%d|c", i), 0)
	}
	pts, counts := a.Flush(10, time.Second)
	if counts.Datagrams != 1 || counts.Received != 12 || counts.Rejected["too_many_series"] != 2 || counts.Rejected["bad_line"] != 1 {
		t.Errorf("counts %+v", counts)
	}
	if len(pts) != 4 {
		t.Errorf("%d points, want 4 (two counters)", len(pts))
	}
	b := New(Config{MaxTimerSamples: 3, MaxSetMembers: 2}, 1)
	for i := range 10 {
		b.Shard(0).AddLine(fmt.Appendf(nil, "t:%d|ms", i), 0)
		b.Shard(0).AddLine(fmt.Appendf(nil, "s:%d|s", i), 0)
	}
	got := flushMap(t, b, 10)
	if got["t.count{}"] != 10 || got["t.max{}"] != 9 || got["t.p99{}"] != 2 || got["s.count{}"] != 2 {
		t.Errorf("bounded timer/set: %v", got)
	}
}

func TestTagsBecomeLabels(t *testing.T) {
	a := New(Config{}, 1)
	a.Shard(0).AddLine([]byte("q:1|c|#endpoint:db-1,env:prod,canary,we ird:a=b,c"), 0)
	pts, counts := a.Flush(10, time.Second)
	if len(pts) == 0 {
		t.Fatalf("no points: %+v", counts)
	}
	ls := pts[0].Labels
	if ls.Get("endpoint") != "db-1" || ls.Get("env") != "prod" || ls.Get("canary") != "true" || ls.Get("we_ird") != "a_b" || ls.Get("c") != "true" {
		t.Errorf("labels %v", ls)
	}
}

// TestGaugeAcrossShards: the latest absolute value wins whatever shard
// heard it.
func TestGaugeAcrossShards(t *testing.T) {
	a := New(Config{}, 2)
	a.Shard(1).AddLine([]byte("g:5|g"), 200)
	a.Shard(0).AddLine([]byte("g:9|g"), 100)
	if got := flushMap(t, a, 10)["g{}"]; got != 5 {
		t.Errorf("gauge = %v, want the later 5", got)
	}
}

func TestUDPRoundTrip(t *testing.T) {
	conns, err := ListenUDP("127.0.0.1:0", 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if conns[0].LocalAddr().String() != conns[1].LocalAddr().String() {
		t.Fatalf("sockets on %v and %v", conns[0].LocalAddr(), conns[1].LocalAddr())
	}
	a := New(Config{}, len(conns))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Serve(ctx, conns) }()
	c, err := net.Dial("udp", conns[0].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		c.Write([]byte("udp.hits:1|c\nudp.rt:5|ms"))
	}
	c.Close()
	total := 0.0
	deadline := time.Now().Add(5 * time.Second)
	for total < 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		total += flushMap(t, a, 10)["udp.hits.count{}"]
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if total != 200 {
		t.Errorf("counted %v hits over UDP, want 200", total)
	}
}
