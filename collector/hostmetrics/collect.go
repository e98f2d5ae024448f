// Package hostmetrics reads a Linux host's metrics from /proc and /sys and
// names them the way open-falcon's agent does (cpu.idle, mem.memfree.percent,
// df.bytes.free.percent with mount=/, net.if.in.bytes with iface=eth0, ...).
// Counters of the kernel become per-second rates between two rounds; the
// first round therefore yields only the gauges. See collector/README.md for
// every metric and its unit.
package hostmetrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// FSStats is what statfs(2) tells of one mounted file system.
type FSStats struct {
	BlockSize                       uint64
	Blocks, BlocksFree, BlocksAvail uint64
	Files, FilesFree                uint64
}

// Config says where to read from. The zero value reads the live host.
type Config struct {
	// Proc and Sys are the mount points of procfs and sysfs ("/proc",
	// "/sys" when empty); tests point them at captured files.
	Proc string
	Sys  string
	// Statfs reports on a mounted file system; nil uses statfs(2).
	Statfs func(path string) (FSStats, error)
	// KeepLoopback also reports the loopback interface "lo".
	KeepLoopback bool
	// TCPStates counts TCP sockets per state from /proc/net/tcp and tcp6.
	// The kernel walks its whole socket hash table for those files, which
	// costs tens of milliseconds on a host with many sockets, so it is off
	// by default; the cheap counts of /proc/net/snmp and sockstat are
	// always reported.
	TCPStates bool
}

// Collector reads one round of host metrics at a time and keeps the
// previous round's counters to turn them into rates. It is not safe for
// concurrent use.
type Collector struct {
	cfg  Config
	prev *counters
}

// counters are the kernel counters of one round.
type counters struct {
	time  time.Time
	cpu   CPUTimes
	stat  Stat
	tcp   map[string]int64 // /proc/net/snmp Tcp counters
	disks map[string]DiskStats
	nets  map[string]NetDev
}

// New returns a collector reading as cfg says.
func New(cfg Config) *Collector {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Sys == "" {
		cfg.Sys = "/sys"
	}
	if cfg.Statfs == nil {
		cfg.Statfs = statfs
	}
	return &Collector{cfg: cfg}
}

