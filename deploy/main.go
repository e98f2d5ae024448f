// Command deploy is opskit's per-host deploy agent and process supervisor:
// it installs releases (verified, safely unpacked, switched atomically,
// rolled back on a failed health check) and keeps their programs running
// with supervisord's states, re-adopting them after its own restart.
// See deploy/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deploy/agent"
	"github.com/opskit/opskit/deploy/cli"
	"github.com/opskit/opskit/deploy/diag"
	"github.com/opskit/opskit/deploy/host"
	"github.com/opskit/opskit/deploy/kafkatasks"
	"github.com/opskit/opskit/deploy/poller"
	"github.com/opskit/opskit/deploy/supervise"
	"github.com/opskit/opskit/internal/kit"
)

type config struct {
	release           agent.ReleaseOptions
	logMaxBytes       int64
	logBackups        int
	poll              time.Duration
	stopProgramsOnEnd bool
	apiToken          string
	apiTokenFile      string
	fatalCooldown     time.Duration
	hostInterval      time.Duration
	deployer          string
	deployerToken     string // a file
	hostName          string
	pollWait          time.Duration
	kafkaBrokers      []string
	kafkaTasks        string
	kafkaResults      string
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:     "deploy",
		Listen:   "127.0.0.1:7171",
		Summary:  "per-host deploy agent and process supervisor",
		Sections: []string{"diagnostics"},
		Flags:    func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:    func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: cli.Commands(),
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	c.release.Flags(fs)
	fs.Int64Var(&c.logMaxBytes, "log-max-bytes", 50<<20, "size at which a program's log file is rotated")
	fs.IntVar(&c.logBackups, "log-backups", 5, "rotated log files kept per program and stream")
	fs.DurationVar(&c.poll, "poll-interval", 200*time.Millisecond, "how often re-adopted programs are checked for life (also paces log rotation and orphan reaping)")
	fs.BoolVar(&c.stopProgramsOnEnd, "stop-programs-on-exit", false, "stop every program when the agent stops (by default they keep running and are re-adopted by the next agent)")
	fs.DurationVar(&c.fatalCooldown, "fatal-cooldown", 5*time.Minute, "wait in FATAL before a program's starts are tried again, unless its manifest sets fatal_cooldown (0: stay FATAL until started by hand, as supervisord does)")
	fs.DurationVar(&c.hostInterval, "host-interval", 10*time.Second, "how often host metrics are read for /metrics and /api/v1/host (0 disables)")
	fs.StringVar(&c.deployer, "deployer", "", "deployer's base URL (e.g. http://deployer:7170): take this host's tasks from it by long polling and report results (see README: the contract)")
	fs.StringVar(&c.deployerToken, "deployer-token-file", "", "file holding the token deployer expects from agents (its --agent-poll-token-file); needed when deployer is not on this machine")
	fs.StringVar(&c.hostName, "host-name", "", "this host's name at deployer (default: the hostname)")
	fs.DurationVar(&c.pollWait, "poll-wait", 30*time.Second, "how long deployer may hold one long poll")
	fs.StringSliceVar(&c.kafkaBrokers, "kafka-brokers", nil, "Kafka seed brokers (host:port,...): take this host's tasks from --kafka-tasks-topic (records keyed by host name) and produce results to --kafka-results-topic")
	fs.StringVar(&c.kafkaTasks, "kafka-tasks-topic", "opskit-deploy-tasks", "Kafka topic of tasks")
	fs.StringVar(&c.kafkaResults, "kafka-results-topic", "opskit-deploy-results", "Kafka topic of task results (keyed by task id)")
	fs.StringVar(&c.apiToken, "api-token", "", "bearer token for /api/v1/* (without one only loopback clients are served); prefer --api-token-file")
	fs.StringVar(&c.apiTokenFile, "api-token-file", "", "file holding the API bearer token")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	if c.apiTokenFile != "" {
		b, err := os.ReadFile(c.apiTokenFile)
		if err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
		c.apiToken = strings.TrimSpace(string(b))
		if c.apiToken == "" {
			return errors.New("--api-token-file is empty")
		}
	}
	store, applier, err := c.release.Applier(d.DataDir, d.Log)
	if err != nil {
		return err
	}
	sup, err := supervise.New(supervise.Options{
		StateDir: filepath.Join(d.DataDir, "supervise"), LogDir: filepath.Join(d.DataDir, "logs"),
		LogMaxBytes: c.logMaxBytes, LogBackups: c.logBackups, Poll: c.poll, Log: d.Log, Metrics: d.Metrics,
	})
	if err != nil {
		return err
	}
	a := agent.New(store, applier, sup, d.Log)
	a.FatalCooldown = c.fatalCooldown
	if c.hostInterval > 0 {
		a.Host = host.NewView(d.Metrics)
		d.Go(ctx, "host metrics", func(ctx context.Context) error { return a.Host.Run(ctx, c.hostInterval) })
	}
	if d.ConfigFile != "" {
		var cmds []diag.Command
		if err := kit.DecodeSection(d.ConfigFile, "diagnostics", &cmds); err != nil {
			return err
		}
		if len(cmds) > 0 {
			audit, err := os.OpenFile(filepath.Join(d.DataDir, "diag-audit.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return err
			}
			d.OnStop("diag-audit", func(context.Context) error { return audit.Close() })
			if a.Diag, err = diag.New(cmds, audit); err != nil {
				return fmt.Errorf("config %s: %w", d.ConfigFile, err)
			}
		}
	}
	d.Go(ctx, "supervisor", sup.Run)
	if err := a.Resume(ctx); err != nil {
		d.Log.Error("some programs of current releases could not be supervised", "err", err)
	}
	name := c.hostName
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return fmt.Errorf("--host-name: %w", err)
		}
	}
	if len(c.kafkaBrokers) > 0 {
		k := &kafkatasks.Consumer{Brokers: c.kafkaBrokers, Topic: c.kafkaTasks, ResultsTopic: c.kafkaResults,
			Host: name, Applier: applier, Log: d.Log}
		d.Go(ctx, "kafka tasks", k.Run)
	}
	if c.deployer != "" {
		p := &poller.Poller{Deployer: strings.TrimRight(c.deployer, "/"), Host: name, Applier: applier, Wait: c.pollWait,
			CursorFile: filepath.Join(d.DataDir, "deployer-cursor.json"), Log: d.Log}
		if c.deployerToken != "" {
			b, err := os.ReadFile(c.deployerToken)
			if err != nil {
				return fmt.Errorf("--deployer-token-file: %w", err)
			}
			p.Token = strings.TrimSpace(string(b))
		}
		applier.OnStep = p.Progress
		d.Go(ctx, "deployer poll", p.Run)
	}
	a.Register(d.Mux, c.apiToken)
	d.HandleAdmin("status", func(context.Context, []string) (any, error) { return a.Status(), nil })
	d.OnStop("supervisor", func(ctx context.Context) error {
		if c.stopProgramsOnEnd {
			err := sup.StopAll(ctx)
			sup.Detach()
			return err
		}
		sup.Detach()
		return nil
	})
	return nil
}
