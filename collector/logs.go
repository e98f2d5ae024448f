package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/collector/agent"
	"github.com/opskit/opskit/collector/logmetrics"
	"github.com/opskit/opskit/collector/ship"
	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/kit"
)

// logsSection is the config file's `logs:` key.
type logsSection struct {
	Inputs []*tail.Input `yaml:"inputs"`
}

// logsConfig holds the flags of the log shipping half.
type logsConfig struct {
	output             string
	format             string
	outputFile         string
	brokers            []string
	compression        string
	linger             time.Duration
	batchBytes         int32
	bufferBytes        int
	producers          int
	maxLineBytes       int
	maxOpenFiles       int
	pollInterval       time.Duration
	scanInterval       time.Duration
	idleTimeout        time.Duration
	closeRemovedAfter  time.Duration
	checkpointInterval time.Duration
}

func (c *logsConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.output, "logs-output", "kafka", "where the events of the config file's logs.inputs go: kafka, stdout or file")
	fs.StringVar(&c.format, "logs-format", "json", "Kafka record of a line: json (one JSON event) or line (the line's bytes, its host, path, file, offset and fields in record headers)")
	fs.StringVar(&c.outputFile, "logs-file", "", "file the events are appended to with --logs-output file (JSON lines)")
	fs.StringSliceVar(&c.brokers, "kafka-brokers", nil, "Kafka seed brokers (host:port,...) for --logs-output kafka")
	fs.StringVar(&c.compression, "kafka-compression", "zstd", "Kafka batch compression: zstd, lz4, snappy, gzip or none")
	fs.DurationVar(&c.linger, "kafka-linger", 5*time.Millisecond, "how long a Kafka batch may wait to fill")
	fs.Int32Var(&c.batchBytes, "kafka-batch-bytes", 512<<10, "largest Kafka record batch; a line whose event (or, with --logs-format line, whose line and headers) is larger is cut to fit")
	fs.IntVar(&c.producers, "kafka-producers", defaultProducers(), "Kafka clients the records are spread over, each compressing on its own core (two by default, one where Go has one CPU); a key (by default a file's path) always takes one client, so its records keep their order")
	fs.IntVar(&c.bufferBytes, "logs-buffer-bytes", 4<<20, "events read and not yet acknowledged by Kafka, in bytes; when full, reading pauses")
	fs.IntVar(&c.maxLineBytes, "max-line-bytes", 1<<20, "longest line (or multiline event) shipped; longer ones are cut and marked truncated")
	fs.IntVar(&c.maxOpenFiles, "max-open-files", 1024, "most log files open at once; the file idle longest is closed for a new one")
	fs.DurationVar(&c.pollInterval, "logs-poll-interval", 250*time.Millisecond, "wait between reads when no file grew")
	fs.DurationVar(&c.scanInterval, "logs-scan-interval", 10*time.Second, "period of the rescans of the inputs' globs for new files")
	fs.DurationVar(&c.idleTimeout, "logs-idle-timeout", 5*time.Minute, "a file that did not grow for this long is closed, and reopened when it grows")
	fs.DurationVar(&c.closeRemovedAfter, "logs-close-removed-after", 2*time.Second, "a file renamed away or deleted is closed once it stayed at its end this long")
	fs.DurationVar(&c.checkpointInterval, "logs-checkpoint-interval", time.Second, "how often delivered offsets are written to --data-dir/logs/checkpoints.json")
}

// defaultProducers is two Kafka clients, or one where Go runs on one CPU:
// on two cores two clients shipped unkeyed records 26 % faster than one
// and three no faster than two (bench/RESULTS.md).
func defaultProducers() int { return min(2, runtime.GOMAXPROCS(0)) }

// emitter is an output the tailer writes to, closed at stop.
type emitter interface {
	tail.Emitter
	Close(ctx context.Context) error
}

