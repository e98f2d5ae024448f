// Package host is the agent's view of its host: host metrics read with
// the collector's own code (collector/hostmetrics, open-falcon names), and
// the CPU time and memory of single processes for per-program figures.
package host

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/hostmetrics"
	"github.com/opskit/opskit/internal/metric"
)

// Sample is one host metric as the API shows it.
type Sample struct {
	Metric string            `json:"metric"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
}

// View keeps the latest round of host metrics.
type View struct {
	collector *hostmetrics.Collector
	set       *metrics.Set
	// values are the latest values by Prometheus series name, read by the
	// gauges registered in set.
	values map[string]float64

	mu     sync.Mutex
	at     time.Time
	points []metric.Point
	err    error
}

// NewView reads the live host. With a metric set, every host metric is
// also exported as opskit_deploy_host_<name> (dots as underscores), e.g.
// opskit_deploy_host_load_1min, opskit_deploy_host_df_bytes_free_percent{mount="/"}.
func NewView(set *metrics.Set) *View {
	return &View{collector: hostmetrics.New(hostmetrics.Config{}), set: set, values: map[string]float64{}}
}

// PromName turns an open-falcon metric and its labels into a series name.
func PromName(s Sample) string {
	var b strings.Builder
	b.WriteString("opskit_deploy_host_")
	for _, r := range s.Metric {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if len(s.Labels) > 0 {
		keys := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", k, s.Labels[k])
		}
		b.WriteByte('}')
	}
	return b.String()
}

// Collect reads one round.
func (v *View) Collect(now time.Time) {
	pts, err := v.collector.Collect(now)
	v.mu.Lock()
	v.at, v.points, v.err = now, pts, err
	v.mu.Unlock()
	if v.set == nil {
		return
	}
	_, samples, _ := v.Snapshot()
	for _, s := range samples {
		name := PromName(s)
		v.mu.Lock()
		_, known := v.values[name]
		v.values[name] = s.Value
		v.mu.Unlock()
		if !known {
			v.set.GetOrCreateGauge(name, func() float64 {
				v.mu.Lock()
				defer v.mu.Unlock()
				return v.values[name]
			})
		}
	}
}

// Run collects every interval until ctx ends (rates need two rounds).
func (v *View) Run(ctx context.Context, interval time.Duration) error {
	v.Collect(time.Now())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			v.Collect(now)
		}
	}
}

// Snapshot returns the latest round: when it was read, its samples and
// what could not be read.
func (v *View) Snapshot() (time.Time, []Sample, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Sample, 0, len(v.points))
	for _, p := range v.points {
		s := Sample{Metric: p.Labels.Name(), Value: p.Value}
		for _, l := range p.Labels {
			if l.Name == metric.NameLabel {
				continue
			}
			if s.Labels == nil {
				s.Labels = map[string]string{}
			}
			s.Labels[l.Name] = l.Value
		}
		out = append(out, s)
	}
	return v.at, out, v.err
}

// Usage is one process's resource use.
type Usage struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   int64   `json:"rss_bytes"`
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcessUsage reads a process's CPU time (user + system, in /proc/PID/stat)
// and resident memory (VmRSS in /proc/PID/status).
func ProcessUsage(pid int) (Usage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Usage{}, err
	}
	end := strings.LastIndexByte(string(b), ')')
	if end < 0 {
		return Usage{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 {
		return Usage{}, fmt.Errorf("pid %d: short stat", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return Usage{}, fmt.Errorf("pid %d: bad cpu times in stat", pid)
	}
	u := Usage{CPUSeconds: float64(utime+stime) / clockTicks}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				u.RSSBytes = kb * 1024
			}
		}
	}
	return u, nil
}