// Collect reads one round at now and returns its points, stamped with
// now's Unix second, without endpoint label or step. Rates are per second
// of the time since the previous call; they are left out on the first call and after a counter
// went backwards (a reboot or a wrapped 32-bit counter). A group that
// cannot be read (a missing file, a parse error) is left out and reported
// in the returned error, joined with the others; the rest is still returned.
func (c *Collector) Collect(now time.Time) ([]metric.Point, error) {
	b := &builder{ts: now.Unix()}
	cur := &counters{time: now, disks: map[string]DiskStats{}, nets: map[string]NetDev{}}
	var errs []error
	try := func(what string, fn func() error) {
		if err := fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	try("cpu", func() error { return c.cpu(b, cur) })
	try("load", func() error { return c.load(b, cur) })
	try("memory", func() error { return c.memory(b) })
	try("df", func() error { return c.df(b) })
	try("disk io", func() error { return c.diskIO(b, cur) })
	try("network", func() error { return c.network(b, cur) })
	try("tcp", func() error { return c.tcp(b, cur) })
	if c.cfg.TCPStates {
		try("tcp states", func() error { return c.tcpStates(b) })
	}
	try("file handles", func() error { return c.files(b) })
	try("processes", func() error { return c.processes(b) })
	try("uptime", func() error { return c.uptime(b) })
	b.gauge("agent.alive", 1)
	c.prev = cur
	return b.pts, errors.Join(errs...)
}

func (c *Collector) read(rel string) ([]byte, error) {
	return os.ReadFile(filepath.Join(c.cfg.Proc, rel))
}

// elapsed is the seconds since the previous round, or 0 when there is none.
func (c *Collector) elapsed(now time.Time) float64 {
	if c.prev == nil || !now.After(c.prev.time) {
		return 0
	}
	return now.Sub(c.prev.time).Seconds()
}

func (c *Collector) cpu(b *builder, cur *counters) error {
	raw, err := c.read("stat")
	if err != nil {
		return err
	}
	s, err := ParseStat(raw)
	if err != nil {
		return err
	}
	cur.cpu, cur.stat = s.CPU, s
	b.gauge("cpu.num", float64(s.NumCPU))
	b.gauge("proc.running", float64(s.ProcsRunning))
	b.gauge("proc.blocked", float64(s.ProcsBlocked))
	if c.prev == nil || c.prev.stat.NumCPU == 0 {
		return nil
	}
	p := c.prev.cpu
	total := float64(s.CPU.Total()) - float64(p.Total())
	if total > 0 && s.CPU.Total() >= p.Total() {
		pct := func(now, before uint64) float64 {
			if now < before {
				return 0
			}
			return 100 * float64(now-before) / total
		}
		idle := pct(s.CPU.Idle, p.Idle)
		b.gauge("cpu.idle", idle)
		b.gauge("cpu.busy", 100-idle)
		b.gauge("cpu.user", pct(s.CPU.User, p.User))
		b.gauge("cpu.nice", pct(s.CPU.Nice, p.Nice))
		b.gauge("cpu.system", pct(s.CPU.System, p.System))
		b.gauge("cpu.iowait", pct(s.CPU.IOWait, p.IOWait))
		b.gauge("cpu.irq", pct(s.CPU.IRQ, p.IRQ))
		b.gauge("cpu.softirq", pct(s.CPU.SoftIRQ, p.SoftIRQ))
		b.gauge("cpu.steal", pct(s.CPU.Steal, p.Steal))
		b.gauge("cpu.guest", pct(s.CPU.Guest, p.Guest))
	}
	if dt := c.elapsed(cur.time); dt > 0 {
		b.rate("cpu.switches", s.ContextSw, c.prev.stat.ContextSw, dt)
		b.rate("cpu.interrupts", s.Interrupts, c.prev.stat.Interrupts, dt)
		b.rate("proc.forks", s.Forks, c.prev.stat.Forks, dt)
	}
	return nil
}

func (c *Collector) load(b *builder, cur *counters) error {
	raw, err := c.read("loadavg")
	if err != nil {
		return err
	}
	l, err := ParseLoadAvg(raw)
	if err != nil {
		return err
	}
	b.gauge("load.1min", l.Load1)
	b.gauge("load.5min", l.Load5)
	b.gauge("load.15min", l.Load15)
	if n := cur.stat.NumCPU; n > 0 {
		b.gauge("load.1min.percore", l.Load1/float64(n))
		b.gauge("load.5min.percore", l.Load5/float64(n))
		b.gauge("load.15min.percore", l.Load15/float64(n))
	}
	b.gauge("thread.total", float64(l.Threads))
	return nil
}

func (c *Collector) memory(b *builder) error {
	raw, err := c.read("meminfo")
	if err != nil {
		return err
	}
	m, err := ParseMemInfo(raw)
	if err != nil {
		return err
	}
	free := m.MemFree + m.Buffers + m.Cached
	if m.HasAvailable {
		free = m.MemAvailable
	}
	free = min(free, m.MemTotal)
	b.gauge("mem.memtotal", float64(m.MemTotal))
	b.gauge("mem.memfree", float64(free))
	b.gauge("mem.memused", float64(m.MemTotal-free))
	if m.MemTotal > 0 {
		b.gauge("mem.memfree.percent", 100*float64(free)/float64(m.MemTotal))
		b.gauge("mem.memused.percent", 100*float64(m.MemTotal-free)/float64(m.MemTotal))
	}
	swapFree := min(m.SwapFree, m.SwapTotal)
	b.gauge("mem.swaptotal", float64(m.SwapTotal))
	b.gauge("mem.swapfree", float64(swapFree))
	b.gauge("mem.swapused", float64(m.SwapTotal-swapFree))
	if m.SwapTotal > 0 {
		b.gauge("mem.swapfree.percent", 100*float64(swapFree)/float64(m.SwapTotal))
		b.gauge("mem.swapused.percent", 100*float64(m.SwapTotal-swapFree)/float64(m.SwapTotal))
	} else {
		// No swap: nothing is used, which alerts on swapused.percent expect.
		b.gauge("mem.swapfree.percent", 100)
		b.gauge("mem.swapused.percent", 0)
	}
	return nil
}

// df reports every mounted file system backed by a device. Where two
// mounts share a mount point the later one hides the earlier, as in the
// kernel; a device mounted twice (a bind mount) is reported once, at its
// first mount point. Pseudo file systems ("nodev" in /proc/filesystems) are
// skipped, except the root file system (an overlay in a container).
func (c *Collector) df(b *builder) error {
	raw, err := c.read("mounts")
	if err != nil {
		return err
	}
	mounts, err := ParseMounts(raw)
	if err != nil {
		return err
	}
	fsRaw, err := c.read("filesystems")
	if err != nil {
		return err
	}
	nodev, err := ParseNodevFilesystems(fsRaw)
	if err != nil {
		return err
	}
	visible := map[string]Mount{}
	var order []string
	for _, m := range mounts {
		if _, ok := visible[m.Point]; !ok {
			order = append(order, m.Point)
		}
		visible[m.Point] = m
	}
	devices := map[string]bool{}
	var errs []error
	for _, point := range order {
		m := visible[point]
		if nodev[m.FSType] && m.Point != "/" {
			continue
		}
		if !nodev[m.FSType] {
			if devices[m.Device] {
				continue
			}
			devices[m.Device] = true
		}
		st, err := c.cfg.Statfs(m.Point)
		if err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", m.Point, err))
			continue
		}
		if st.Blocks == 0 {
			continue
		}
		tags := []metric.Label{{Name: "mount", Value: m.Point}, {Name: "fstype", Value: m.FSType}}
		bs := float64(st.BlockSize)
		// "free" is what an unprivileged user may still write, as df shows it;
		// "used" excludes the blocks reserved for root.
		total := float64(st.Blocks) * bs
		used := float64(st.Blocks-min(st.BlocksFree, st.Blocks)) * bs
		avail := float64(min(st.BlocksAvail, st.Blocks)) * bs
		b.gauge("df.bytes.total", total, tags...)
		b.gauge("df.bytes.used", used, tags...)
		b.gauge("df.bytes.free", avail, tags...)
		if used+avail > 0 {
			b.gauge("df.bytes.used.percent", 100*used/(used+avail), tags...)
			b.gauge("df.bytes.free.percent", 100*avail/(used+avail), tags...)
		}
		if st.Files > 0 {
			ifree := min(st.FilesFree, st.Files)
			b.gauge("df.inodes.total", float64(st.Files), tags...)
			b.gauge("df.inodes.used", float64(st.Files-ifree), tags...)
			b.gauge("df.inodes.free", float64(ifree), tags...)
			b.gauge("df.inodes.used.percent", 100*float64(st.Files-ifree)/float64(st.Files), tags...)
			b.gauge("df.inodes.free.percent", 100*float64(ifree)/float64(st.Files), tags...)
		}
	}
	return errors.Join(errs...)
}

