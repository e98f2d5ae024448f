// Command configd-watchers measures configd's propagation time: it holds N
// long-polling watchers of one namespace against a running server (as N
// host agents would), publishes releases, and times each watcher from the
// publish to the new file being on its disk (fetched, written, renamed). It
// also reads the server's resident memory before and after the watchers
// connect to give the memory per watcher. Like the agent, each watcher asks
// for the release in the watch answer (content=1).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type change struct {
	Namespace string   `json:"namespace"`
	Version   int64    `json:"version"`
	Release   *release `json:"release"`
}

type release struct {
	Version int64 `json:"version"`
	Files   []struct {
		Name    string `json:"name"`
		Content string `json:"content"`
	} `json:"files"`
}

func main() {
	server := flag.String("server", "http://127.0.0.1:7160", "configd server")
	watchers := flag.Int("watchers", 10000, "simulated watchers")
	publishes := flag.Int("publishes", 5, "releases to publish (one at a time, each after every watcher has the previous)")
	ns := flag.String("namespace", "bench/prod/app", "namespace every watcher watches")
	dir := flag.String("dir", "", "where watchers write their files (default a temp dir)")
	rampBatch := flag.Int("ramp", 500, "watchers connected at a time while ramping up")
	clientKind := flag.String("client", "raw", "how watchers speak HTTP/1.1: raw (a request written and the answer parsed on each watcher's own connection, little CPU) or nethttp (net/http's Client, as the agent does, several goroutine hand-offs a request)")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile of the publishes to this file")
	serverProfile := flag.String("server-cpuprofile", "", "write the server's CPU profile of the publishes to this file (the server needs --pprof)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "configd-watchers-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	// The bench's own requests (publish, metrics) use this client; every
	// watcher has its own, with one connection, as each agent would.
	hc := &http.Client{Transport: newTransport()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	must(publish(hc, *server, *ns, 0))
	base := mustRSS(hc, *server)
	goBaseline := goInUse(hc, *server)

	var published sync.Map // version -> time.Time
	var mu sync.Mutex
	lat := map[int64][]time.Duration{}
	answeredLat := map[int64][]time.Duration{}
	applied := map[int64]*atomic.Int64{}
	for v := int64(1); v <= int64(*publishes)+1; v++ {
		applied[v] = &atomic.Int64{}
	}
	var errs atomic.Int64
	diskSlots := make(chan struct{}, 8)
	for i := 0; i < *watchers; i++ {
		wdir := filepath.Join(*dir, strconv.Itoa(i/1000), strconv.Itoa(i))
		must(os.MkdirAll(wdir, 0o755))
		sim := &simHost{server: *server, ns: *ns, host: fmt.Sprintf("sim-%05d", i), dir: wdir, diskSlots: diskSlots, published: &published, errs: &errs,
			done: func(v int64, answered, d time.Duration) {
				mu.Lock()
				lat[v] = append(lat[v], d)
				answeredLat[v] = append(answeredLat[v], answered)
				mu.Unlock()
				if c := applied[v]; c != nil {
					c.Add(1)
				}
			}}
		switch *clientKind {
		case "raw":
			go sim.watchRaw(ctx)
		case "nethttp":
			go sim.watch(ctx, &http.Client{Transport: newTransport()})
		default:
			log.Fatalf("--client %q: want raw or nethttp", *clientKind)
		}
		if (i+1)%*rampBatch == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Every watcher holds version 1 (the first answer) and then waits.
	waitFor(func() bool { return applied[1].Load() == int64(*watchers) }, 2*time.Minute, "initial sync")
	waitFor(func() bool { return gauge(hc, *server, "opskit_configd_watchers") >= float64(*watchers) }, time.Minute, "watchers waiting")
	// The connect burst leaves garbage and freed stacks the runtime hands
	// back to the OS over a few seconds: take the settled (lowest) figure.
	withWatchers, goBase, goWith := 0.0, goBaseline, 0.0
	for range 6 {
		time.Sleep(time.Second)
		if v := mustRSS(hc, *server); withWatchers == 0 || v < withWatchers {
			withWatchers = v
		}
		if v := goInUse(hc, *server); goWith == 0 || v < goWith {
			goWith = v
		}
	}
	fmt.Printf("watchers: %d waiting on %s\n", *watchers, *ns)
	fmt.Printf("server RSS: %.1f MB before, %.1f MB with watchers: %.1f KB per watcher (Go heap+stacks in use: %.1f KB per watcher)\n",
		base/1e6, withWatchers/1e6, (withWatchers-base)/float64(*watchers)/1024, (goWith-goBase)/float64(*watchers)/1024)

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	serverProfiled := make(chan error, 1)
	if *serverProfile != "" {
		// The profile covers the publishes: about a second each.
		go func() { serverProfiled <- fetchProfile(hc, *server, *publishes+1, *serverProfile) }()
	} else {
		serverProfiled <- nil
	}
	serverCPU0 := metricsText(hc, *server)["process_cpu_seconds_total"]
	ownCPU0 := ownCPU()
	var all, allAnswered []time.Duration
	for p := 1; p <= *publishes; p++ {
		v := int64(p + 1)
		published.Store(v, time.Now())
		must(publish(hc, *server, *ns, p))
		waitFor(func() bool { return applied[v].Load() == int64(*watchers) }, 2*time.Minute, fmt.Sprintf("release %d everywhere", v))
		mu.Lock()
		l := append([]time.Duration(nil), lat[v]...)
		a := append([]time.Duration(nil), answeredLat[v]...)
		mu.Unlock()
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
		fmt.Printf("release %d: watch answered p50 %v p99 %v; file on disk p50 %v p99 %v max %v\n", v, q(a, 0.5), q(a, 0.99), q(l, 0.5), q(l, 0.99), l[len(l)-1].Round(time.Millisecond))
		all = append(all, l...)
		allAnswered = append(allAnswered, a...)
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Printf("CPU during the publishes: server %.2f s, watchers %.2f s\n",
		metricsText(hc, *server)["process_cpu_seconds_total"]-serverCPU0, ownCPU()-ownCPU0)
	must(<-serverProfiled)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Slice(allAnswered, func(i, j int) bool { return allAnswered[i] < allAnswered[j] })
	fmt.Printf("all %d deliveries: watch answered p50 %v p99 %v; file on disk p50 %v p99 %v max %v (watch errors %d)\n",
		len(all), q(allAnswered, 0.5), q(allAnswered, 0.99), q(all, 0.5), q(all, 0.99), all[len(all)-1].Round(time.Millisecond), errs.Load())
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     10 * time.Minute,
	}
}

func q(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(p*float64(len(sorted)-1)+0.5)].Round(time.Millisecond)
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func waitFor(cond func() bool, within time.Duration, what string) {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			log.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publish(hc *http.Client, server, ns string, n int) error {
	body := fmt.Sprintf(`{"comment":"bench %d","files":[{"name":"app.properties","content":"generation=%d\npool.size=32\nfeature.x=true\n"}]}`, n, n)
	resp, err := hc.Post(server+"/v1/ns/"+ns+"/publish", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("publish: %s %s", resp.Status, b)
	}
	return nil
}

// simHost is one simulated host: it does what an agent does — long-poll,
// take the release from the answer, write it. diskSlots bounds the
// simulated hosts writing at once.
type simHost struct {
	server, ns, host, dir string
	diskSlots             chan struct{}
	published             *sync.Map // version -> time.Time
	done                  func(v int64, answered, onDisk time.Duration)
	errs                  *atomic.Int64
	held                  int64
}

func (h *simHost) watchURI() string {
	return fmt.Sprintf("/v1/watch?ns=%s:%d&host=%s&timeout=10m&content=1", h.ns, h.held, h.host)
}

// watch long-polls with net/http's Client.
func (h *simHost) watch(ctx context.Context, hc *http.Client) {
	for ctx.Err() == nil {
		resp, err := hc.Get(h.server + h.watchURI())
		if err != nil {
			h.errs.Add(1)
			time.Sleep(time.Second)
			continue
		}
		h.answer(resp)
	}
}

// watchRaw long-polls on a connection of its own, writing each request and
// parsing each answer itself: the same exchange as the agent's, with none of
// net/http's Transport goroutines, which on a machine shared with the
// server cost more CPU than the server's own part.
func (h *simHost) watchRaw(ctx context.Context) {
	addr := strings.TrimPrefix(h.server, "http://")
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			h.errs.Add(1)
			time.Sleep(time.Second)
			continue
		}
		br := bufio.NewReader(conn)
		for ctx.Err() == nil {
			if _, err = io.WriteString(conn, "GET "+h.watchURI()+" HTTP/1.1\r\nHost: configd\r\n\r\n"); err != nil {
				break
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			if !h.answer(resp) {
				break
			}
		}
		conn.Close()
	}
}

// answer applies a watch answer and reports whether the connection may
// carry on.
func (h *simHost) answer(resp *http.Response) bool {
	var changes []change
	var err error
	if resp.StatusCode == 200 {
		err = json.NewDecoder(resp.Body).Decode(&changes)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		h.errs.Add(1)
		return false
	}
	if len(changes) == 0 {
		return !resp.Close
	}
	var answered time.Duration
	if t, ok := h.published.Load(changes[0].Version); ok {
		answered = time.Since(t.(time.Time))
	}
	// The answer carries the release, as the agent asks for it.
	rel := changes[0].Release
	if rel == nil {
		h.errs.Add(1)
		return !resp.Close
	}
	// All simulated hosts share this machine's disk and threads:
	// thousands of concurrent creates would only fight over both.
	h.diskSlots <- struct{}{}
	for _, f := range rel.Files {
		tmp := filepath.Join(h.dir, "."+f.Name+".tmp")
		if err := os.WriteFile(tmp, []byte(f.Content), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(h.dir, f.Name)); err != nil {
			log.Fatal(err)
		}
	}
	<-h.diskSlots
	var since time.Duration
	if t, ok := h.published.Load(rel.Version); ok {
		since = time.Since(t.(time.Time))
	}
	h.held = rel.Version
	h.done(rel.Version, answered, since)
	return !resp.Close
}

// fetchProfile saves the server's CPU profile over the next seconds.
func fetchProfile(hc *http.Client, server string, seconds int, path string) error {
	resp, err := hc.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", server, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("server profile: %s (start the server with --pprof)", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func metricsText(hc *http.Client, server string) map[string]float64 {
	out := map[string]float64{}
	resp, err := hc.Get(server + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndexByte(line, ' '); i > 0 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// ownCPU is this process's user + system CPU seconds.
func ownCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// goInUse is the server's Go heap and stack memory in use.
func goInUse(hc *http.Client, server string) float64 {
	m := metricsText(hc, server)
	return m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"]
}

func gauge(hc *http.Client, server, name string) float64 { return metricsText(hc, server)[name] }

func mustRSS(hc *http.Client, server string) float64 {
	v, ok := metricsText(hc, server)["process_resident_memory_bytes"]
	if !ok {
		log.Fatal("server /metrics has no process_resident_memory_bytes")
	}
	return v
}
