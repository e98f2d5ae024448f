// Command alarmstorm is the storm benchmark of alarm: it posts N firing
// alerts spread over G groups to an Alertmanager v2 API (alarm's or
// Alertmanager's), receives the webhook notifications itself, and prints one
// JSON line with the intake rate (alerts acknowledged per second), the
// notification latency per group (first notification covering all of a
// group's alerts, after its last alert was acknowledged) and the peak
// resident memory of the target process.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type options struct {
	target      string
	name        string
	alerts      int
	groups      int
	batch       int
	concurrency int
	listen      string
	wait        time.Duration
	pid         int
}

func main() {
	var o options
	flag.StringVar(&o.target, "target", "127.0.0.1:7140", "HOST:PORT of the Alertmanager v2 API")
	flag.StringVar(&o.name, "name", "alarm", "label for the result line")
	flag.IntVar(&o.alerts, "alerts", 100000, "firing alerts to send")
	flag.IntVar(&o.groups, "groups", 10000, "groups they fall into (label group)")
	flag.IntVar(&o.batch, "batch", 100, "alerts per POST")
	flag.IntVar(&o.concurrency, "concurrency", 8, "concurrent POSTs")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:7149", "webhook receiver address (the target's config posts here)")
	flag.DurationVar(&o.wait, "wait", 3*time.Minute, "longest wait for every group's notification")
	flag.IntVar(&o.pid, "pid", 0, "target process id, for its peak memory (VmHWM)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "alarmstorm:", err)
		os.Exit(1)
	}
}

type result struct {
	Target          string  `json:"target"`
	Alerts          int     `json:"alerts"`
	Groups          int     `json:"groups"`
	IntakeSeconds   float64 `json:"intake_seconds"`
	AlertsPerSecond float64 `json:"alerts_per_second"`
	PostErrors      int64   `json:"post_errors"`
	GroupsNotified  int     `json:"groups_notified"`
	Notifications   int64   `json:"notifications"`
	LatencyP50      float64 `json:"latency_p50_seconds"`
	LatencyP99      float64 `json:"latency_p99_seconds"`
	LatencyMax      float64 `json:"latency_max_seconds"`
	PeakRSSMiB      float64 `json:"peak_rss_mib,omitempty"`
}

type receiver struct {
	mu            sync.Mutex
	seen          map[string]map[string]bool // group -> instances notified
	complete      map[string]time.Time
	perGroup      int
	notifications atomic.Int64
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var p struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	body, _ := io.ReadAll(req.Body)
	now := time.Now()
	if err := json.Unmarshal(body, &p); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.notifications.Add(1)
	r.mu.Lock()
	for _, a := range p.Alerts {
		g := a.Labels["group"]
		if r.seen[g] == nil {
			r.seen[g] = map[string]bool{}
		}
		r.seen[g][a.Labels["instance"]] = true
		if len(r.seen[g]) >= r.perGroup {
			if _, done := r.complete[g]; !done {
				r.complete[g] = now
			}
		}
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func run(o options) error {
	if o.groups <= 0 || o.alerts%o.groups != 0 {
		return fmt.Errorf("--alerts must be a positive multiple of --groups")
	}
	rcv := &receiver{seen: map[string]map[string]bool{}, complete: map[string]time.Time{}, perGroup: o.alerts / o.groups}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rcv}
	go srv.Serve(ln)
	defer srv.Close()

	// Alert i belongs to group i / (alerts/groups): a group's alerts come
	// together, as a failing host's do; groups keep arriving all run long.
	type batch struct{ from, to int }
	work := make(chan batch)
	acked := make([]time.Time, o.groups) // when each group's last alert was acknowledged
	var ackMu sync.Mutex
	var postErrors atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency}, Timeout: time.Minute}
	perGroup := o.alerts / o.groups
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for b := range work {
				buf.Reset()
				buf.WriteByte('[')
				for i := b.from; i < b.to; i++ {
					if i > b.from {
						buf.WriteByte(',')
					}
					fmt.Fprintf(&buf, `{"labels":{"alertname":"Storm","group":"g%05d","instance":"i%06d","severity":"warning"},"annotations":{"summary":"storm alert %d"}}`,
						i/perGroup, i, i)
				}
				buf.WriteByte(']')
				resp, err := client.Post("http://"+o.target+"/api/v2/alerts", "application/json", bytes.NewReader(buf.Bytes()))
				if err != nil {
					postErrors.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					postErrors.Add(1)
					continue
				}
				now := time.Now()
				ackMu.Lock()
				for i := b.from; i < b.to; i++ {
					if g := i / perGroup; now.After(acked[g]) {
						acked[g] = now
					}
				}
				ackMu.Unlock()
			}
		}()
	}
	start := time.Now()
	for from := 0; from < o.alerts; from += o.batch {
		work <- batch{from, min(from+o.batch, o.alerts)}
	}
	close(work)
	wg.Wait()
	intake := time.Since(start)

	deadline := time.Now().Add(o.wait)
	for {
		rcv.mu.Lock()
		n := len(rcv.complete)
		rcv.mu.Unlock()
		if n >= o.groups || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := result{
		Target: o.name, Alerts: o.alerts, Groups: o.groups,
		IntakeSeconds: intake.Seconds(), AlertsPerSecond: float64(o.alerts) / intake.Seconds(),
		PostErrors: postErrors.Load(), Notifications: rcv.notifications.Load(),
	}
	rcv.mu.Lock()
	var lat []float64
	for g, at := range rcv.complete {
		idx, _ := strconv.Atoi(strings.TrimPrefix(g, "g"))
		if idx >= 0 && idx < len(acked) {
			lat = append(lat, at.Sub(acked[idx]).Seconds())
		}
	}
	res.GroupsNotified = len(rcv.complete)
	rcv.mu.Unlock()
	sort.Float64s(lat)
	if len(lat) > 0 {
		res.LatencyP50 = lat[len(lat)/2]
		res.LatencyP99 = lat[len(lat)*99/100]
		res.LatencyMax = lat[len(lat)-1]
	}
	if o.pid > 0 {
		res.PeakRSSMiB = peakRSS(o.pid)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.GroupsNotified < o.groups {
		return fmt.Errorf("%s notified %d of %d groups within %v", o.name, res.GroupsNotified, o.groups, o.wait)
	}
	return nil
}

// peakRSS reads VmHWM from /proc/PID/status, in MiB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