// wholeDisks lists /sys/block, the block devices that are not partitions.
// It returns nil when /sys is not readable, and then every device counts.
func (c *Collector) wholeDisks() map[string]bool {
	entries, err := os.ReadDir(filepath.Join(c.cfg.Sys, "block"))
	if err != nil {
		return nil
	}
	out := make(map[string]bool, len(entries))
	for _, e := range entries {
		// /sys/block names a device's "/" as "!" (cciss!c0d0).
		out[strings.ReplaceAll(e.Name(), "!", "/")] = true
	}
	return out
}

// virtualDisk tells devices whose I/O is not a disk's: loop and RAM disks.
func virtualDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (c *Collector) diskIO(b *builder, cur *counters) error {
	raw, err := c.read("diskstats")
	if err != nil {
		return err
	}
	disks, err := ParseDiskStats(raw)
	if err != nil {
		return err
	}
	whole := c.wholeDisks()
	dt := c.elapsed(cur.time)
	for _, d := range disks {
		if virtualDisk(d.Name) || (whole != nil && !whole[d.Name]) {
			continue
		}
		cur.disks[d.Name] = d
		tag := metric.Label{Name: "device", Value: d.Name}
		b.gauge("disk.io.ios_in_progress", float64(d.InProgress), tag)
		p, ok := c.prev.disk(d.Name)
		if !ok || dt == 0 {
			continue
		}
		b.rate("disk.io.read_requests", d.Reads, p.Reads, dt, tag)
		b.rate("disk.io.write_requests", d.Writes, p.Writes, dt, tag)
		b.rate("disk.io.read_merged", d.ReadsMerged, p.ReadsMerged, dt, tag)
		b.rate("disk.io.write_merged", d.WritesMerged, p.WritesMerged, dt, tag)
		b.rate("disk.io.read_bytes", d.SectorsRead*512, p.SectorsRead*512, dt, tag)
		b.rate("disk.io.write_bytes", d.SectorsWritten*512, p.SectorsWritten*512, dt, tag)
		ios, okIOs := delta(d.Reads+d.Writes, p.Reads+p.Writes)
		ms, okMs := delta(d.MsRead+d.MsWrite, p.MsRead+p.MsWrite)
		if okIOs && okMs {
			await := 0.0
			if ios > 0 {
				await = ms / ios
			}
			b.gauge("disk.io.await", await, tag)
		}
		if busy, ok := delta(d.MsIO, p.MsIO); ok {
			b.gauge("disk.io.util", min(100, 100*busy/(dt*1000)), tag)
		}
		if w, ok := delta(d.WeightedMsIO, p.WeightedMsIO); ok {
			b.gauge("disk.io.avgqu-sz", w/(dt*1000), tag)
		}
	}
	return nil
}

