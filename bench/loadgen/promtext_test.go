package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const exposition = `# HELP opskit_transfer_points_received_total Points accepted.
# TYPE opskit_transfer_points_received_total counter
opskit_transfer_points_received_total{proto="graphite"} 1500
opskit_transfer_points_received_total{proto="falcon"} 250
opskit_transfer_points_received_total_other 99
opskit_transfer_storage_points_appended_total 1750 1700000000000
odd_labels{path="a } b",quote="say \"hi\""} 3
go_goroutines 12
`

func TestSumSamples(t *testing.T) {
	tests := []struct {
		selector  string
		want      float64
		wantFound bool
	}{
		{"opskit_transfer_points_received_total", 1750, true},
		{`opskit_transfer_points_received_total{proto="graphite"}`, 1500, true},
		{`opskit_transfer_points_received_total{proto="udp"}`, 0, false},
		{"opskit_transfer_storage_points_appended_total", 1750, true},
		{`odd_labels{path="a } b"}`, 3, true},
		{`odd_labels{quote="say \"hi\""}`, 3, true},
		{"missing_metric", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			sel, err := parseSelector(tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			got, found, err := sumSamples(strings.NewReader(exposition), sel)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || found != tt.wantFound {
				t.Fatalf("sumSamples = %v, %v; want %v, %v", got, found, tt.want, tt.wantFound)
			}
		})
	}
}

func TestSumSamplesRejectsBadLines(t *testing.T) {
	sel := metricSelector{Name: "m"}
	for _, text := range []string{"m{a=\"x\" 1\n", "m notanumber\n", "m\n", "m{a=x} 1\n", "m NaN\n"} {
		if _, _, err := sumSamples(strings.NewReader(text), sel); err == nil {
			t.Errorf("sumSamples(%q) gave no error", text)
		}
	}
}

func TestParseSelectorErrors(t *testing.T) {
	for _, s := range []string{"", `{a="b"}`, `m{a="b"`, `m{a=b}`, `m{=}`} {
		if _, err := parseSelector(s); err == nil {
			t.Errorf("parseSelector(%q) gave no error", s)
		}
	}
}

func TestWaitMetric(t *testing.T) {
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := count.Add(100)
		fmt.Fprintf(w, "stored_total %d\n", n)
	}))
	defer srv.Close()
	sel := metricSelector{Name: "stored_total"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitMetric(ctx, srv.Client(), srv.URL, sel, 100, 500, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := count.Load(); got < 600 {
		t.Fatalf("waitMetric returned at %d, want at least baseline 100 + 500", got)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	err := waitMetric(short, srv.Client(), srv.URL, sel, 0, 1e12, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stored_total") {
		t.Fatalf("waitMetric past its deadline = %v, want an error naming the metric", err)
	}
}

// FuzzSumSamples: any exposition text either sums or errors, never panics,
// and a found sum is a number.
func FuzzSumSamples(f *testing.F) {
	f.Add(exposition, "opskit_transfer_points_received_total")
	f.Add("m{a=\"}\\\"\"} 1\n", `m{a="}\""}`)
	f.Add("m 1e400\n", "m")
	f.Fuzz(func(t *testing.T, text, selector string) {
		sel, err := parseSelector(selector)
		if err != nil {
			return
		}
		sum, found, err := sumSamples(strings.NewReader(text), sel)
		if err == nil && !found && sum != 0 {
			t.Fatalf("nothing found but sum %v", sum)
		}
	})
}
