package fleet

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/opskit/opskit/deployer/hosts"
)

// HostStats summarises one host's agent report: load, memory, disks and
// the app's programs' CPU and memory.
type HostStats struct {
	Host           string         `json:"host"`
	Time           time.Time      `json:"time,omitzero"`
	Load1          float64        `json:"load1"`
	Load5          float64        `json:"load5"`
	Load15         float64        `json:"load15"`
	MemTotalBytes  float64        `json:"mem_total_bytes"`
	MemUsedPercent float64        `json:"mem_used_percent"`
	Disks          []DiskStats    `json:"disks"`
	Programs       []ProgramUsage `json:"programs"`
	Error          string         `json:"error,omitempty"`
}

// DiskStats is one mounted file system's use.
type DiskStats struct {
	Mount       string  `json:"mount"`
	UsedPercent float64 `json:"used_percent"`
	FreeBytes   float64 `json:"free_bytes"`
}

// Stats reads each of the target's hosts' agent report concurrently and
// summarises it; only the app's own programs are listed. A host that does
// not answer has its Error set.
func (f *Fleet) Stats(ctx context.Context, t Target) ([]HostStats, error) {
	hs, err := f.Resolve(ctx, t)
	if err != nil {
		return nil, err
	}
	out := make([]HostStats, len(hs))
	f.eachHost(ctx, hs, func(ctx context.Context, i int, h hosts.Host) {
		rep, err := f.Agents.Host(ctx, h.Addr)
		if err != nil {
			out[i] = HostStats{Host: h.Name, Disks: []DiskStats{}, Programs: []ProgramUsage{}, Error: err.Error()}
			return
		}
		out[i] = Summarise(h.Name, t.App, rep)
	})
	return out, nil
}

// Summarise picks the figures an operator looks at first from an agent's
// report (open-falcon metric names, as collector/hostmetrics emits them).
func Summarise(host, app string, rep *HostReport) HostStats {
	s := HostStats{Host: host, Time: rep.Time, Error: rep.Error, Disks: []DiskStats{}, Programs: []ProgramUsage{}}
	disks := map[string]*DiskStats{}
	disk := func(mount string) *DiskStats {
		d := disks[mount]
		if d == nil {
			d = &DiskStats{Mount: mount}
			disks[mount] = d
		}
		return d
	}
	for _, smp := range rep.Samples {
		switch smp.Metric {
		case "load.1min":
			s.Load1 = smp.Value
		case "load.5min":
			s.Load5 = smp.Value
		case "load.15min":
			s.Load15 = smp.Value
		case "mem.memtotal":
			s.MemTotalBytes = smp.Value
		case "mem.memused.percent":
			s.MemUsedPercent = smp.Value
		case "df.bytes.used.percent":
			disk(smp.Labels["mount"]).UsedPercent = smp.Value
		case "df.bytes.free":
			disk(smp.Labels["mount"]).FreeBytes = smp.Value
		}
	}
	for _, d := range disks {
		s.Disks = append(s.Disks, *d)
	}
	slices.SortFunc(s.Disks, func(a, b DiskStats) int { return strings.Compare(a.Mount, b.Mount) })
	for _, p := range rep.Programs {
		if app == "" || strings.HasPrefix(p.Name, app+":") {
			s.Programs = append(s.Programs, p)
		}
	}
	return s
}
