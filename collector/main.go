// Command collector is opskit's host agent: host metrics from /proc and
// /sys, app push intake (open-falcon JSON over HTTP, Graphite over TCP and
// UDP, StatsD over UDP), plugin scripts, and relay to transfer through a
// bounded disk spool. See collector/README.md.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/collector/agent"
	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/graphitein"
	"github.com/opskit/opskit/collector/hostmetrics"
	"github.com/opskit/opskit/collector/httppush"
	"github.com/opskit/opskit/collector/plugin"
	"github.com/opskit/opskit/collector/relay"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/collector/statsd"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/internal/spool"
	"github.com/opskit/opskit/transfer/intake"
)

type config struct {
	hostname     string
	interval     time.Duration
	hostMetrics  bool
	procDir      string
	sysDir       string
	keepLoopback bool
	tcpStates    bool

	transfer     []string
	batchPoints  int
	timeout      time.Duration
	backoffMin   time.Duration
	backoffMax   time.Duration
	gzip         bool
	spoolMax     int64
	intakeFlush  time.Duration
	maxBodyBytes int64

	graphiteListen   string
	graphiteMaxConns int

	statsdListen      string
	statsdInterval    time.Duration
	statsdReaders     int
	statsdReadBuffer  int
	statsdPercentiles string
	statsdMaxSeries   int

	pluginDir     string
	pluginTimeout time.Duration

	logs logsConfig
}