func (p *counters) disk(name string) (DiskStats, bool) {
	if p == nil {
		return DiskStats{}, false
	}
	d, ok := p.disks[name]
	return d, ok
}

func (c *Collector) network(b *builder, cur *counters) error {
	raw, err := c.read("net/dev")
	if err != nil {
		return err
	}
	devs, err := ParseNetDev(raw)
	if err != nil {
		return err
	}
	dt := c.elapsed(cur.time)
	for _, d := range devs {
		if d.Name == "lo" && !c.cfg.KeepLoopback {
			continue
		}
		cur.nets[d.Name] = d
		if c.prev == nil || dt == 0 {
			continue
		}
		p, ok := c.prev.nets[d.Name]
		if !ok {
			continue
		}
		tag := metric.Label{Name: "iface", Value: d.Name}
		b.rate("net.if.in.bytes", d.RxBytes, p.RxBytes, dt, tag)
		b.rate("net.if.in.packets", d.RxPackets, p.RxPackets, dt, tag)
		b.rate("net.if.in.errors", d.RxErrors, p.RxErrors, dt, tag)
		b.rate("net.if.in.dropped", d.RxDrops, p.RxDrops, dt, tag)
		b.rate("net.if.out.bytes", d.TxBytes, p.TxBytes, dt, tag)
		b.rate("net.if.out.packets", d.TxPackets, p.TxPackets, dt, tag)
		b.rate("net.if.out.errors", d.TxErrors, p.TxErrors, dt, tag)
		b.rate("net.if.out.dropped", d.TxDrops, p.TxDrops, dt, tag)
	}
	return nil
}

