package graphite

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// benchLines returns n lines over 1,000 distinct paths, a third of them
// tagged, as a collectd or carbon relay would send them.
func benchLines(n int) [][]byte {
	lines := make([][]byte, n)
	for i := range lines {
		s := i % 1000
		if s%3 == 0 {
			lines[i] = fmt.Appendf(nil, "app.requests.count;host=web%d;dc=bj;service=api %d.5 %d", s, i, 1699999999+i/1000)
		} else {
			lines[i] = fmt.Appendf(nil, "servers.web%d.cpu.total.idle %d.25 %d", s, i, 1699999999+i/1000)
		}
	}
	return lines
}

// BenchmarkParseLine measures the line parser with its path cache warm, the
// steady state of a long-lived connection.
func BenchmarkParseLine(b *testing.B) {
	lines := benchLines(10000)
	p := NewParser(intake.Limits{}, 0)
	for _, l := range lines {
		p.ParseLine(l, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, rej := p.ParseLine(lines[i%len(lines)], now); rej != nil {
			b.Fatal(rej)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkParseLineCold parses every path for the first time.
func BenchmarkParseLineCold(b *testing.B) {
	lines := benchLines(1000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p := NewParser(intake.Limits{}, 0)
		for _, l := range lines {
			if _, rej := p.ParseLine(l, now); rej != nil {
				b.Fatal(rej)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(lines))/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkServer pushes lines through a real loopback TCP connection into
// a counting appender: reading, splitting, parsing and batching together.
func BenchmarkServer(b *testing.B) {
	var stored atomic.Int64
	app := intake.AppenderFunc(func(_ context.Context, pts []metric.Point) error {
		stored.Add(int64(len(pts)))
		return nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(app, nil, intake.Limits{}, Config{}).Serve(ctx, ln) }()
	chunk := append(bytes.Join(benchLines(10000), []byte{'\n'}), '\n')
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	want := int64(b.N) * 10000
	for stored.Load() < want {
		select {
		case <-done:
			b.Fatal("server stopped")
		default:
		}
		waitBriefly()
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "points/s")
	cancel()
	<-done
}

// waitBriefly lets the server catch up without spinning a core.
func waitBriefly() { time.Sleep(100 * time.Microsecond) }
