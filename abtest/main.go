// Command abtest assigns units to experiment arms (GrowthBook-compatible
// hashing, layers, domains, whitelists, targeting), logs exposures, takes in
// conversion and metric events, and reports each variant's effect with
// outlier removal, the sample-ratio check and optional CUPED.
// See abtest/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/abtest/cli"
	abclickhouse "github.com/opskit/opskit/abtest/clickhouse"
	"github.com/opskit/opskit/abtest/configfile"
	"github.com/opskit/opskit/abtest/forward"
	"github.com/opskit/opskit/abtest/kafka"
	"github.com/opskit/opskit/abtest/ramp"
	"github.com/opskit/opskit/abtest/report"
	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/abtest/server"
	"github.com/opskit/opskit/abtest/store"
	"github.com/opskit/opskit/internal/kit"
)

type config struct {
	experiments   string
	poll          time.Duration
	exposureQueue int
	linger        time.Duration
	dedupCapacity int
	maxBody       int64
	maxBatch      int
	iqrK          float64

	kafkaBrokers   []string
	kafkaTopic     string
	clickhouse     abclickhouse.Options
	spoolMaxBytes  int64
	forwardBackoff time.Duration
	rampInterval   time.Duration
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
	fs.DurationVar(&c.linger, "exposure-linger", 10*time.Millisecond, "how long the exposure writer gathers exposures before writing a batch (fewer fsyncs)")
	fs.IntVar(&c.dedupCapacity, "dedup-capacity", 1_000_000, "(unit, experiment) pairs remembered to log each exposure once")
	fs.Int64Var(&c.maxBody, "max-body-bytes", 8<<20, "largest request body accepted")
	fs.IntVar(&c.maxBatch, "max-batch", 10_000, "most units per assign POST and events per events POST")
	fs.Float64Var(&c.iqrK, "iqr-k", 1.5, "reports' default boxplot fence multiplier k (0 keeps every unit)")
	fs.StringSliceVar(&c.kafkaBrokers, "kafka-brokers", nil, "Kafka seed brokers (host:port,...): every accepted event and exposure is also produced to --kafka-topic as JSON, keyed by unit")
	fs.StringVar(&c.kafkaTopic, "kafka-topic", "ab_events", "Kafka topic of the events")
	fs.StringVar(&c.clickhouse.Addr, "clickhouse-addr", "", "ClickHouse native protocol host:port: every accepted event and exposure is also inserted into --clickhouse-table, and reports are computed there")
	fs.StringVar(&c.clickhouse.Database, "clickhouse-database", "default", "ClickHouse database of the events table")
	fs.StringVar(&c.clickhouse.Table, "clickhouse-table", "ab_events", "ClickHouse events table (created if missing)")
	fs.StringVar(&c.clickhouse.User, "clickhouse-user", "default", "ClickHouse user")
	fs.Int64Var(&c.spoolMaxBytes, "spool-max-bytes", 1<<30, "disk bound of each destination's (Kafka, ClickHouse) spool; beyond it the oldest events are dropped and counted")
	fs.DurationVar(&c.rampInterval, "ramp-interval", time.Minute, "how often ramp schedules are checked (sample ratio and guardrails) and advanced")
	fs.DurationVar(&c.forwardBackoff, "forward-max-backoff", 10*time.Second, "longest wait between retries of a failing Kafka or ClickHouse delivery")
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
	opts := server.Options{
		Scanner: st, Log: d.Log, Metrics: d.Metrics,
		ExposureQueue: c.exposureQueue, ExposureLinger: c.linger, DedupCapacity: c.dedupCapacity,
		MaxBodyBytes: c.maxBody, MaxBatch: c.maxBatch, IQRK: c.iqrK,
	}
	sinks := forward.Sinks{st}
	addForwarder := func(name string, dest forward.Destination) error {
		f, err := forward.New(dest, forward.Options{Name: name, Dir: filepath.Join(d.DataDir, "spool", name),
			MaxBytes: c.spoolMaxBytes, Log: d.Log, Metrics: d.Metrics, MaxBackoff: c.forwardBackoff})
		if err != nil {
			return err
		}
		d.OnStop(name+" spool", func(context.Context) error { return f.Close() })
		d.Go(ctx, name+" forwarder", f.Run)
		sinks = append(sinks, f)
		return nil
	}
	if len(c.kafkaBrokers) > 0 {
		p, err := kafka.New(c.kafkaBrokers, c.kafkaTopic)
		if err != nil {
			return err
		}
		d.OnStop("kafka producer", func(context.Context) error { p.Close(); return nil })
		if err := addForwarder("kafka", p); err != nil {
			return err
		}
	}
	if c.clickhouse.Addr != "" {
		ch, err := abclickhouse.Open(ctx, c.clickhouse)
		if err != nil {
			return err
		}
		d.OnStop("clickhouse", func(context.Context) error { return ch.Close() })
		if err := addForwarder("clickhouse", ch); err != nil {
			return err
		}
		opts.Report = ch.Report
	}
	opts.Sink = sinks
	srv := server.New(watcher.Current(), opts)
	reportFunc := opts.Report
	if reportFunc == nil {
		reportFunc = func(_ context.Context, experiment string, o report.Options) (*report.Report, error) {
			return report.Compute(st, experiment, o)
		}
	}
	ramps, err := ramp.New(ramp.Options{StateFile: filepath.Join(d.DataDir, "ramp.json"), Report: reportFunc,
		IQRK: c.iqrK, Log: d.Log, Apply: srv.SetConfig})
	if err != nil {
		return err
	}
	if err := ramps.SetConfig(watcher.Config()); err != nil {
		return err
	}
	watcher.OnChange(func(cfg *sdk.Config, _ *sdk.Assigner) {
		if err := ramps.SetConfig(cfg); err != nil {
			d.Log.Error("experiment config not applied", "err", err)
		}
	})
	srv.Register(d.Mux)
	d.Mux.HandleFunc("GET /v1/ramp", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ramps": ramps.States()})
	})
	d.HandleAdmin("ramp-resume", func(_ context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("usage: ramp-resume EXPERIMENT")
		}
		return map[string]string{"resumed": args[0]}, ramps.Resume(args[0])
	})
	if c.rampInterval > 0 {
		d.Go(ctx, "ramp", func(ctx context.Context) error { return ramps.Run(ctx, c.rampInterval) })
	}
	d.OnReload(func(context.Context) error { return watcher.Reload() })
	d.Go(ctx, "exposure writer", srv.RunExposureWriter)
	if c.experiments != "" && c.poll > 0 {
		d.Go(ctx, "experiment file watch", func(ctx context.Context) error { return watcher.Watch(ctx, c.poll) })
	}
	return nil
}