// startLogs wires the log inputs of the config file, if any.
func (c *logsConfig) start(ctx context.Context, d *kit.Daemon, host string, points logmetrics.Writer, interval time.Duration) error {
	var sec logsSection
	if d.ConfigFile != "" {
		if err := kit.DecodeSection(d.ConfigFile, "logs", &sec); err != nil {
			return err
		}
	}
	if len(sec.Inputs) == 0 {
		return nil
	}
	if c.producers < 1 {
		return fmt.Errorf("--kafka-producers %d: want at least 1", c.producers)
	}
	if c.format != ship.FormatJSON && c.output != "kafka" {
		return fmt.Errorf("--logs-format %s: only with --logs-output kafka (stdout and file take JSON lines)", c.format)
	}
	var out emitter
	switch c.output {
	case "kafka":
		for _, in := range sec.Inputs {
			if in.Topic == "" {
				return fmt.Errorf("logs input %q: no topic (needed with --logs-output kafka)", in.Name+firstPath(in))
			}
		}
		if len(c.brokers) == 0 {
			return errors.New("logs inputs need --kafka-brokers (or --logs-output stdout|file)")
		}
		k, err := ship.NewKafka(ship.KafkaConfig{
			Brokers: c.brokers, Compression: c.compression, Linger: c.linger, BatchBytes: c.batchBytes,
			BufferBytes: c.bufferBytes, Host: host, Dye: d.Dye, Format: c.format, Producers: c.producers,
		}, d.Metrics, d.Log)
		if err != nil {
			return err
		}
		d.Metrics.NewGauge("opskit_collector_logs_kafka_buffered_events", func() float64 { return float64(k.Buffered()) })
		out = k
	case "stdout":
		out = stdoutEmitter{ship.NewWriter(os.Stdout, host)}
	case "file":
		if c.outputFile == "" {
			return errors.New("--logs-output file needs --logs-file")
		}
		w, err := ship.OpenFile(c.outputFile, host)
		if err != nil {
			return err
		}
		out = w
	default:
		return fmt.Errorf("--logs-output %q: want kafka, stdout or file", c.output)
	}
	// Log to metrics: rules count events on their way to the output.
	var emit tail.Emitter = out
	counter, err := logmetrics.New(sec.Inputs, out)
	if err != nil {
		return err
	}
	if counter != nil {
		emit = counter
		d.Go(ctx, "logs-metrics", func(ctx context.Context) error { return counter.Run(ctx, interval, points, d.Log) })
	}
	tl, err := tail.New(tail.Config{
		Inputs: sec.Inputs, CheckpointPath: filepath.Join(d.DataDir, "logs", "checkpoints.json"),
		MaxLineBytes: c.maxLineBytes, MaxOpenFiles: c.maxOpenFiles, PollInterval: c.pollInterval,
		ScanInterval: c.scanInterval, IdleTimeout: c.idleTimeout, CloseRemovedAfter: c.closeRemovedAfter,
	}, emit, d.Metrics, d.Log)
	if err != nil {
		return err
	}
	d.Metrics.NewGauge("opskit_collector_logs_inflight_events", func() float64 { return float64(tl.InFlight()) })
	d.HandleAdmin("logs", func(context.Context, []string) (any, error) {
		return map[string]any{"in_flight": tl.InFlight(), "files": tl.Checkpoints()}, nil
	})
	// Stop order: the tailer returns (Go), then the output delivers what it
	// holds, then the last checkpoint records it.
	d.OnStop("logs-checkpoints", func(context.Context) error { return tl.SaveCheckpoints() })
	d.OnStop("logs-output", out.Close)
	d.Go(ctx, "logs-tail", tl.Run)
	d.Go(ctx, "logs-checkpoints", func(ctx context.Context) error { return tl.RunCheckpoints(ctx, c.checkpointInterval) })
	d.Log.Info("shipping logs", "inputs", len(sec.Inputs), "output", c.output)
	return nil
}

func firstPath(in *tail.Input) string {
	if in.Name == "" && len(in.Paths) > 0 {
		return in.Paths[0]
	}
	return ""
}

// stdoutEmitter leaves stdout open at stop.
type stdoutEmitter struct{ *ship.Writer }

func (s stdoutEmitter) Close(ctx context.Context) error { return s.Flush(ctx) }

// tailCommand is `collector tail FILE...`: follow files (or globs) and
// print their events as JSON lines, without a config file or checkpoints.
func tailCommand(ctx context.Context, args []string, stdio kit.IO) int {
	fs := pflag.NewFlagSet("collector tail", pflag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	startAt := fs.String("start-at", "end", "where files are read from: beginning or end")
	once := fs.Bool("once", false, "stop when every file is read to its end")
	hostname := fs.String("hostname", "", "host of the events (default: the host name)")
	maxLine := fs.Int("max-line-bytes", 1<<20, "longest line; longer ones are cut and marked truncated")
	pattern := fs.String("multiline-pattern", "", "join lines into events: a regular expression")
	match := fs.String("multiline-match", "start", "what a line matching --multiline-pattern is: start or continuation")
	fs.Usage = func() {
		fmt.Fprintln(stdio.Err, "usage: collector tail [flags] FILE|GLOB...\nfollow files and print each line as a JSON event on stdout\n\nflags:")
		fmt.Fprint(stdio.Err, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return kit.ExitOK
		}
		return kit.ExitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return kit.ExitUsage
	}
	host, err := agent.Hostname(*hostname)
	if err != nil {
		fmt.Fprintf(stdio.Err, "collector tail: %v\n", err)
		return kit.ExitFailure
	}
	in := &tail.Input{Name: "tail", Paths: fs.Args(), StartAt: *startAt}
	if *pattern != "" {
		in.Multiline = &tail.Multiline{Pattern: *pattern, Match: *match}
	}
	out := ship.NewWriter(stdio.Out, host)
	tl, err := tail.New(tail.Config{Inputs: []*tail.Input{in}, MaxLineBytes: *maxLine, StopAtEOF: *once,
		PollInterval: 100 * time.Millisecond, ScanInterval: time.Second}, out, nil, slog.New(slog.NewTextHandler(stdio.Err, nil)))
	if err != nil {
		fmt.Fprintf(stdio.Err, "collector tail: %v\n", err)
		return kit.ExitUsage
	}
	if err := tl.Run(ctx); err != nil {
		fmt.Fprintf(stdio.Err, "collector tail: %v\n", err)
		return kit.ExitFailure
	}
	if err := out.Flush(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		fmt.Fprintf(stdio.Err, "collector tail: %v\n", err)
		return kit.ExitFailure
	}
	return kit.ExitOK
}
