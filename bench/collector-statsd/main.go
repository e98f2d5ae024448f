// Command collector-statsd sends StatsD datagrams over UDP to a collector as
// fast as it can (or at a given rate) and reports how many the collector
// counted, from its /metrics. It prints one line of figures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8125", "collector StatsD address")
	metricsURL := flag.String("metrics", "http://127.0.0.1:7110/metrics", "collector /metrics URL")
	total := flag.Int("datagrams", 2_000_000, "datagrams to send")
	senders := flag.Int("senders", 2, "sending goroutines, each with its own socket")
	rate := flag.Int("rate", 0, "datagrams per second for all senders together (0 = as fast as possible)")
	series := flag.Int("series", 1000, "distinct series")
	flag.Parse()

	grams := make([][]byte, *series)
	kinds := []string{"c", "ms", "g", "c|@0.5|#env:bench"}
	for i := range grams {
		grams[i] = fmt.Appendf(nil, "bench.svc%d.req:%d|%s", i, i%250, kinds[i%len(kinds)])
	}
	before, err := counted(*metricsURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "collector-statsd:", err)
		os.Exit(1)
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	per := *total / *senders
	start := time.Now()
	for s := range *senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", *addr)
			if err != nil {
				fmt.Fprintln(os.Stderr, "collector-statsd:", err)
				os.Exit(1)
			}
			defer c.Close()
			var gap time.Duration
			if *rate > 0 {
				gap = time.Second * time.Duration(*senders) / time.Duration(*rate)
			}
			next := time.Now()
			for i := range per {
				if gap > 0 && i%100 == 0 {
					next = next.Add(100 * gap)
					time.Sleep(time.Until(next))
				}
				if _, err := c.Write(grams[(i*7+s)%len(grams)]); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// The collector publishes its count at each StatsD flush: wait until
	// it stops changing.
	var after int64
	stable := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && stable < 3; {
		time.Sleep(700 * time.Millisecond)
		n, err := counted(*metricsURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "collector-statsd:", err)
			os.Exit(1)
		}
		if n == after && n > before {
			stable++
		} else {
			stable = 0
		}
		after = n
	}
	got := after - before
	n := sent.Load()
	fmt.Printf("sent=%d received=%d lost=%d (%.3f%%) send_seconds=%.2f send_rate=%.0f/s received_rate=%.0f/s\n",
		n, got, n-got, 100*float64(n-got)/float64(n), elapsed.Seconds(), float64(n)/elapsed.Seconds(), float64(got)/elapsed.Seconds())
}

// counted reads opskit_collector_statsd_datagrams_total.
func counted(url string) (int64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "opskit_collector_statsd_datagrams_total "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no opskit_collector_statsd_datagrams_total", url)
}
