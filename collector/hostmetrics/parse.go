package hostmetrics

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// CPUTimes are the jiffies of one "cpu" line of /proc/stat. Kernels before
// 2.6.11 lack steal, before 2.6.24 guest, before 2.6.33 guest_nice; missing
// fields read as 0.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal, Guest, GuestNice uint64
}

// Total is the sum of the fields that partition the CPU's time. Guest time
// is already counted in user (and guest_nice in nice), so it is left out.
func (c CPUTimes) Total() uint64 {
	return c.User + c.Nice + c.System + c.Idle + c.IOWait + c.IRQ + c.SoftIRQ + c.Steal
}

// Stat is what the collector reads from /proc/stat.
type Stat struct {
	CPU          CPUTimes
	NumCPU       int // the number of "cpuN" lines
	ContextSw    uint64
	Interrupts   uint64
	Forks        uint64
	ProcsRunning uint64
	ProcsBlocked uint64
}

// ParseStat parses /proc/stat.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	sawCPU := false
	err := eachLine(b, func(line []byte) error {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			return nil
		}
		switch {
		case f[0] == "cpu":
			if len(f) < 5 {
				return fmt.Errorf("cpu line has %d fields, want at least 5", len(f))
			}
			vals := make([]uint64, 10)
			for i := 1; i < len(f) && i <= len(vals); i++ {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return fmt.Errorf("cpu field %d: %w", i, err)
				}
				vals[i-1] = v
			}
			s.CPU = CPUTimes{vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7], vals[8], vals[9]}
			sawCPU = true
		case strings.HasPrefix(f[0], "cpu"):
			if _, err := strconv.Atoi(f[0][3:]); err == nil {
				s.NumCPU++
			}
		case f[0] == "ctxt":
			return parseUintInto(&s.ContextSw, f[1], "ctxt")
		case f[0] == "intr":
			return parseUintInto(&s.Interrupts, f[1], "intr")
		case f[0] == "processes":
			return parseUintInto(&s.Forks, f[1], "processes")
		case f[0] == "procs_running":
			return parseUintInto(&s.ProcsRunning, f[1], "procs_running")
		case f[0] == "procs_blocked":
			return parseUintInto(&s.ProcsBlocked, f[1], "procs_blocked")
		}
		return nil
	})
	if err != nil {
		return s, err
	}
	if !sawCPU {
		return s, fmt.Errorf("no aggregate cpu line")
	}
	if s.NumCPU == 0 {
		s.NumCPU = 1
	}
	return s, nil
}

// LoadAvg is /proc/loadavg: "0.20 0.18 0.12 1/80 11206".
type LoadAvg struct {
	Load1, Load5, Load15 float64
	Runnable             uint64 // scheduling entities running now
	Threads              uint64 // scheduling entities (threads) that exist
}

// ParseLoadAvg parses /proc/loadavg.
func ParseLoadAvg(b []byte) (LoadAvg, error) {
	var l LoadAvg
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return l, fmt.Errorf("loadavg has %d fields, want 5", len(f))
	}
	for i, dst := range []*float64{&l.Load1, &l.Load5, &l.Load15} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || v < 0 {
			return l, fmt.Errorf("loadavg field %d: %q is not a load", i+1, f[i])
		}
		*dst = v
	}
	run, all, ok := strings.Cut(f[3], "/")
	if !ok {
		return l, fmt.Errorf("loadavg field 4 %q is not running/total", f[3])
	}
	if err := parseUintInto(&l.Runnable, run, "loadavg running"); err != nil {
		return l, err
	}
	return l, parseUintInto(&l.Threads, all, "loadavg total")
}

// MemInfo holds the /proc/meminfo fields the collector uses, in bytes.
// HasAvailable is false on kernels before 3.14, which lack MemAvailable.
type MemInfo struct {
	MemTotal, MemFree, MemAvailable, Buffers, Cached, SwapTotal, SwapFree uint64
	HasAvailable                                                          bool
}

