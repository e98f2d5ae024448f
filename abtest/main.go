// Command abtest assigns units to experiment arms (GrowthBook-compatible
// hashing, layers, domains, whitelists, targeting), logs exposures, takes in
// conversion and metric events, and reports each variant's effect with
// outlier removal, the sample-ratio check and optional CUPED.
// See abtest/README.md.
package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/abtest/cli"
	"github.com/opskit/opskit/abtest/configfile"
	"github.com/opskit/opskit/abtest/server"
	"github.com/opskit/opskit/abtest/store"
	"github.com/opskit/opskit/internal/kit"
)

type config struct {
	experiments   string
	poll          time.Duration
	exposureQueue int
	dedupCapacity int
	maxBody       int64
	maxBatch      int
	iqrK          float64
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:    "abtest",
		Listen:  "127.0.0.1:7190",
		Summary: "experiment assignment, exposure and conversion intake, statistics",
		Flags:   func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:   func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: []kit.Command{
			{
				Name:    "assign",
				Summary: "print id<TAB>variant for each unit id on stdin (--experiments FILE --experiment E)",
				Run: func(ctx context.Context, args []string, io kit.IO) int {
					return cli.Assign(ctx, args, io.In, io.Out, io.Err)
				},
			},
			{
				Name:    "report",
				Summary: "an experiment's report as a table, JSON or HTML (--experiment E [--metric M] [--format F])",
				Run: func(ctx context.Context, args []string, io kit.IO) int {
					return cli.Report(ctx, args, io.Out, io.Err)
				},
			},
		},
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.experiments, "experiments", "", "experiment config file (YAML), reread on SIGHUP and when it changes (e.g. written by configd's agent); empty runs with no experiments")
	fs.DurationVar(&c.poll, "experiments-poll", 2*time.Second, "how often the experiment file is checked for changes (0 = only on SIGHUP)")
	fs.IntVar(&c.exposureQueue, "exposure-queue", 100_000, "exposures waiting to be written; beyond it they are dropped and counted")
	fs.IntVar(&c.dedupCapacity, "dedup-capacity", 1_000_000, "(unit, experiment) pairs remembered to log each exposure once")
	fs.Int64Var(&c.maxBody, "max-body-bytes", 8<<20, "largest request body accepted")
	fs.IntVar(&c.maxBatch, "max-batch", 10_000, "most units per assign POST and events per events POST")
	fs.Float64Var(&c.iqrK, "iqr-k", 1.5, "reports' default boxplot fence multiplier k (0 keeps every unit)")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	watcher, err := configfile.New(c.experiments, d.Log)
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(d.DataDir, "events"))
	if err != nil {
		return err
	}
	d.OnStop("event store", func(context.Context) error { return st.Close() })
	srv := server.New(watcher.Current(), server.Options{
		Sink: st, Scanner: st, Log: d.Log, Metrics: d.Metrics,
		ExposureQueue: c.exposureQueue, DedupCapacity: c.dedupCapacity,
		MaxBodyBytes: c.maxBody, MaxBatch: c.maxBatch, IQRK: c.iqrK,
	})
	watcher.OnChange(srv.SetConfig)
	srv.Register(d.Mux)
	d.OnReload(func(context.Context) error { return watcher.Reload() })
	d.Go(ctx, "exposure writer", srv.RunExposureWriter)
	if c.experiments != "" && c.poll > 0 {
		d.Go(ctx, "experiment file watch", func(ctx context.Context) error { return watcher.Watch(ctx, c.poll) })
	}
	return nil
}
