package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	now := time.Unix(1_700_000_075, 0)
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, cfg config)
	}{
		{
			name: "defaults end the workload at the last full step",
			args: []string{"--addr", "127.0.0.1:7121"},
			check: func(t *testing.T, cfg config) {
				w := cfg.Workload
				if w.Series != 10000 || w.Points != 100 || w.Step != 60 || cfg.Mode != "graphite" {
					t.Fatalf("defaults = %+v", cfg)
				}
				if last := w.Time(w.Points - 1); last != 1_700_000_040 {
					t.Fatalf("last point at %d, want 1700000040", last)
				}
			},
		},
		{name: "no address", args: nil, wantErr: "--addr"},
		{name: "unknown mode", args: []string{"--addr", "x:1", "--mode", "udp"}, wantErr: "unknown --mode"},
		{name: "metric without url", args: []string{"--addr", "x:1", "--stored-metric", "m"}, wantErr: "--metrics-url"},
		{name: "two waits", args: []string{"--addr", "x:1", "--mode", "rrdcached", "--rrd-flush", "--stored-metric", "m", "--metrics-url", "http://x/metrics"}, wantErr: "one of"},
		{name: "whisper with falcon", args: []string{"--addr", "x:1", "--mode", "falcon", "--whisper-dir", "d"}, wantErr: "--whisper-dir"},
		{name: "rrd flags outside rrdcached", args: []string{"--addr", "x:1", "--rrd-flush"}, wantErr: "--mode rrdcached"},
		{name: "bad selector", args: []string{"--addr", "x:1", "--stored-metric", "m{a=b}", "--metrics-url", "http://x"}, wantErr: "selector"},
		{name: "zero conns", args: []string{"--addr", "x:1", "--conns", "0"}, wantErr: "positive"},
		{name: "stray argument", args: []string{"--addr", "x:1", "extra"}, wantErr: "unexpected"},
		{
			name: "explicit start",
			args: []string{"--addr", "unix:/s", "--mode", "rrdcached", "--start", "1699999980", "--series", "5", "--points", "2"},
			check: func(t *testing.T, cfg config) {
				if cfg.Workload.Start != 1_699_999_980 || cfg.Workload.Total() != 10 {
					t.Fatalf("workload = %+v", cfg.Workload)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestLoadAverage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loadavg")
	os.WriteFile(path, []byte("3.25 2.00 1.50 2/300 12345\n"), 0o644)
	if got := loadAverage(path); got != 3.25 {
		t.Fatalf("loadAverage = %v, want 3.25", got)
	}
	if got := loadAverage(filepath.Join(dir, "missing")); got != 0 {
		t.Fatalf("loadAverage of a missing file = %v, want 0", got)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSummary(t *testing.T) {
	in := strings.Join([]string{
		`{"target":"transfer-graphite","mode":"graphite","points":100,"accepted_points_per_sec":900,"points_per_sec":800}`,
		`{"target":"carbon-cache","mode":"graphite","points":100,"accepted_points_per_sec":100,"points_per_sec":20,"stored_by":"whisper files","load1":0.5}`,
		`{"target":"transfer-graphite","mode":"graphite","points":100,"accepted_points_per_sec":1100,"points_per_sec":1000}`,
		`{"target":"carbon-cache","mode":"graphite","points":100,"accepted_points_per_sec":300,"points_per_sec":40,"load1":1.5}`,
		`{"target":"transfer-graphite","mode":"graphite","points":100,"accepted_points_per_sec":1000,"points_per_sec":900}`,
		`{"target":"carbon-cache","mode":"graphite","points":100,"error":"timeout"}`,
		``,
	}, "\n")
	var out, errOut bytes.Buffer
	if code := runSummary(strings.NewReader(in), &out, &errOut); code != 0 {
		t.Fatalf("runSummary = %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"| transfer-graphite | graphite | 3/3 | 1000 | 900 |",
		"| carbon-cache | graphite | 2/3 | 200 | 30 | whisper files | 1.0 |",
		"| transfer-graphite / carbon-cache | 5.00× | 30.00× |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if code := runSummary(strings.NewReader("{not json"), &out, &errOut); code != 1 {
		t.Fatalf("runSummary on bad input = %d, want 1", code)
	}
}
