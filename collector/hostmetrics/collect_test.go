package hostmetrics

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// fakeStatfs answers every path with the same file system: 1000 blocks of
// 4 KiB, 300 free of which 200 available to users, 100 inodes, 40 free.
func fakeStatfs(seen *[]string) func(string) (FSStats, error) {
	return func(path string) (FSStats, error) {
		*seen = append(*seen, path)
		return FSStats{BlockSize: 4096, Blocks: 1000, BlocksFree: 300, BlocksAvail: 200, Files: 100, FilesFree: 40}, nil
	}
}

// collectTwice reads round t0 at time 1000 and round t1 at 1010 from
// testdata/<kernel>, returning the second round's points by series.
func collectTwice(t *testing.T, kernel string, tcpStates bool) (first, second map[string]float64, statfsPaths []string) {
	t.Helper()
	dir := filepath.Join("testdata", kernel)
	var paths []string
	cfg := Config{Statfs: fakeStatfs(&paths), TCPStates: tcpStates}
	c := New(cfg)
	read := func(round string, ts int64) map[string]float64 {
		c.cfg.Proc = filepath.Join(dir, round, "proc")
		c.cfg.Sys = filepath.Join(dir, round, "sys")
		pts, err := c.Collect(time.Unix(ts, 0))
		if err != nil {
			t.Fatalf("%s %s: %v", kernel, round, err)
		}
		return bySeries(t, pts)
	}
	first = read("t0", 1000)
	paths = nil
	second = read("t1", 1010)
	return first, second, paths
}

func bySeries(t *testing.T, pts []metric.Point) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, p := range pts {
		k := p.Labels.String()
		if _, dup := out[k]; dup {
			t.Errorf("series %s reported twice", k)
		}
		if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
			t.Errorf("series %s = %v", k, p.Value)
		}
		if p.Labels.Get(metric.EndpointLabel) != "" || p.Step != 0 || p.Type != metric.Gauge {
			t.Errorf("series %s: want a gauge without endpoint and step, got %+v", k, p)
		}
		out[k] = p.Value
	}
	return out
}

