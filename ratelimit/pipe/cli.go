package pipe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/ratelimit/bucket"
)

// Exit codes, as every opskit subcommand uses them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func flags(name string, stderr io.Writer, o *Options, rateText *string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(rateText, "rate", "", "lines per second, e.g. 100/s, 30/m, 0.5/s (required)")
	fs.IntVar(&o.Burst, "burst", 1, "lines that may go at once after a quiet spell")
	fs.StringVar(&o.KeyField, "key-field", "", "rate per key: a JSON field name, or N for the N-th whitespace-separated field")
	fs.BoolVar(&o.Drop, "drop", false, "drop lines over the rate instead of waiting (counted on stderr)")
	fs.IntVar(&o.MaxKeys, "max-keys", 100_000, "keys remembered with --key-field (least recently used go first)")
	return fs
}

// parse returns false with the exit code when the command should stop.
func parse(fs *pflag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// Main is `ratelimit pipe`: stdin to stdout at --rate.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o Options
	var rateText string
	fs := flags("ratelimit pipe", stderr, &o, &rateText)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ratelimit pipe --rate N/s [--burst N] [--key-field F] [--drop]\n\nCopies stdin lines to stdout no faster than the rate.\n\n%s", fs.FlagUsages())
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ratelimit pipe: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if err := setRate(&o, rateText); err != nil {
		fmt.Fprintf(stderr, "ratelimit pipe: %v\n", err)
		return exitUsage
	}
	st, err := Copy(ctx, stdin, stdout, o)
	report(stderr, "pipe", st)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimit pipe: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// ExecMain is `ratelimit exec --rate ... -- CMD ARGS`.
func ExecMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o Options
	var rateText string
	fs := flags("ratelimit exec", stderr, &o, &rateText)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ratelimit exec --rate N/s [--burst N] [--key-field F] [--drop] -- CMD [ARG|{}]...\n\nRuns CMD once per stdin line at the rate; {} is replaced by the line, else the line is CMD's stdin.\nFailed runs are reported on stderr as JSON lines; the exit status is 1 if any failed.\n\n%s", fs.FlagUsages())
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "ratelimit exec: no command (ratelimit exec --rate 10/s -- CMD ARGS)")
		return exitUsage
	}
	if err := setRate(&o, rateText); err != nil {
		fmt.Fprintf(stderr, "ratelimit exec: %v\n", err)
		return exitUsage
	}
	st, failed, err := Exec(ctx, stdin, stdout, stderr, fs.Args(), o)
	enc := json.NewEncoder(stderr)
	for _, f := range failed {
		enc.Encode(f)
	}
	report(stderr, "exec", st)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimit exec: %v\n", err)
		return exitFailure
	}
	if len(failed) > 0 {
		return exitFailure
	}
	return exitOK
}

func setRate(o *Options, text string) error {
	if text == "" {
		return errors.New("--rate is required, e.g. --rate 100/s")
	}
	r, err := bucket.ParseRate(text)
	if err != nil {
		return fmt.Errorf("--rate: %w", err)
	}
	o.Rate = r
	return o.Check()
}

func report(stderr io.Writer, what string, st Stats) {
	if st.Dropped > 0 {
		fmt.Fprintf(stderr, "ratelimit %s: %d lines, %d passed, %d dropped over the rate\n", what, st.Lines, st.Passed, st.Dropped)
	}
}
