// Command ratelimitload is the ratelimit benchmarks' backend and load
// generator.
//
//	ratelimitload backend --listen ADDR --slots C --service S
//
// serves GET / with C slots each busy S per request (capacity C/S a
// second); requests beyond C wait. POST /capacity?slots=N changes C.
//
//	ratelimitload load --url URL --phases 0.5:5s,1:5s --capacity 1000
//
// offers load open-loop: each request is sent at its intended time whatever
// happened to the previous ones, and its latency counts from that intended
// time, so a stalled server is not hidden by a stalled client (no
// coordinated omission). A phase is a multiple of --capacity (or, with
// --rate-is-absolute, requests a second) and a duration. --limits-url polls
// the gateway's GET /limits every 100 ms and reports the adaptive limit.
// --halve-url and --halve-at halve the backend's slots once, mid-run. It
// prints one JSON line per phase; with --measured-capacity each phase also
// gives its goodput as a fraction of that.
//
//	ratelimitload capacity --url URL --concurrency N --duration 5s
//
// measures what a backend really serves: N requests kept in flight at all
// times (closed loop, N above its slots so it is never idle) for the
// duration, answered requests a second printed as one JSON line. A backend
// of C slots × S serves less than C/S when its sleeps overrun on a busy
// machine.
//
//	ratelimitload hello --listen ADDR
//	ratelimitload revproxy --listen ADDR --upstream HOST:PORT
//
// are the ceilings for the gateway's throughput: a bare net/http server
// answering "ok", and a bare httputil.ReverseProxy (keep-alive transport,
// nothing else) in front of an upstream.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ratelimitload backend|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backend":
		err = backend(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "capacity":
		err = measureCapacity(os.Args[2:])
	case "hello":
		err = hello(os.Args[2:])
	case "revproxy":
		err = revproxy(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratelimitload:", err)
		os.Exit(1)
	}
}

// slots is a resizable counting semaphore.
type slots struct {
	mu   sync.Mutex
	cond *sync.Cond
	max  int
	used int
}

func (s *slots) acquire() {
	s.mu.Lock()
	for s.used >= s.max {
		s.cond.Wait()
	}
	s.used++
	s.mu.Unlock()
}

func (s *slots) release() {
	s.mu.Lock()
	s.used--
	s.mu.Unlock()
	s.cond.Signal()
}

func (s *slots) resize(n int) {
	s.mu.Lock()
	s.max = n
	s.mu.Unlock()
	s.cond.Broadcast()
}

func backend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:7159", "listen address")
	n := fs.Int("slots", 10, "requests served at once")
	service := fs.Duration("service", 10*time.Millisecond, "time one request holds a slot")
	fs.Parse(args)
	s := &slots{max: *n}
	s.cond = sync.NewCond(&s.mu)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /capacity", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.Atoi(r.URL.Query().Get("slots"))
		if err != nil || v < 1 {
			http.Error(w, "slots=N", 400)
			return
		}
		s.resize(v)
		fmt.Fprintf(w, "slots %d\n", v)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.acquire()
		time.Sleep(*service)
		s.release()
		io.WriteString(w, "ok\n")
	})
	fmt.Fprintf(os.Stderr, "backend on %s: %d slots x %v = %.0f/s\n", *listen, *n, *service, float64(*n)/service.Seconds())
	return http.ListenAndServe(*listen, mux)
}

type phase struct {
	mult float64
	dur  time.Duration
}

