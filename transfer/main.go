// Command transfer is opskit's metrics node: open-falcon JSON, Graphite and
// Prometheus remote_write intake, round-robin storage with a write-ahead log,
// and the Prometheus HTTP API and open-falcon graph API for queries.
// See transfer/README.md.
package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/buildinfo"
	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/graphite"
	"github.com/opskit/opskit/transfer/node"
	"github.com/opskit/opskit/transfer/push"
	"github.com/opskit/opskit/transfer/query"
	"github.com/opskit/opskit/transfer/storage"
)

// schemaConfig is one entry of the config file's `schemas:` list, in the
// spirit of Graphite's storage-schemas.conf: the first whose pattern matches
// a new series' metric name fixes its archives.
type schemaConfig struct {
	Name       string        `yaml:"name"`
	Pattern    string        `yaml:"pattern"`
	Retentions string        `yaml:"retentions"`
	Heartbeat  time.Duration `yaml:"heartbeat"`
	XFF        *float64      `yaml:"xff"`
}

type config struct {
	graphiteListen     string
	retentions         string
	heartbeat          time.Duration
	xff                float64
	walSyncInterval    time.Duration
	checkpointInterval time.Duration
	idleExpiry         time.Duration
	limits             intake.Limits
	graphiteMaxConns   int
	graphiteIdle       time.Duration
	queryTimeout       time.Duration
	queryMaxSamples    int
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:     "transfer",
		Listen:   "127.0.0.1:7120",
		Summary:  "metrics intake (open-falcon JSON, Graphite, remote_write), round-robin storage with a WAL, Prometheus and open-falcon queries",
		Sections: []string{"schemas"},
		Flags:    func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:    func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: []kit.Command{{
			Name:    "push",
			Summary: "send JSON or Graphite lines from stdin to a transfer (--addr); exit 1 if anything is refused",
			Run: func(ctx context.Context, args []string, io kit.IO) int {
				return push.Main(ctx, args, io.In, io.Out, io.Err)
			},
		}},
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.graphiteListen, "graphite-listen", "127.0.0.1:7121", "Graphite plaintext TCP listen address (empty disables)")
	fs.StringVar(&c.retentions, "retentions", storage.DefaultRetentions, "archives of the default schema, Graphite style step:length,... (finest first)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 0, "longest gap over which a value stays known (0 = 2 × the step)")
	fs.Float64Var(&c.xff, "xff", storage.DefaultXFF, "unknown fraction above which a consolidated slot is unknown")
	fs.DurationVar(&c.walSyncInterval, "wal-sync-interval", 10*time.Millisecond, "longest wait for the WAL fsync that acknowledges a write (group commit)")
	fs.DurationVar(&c.checkpointInterval, "checkpoint-interval", 5*time.Minute, "how often archives are flushed and the WAL truncated (bounds replay time)")
	fs.DurationVar(&c.idleExpiry, "series-idle-expiry", 0, "remove series with no point for this long (0 = keep forever)")
	fs.Int64Var(&c.limits.MaxBodyBytes, "max-body-bytes", intake.DefaultMaxBodyBytes, "largest request body accepted (413 beyond)")
	fs.IntVar(&c.limits.MaxLabelsPerSeries, "max-labels-per-series", intake.DefaultMaxLabelsPerSeries, "most labels in one series, the name included")
	fs.IntVar(&c.limits.MaxLabelNameLen, "max-label-name-length", intake.DefaultMaxLabelNameLen, "longest label name in bytes")
	fs.IntVar(&c.limits.MaxLabelValueLen, "max-label-value-length", intake.DefaultMaxLabelValueLen, "longest label value in bytes")
	fs.IntVar(&c.limits.MaxMetricNameLen, "max-metric-name-length", intake.DefaultMaxMetricNameLen, "longest metric name in bytes")
	fs.IntVar(&c.graphiteMaxConns, "graphite-max-conns", 1000, "most concurrent Graphite connections")
	fs.DurationVar(&c.graphiteIdle, "graphite-idle-timeout", 5*time.Minute, "close a Graphite connection idle this long")
	fs.DurationVar(&c.queryTimeout, "query-timeout", 2*time.Minute, "longest a query may run")
	fs.IntVar(&c.queryMaxSamples, "query-max-samples", 50_000_000, "most samples one query may hold in memory")
}

func (c *config) schemas(file string) ([]storage.Schema, error) {
	var entries []schemaConfig
	if file != "" {
		if err := kit.DecodeSection(file, "schemas", &entries); err != nil {
			return nil, err
		}
	}
	out := make([]storage.Schema, 0, len(entries)+1)
	for i, e := range entries {
		xff := -1.0
		if e.XFF != nil {
			xff = *e.XFF
		}
		name := e.Name
		if name == "" {
			name = fmt.Sprintf("schemas[%d]", i)
		}
		s, err := storage.NewSchema(name, e.Pattern, e.Retentions, e.Heartbeat, xff)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		out = append(out, s)
	}
	def, err := storage.NewSchema("default", "", c.retentions, c.heartbeat, c.xff)
	if err != nil {
		return nil, fmt.Errorf("--retentions/--heartbeat/--xff: %w", err)
	}
	return append(out, def), nil
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	schemas, err := c.schemas(d.ConfigFile)
	if err != nil {
		return err
	}
	d.SetNotReady("storage", "replaying the write-ahead log")
	n, err := node.Open(node.Config{
		DataDir: d.DataDir,
		Storage: storage.Options{
			Schemas:            schemas,
			SyncInterval:       c.walSyncInterval,
			CheckpointInterval: c.checkpointInterval,
			IdleExpiry:         c.idleExpiry,
			Logger:             d.Log,
		},
		Limits:   c.limits,
		Graphite: graphite.Config{MaxConns: c.graphiteMaxConns, IdleTimeout: c.graphiteIdle},
		Query:    query.Options{Timeout: c.queryTimeout, MaxSamples: c.queryMaxSamples, Revision: buildinfo.Version, Logger: d.Log},
	}, d.Metrics, d.Log)
	if err != nil {
		return err
	}
	d.SetReady("storage")
	d.OnStop("storage", func(context.Context) error { return n.Close() })
	n.Register(d.Mux)
	d.HandleAdmin("checkpoint", func(context.Context, []string) (any, error) {
		if err := n.Engine().Checkpoint(); err != nil {
			return nil, err
		}
		return n.Engine().Stats(), nil
	})
	d.Go(ctx, "expiry", n.RunExpiry)
	if c.graphiteListen != "" {
		ln, err := net.Listen("tcp", c.graphiteListen)
		if err != nil {
			return fmt.Errorf("--graphite-listen: %w", err)
		}
		d.Log.Info("graphite listening", "graphite_listen", ln.Addr().String())
		// The Graphite server flushes what it read when ctx ends; the kit
		// waits for it before running the storage stop hook.
		d.Go(ctx, "graphite", func(ctx context.Context) error { return n.ServeGraphite(ctx, ln) })
	}
	return nil
}