// ParseMemInfo parses /proc/meminfo ("Name:   value kB" lines).
func ParseMemInfo(b []byte) (MemInfo, error) {
	var m MemInfo
	fields := map[string]*uint64{
		"MemTotal": &m.MemTotal, "MemFree": &m.MemFree, "MemAvailable": &m.MemAvailable,
		"Buffers": &m.Buffers, "Cached": &m.Cached, "SwapTotal": &m.SwapTotal, "SwapFree": &m.SwapFree,
	}
	sawTotal := false
	err := eachLine(b, func(line []byte) error {
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return nil
		}
		dst, want := fields[string(name)]
		if !want {
			return nil
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return fmt.Errorf("meminfo %s has no value", name)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return fmt.Errorf("meminfo %s: %w", name, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			if v > 1<<53 {
				return fmt.Errorf("meminfo %s: %d kB is out of range", name, v)
			}
			v *= 1024
		}
		*dst = v
		switch string(name) {
		case "MemTotal":
			sawTotal = true
		case "MemAvailable":
			m.HasAvailable = true
		}
		return nil
	})
	if err == nil && !sawTotal {
		err = fmt.Errorf("meminfo has no MemTotal")
	}
	return m, err
}

// DiskStats is one device line of /proc/diskstats. Kernels 4.18+ append
// discard fields and 5.5+ flush fields; the collector uses the first 11
// counters, which every kernel since 2.6 has for whole disks.
type DiskStats struct {
	Name                                    string
	Reads, ReadsMerged, SectorsRead, MsRead uint64
	Writes, WritesMerged, SectorsWritten    uint64
	MsWrite, InProgress, MsIO, WeightedMsIO uint64
}

