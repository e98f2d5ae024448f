package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
	"github.com/opskit/opskit/transfer/intake/graphite"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

var testWorkload = Workload{Series: 250, Points: 3, Start: 1_700_000_040, Step: 60}

func TestWorkloadValidate(t *testing.T) {
	tests := []struct {
		name string
		w    Workload
		want string // "" for valid
	}{
		{"valid", testWorkload, ""},
		{"no series", Workload{Series: 0, Points: 1, Start: 60, Step: 60}, "series"},
		{"no points", Workload{Series: 1, Points: 0, Start: 60, Step: 60}, "points"},
		{"zero step", Workload{Series: 1, Points: 1, Start: 60, Step: 0}, "step"},
		{"unaligned start", Workload{Series: 1, Points: 1, Start: 61, Step: 60}, "multiple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.w.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestSeriesNames(t *testing.T) {
	tests := []struct {
		i                  int
		graphite, rrd      string
		metric, endpt, grp string
	}{
		{0, "host-0.bench.m0.g0", "host-0_bench.m0_g0.rrd", "bench.m0", "host-0", "g0"},
		{123, "host-1.bench.m23.g3", "host-1_bench.m23_g3.rrd", "bench.m23", "host-1", "g3"},
		{9999, "host-99.bench.m99.g9", "host-99_bench.m99_g9.rrd", "bench.m99", "host-99", "g9"},
	}
	for _, tt := range tests {
		if got := GraphitePath(tt.i); got != tt.graphite {
			t.Errorf("GraphitePath(%d) = %q, want %q", tt.i, got, tt.graphite)
		}
		if got := RRDFile(tt.i); got != tt.rrd {
			t.Errorf("RRDFile(%d) = %q, want %q", tt.i, got, tt.rrd)
		}
		if Metric(tt.i) != tt.metric || Endpoint(tt.i) != tt.endpt || Group(tt.i) != tt.grp {
			t.Errorf("series %d: got %s %s %s", tt.i, Metric(tt.i), Endpoint(tt.i), Group(tt.i))
		}
	}
}

func TestEverySeriesHasItsOwnName(t *testing.T) {
	w := Workload{Series: 10000, Points: 1, Start: 60, Step: 60}
	seen := map[string]int{}
	for i := range w.Series {
		if j, dup := seen[GraphitePath(i)]; dup {
			t.Fatalf("series %d and %d share the path %s", j, i, GraphitePath(i))
		}
		seen[GraphitePath(i)] = i
	}
}

func TestShardSeriesCoversEachSeriesOnce(t *testing.T) {
	for _, conns := range []int{1, 3, 4, 7, 300} {
		count := make([]int, testWorkload.Series)
		for conn := range conns {
			for _, i := range ShardSeries(testWorkload, conn, conns) {
				count[i]++
			}
		}
		for i, n := range count {
			if n != 1 {
				t.Fatalf("conns=%d: series %d sent %d times", conns, i, n)
			}
		}
	}
}

// TestGraphiteLinesParseInTransfer checks the lines against transfer's own
// Graphite parser: every line a valid point with the workload's time and value.
func TestGraphiteLinesParseInTransfer(t *testing.T) {
	w := testWorkload
	p := graphite.NewParser(intake.DefaultLimits(), 0)
	for _, i := range []int{0, 77, 249} {
		for j := range w.Points {
			line := AppendGraphiteLine(nil, w, i, j)
			if !bytes.HasSuffix(line, []byte("\n")) {
				t.Fatalf("line %q lacks its newline", line)
			}
			pt, rej := p.ParseLine(bytes.TrimSuffix(line, []byte("\n")), w.Start)
			if rej != nil {
				t.Fatalf("transfer rejected %q: %v", line, rej)
			}
			if pt.Time != w.Time(j) || pt.Value != w.Value(i, j) || pt.Labels.Name() != GraphitePath(i) {
				t.Fatalf("line %q parsed as %v %v %v", line, pt.Labels, pt.Time, pt.Value)
			}
		}
	}
}

// TestFalconBodiesDecodeInTransfer feeds every POST body to transfer's
// open-falcon handler: all items accepted, with the workload's labels,
// times and values.
func TestFalconBodiesDecodeInTransfer(t *testing.T) {
	w := testWorkload
	app := intaketest.NewAppender()
	h := falcon.NewHandler(app, nil, intake.Limits{})
	chunks := buildChunks(w, 0, 1, 100, falconEncoding)
	total := 0
	for _, c := range chunks {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/push", bytes.NewReader(c.data)))
		var ans falconAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || rec.Code != http.StatusOK || ans.Accepted != c.points {
			t.Fatalf("body %q: answer %d %s (%v), want %d accepted", truncate(string(c.data)), rec.Code, rec.Body, err, c.points)
		}
		total += c.points
	}
	if int64(total) != w.Total() {
		t.Fatalf("chunks carry %d points, want %d", total, w.Total())
	}
	// The first item is series 0 at the first timestamp.
	first := app.Points()[0]
	want := metric.New(metric.Label{Name: metric.NameLabel, Value: "bench.m0"}, metric.Label{Name: "endpoint", Value: "host-0"}, metric.Label{Name: "group", Value: "g0"})
	if first.Labels.Key() != want.Key() || first.Time != w.Start || first.Value != w.Value(0, 0) || first.Step != 60 {
		t.Fatalf("first point = %+v, want %v at %d = %v", first, want, w.Start, w.Value(0, 0))
	}
}

func TestRRDUpdateLine(t *testing.T) {
	got := string(AppendRRDUpdate(nil, testWorkload, 123, 2))
	want := "UPDATE host-1_bench.m23_g3.rrd 1700000160:" + "887.25\n"
	if got != want {
		t.Fatalf("AppendRRDUpdate = %q, want %q", got, want)
	}
}

// TestBuildChunksKeepsTimeOrder checks that a connection sends all its
// series at one timestamp before any at the next, in chunks of batch points.
func TestBuildChunksKeepsTimeOrder(t *testing.T) {
	w := testWorkload
	const conns, batch = 3, 40
	p := graphite.NewParser(intake.DefaultLimits(), 0)
	for conn := range conns {
		chunks := buildChunks(w, conn, conns, batch, graphiteEncoding)
		var lastTime int64
		lines := 0
		for k, c := range chunks {
			if c.points > batch || (k < len(chunks)-1 && c.points != batch) {
				t.Fatalf("conn %d chunk %d holds %d points, batch is %d", conn, k, c.points, batch)
			}
			got := bytes.Split(bytes.TrimSuffix(c.data, []byte("\n")), []byte("\n"))
			if len(got) != c.points {
				t.Fatalf("conn %d chunk %d: %d lines, says %d", conn, k, len(got), c.points)
			}
			for _, line := range got {
				pt, rej := p.ParseLine(line, w.Start)
				if rej != nil {
					t.Fatalf("line %q: %v", line, rej)
				}
				if pt.Time < lastTime {
					t.Fatalf("conn %d: time went back from %d to %d", conn, lastTime, pt.Time)
				}
				lastTime = pt.Time
				lines++
			}
		}
		if want := len(ShardSeries(w, conn, conns)) * w.Points; lines != want {
			t.Fatalf("conn %d sends %d lines, want %d", conn, lines, want)
		}
	}
}
