// Command judgeload sends the same stream of points to judge (open-falcon
// JSON on /api/push) and to Prometheus (remote write), round after round:
// each round is one point for every series (metrics × hosts), one step
// later than the last. With --rate it paces the rounds so both evaluate at
// the same cadence; without, it sends as fast as the targets take them.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

type options struct {
	judge, prom    string
	metrics, hosts int
	rounds         int
	rate           float64
	batch, conns   int
	step           int64
}

func main() {
	var o options
	flag.StringVar(&o.judge, "judge", "", "judge host:port (empty: not sent)")
	flag.StringVar(&o.prom, "prom", "", "Prometheus host:port with the remote write receiver (empty: not sent)")
	flag.IntVar(&o.metrics, "metrics", 500, "metric names")
	flag.IntVar(&o.hosts, "hosts", 200, "endpoints per metric")
	flag.IntVar(&o.rounds, "rounds", 30, "rounds: one point per series each")
	flag.Float64Var(&o.rate, "rate", 0, "rounds per second (0 = as fast as possible)")
	flag.IntVar(&o.batch, "batch", 5000, "points per request")
	flag.IntVar(&o.conns, "conns", 2, "concurrent requests per target")
	flag.Int64Var(&o.step, "step", 30, "seconds between rounds in judge's points (open-falcon's smallest step is 30 s); Prometheus's paced points carry the wall clock")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "judgeload:", err)
		os.Exit(1)
	}
}

type target struct {
	name   string
	encode func(round int, ts int64, from, to int) ([]byte, error)
	// wallClock: the points carry the time they are sent, not the step.
	wallClock bool
	url       string
	header    map[string]string
}

func run(ctx context.Context, o options) error {
	series := o.metrics * o.hosts
	// judge's rounds are a step apart and end now; Prometheus's paced
	// rounds carry the wall clock, so its rules, evaluated at the wall
	// clock over ranges of seconds, see them.
	start := (time.Now().Unix()/o.step - int64(o.rounds)) * o.step
	value := func(round, i int) float64 { return float64((i*7 + round) % 100) }
	var targets []target
	if o.judge != "" {
		targets = append(targets, target{name: "judge", url: "http://" + o.judge + "/api/push",
			header: map[string]string{"Content-Type": "application/json"},
			encode: func(round int, ts int64, from, to int) ([]byte, error) {
				type item struct {
					Endpoint  string  `json:"endpoint"`
					Metric    string  `json:"metric"`
					Timestamp int64   `json:"timestamp"`
					Step      int64   `json:"step"`
					Value     float64 `json:"value"`
					Tags      string  `json:"tags"`
				}
				items := make([]item, 0, to-from)
				for i := from; i < to; i++ {
					items = append(items, item{Endpoint: fmt.Sprintf("host-%04d", i%o.hosts), Metric: fmt.Sprintf("bench.m%d", i/o.hosts),
						Timestamp: ts, Step: o.step, Value: value(round, i), Tags: "core=all"})
				}
				return json.Marshal(items)
			}})
	}
	if o.prom != "" {
		targets = append(targets, target{name: "prometheus", url: "http://" + o.prom + "/api/v1/write", wallClock: o.rate > 0,
			header: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"},
			encode: func(round int, ts int64, from, to int) ([]byte, error) {
				req := prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, to-from)}
				for i := from; i < to; i++ {
					req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
						Labels: []prompb.Label{{Name: "__name__", Value: fmt.Sprintf("bench_m%d", i/o.hosts)},
							{Name: "core", Value: "all"}, {Name: "endpoint", Value: fmt.Sprintf("host-%04d", i%o.hosts)}},
						Samples: []prompb.Sample{{Value: value(round, i), Timestamp: ts * 1000}},
					})
				}
				b, err := req.Marshal()
				if err != nil {
					return nil, err
				}
				return snappy.Encode(nil, b), nil
			}})
	}
	if len(targets) == 0 {
		return fmt.Errorf("give --judge, --prom or both")
	}
	client := &http.Client{Timeout: time.Minute}
	busy := make(map[string]time.Duration)
	var mu sync.Mutex
	began := time.Now()
	var wall int64
	for round := range o.rounds {
		roundStart := time.Now()
		stepTS := start + int64(round)*o.step
		// A round late on a loaded machine still carries the time it is sent.
		wall = max(wall+1, roundStart.Unix())
		var wg sync.WaitGroup
		errs := make(chan error, len(targets)*o.conns)
		for _, t := range targets {
			// Encode first, so what is timed is the target taking points.
			var bodies [][]byte
			ts := stepTS
			if t.wallClock {
				ts = wall
			}
			for from := 0; from < series; from += o.batch {
				b, err := t.encode(round, ts, from, min(from+o.batch, series))
				if err != nil {
					return err
				}
				bodies = append(bodies, b)
			}
			work := make(chan []byte, len(bodies))
			for _, b := range bodies {
				work <- b
			}
			close(work)
			sent := time.Now()
			var tw sync.WaitGroup
			for range o.conns {
				wg.Add(1)
				tw.Add(1)
				go func() {
					defer wg.Done()
					defer tw.Done()
					for b := range work {
						if err := post(ctx, client, t, b); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			go func(name string) {
				tw.Wait()
				mu.Lock()
				busy[name] += time.Since(sent)
				mu.Unlock()
			}(t.name)
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		if o.rate > 0 {
			time.Sleep(time.Until(roundStart.Add(time.Duration(float64(time.Second) / o.rate))))
		}
	}
	time.Sleep(10 * time.Millisecond)
	total := o.rounds * series
	fmt.Printf("points_per_target=%d rounds=%d series=%d elapsed_s=%.2f\n", total, o.rounds, series, time.Since(began).Seconds())
	mu.Lock()
	defer mu.Unlock()
	for _, t := range targets {
		fmt.Printf("target=%s busy_s=%.2f points_per_s_while_sending=%.0f\n", t.name, busy[t.name].Seconds(), float64(total)/busy[t.name].Seconds())
	}
	return nil
}

func post(ctx context.Context, c *http.Client, t target, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range t.header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: HTTP %d: %s", t.name, resp.StatusCode, msg)
	}
	return nil
}
