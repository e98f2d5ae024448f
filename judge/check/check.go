// Package check is `judge check`: it reads points as JSON lines (open-falcon
// items) on stdin, evaluates the strategies on them with the same engine as
// the daemon, and prints alert transitions as JSON lines on stdout. Time is
// the points' own: timers and nodata run on their timestamps, so a recorded
// stream replays the same way every time.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/jsonl"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/judge/engine"
	"github.com/opskit/opskit/judge/strategy"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// Main runs the subcommand and returns its exit code: 0 when every line
// was taken, 1 when some were refused (each reported on stderr) or the
// strategy file does not load, 2 on bad usage.
func Main(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	fs := pflag.NewFlagSet("judge check", pflag.ContinueOnError)
	fs.SetOutput(errw)
	strategies := fs.String("strategies", "", "strategy file (required)")
	groups := fs.String("groups", "", "host groups file")
	sweep := fs.Duration("sweep-every", 0, "check nodata only when the points' clock has moved this much (0 = whenever it moves)")
	helpOut := errw
	for _, a := range args {
		if a == "-h" || a == "--help" {
			helpOut = out // help that was asked for goes to stdout
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(helpOut, "Usage: judge check --strategies FILE [--groups FILE] < points.jsonl > transitions.jsonl\n\n"+
			"Reads open-falcon items, one JSON object a line, evaluates the strategies on them\n"+
			"and prints each alert transition (firing, repeat, resolved) as a JSON line.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *strategies == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	set, err := strategy.Load(*strategies, *groups)
	if err != nil {
		fmt.Fprintf(errw, "judge check: %v\n", err)
		return 1
	}
	eng := engine.New(engine.Config{})
	eng.SetStrategies(set, time.Unix(0, 0))
	w := jsonl.NewBufferedWriter(out)
	defer w.Flush()
	emit := func(trs []engine.Transition) error {
		for _, t := range trs {
			if err := w.Write(t); err != nil {
				return err
			}
		}
		return nil
	}
	lim := intake.DefaultLimits()
	r := jsonl.NewReader(in, 0)
	refused := 0
	var clock int64
	for ctx.Err() == nil {
		raw, err := r.Raw()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(errw, "judge check: %v\n", err)
			if errors.Is(err, jsonl.ErrLineTooLong) {
				refused++
				continue
			}
			return 1
		}
		p, rej := falcon.ParseItem(raw, time.Now().Unix(), lim)
		if rej != nil {
			refused++
			fmt.Fprintf(errw, "judge check: line %d: %s: %s\n", r.Line(), rej.Reason, rej.Detail)
			continue
		}
		if p.Time > clock {
			// The clock moved: check nodata up to the new time first, so a
			// series that went quiet is seen before this point arrives.
			if *sweep <= 0 || clock == 0 || time.Duration(p.Time-clock)*time.Second >= *sweep {
				if clock != 0 {
					if err := emit(eng.Sweep(time.Unix(p.Time, 0).UTC())); err != nil {
						return 1
					}
				}
				clock = p.Time
			}
		}
		at := time.Unix(max(p.Time, clock), 0).UTC()
		if err := emit(eng.Ingest(at, []metric.Point{p})); err != nil {
			return 1
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(errw, "judge check: %v\n", err)
		return 1
	}
	if refused > 0 {
		fmt.Fprintf(errw, "judge check: %d line(s) refused\n", refused)
		return 1
	}
	return 0
}