func TestCollectKernels(t *testing.T) {
	tests := []struct {
		kernel    string
		tcpStates bool
		// want are exact values of the second round.
		want map[string]float64
		// absent must not be reported in the second round.
		absent []string
		// firstAbsent are rates, missing from the first round.
		firstAbsent []string
		statfs      []string
	}{{
		kernel:    "linux-2.6.18",
		tcpStates: true,
		want: map[string]float64{
			// Cheap TCP figures are there with the per-state counts too.
			"ss.inuse{}": 9, "ss.orphaned{}": 1, "tcp.activeopens{}": 10, "tcp.retranssegs{}": 2, "tcp.passiveopens{}": 0,
			"cpu.idle{}": 50, "cpu.busy{}": 50, "cpu.user{}": 25, "cpu.system{}": 25, "cpu.steal{}": 0, "cpu.guest{}": 0,
			"cpu.num{}": 2, "cpu.switches{}": 100, "proc.forks{}": 0, "proc.running{}": 2, "proc.blocked{}": 1,
			"load.1min{}": 0.5, "load.15min{}": 0.3, "load.1min.percore{}": 0.25, "thread.total{}": 211,
			// No MemAvailable: free is MemFree+Buffers+Cached.
			"mem.memtotal{}": 4096000 * 1024, "mem.memfree{}": 2048000 * 1024, "mem.memused.percent{}": 50, "mem.memfree.percent{}": 50,
			"mem.swaptotal{}": 2048000 * 1024, "mem.swapused{}": 512000 * 1024, "mem.swapused.percent{}": 25, "mem.swapfree.percent{}": 75,
			`disk.io.read_requests{device="sda"}`:  10,
			`disk.io.write_requests{device="sda"}`: 10,
			`disk.io.read_bytes{device="sda"}`:     2000 * 512 / 10,
			`disk.io.write_bytes{device="sda"}`:    2000 * 512 / 10,
			`disk.io.await{device="sda"}`:          2.5,
			`disk.io.util{device="sda"}`:           50,
			`disk.io.avgqu-sz{device="sda"}`:       1,
			`net.if.in.bytes{iface="eth0"}`:        1000,
			`net.if.out.bytes{iface="eth0"}`:       0,
			"ss.listen{}":                          2, "ss.estab{}": 1, "ss.timewait{}": 1, "ss.closewait{}": 0,
			"kernel.files.allocated{}": 1300, "kernel.maxfiles{}": 409600, "kernel.files.left{}": 408300,
			"sys.uptime{}": 3600.25, "agent.alive{}": 1,
			`df.bytes.total{fstype="ext3",mount="/"}`:             4096000,
			`df.bytes.used{fstype="ext3",mount="/"}`:              700 * 4096,
			`df.bytes.free{fstype="ext3",mount="/"}`:              200 * 4096,
			`df.bytes.free.percent{fstype="ext3",mount="/"}`:      100 * 200.0 / 900,
			`df.inodes.used.percent{fstype="ext3",mount="/boot"}`: 60,
		},
		// ram0 is a RAM disk; sda1 is a 4-counter partition line; lo is loopback.
		absent:      []string{`disk.io.read_requests{device="ram0"}`, `disk.io.read_requests{device="sda1"}`, `net.if.in.bytes{iface="lo"}`, `df.bytes.total{fstype="nfs",mount="/mnt/nfs"}`},
		firstAbsent: []string{"cpu.idle{}", `disk.io.util{device="sda"}`, `net.if.in.bytes{iface="eth0"}`},
		statfs:      []string{"/", "/boot"},
	}, {
		kernel: "linux-4.19",
		want: map[string]float64{
			// iowait went backwards (a known kernel quirk): it reads 0, the
			// other shares are of the whole interval.
			"cpu.idle{}": 50, "cpu.user{}": 37.5, "cpu.system{}": 12.5, "cpu.steal{}": 12.5, "cpu.iowait{}": 0, "cpu.num{}": 4,
			"load.1min.percore{}": 0.3,
			// MemAvailable is used when the kernel has it.
			"mem.memfree{}": 6000000 * 1024, "mem.memused.percent{}": 25,
			// No swap: nothing used.
			"mem.swaptotal{}": 0, "mem.swapused.percent{}": 0, "mem.swapfree.percent{}": 100,
			`disk.io.read_requests{device="nvme0n1"}`:   0,
			`disk.io.util{device="nvme0n1"}`:            5,
			`disk.io.ios_in_progress{device="nvme0n1"}`: 0,
			`net.if.in.bytes{iface="ens3"}`:             10000,
			`net.if.in.packets{iface="ens3"}`:           100,
			`net.if.in.dropped{iface="docker0"}`:        0,
			"kernel.files.allocated{}":                  2400, "kernel.maxfiles{}": 9223372036854775807,
			`df.bytes.total{fstype="ext4",mount="/"}`:         4096000,
			`df.bytes.total{fstype="vfat",mount="/boot/efi"}`: 4096000,
		},
		// Writes went backwards (a reset): no write rates, no await.
		absent: []string{"ss.listen{}", "ss.closewait{}", `disk.io.write_requests{device="nvme0n1"}`, `disk.io.await{device="nvme0n1"}`,
			`disk.io.read_requests{device="nvme0n1p1"}`, `disk.io.read_requests{device="loop0"}`,
			`df.bytes.total{fstype="tmpfs",mount="/run"}`},
		statfs: []string{"/", "/boot/efi"},
	}, {
		kernel: "linux-6.18",
		want: map[string]float64{
			"cpu.num{}": 2, "agent.alive{}": 1, "proc.total{}": 3,
		},
		absent:      []string{`disk.io.read_requests{device="zram0"}`, `df.bytes.total{fstype="ext4",mount="/var/lib/docker"}`},
		firstAbsent: []string{"cpu.idle{}", `disk.io.read_requests{device="vda"}`, `net.if.in.bytes{iface="eth0"}`, "tcp.activeopens{}"},
		// The root is reported; its bind mount is not; the escaped space is decoded.
		statfs: []string{"/", "/srv/My Data"},
	}}
	for _, tt := range tests {
		t.Run(tt.kernel, func(t *testing.T) {
			first, second, statfsPaths := collectTwice(t, tt.kernel, tt.tcpStates)
			for k, v := range tt.want {
				got, ok := second[k]
				if !ok {
					t.Errorf("%s missing", k)
					continue
				}
				if math.Abs(got-v) > 1e-9*math.Max(1, math.Abs(v)) {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := second[k]; ok {
					t.Errorf("%s reported; want it left out", k)
				}
			}
			for _, k := range tt.firstAbsent {
				if _, ok := first[k]; ok {
					t.Errorf("%s reported in the first round, before a rate can be known", k)
				}
				if _, ok := second[k]; !ok {
					t.Errorf("%s missing from the second round", k)
				}
			}
			if strings.Join(statfsPaths, ",") != strings.Join(tt.statfs, ",") {
				t.Errorf("statfs called on %q, want %q", statfsPaths, tt.statfs)
			}
			for k, v := range second {
				if strings.HasSuffix(strings.SplitN(k, "{", 2)[0], ".percent") || strings.HasPrefix(k, "cpu.") && k != "cpu.num{}" && k != "cpu.switches{}" && k != "cpu.interrupts{}" {
					if v < 0 || v > 100 {
						t.Errorf("%s = %v, outside 0..100", k, v)
					}
				}
			}
		})
	}
}

// TestCollectPartialFailure checks that a group that cannot be read is
// reported and the others are still collected.
func TestCollectPartialFailure(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join("testdata", "linux-4.19", "t0", "proc")
	for _, f := range []string{"stat", "loadavg", "uptime"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "meminfo"), []byte("garbage\n"), 0o644)
	var paths []string
	c := New(Config{Proc: dir, Sys: t.TempDir(), Statfs: fakeStatfs(&paths)})
	pts, err := c.Collect(time.Unix(100, 0))
	if err == nil {
		t.Fatal("no error for missing and broken files")
	}
	for _, want := range []string{"memory: meminfo has no MemTotal", "disk io:", "network:", "tcp:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	got := bySeries(t, pts)
	for _, k := range []string{"load.1min{}", "sys.uptime{}", "cpu.num{}", "agent.alive{}"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing although its file is fine", k)
		}
	}
	statfsErr := New(Config{Proc: filepath.Join("testdata", "linux-4.19", "t0", "proc"),
		Statfs: func(string) (FSStats, error) { return FSStats{}, errors.New("stale handle") }})
	if _, err := statfsErr.Collect(time.Unix(100, 0)); err == nil || !strings.Contains(err.Error(), "statfs /: stale handle") {
		t.Errorf("statfs failure: err = %v", err)
	}
}