// ParseDiskStats parses /proc/diskstats. Lines of 2.6 kernels' partitions,
// which carry only four counters, are skipped.
func ParseDiskStats(b []byte) ([]DiskStats, error) {
	var out []DiskStats
	err := eachLine(b, func(line []byte) error {
		f := strings.Fields(string(line))
		if len(f) < 14 {
			if len(f) == 7 {
				return nil // a 2.6 partition line
			}
			return fmt.Errorf("diskstats line has %d fields, want 14 or more", len(f))
		}
		d := DiskStats{Name: f[2]}
		dst := []*uint64{&d.Reads, &d.ReadsMerged, &d.SectorsRead, &d.MsRead, &d.Writes, &d.WritesMerged,
			&d.SectorsWritten, &d.MsWrite, &d.InProgress, &d.MsIO, &d.WeightedMsIO}
		for i, p := range dst {
			if err := parseUintInto(p, f[3+i], "diskstats "+d.Name); err != nil {
				return err
			}
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// NetDev is one interface of /proc/net/dev.
type NetDev struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// ParseNetDev parses /proc/net/dev. Old kernels print "eth0:123" with no
// space after the colon, so the name is cut at the colon.
func ParseNetDev(b []byte) ([]NetDev, error) {
	var out []NetDev
	err := eachLine(b, func(line []byte) error {
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return nil // one of the two header lines
		}
		f := strings.Fields(string(rest))
		if len(f) < 16 {
			return fmt.Errorf("net/dev %s has %d counters, want 16", bytes.TrimSpace(name), len(f))
		}
		d := NetDev{Name: string(bytes.TrimSpace(name))}
		idx := []int{0, 1, 2, 3, 8, 9, 10, 11}
		dst := []*uint64{&d.RxBytes, &d.RxPackets, &d.RxErrors, &d.RxDrops, &d.TxBytes, &d.TxPackets, &d.TxErrors, &d.TxDrops}
		for i, p := range dst {
			if err := parseUintInto(p, f[idx[i]], "net/dev "+d.Name); err != nil {
				return err
			}
		}
		if d.Name == "" {
			return fmt.Errorf("net/dev line with an empty interface name")
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// TCPStateNames are the open-falcon style suffixes of the kernel's TCP
// states, indexed by the state number in /proc/net/tcp (1 = ESTABLISHED).
var TCPStateNames = [...]string{
	1: "estab", 2: "synsent", 3: "synrecv", 4: "finwait1", 5: "finwait2", 6: "timewait",
	7: "closed", 8: "closewait", 9: "lastack", 10: "listen", 11: "closing",
}

// CountTCPStates adds the sockets of /proc/net/tcp or /proc/net/tcp6 to
// counts, indexed like TCPStateNames.
func CountTCPStates(b []byte, counts *[len(TCPStateNames)]uint64) error {
	first := true
	return eachLine(b, func(line []byte) error {
		if first {
			first = false
			if bytes.Contains(line, []byte("local_address")) {
				return nil
			}
		}
		f := bytes.Fields(line)
		if len(f) < 4 {
			return fmt.Errorf("tcp socket line has %d fields", len(f))
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil || st == 0 || int(st) >= len(TCPStateNames) {
			return fmt.Errorf("tcp socket state %q is not a known state", f[3])
		}
		counts[st]++
		return nil
	})
}

// FileNr is /proc/sys/fs/file-nr: allocated handles, allocated but unused
// (0 since 2.6), and the system maximum.
type FileNr struct {
	Allocated, Unused, Max uint64
}

// ParseFileNr parses /proc/sys/fs/file-nr.
func ParseFileNr(b []byte) (FileNr, error) {
	var n FileNr
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return n, fmt.Errorf("file-nr has %d fields, want 3", len(f))
	}
	for i, dst := range []*uint64{&n.Allocated, &n.Unused, &n.Max} {
		if err := parseUintInto(dst, f[i], "file-nr"); err != nil {
			return n, err
		}
	}
	return n, nil
}

// ParseUptime parses /proc/uptime and returns the seconds since boot.
func ParseUptime(b []byte) (float64, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("uptime is empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 || v != v {
		return 0, fmt.Errorf("uptime %q is not a number of seconds", f[0])
	}
	return v, nil
}

// Mount is one line of /proc/mounts.
type Mount struct {
	Device, Point, FSType string
}

// ParseMounts parses /proc/mounts (or /proc/self/mounts), decoding the
// octal escapes the kernel writes for spaces, tabs, newlines and backslashes.
func ParseMounts(b []byte) ([]Mount, error) {
	var out []Mount
	err := eachLine(b, func(line []byte) error {
		f := strings.Fields(string(line))
		if len(f) < 3 {
			return fmt.Errorf("mounts line has %d fields, want 6", len(f))
		}
		out = append(out, Mount{Device: unescapeMount(f[0]), Point: unescapeMount(f[1]), FSType: f[2]})
		return nil
	})
	return out, err
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ParseNodevFilesystems returns the file system types /proc/filesystems
// marks "nodev": those not backed by a block device (proc, sysfs, tmpfs,
// cgroup, nfs, overlay, ...).
func ParseNodevFilesystems(b []byte) (map[string]bool, error) {
	out := map[string]bool{}
	err := eachLine(b, func(line []byte) error {
		f := strings.Fields(string(line))
		if len(f) == 2 && f[0] == "nodev" {
			out[f[1]] = true
		}
		return nil
	})
	return out, err
}

func parseUintInto(dst *uint64, s, what string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %q is not a counter", what, s)
	}
	*dst = v
	return nil
}

// eachLine calls fn with every non-blank line of b.
func eachLine(b []byte, fn func(line []byte) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// ParseSNMP parses /proc/net/snmp (and /proc/net/netstat): pairs of lines
// "Proto: Name1 Name2 ..." and "Proto: v1 v2 ...". It returns
// values[proto][name]. Values may be negative (Tcp MaxConn is -1).
func ParseSNMP(b []byte) (map[string]map[string]int64, error) {
	out := map[string]map[string]int64{}
	var header []string
	var headerProto string
	err := eachLine(b, func(line []byte) error {
		proto, rest, ok := strings.Cut(string(line), ":")
		if !ok {
			return fmt.Errorf("snmp line without a protocol: %q", truncate(line))
		}
		f := strings.Fields(rest)
		if header == nil || proto != headerProto {
			header, headerProto = f, proto
			return nil
		}
		if len(f) != len(header) {
			return fmt.Errorf("snmp %s has %d names and %d values", proto, len(header), len(f))
		}
		vals := make(map[string]int64, len(f))
		for i, s := range f {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return fmt.Errorf("snmp %s %s: %q is not a number", proto, header[i], truncate([]byte(s)))
			}
			vals[header[i]] = v
		}
		out[proto] = vals
		header = nil
		return nil
	})
	return out, err
}

// ParseSockstat parses /proc/net/sockstat: lines "TCP: inuse 5 orphan 0 tw
// 2 alloc 7 mem 1". It returns values[proto][name].
func ParseSockstat(b []byte) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	err := eachLine(b, func(line []byte) error {
		proto, rest, ok := strings.Cut(string(line), ":")
		if !ok {
			return fmt.Errorf("sockstat line without a protocol: %q", truncate(line))
		}
		f := strings.Fields(rest)
		if len(f)%2 != 0 {
			return fmt.Errorf("sockstat %s: names and values do not pair up", proto)
		}
		vals := map[string]uint64{}
		for i := 0; i < len(f); i += 2 {
			var v uint64
			if err := parseUintInto(&v, f[i+1], "sockstat "+proto); err != nil {
				return err
			}
			vals[f[i]] = v
		}
		out[proto] = vals
		return nil
	})
	return out, err
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
