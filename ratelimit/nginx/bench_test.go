package nginx

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkDecide is one request through one zone with a million keys'
// worth of distinct IPs cycling.
func BenchmarkDecide(b *testing.B) {
	c := &fakeClock{now: t0}
	z, _ := NewZone(ZoneConfig{Name: "z", Rate: MustParseRate("10r/s"), MaxKeys: 1 << 20}, c.read)
	set, _ := NewSet([]Limit{{Zone: z, Burst: 5, NoDelay: true}}, false)
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.now++
		set.Decide(keys[i%len(keys) : i%len(keys)+1])
	}
}

// BenchmarkZoneMemory holds a million IPv4 keys and reports the heap they
// cost per key (the figure gateway.BytesPerKey is rounded up from).
func BenchmarkZoneMemory(b *testing.B) {
	const n = 1_000_000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := &fakeClock{now: t0}
		z, _ := NewZone(ZoneConfig{Name: "z", Rate: MustParseRate("10r/s"), MaxKeys: n}, c.read)
		set, _ := NewSet([]Limit{{Zone: z, Burst: 5}}, false)
		key := make([]string, 1)
		for k := 0; k < n; k++ {
			key[0] = "10." + strconv.Itoa(k>>16) + "." + strconv.Itoa((k>>8)&255) + "." + strconv.Itoa(k&255)
			set.Decide(key)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if z.Stats().Keys != n {
			b.Fatalf("keys %d", z.Stats().Keys)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(z)
	}
}
