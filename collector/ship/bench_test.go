package ship

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/collector/tail"
)

var benchLine = []byte(`10.1.2.3 - - [22/Nov/2026:00:35:01 +0000] "GET /api/v1/orders/81723?page=3 HTTP/1.1" 200 5123 "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36" rt=0.042`)

func benchEvent() *tail.Event {
	return &tail.Event{Input: &tail.Input{Fields: map[string]string{"app": "shop", "env": "prod"}}, Path: "/var/log/nginx/access.log",
		FileID: "fe00-99a99a-18ea36cc73838b4f", Offset: 123456789, Line: benchLine, Time: time.Unix(1795307653, 199837732)}
}

// BenchmarkEncode: one access-log line into its JSON event.
func BenchmarkEncode(b *testing.B) {
	enc := &Encoder{Host: "web-1"}
	ev := benchEvent()
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		buf = enc.Append(buf[:0], ev)
	}
}

// BenchmarkEncodeAccessLog: varied access-log lines (about 200 bytes,
// six quotes each) into their JSON events, as the collector ships them;
// cpu-ns/op is the benchmark thread's own CPU time, steadier than the
// wall time on a shared machine.
func BenchmarkEncodeAccessLog(b *testing.B) {
	lines, size := accessLines(4096)
	enc := &Encoder{Host: "web-1"}
	ev := benchEvent()
	ev.Input = nil
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(size / len(lines)))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	i := 0
	for b.Loop() {
		ev.Line = lines[i%len(lines)]
		buf = enc.Append(buf[:0], ev)
		i++
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// accessLines returns n nginx-style access lines like bench/collector-logs'
// and their total size.
func accessLines(n int) ([][]byte, int) {
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{"/api/v1/orders", "/api/v1/users", "/static/app.js", "/healthz", "/login", "/search"}
	agents := []string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
		"curl/8.5.0", "Go-http-client/1.1",
	}
	t := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	lines, size := make([][]byte, n), 0
	for i := range lines {
		t = t.Add(time.Duration(rng.IntN(3000)) * time.Microsecond)
		lines[i] = fmt.Appendf(nil, "10.%d.%d.%d - - [%s] \"%s %s/%d?page=%d HTTP/1.1\" %d %d \"-\" \"%s\" rt=%.3f",
			rng.IntN(256), rng.IntN(256), rng.IntN(256), t.Format("02/Jan/2006:15:04:05 -0700"),
			[]string{"GET", "GET", "POST"}[rng.IntN(3)], paths[rng.IntN(len(paths))], rng.IntN(100000), rng.IntN(50),
			[]int{200, 200, 304, 404, 500}[rng.IntN(5)], rng.IntN(50000), agents[rng.IntN(len(agents))], rng.Float64()*2)
		size += len(lines[i])
	}
	return lines, size
}

// threadCPU is the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD, Linux
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkDecode: the sink's side, with and without interning.
func BenchmarkDecode(b *testing.B) {
	data := (&Encoder{Host: "web-1"}).Append(nil, benchEvent())
	b.Run("interned", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		in := Interner{}
		for b.Loop() {
			if _, err := DecodeInterned(data, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json-fallback", func(b *testing.B) {
		odd := append([]byte(`{"Unknown":1,`), data[1:]...) // forces the fallback
		b.SetBytes(int64(len(odd)))
		for b.Loop() {
			if _, err := Decode(odd); err != nil {
				b.Fatal(err)
			}
		}
	})
}
