package statsd

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkAddDatagram measures parsing and aggregating one datagram of a
// single line over 1000 series of mixed types.
func BenchmarkAddDatagram(b *testing.B) {
	var grams [][]byte
	types := []string{"c", "ms", "g", "c|@0.1|#env:prod,route:/x"}
	for i := range 1000 {
		grams = append(grams, fmt.Appendf(nil, "app.svc%d.req:%d|%s", i, i%300, types[i%len(types)]))
	}
	a := New(Config{}, 1)
	s := a.Shard(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.AddDatagram(grams[i%len(grams)], int64(i))
		if i%200000 == 199999 {
			a.Flush(int64(i), time.Second) // keeps the timers' sample lists bounded as in real use
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte("api.latency:320|ms|@0.5|#" + strings.Repeat("k:v,", 3) + "env:prod")
	var s Sample
	b.ReportAllocs()
	for b.Loop() {
		ParseLine(line, &s)
	}
}