// TestCollectLive reads this machine's /proc and /sys twice and checks the
// core metrics are there and sane.
func TestCollectLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("host metrics read Linux /proc")
	}
	c := New(Config{})
	if _, err := c.Collect(time.Now()); err != nil {
		t.Logf("first round: %v", err)
	}
	// Long enough for the CPU counters (in clock ticks) to move.
	time.Sleep(200 * time.Millisecond)
	pts, err := c.Collect(time.Now())
	if err != nil {
		t.Logf("second round (some groups may be unreadable in a container): %v", err)
	}
	got := bySeries(t, pts)
	for _, k := range []string{"cpu.idle{}", "cpu.busy{}", "load.1min{}", "mem.memtotal{}", "mem.memfree.percent{}", "proc.total{}", "thread.total{}", "sys.uptime{}", "kernel.maxfiles{}", "ss.estab{}", "ss.timewait{}", "tcp.activeopens{}"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from a live round", k)
		}
	}
	if got["mem.memtotal{}"] <= 0 || got["proc.total{}"] < 1 || got["sys.uptime{}"] <= 0 {
		t.Errorf("implausible live values: memtotal %v, procs %v, uptime %v", got["mem.memtotal{}"], got["proc.total{}"], got["sys.uptime{}"])
	}
	root := false
	for k := range got {
		if strings.HasPrefix(k, "df.bytes.total{") && strings.Contains(k, `mount="/"`) {
			root = true
		}
	}
	if !root {
		t.Errorf("no df for the root file system among %d series", len(got))
	}
}
