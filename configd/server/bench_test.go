package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
)

// BenchmarkWatchWake measures one change reaching 100 parked watchers over
// loopback HTTP: the publish (with its fsync), every watch answering, and
// every watcher fetching the release. The time sleeping while the watchers
// park is excluded.
func BenchmarkWatchWake(b *testing.B) {
	s := startServer(b, Config{WatchTimeout: time.Minute, WatchBatch: 500, WatchBatchInterval: 5 * time.Millisecond})
	ctx := context.Background()
	const ns, watchers = "bench/prod/app", 100
	admin := remote(b, s.url, client.RemoteOptions{})
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "0")}})
	c := remote(b, s.url, client.RemoteOptions{HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * watchers}}})
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		held := int64(i + 1)
		done := make(chan error, watchers)
		for range watchers {
			go func() {
				_, err := c.Watch(ctx, map[string]int64{ns: held}, "h", nil, time.Minute)
				if err == nil {
					_, err = c.Config(ctx, ns, "h", nil)
				}
				done <- err
			}()
		}
		for s.hub.watchers() < watchers {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "x")}}); err != nil {
			b.Fatal(err)
		}
		for range watchers {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkWatchFanout measures one change reaching many parked watchers,
// each on its own keep-alive connection asking for the content (as agents
// do), until every watcher has its answer and is parked again on its next
// watch. The watchers are bare sockets so that the profile is the server's.
// It reports the publish → answer p50 and p99 across all watchers, and the
// CPU time of the whole process (server and watchers) per change. 9,000
// is as many as fit in-process under a 20,000 descriptor limit (each
// watcher is two ends of a loopback connection).
// The unpaced runs wake every watcher at once, to show what the default
// pacing (batches of 500, 5 ms apart) costs.
func BenchmarkWatchFanout(b *testing.B) {
	for _, watchers := range []int{1000, 9000} {
		for _, paced := range []bool{true, false} {
			name := strconv.Itoa(watchers)
			if !paced {
				name += "-unpaced"
			}
			b.Run(name, func(b *testing.B) { benchFanout(b, watchers, paced) })
		}
	}
}

func benchFanout(b *testing.B, watchers int, paced bool) {
	cfg := Config{WatchTimeout: 10 * time.Minute, WatchBatch: 500, WatchBatchInterval: 5 * time.Millisecond}
	if !paced {
		cfg.WatchBatch = watchers
	}
	s := startServer(b, cfg)
	ctx := context.Background()
	const ns = "bench/prod/app"
	admin := remote(b, s.url, client.RemoteOptions{})
	publish := func(gen int) int64 {
		rel, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("app.properties", fmt.Sprintf("generation=%d\npool.size=32\n", gen))}})
		if err != nil {
			b.Fatal(err)
		}
		return rel.Version
	}
	held := publish(0)
	addr := strings.TrimPrefix(s.url, "http://")
	var published atomic.Int64 // unix nanos of the publish being measured
	answered := make(chan time.Duration, watchers)
	errs := make(chan error, watchers)
	for i := range watchers {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		go rawWatcher(conn, ns, fmt.Sprintf("sim-%05d", i), held, &published, answered, errs)
		if i%500 == 499 {
			waitParked(b, s, i+1)
		}
	}
	waitParked(b, s, watchers)
	lat := make([]time.Duration, 0, watchers*b.N)
	cpu0 := processCPU()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		waitParked(b, s, watchers)
		b.StartTimer()
		published.Store(time.Now().UnixNano())
		publish(i + 1)
		for range watchers {
			select {
			case d := <-answered:
				lat = append(lat, d)
			case err := <-errs:
				b.Fatal(err)
			}
		}
		waitParked(b, s, watchers)
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func waitParked(b *testing.B, s *testServer, n int) {
	deadline := time.Now().Add(time.Minute)
	for s.hub.watchers() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d watchers parked", s.hub.watchers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// rawWatcher long-polls over conn, re-watching at once after each answer.
func rawWatcher(conn net.Conn, ns, host string, held int64, published *atomic.Int64, answered chan<- time.Duration, errs chan<- error) {
	br := bufio.NewReader(conn)
	for {
		req := fmt.Sprintf("GET /v1/watch?ns=%s:%d&host=%s&timeout=10m&content=1 HTTP/1.1\r\nHost: configd\r\n\r\n", ns, held, host)
		if _, err := conn.Write([]byte(req)); err != nil {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return // closed at the end of the benchmark
		}
		var changes []api.Change
		err = json.NewDecoder(resp.Body).Decode(&changes)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(changes) != 1 || changes[0].Release == nil {
			errs <- fmt.Errorf("watch answer: %s %v %+v", resp.Status, err, changes)
			return
		}
		answered <- time.Duration(time.Now().UnixNano() - published.Load())
		held = changes[0].Version
	}
}

// processCPU is this process's user and system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
