package throttle

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"1000", 1000, false},
		{"50MB/s", 50_000_000, false},
		{"10MiB/s", 10 << 20, false},
		{"1.5GB", 1_500_000_000, false},
		{"512k", 512_000, false},
		{"512KiB/s", 512 << 10, false},
		{"8MBps", 8_000_000, false},
		{"fast", 0, true},
		{"10XB/s", 0, true},
		{"-5MB/s", 0, true},
		{"1e30GB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"50MB/s", "10MiB/s", "1.5G", "0", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseRate(s); err == nil && v < 0 {
			t.Fatalf("ParseRate(%q) = %d", s, v)
		}
	})
}

func TestCapsRate(t *testing.T) {
	// 256 KiB at 1 MiB/s with a 64 KiB burst takes about 0.19s; unlimited is instant.
	data := make([]byte, 256<<10)
	start := time.Now()
	var out bytes.Buffer
	if _, err := io.Copy(Writer(context.Background(), &out, NewLimiter(1<<20)), Reader(context.Background(), bytes.NewReader(data), nil)); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("capped copy took %v, want at least 150ms", el)
	}
	if out.Len() != len(data) {
		t.Errorf("copied %d bytes", out.Len())
	}
	if NewLimiter(0) != nil {
		t.Error("rate 0 must mean no limiter")
	}
}
