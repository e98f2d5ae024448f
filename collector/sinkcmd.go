package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/collector/logsink"
	"github.com/opskit/opskit/internal/kit"
)

func clickhouseFlags(fs *pflag.FlagSet, c *logsink.ClickHouse) {
	fs.StringVar(&c.Addr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol address")
	fs.StringVar(&c.Database, "clickhouse-database", "default", "ClickHouse database")
	fs.StringVar(&c.User, "clickhouse-user", "default", "ClickHouse user")
	fs.StringVar(&c.Password, "clickhouse-password", "", "ClickHouse password (or OPSKIT_CLICKHOUSE_PASSWORD)")
	fs.StringVar(&c.Table, "table", "logs", "the logs table (created if missing)")
}

// parseCommandFlags parses a subcommand's flags; it returns an exit code
// when the command should stop there.
func parseCommandFlags(fs *pflag.FlagSet, args []string, stdio kit.IO, usage string) (int, bool) {
	fs.SetOutput(stdio.Err)
	fs.Usage = func() {
		fmt.Fprintf(stdio.Err, "usage: %s\n\nflags:\n%s", usage, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return kit.ExitOK, true
		}
		return kit.ExitUsage, true
	}
	return 0, false
}

// sinkCommand is `collector sink`: Kafka log topics into ClickHouse until
// SIGTERM or SIGINT.
func sinkCommand(ctx context.Context, args []string, stdio kit.IO) int {
	var cfg logsink.Config
	fs := pflag.NewFlagSet("collector sink", pflag.ContinueOnError)
	fs.StringSliceVar(&cfg.Brokers, "kafka-brokers", nil, "Kafka seed brokers (host:port,...)")
	fs.StringSliceVar(&cfg.Topics, "topics", []string{"logs"}, "topics to consume")
	fs.StringVar(&cfg.Group, "group", "opskit-logsink", "Kafka consumer group")
	clickhouseFlags(fs, &cfg.ClickHouse)
	fs.IntVar(&cfg.BatchRows, "batch-rows", 50000, "most rows in one insert")
	fs.DurationVar(&cfg.BatchWait, "batch-wait", time.Second, "how long a batch may wait to fill")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", 45*time.Second, "consumer group session timeout: how long the partitions of a sink that died wait before another takes them")
	logFormat := fs.String("log-format", "text", "log format on stderr: text or json")
	if code, stop := parseCommandFlags(fs, args, stdio, "collector sink --kafka-brokers HOST:PORT [--topics logs] --clickhouse-addr HOST:PORT\nmove log events from Kafka into a ClickHouse table; offsets are committed after each insert"); stop {
		return code
	}
	if cfg.Password == "" {
		cfg.Password = envOr("OPSKIT_CLICKHOUSE_PASSWORD")
	}
	if len(cfg.Brokers) == 0 {
		fmt.Fprintln(stdio.Err, "collector sink: --kafka-brokers is required")
		return kit.ExitUsage
	}
	var h slog.Handler = slog.NewTextHandler(stdio.Err, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(stdio.Err, nil)
	}
	log := slog.New(h)
	s, err := logsink.New(cfg, nil, log)
	if err != nil {
		fmt.Fprintf(stdio.Err, "collector sink: %v\n", err)
		return kit.ExitUsage
	}
	log.Info("sink running", "topics", strings.Join(cfg.Topics, ","), "group", cfg.Group, "clickhouse", cfg.Addr, "table", cfg.Table)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	last := uint64(0)
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("sink stopped", "err", err, "inserted_rows", s.Inserted())
				return kit.ExitFailure
			}
			log.Info("sink stopped", "inserted_rows", s.Inserted())
			return kit.ExitOK
		case <-tick.C:
			if n := s.Inserted(); n != last {
				log.Info("rows inserted", "total", n, "since_last", n-last)
				last = n
			}
		}
	}
}

// grepCommand is `collector grep`: search the logs table.
func grepCommand(ctx context.Context, args []string, stdio kit.IO) int {
	var c logsink.ClickHouse
	var q logsink.Query
	fs := pflag.NewFlagSet("collector grep", pflag.ContinueOnError)
	clickhouseFlags(fs, &c)
	fs.StringVar(&q.Host, "host", "", "only lines of this host")
	fs.StringVar(&q.Path, "path", "", "only lines of this path (a LIKE pattern if it holds % or _)")
	since := fs.String("since", "", "only lines read since this long ago (1h) or this time (RFC 3339)")
	fs.IntVarP(&q.Limit, "limit", "n", 100, "print at most this many lines, the newest")
	asJSON := fs.Bool("json", false, "print JSON lines {time,host,path,line}")
	if code, stop := parseCommandFlags(fs, args, stdio, "collector grep [flags] [PATTERN]\nprint stored log lines matching PATTERN (RE2), newest last"); stop {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stdio.Err, "collector grep: one PATTERN at most")
		return kit.ExitUsage
	}
	q.Pattern = fs.Arg(0)
	if c.Password == "" {
		c.Password = envOr("OPSKIT_CLICKHOUSE_PASSWORD")
	}
	if *since != "" {
		if d, err := time.ParseDuration(*since); err == nil {
			q.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
			q.Since = t
		} else {
			fmt.Fprintf(stdio.Err, "collector grep: --since %q: want a duration (1h) or an RFC 3339 time\n", *since)
			return kit.ExitUsage
		}
	}
	conn, err := logsink.Open(c)
	if err != nil {
		fmt.Fprintf(stdio.Err, "collector grep: %v\n", err)
		return kit.ExitUsage
	}
	defer conn.Close()
	lines, err := logsink.Grep(ctx, conn, c.Table, q)
	if err != nil {
		fmt.Fprintf(stdio.Err, "collector grep: %v\n", err)
		return kit.ExitFailure
	}
	enc := json.NewEncoder(stdio.Out)
	for _, l := range lines {
		if *asJSON {
			enc.Encode(l)
			continue
		}
		fmt.Fprintf(stdio.Out, "%s %s %s: %s\n", l.Time.UTC().Format(time.RFC3339), l.Host, l.Path, l.Line)
	}
	return kit.ExitOK
}

func envOr(name string) string {
	v, _ := os.LookupEnv(name)
	return v
}