func main() {
	// The agent runs on every host and its heap is small: a lower GC target
	// keeps its resident memory down at a negligible CPU cost. GOGC, when
	// set, still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	var c config
	kit.Main(kit.Spec{
		Name:     "collector",
		Listen:   "127.0.0.1:7110",
		Summary:  "host agent: host metrics, app push intake (open-falcon JSON, Graphite, StatsD), plugins, relay to transfer with a disk spool",
		Flags:    func(fs *pflag.FlagSet) { c.flags(fs); c.logs.flags(fs) },
		Sections: []string{"logs"},
		Start:    func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: []kit.Command{{
			Name:    "once",
			Summary: "print one round of host metrics as open-falcon JSON lines (for transfer push)",
			Run: func(ctx context.Context, args []string, io kit.IO) int {
				return agent.Once(ctx, args, io.Out, io.Err)
			},
		}, {
			Name:    "tail",
			Summary: "follow log files and print their lines as JSON events (no config, no checkpoints)",
			Run:     tailCommand,
		}, {
			Name:    "sink",
			Summary: "move log events from Kafka into ClickHouse (consumer group; offsets committed after each insert)",
			Run:     sinkCommand,
		}, {
			Name:    "grep",
			Summary: "search the log lines stored in ClickHouse, newest last",
			Run:     grepCommand,
		}},
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.hostname, "hostname", "", "endpoint of host metrics and of app points that name none (default: the host name)")
	fs.DurationVar(&c.interval, "interval", 60*time.Second, "host metrics interval, aligned to the clock; also the step of points without one")
	fs.BoolVar(&c.hostMetrics, "host-metrics", true, "collect host metrics from /proc and /sys")
	fs.StringVar(&c.procDir, "proc", "/proc", "where procfs is mounted")
	fs.StringVar(&c.sysDir, "sys", "/sys", "where sysfs is mounted")
	fs.BoolVar(&c.keepLoopback, "host-loopback", false, "also report the loopback interface lo")
	fs.BoolVar(&c.tcpStates, "host-tcp-states", false, "count TCP sockets per state from /proc/net/tcp{,6} (costly on hosts with many sockets)")

	fs.StringSliceVar(&c.transfer, "transfer", []string{"127.0.0.1:7120"}, "transfer HTTP addresses, tried in order with failover (host:port,...)")
	fs.IntVar(&c.batchPoints, "transfer-batch", relay.DefaultBatchPoints, "most points in one request to transfer")
	fs.DurationVar(&c.timeout, "transfer-timeout", relay.DefaultTimeout, "timeout of one request to transfer")
	fs.DurationVar(&c.backoffMin, "transfer-backoff-min", relay.DefaultBackoffMin, "first wait after every transfer failed")
	fs.DurationVar(&c.backoffMax, "transfer-backoff-max", relay.DefaultBackoffMax, "longest wait between rounds of retries")
	fs.BoolVar(&c.gzip, "transfer-gzip", true, "gzip request bodies to transfer (turn off for a receiver without Content-Encoding: gzip)")
	fs.Int64Var(&c.spoolMax, "spool-max-bytes", 256<<20, "bound of the disk spool under --data-dir/spool; beyond it the oldest points are dropped and counted")
	fs.DurationVar(&c.intakeFlush, "intake-flush-interval", time.Second, "how long Graphite and StatsD points may wait before they are spooled")
	fs.Int64Var(&c.maxBodyBytes, "max-body-bytes", 8<<20, "largest /v1/push body accepted (413 beyond)")

	fs.StringVar(&c.graphiteListen, "graphite-listen", "127.0.0.1:7111", "Graphite plaintext listen address, TCP and UDP (empty disables)")
	fs.IntVar(&c.graphiteMaxConns, "graphite-max-conns", 256, "most concurrent Graphite TCP connections")

	fs.StringVar(&c.statsdListen, "statsd-listen", "127.0.0.1:8125", "StatsD UDP listen address (empty disables)")
	fs.DurationVar(&c.statsdInterval, "statsd-interval", 0, "StatsD aggregation interval (0 = --interval)")
	fs.IntVar(&c.statsdReaders, "statsd-readers", 2, "UDP sockets (SO_REUSEPORT) and reading goroutines for StatsD")
	fs.IntVar(&c.statsdReadBuffer, "statsd-read-buffer", 8<<20, "socket receive buffer per StatsD socket, bytes (capped by net.core.rmem_max)")
	fs.StringVar(&c.statsdPercentiles, "statsd-percentiles", "50,90,95,99", "timer percentiles to report")
	fs.IntVar(&c.statsdMaxSeries, "statsd-max-series", 100000, "most StatsD series per interval; lines of new series beyond it are refused")

	fs.StringVar(&c.pluginDir, "plugin-dir", "", "directory of plugin executables (empty disables)")
	fs.DurationVar(&c.pluginTimeout, "plugin-timeout", 10*time.Second, "default timeout of a plugin run (at most its interval)")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	if c.interval < time.Second {
		return fmt.Errorf("--interval %v: want at least 1s", c.interval)
	}
	if c.statsdInterval <= 0 {
		c.statsdInterval = c.interval
	}
	percentiles, err := parsePercentiles(c.statsdPercentiles)
	if err != nil {
		return err
	}
	endpoint, err := agent.Hostname(c.hostname)
	if err != nil {
		return err
	}
	defaults := falconfmt.Defaults{Endpoint: endpoint, Step: int32(c.interval / time.Second)}
	counters := sink.NewCounters(d.Metrics, d.Log)

	// Intake times of spooled points, for the hop latency to transfer.
	backlog := hop.NewBacklog(0, time.Now())
	sp, err := spool.Open(spool.Options{
		Dir:      filepath.Join(d.DataDir, "spool"),
		MaxBytes: c.spoolMax,
		OnDrop: func(records, points int, reason string) {
			d.Metrics.GetOrCreateCounter(`opskit_collector_spool_dropped_points_total{reason="` + reason + `"}`).Add(points)
			backlog.Drop(points)
			d.Log.Warn("spool dropped points", "records", records, "points", points, "reason", reason)
		},
	})
	if err != nil {
		return err
	}
	d.OnStop("spool", func(context.Context) error { return sp.Close() })
	d.Metrics.NewGauge("opskit_collector_spool_points", func() float64 { return float64(sp.Stats().Count) })
	d.Metrics.NewGauge("opskit_collector_spool_bytes", func() float64 { return float64(sp.Stats().Bytes) })
	d.HandleAdmin("spool", func(context.Context, []string) (any, error) { return spoolStats(sp.Stats()), nil })
	// Points spooled by an earlier run count from now.
	backlog.Add(sp.Stats().Count, time.Now())
	writer := &relay.Writer{Spool: sp, Defaults: defaults, BatchPoints: c.batchPoints, Backlog: backlog, Dye: d.Dye}

	rl, err := relay.New(relay.Config{
		Targets: c.transfer, BatchPoints: c.batchPoints, Timeout: c.timeout,
		BackoffMin: c.backoffMin, BackoffMax: c.backoffMax, Gzip: c.gzip,
		Hops: hop.NewSet(d.Metrics), Backlog: backlog, Dye: d.Dye,
	}, sp, d.Metrics, d.Log)
	if err != nil {
		return fmt.Errorf("--transfer: %w", err)
	}
	d.Go(ctx, "relay", rl.Run)

	lim := intake.Limits{MaxBodyBytes: c.maxBodyBytes}
	d.Mux.Handle("POST /v1/push", httppush.NewHandler(writer, counters, defaults, lim))

	if c.hostMetrics {
		hm := hostmetrics.New(hostmetrics.Config{Proc: c.procDir, Sys: c.sysDir, KeepLoopback: c.keepLoopback, TCPStates: c.tcpStates})
		d.Go(ctx, "host-metrics", func(ctx context.Context) error {
			return agent.HostMetrics(ctx, hm, c.interval, writer, d.Metrics, d.Log)
		})
	}

	if c.graphiteListen != "" {
		if err := c.startGraphite(ctx, d, writer, counters, lim); err != nil {
			return err
		}
	}

	if c.statsdListen != "" {
		conns, err := statsd.ListenUDP(c.statsdListen, c.statsdReaders, c.statsdReadBuffer)
		if err != nil {
			return fmt.Errorf("--statsd-listen: %w", err)
		}
		agg := statsd.New(statsd.Config{Percentiles: percentiles, MaxSeries: c.statsdMaxSeries}, len(conns))
		d.Log.Info("statsd listening", "statsd_listen", conns[0].LocalAddr().String(), "readers", len(conns))
		d.Go(ctx, "statsd", func(ctx context.Context) error {
			// The flusher's last flush comes after the readers stopped, so a
			// graceful stop keeps every datagram read.
			flushCtx, stopFlush := context.WithCancel(context.WithoutCancel(ctx))
			flushed := make(chan error, 1)
			go func() {
				flushed <- agent.StatsDFlusher(flushCtx, agg, c.statsdInterval, writer, counters, d.Metrics, d.Log)
			}()
			err := agg.Serve(ctx, conns)
			stopFlush()
			<-flushed
			return err
		})
	}

	if c.pluginDir != "" {
		pr := plugin.New(plugin.Config{
			Dir: c.pluginDir, Interval: c.interval, Timeout: c.pluginTimeout, Defaults: defaults, Limits: lim,
		}, writer, counters, d.Metrics, d.Log)
		d.Go(ctx, "plugins", pr.Run)
		d.OnReload(func(context.Context) error {
			pr.Rescan()
			return nil
		})
	}
	if err := c.logs.start(ctx, d, endpoint, writer, c.interval); err != nil {
		return err
	}
	d.Log.Info("collector running", "endpoint", endpoint, "interval", c.interval, "transfer", strings.Join(c.transfer, ","))
	return nil
}

func (c *config) startGraphite(ctx context.Context, d *kit.Daemon, writer *relay.Writer, counters *sink.Counters, lim intake.Limits) error {
	ln, err := net.Listen("tcp", c.graphiteListen)
	if err != nil {
		return fmt.Errorf("--graphite-listen: %w", err)
	}
	// UDP on the same port as TCP, as carbon does.
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return fmt.Errorf("--graphite-listen (udp): %w", err)
	}
	tcp := sink.NewBatcher(writer, graphitein.ProtoTCP, counters, c.batchPoints, c.intakeFlush)
	udp := sink.NewBatcher(writer, graphitein.ProtoUDP, counters, c.batchPoints, c.intakeFlush)
	srv := graphitein.New(graphitein.Config{MaxConns: c.graphiteMaxConns, Limits: lim}, tcp, udp, counters, d.Log)
	d.Log.Info("graphite listening", "graphite_listen", ln.Addr().String())
	// Each server flushes its batcher once more after its last reader
	// ended, so lines read during the stop are spooled too.
	d.Go(ctx, "graphite-tcp", func(ctx context.Context) error {
		err := srv.ServeTCP(ctx, ln)
		tcp.Flush(context.WithoutCancel(ctx))
		return err
	})
	d.Go(ctx, "graphite-udp", func(ctx context.Context) error {
		err := srv.ServeUDP(ctx, pc)
		udp.Flush(context.WithoutCancel(ctx))
		return err
	})
	d.Go(ctx, "graphite-tcp-batch", tcp.Run)
	d.Go(ctx, "graphite-udp-batch", udp.Run)
	return nil
}

// spoolStats is what `collector ctl spool` prints: the spool's Count is
// points here.
func spoolStats(st spool.Stats) map[string]any {
	return map[string]any{"records": st.Records, "points": st.Count, "bytes": st.Bytes, "segments": st.Segments}
}

func parsePercentiles(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.ParseFloat(f, 64)
		if err != nil || !(p > 0 && p <= 100) {
			return nil, fmt.Errorf("--statsd-percentiles: %q is not a percentile in (0, 100]", f)
		}
		out = append(out, p)
	}
	return out, nil
}