type result struct {
	Phase      string  `json:"phase"`
	OfferedRPS float64 `json:"offered_rps"`
	OKRPS      float64 `json:"goodput_rps"`
	Refused    int64   `json:"refused"`
	Errors     int64   `json:"errors"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	P999ms     float64 `json:"p99_9_ms"`
	OfMeasured float64 `json:"goodput_of_measured,omitempty"`
	LimitMin   int     `json:"limit_min,omitempty"`
	LimitMax   int     `json:"limit_max,omitempty"`
	LimitLast  int     `json:"limit_last,omitempty"`
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:7151/", "URL to GET")
	phasesText := fs.String("phases", "1:5s", "MULT:DURATION,... (multiples of --capacity)")
	capacity := fs.Float64("capacity", 1000, "requests a second that MULT 1 stands for")
	skip := fs.Duration("skip", time.Second, "leave out each phase's first part from its figures (the limiter settling)")
	limitsURL := fs.String("limits-url", "", "gateway GET /limits to poll for the adaptive limit")
	halveURL := fs.String("halve-url", "", "backend base URL whose slots are halved at --halve-at")
	halveAt := fs.Duration("halve-at", 0, "when to halve the backend's slots (from the start)")
	halveTo := fs.Int("halve-to", 0, "slots after halving")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a request after this long (counted as an error)")
	measured := fs.Float64("measured-capacity", 0, "the backend's measured requests a second (see capacity): each phase's goodput is also given as a fraction of it")
	fs.Parse(args)
	var phases []phase
	for _, p := range strings.Split(*phasesText, ",") {
		m, d, ok := strings.Cut(p, ":")
		mult, err1 := strconv.ParseFloat(m, 64)
		dur, err2 := time.ParseDuration(d)
		if !ok || err1 != nil || err2 != nil || mult <= 0 || dur <= 0 {
			return fmt.Errorf("--phases %q: want MULT:DURATION,...", p)
		}
		phases = append(phases, phase{mult, dur})
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}}

	type sample struct {
		phase   int
		at      time.Duration // intended send, from the phase start
		latency time.Duration
		code    int
	}
	var mu sync.Mutex
	var samples []sample
	var limits [][]int // per phase
	limits = make([][]int, len(phases))
	var currentPhase atomic.Int32

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *limitsURL != "" {
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if l, ok := pollLimit(client, *limitsURL); ok {
					p := int(currentPhase.Load())
					mu.Lock()
					limits[p] = append(limits[p], l)
					mu.Unlock()
				}
			}
		}()
	}
	start := time.Now()
	if *halveURL != "" && *halveAt > 0 {
		time.AfterFunc(*halveAt, func() {
			resp, err := client.Post(fmt.Sprintf("%s/capacity?slots=%d", *halveURL, *halveTo), "text/plain", nil)
			if err == nil {
				resp.Body.Close()
			}
			fmt.Fprintf(os.Stderr, "backend slots set to %d at %v\n", *halveTo, time.Since(start).Round(time.Millisecond))
		})
	}
	var wg sync.WaitGroup
	phaseStart := start
	for pi, ph := range phases {
		currentPhase.Store(int32(pi))
		rate := ph.mult * *capacity
		interval := time.Duration(float64(time.Second) / rate)
		n := int(ph.dur / interval)
		for i := 0; i < n; i++ {
			intended := phaseStart.Add(time.Duration(i) * interval)
			if d := time.Until(intended); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func(pi int, intended time.Time) {
				defer wg.Done()
				code := 0
				resp, err := client.Get(*url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				lat := time.Since(intended)
				mu.Lock()
				samples = append(samples, sample{pi, intended.Sub(phaseStart), lat, code})
				mu.Unlock()
			}(pi, intended)
		}
		phaseStart = phaseStart.Add(ph.dur)
	}
	wg.Wait()
	cancel()

	enc := json.NewEncoder(os.Stdout)
	for pi, ph := range phases {
		var lat []time.Duration
		var refused, errs int64
		judged := ph.dur - *skip
		if judged <= 0 {
			judged = ph.dur
		}
		for _, s := range samples {
			if s.phase != pi || (s.at < *skip && judged != ph.dur) {
				continue
			}
			switch {
			case s.code == 200:
				lat = append(lat, s.latency)
			case s.code == 429 || s.code == 503:
				refused++
			default:
				errs++
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		r := result{
			Phase:      fmt.Sprintf("%gx for %v", ph.mult, ph.dur),
			OfferedRPS: ph.mult * *capacity,
			OKRPS:      round(float64(len(lat)) / judged.Seconds()),
			Refused:    refused, Errors: errs,
			P50ms: pct(lat, 0.50), P99ms: pct(lat, 0.99), P999ms: pct(lat, 0.999),
		}
		if *measured > 0 {
			r.OfMeasured = round(r.OKRPS / *measured)
		}
		if l := limits[pi]; len(l) > 0 {
			r.LimitMin, r.LimitMax, r.LimitLast = l[0], l[0], l[len(l)-1]
			for _, v := range l {
				r.LimitMin, r.LimitMax = min(r.LimitMin, v), max(r.LimitMax, v)
			}
		}
		enc.Encode(r)
	}
	if *limitsURL != "" {
		mu.Lock()
		var all []string
		for pi, l := range limits {
			all = append(all, fmt.Sprintf("phase %d: %v", pi+1, l))
		}
		mu.Unlock()
		fmt.Fprintf(os.Stderr, "adaptive limit every 100 ms:\n%s\n", strings.Join(all, "\n"))
	}
	return nil
}

func hello(args []string) error {
	fs := flag.NewFlagSet("hello", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:7158", "listen address")
	fs.Parse(args)
	return http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
}

func revproxy(args []string) error {
	fs := flag.NewFlagSet("revproxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:7157", "listen address")
	upstream := fs.String("upstream", "127.0.0.1:7159", "upstream host:port")
	fs.Parse(args)
	target := &neturl.URL{Scheme: "http", Host: *upstream}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
	}
	return http.ListenAndServe(*listen, rp)
}

func measureCapacity(args []string) error {
	fs := flag.NewFlagSet("capacity", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:7159/", "backend URL to GET")
	concurrency := fs.Int("concurrency", 20, "requests kept in flight (above the backend's slots)")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure, after a 1 s warm-up")
	fs.Parse(args)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency}}
	var ok, failed atomic.Int64
	var counting atomic.Bool
	stop := time.Now().Add(time.Second + *duration)
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				resp, err := client.Get(*url)
				good := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				switch {
				case !counting.Load():
				case good:
					ok.Add(1)
				default:
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	counting.Store(true)
	begin := time.Now()
	wg.Wait()
	// Requests in flight at the stop finish after it: count them over the
	// time they took.
	elapsed := time.Since(begin)
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"measured_capacity_rps": round(float64(ok.Load()) / elapsed.Seconds()),
		"concurrency":           *concurrency,
		"seconds":               round(elapsed.Seconds()),
		"errors":                failed.Load(),
	})
}

func pct(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(lat)))) - 1
	return round(float64(lat[max(i, 0)]) / 1e6)
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

// pollLimit reads the first upstream's adaptive limit from GET /limits.
func pollLimit(client *http.Client, url string) (int, bool) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var rep struct {
		Upstreams []struct {
			Adaptive *struct {
				Limit int `json:"limit"`
			} `json:"adaptive"`
		} `json:"upstreams"`
	}
	if json.NewDecoder(resp.Body).Decode(&rep) != nil {
		return 0, false
	}
	for _, u := range rep.Upstreams {
		if u.Adaptive != nil {
			return u.Adaptive.Limit, true
		}
	}
	return 0, false
}
