package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/hostmetrics"
)

// Exit codes, as every opskit subcommand uses them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const onceUsage = `Usage: collector once [flags]

Reads one round of host metrics from /proc and /sys and prints them as
open-falcon JSON items, one per line, for "transfer push". Rates (CPU shares,
disk and network traffic) are measured over --window. Exits 0 when every
metric group was read, 1 when some could not be (the others are printed),
2 on bad usage.

Flags:
`

// Once runs "collector once" with args (without the subcommand name) and
// returns the exit code.
func Once(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("collector once", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	hostname := fs.String("hostname", "", "endpoint of the points (default: the host name)")
	step := fs.Duration("step", 60*time.Second, "step written in the items, the interval the daemon would collect at")
	window := fs.Duration("window", time.Second, "how long rates are measured over")
	proc := fs.String("proc", "/proc", "where procfs is mounted")
	sys := fs.String("sys", "/sys", "where sysfs is mounted")
	tcpStates := fs.Bool("tcp-states", false, "count TCP sockets per state from /proc/net/tcp{,6}")
	fs.Usage = func() {
		fmt.Fprint(stderr, onceUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "collector once: %v\n", err)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "collector once: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case *step < time.Second:
		fmt.Fprintf(stderr, "collector once: --step must be at least 1s\n")
		return exitUsage
	case *window <= 0:
		fmt.Fprintf(stderr, "collector once: --window must be positive\n")
		return exitUsage
	}
	endpoint, err := Hostname(*hostname)
	if err != nil {
		fmt.Fprintf(stderr, "collector once: %v\n", err)
		return exitFailure
	}
	c := hostmetrics.New(hostmetrics.Config{Proc: *proc, Sys: *sys, TCPStates: *tcpStates})
	// The first round only primes the counters; its errors show again below.
	c.Collect(time.Now())
	select {
	case <-time.After(*window):
	case <-ctx.Done():
		return exitFailure
	}
	pts, collectErr := c.Collect(time.Now())
	defaults := falconfmt.Defaults{Endpoint: endpoint, Step: int32(*step / time.Second)}
	var buf []byte
	for _, p := range pts {
		buf = falconfmt.AppendItem(buf, p, defaults)
		buf = append(buf, '\n')
	}
	if _, err := stdout.Write(buf); err != nil {
		fmt.Fprintf(stderr, "collector once: %v\n", err)
		return exitFailure
	}
	if collectErr != nil {
		fmt.Fprintf(stderr, "collector once: %v\n", collectErr)
		return exitFailure
	}
	return exitOK
}

// Hostname returns override, or the host name when it is empty.
func Hostname(override string) (string, error) {
	if override != "" {
		return override, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("host name (set --hostname): %w", err)
	}
	return h, nil
}