// tcp reports the kernel's TCP MIB and socket counts: cheap files.
func (c *Collector) tcp(b *builder, cur *counters) error {
	raw, err := c.read("net/snmp")
	if err != nil {
		return err
	}
	snmp, err := ParseSNMP(raw)
	if err != nil {
		return err
	}
	t, ok := snmp["Tcp"]
	if !ok {
		return fmt.Errorf("net/snmp has no Tcp counters")
	}
	cur.tcp = t
	if !c.cfg.TCPStates {
		// RFC 1213 tcpCurrEstab: ESTABLISHED and CLOSE-WAIT.
		b.gauge("ss.estab", float64(t["CurrEstab"]))
	}
	if dt := c.elapsed(cur.time); dt > 0 && c.prev.tcp != nil {
		for _, m := range []struct{ name, counter string }{
			{"tcp.activeopens", "ActiveOpens"}, {"tcp.passiveopens", "PassiveOpens"},
			{"tcp.attemptfails", "AttemptFails"}, {"tcp.estabresets", "EstabResets"},
			{"tcp.retranssegs", "RetransSegs"}, {"tcp.inerrs", "InErrs"}, {"tcp.outrsts", "OutRsts"},
		} {
			now, ok1 := t[m.counter]
			before, ok2 := c.prev.tcp[m.counter]
			if ok1 && ok2 && now >= 0 && before >= 0 {
				b.rate(m.name, uint64(now), uint64(before), dt)
			}
		}
	}
	raw, err = c.read("net/sockstat")
	if err != nil {
		return err
	}
	ss, err := ParseSockstat(raw)
	if err != nil {
		return err
	}
	if st, ok := ss["TCP"]; ok {
		b.gauge("ss.inuse", float64(st["inuse"]))
		b.gauge("ss.orphaned", float64(st["orphan"]))
		if !c.cfg.TCPStates {
			b.gauge("ss.timewait", float64(st["tw"]))
		}
	}
	return nil
}

func (c *Collector) tcpStates(b *builder) error {
	var counts [len(TCPStateNames)]uint64
	read := 0
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		raw, err := c.read(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 on this host
		}
		if err != nil {
			return err
		}
		if err := CountTCPStates(raw, &counts); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		read++
	}
	if read == 0 {
		return fmt.Errorf("neither net/tcp nor net/tcp6 is readable")
	}
	for st, name := range TCPStateNames {
		if name != "" {
			b.gauge("ss."+name, float64(counts[st]))
		}
	}
	return nil
}

func (c *Collector) files(b *builder) error {
	raw, err := c.read("sys/fs/file-nr")
	if err != nil {
		return err
	}
	n, err := ParseFileNr(raw)
	if err != nil {
		return err
	}
	open := n.Allocated - min(n.Unused, n.Allocated)
	b.gauge("kernel.files.allocated", float64(open))
	b.gauge("kernel.maxfiles", float64(n.Max))
	b.gauge("kernel.files.left", float64(n.Max-min(open, n.Max)))
	return nil
}

func (c *Collector) processes(b *builder) error {
	entries, err := os.ReadDir(c.cfg.Proc)
	if err != nil {
		return err
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() && isDigits(e.Name()) {
			n++
		}
	}
	b.gauge("proc.total", float64(n))
	return nil
}

func (c *Collector) uptime(b *builder) error {
	raw, err := c.read("uptime")
	if err != nil {
		return err
	}
	up, err := ParseUptime(raw)
	if err != nil {
		return err
	}
	b.gauge("sys.uptime", up)
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// delta is now-before as a float, false when the counter went backwards.
func delta(now, before uint64) (float64, bool) {
	if now < before {
		return 0, false
	}
	return float64(now - before), true
}

// builder collects the points of one round.
type builder struct {
	ts  int64
	pts []metric.Point
}

func (b *builder) gauge(name string, v float64, tags ...metric.Label) {
	pairs := make([]metric.Label, 0, len(tags)+1)
	pairs = append(pairs, metric.Label{Name: metric.NameLabel, Value: name})
	pairs = append(pairs, tags...)
	b.pts = append(b.pts, metric.Point{Labels: metric.New(pairs...), Time: b.ts, Value: v, Type: metric.Gauge})
}

// rate adds the per-second rate of a counter, or nothing if it went
// backwards.
func (b *builder) rate(name string, now, before uint64, dt float64, tags ...metric.Label) {
	if d, ok := delta(now, before); ok {
		b.gauge(name, d/dt, tags...)
	}
}

func statfs(path string) (FSStats, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return FSStats{}, err
	}
	return FSStats{
		BlockSize: uint64(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree, BlocksAvail: s.Bavail,
		Files: s.Files, FilesFree: s.Ffree,
	}, nil
}
