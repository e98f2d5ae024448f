// Package pipe throttles a stream of lines: Copy passes lines from a reader
// to a writer no faster than a rate (overall or per key), and Exec runs a
// command per line at that rate. They are `ratelimit pipe` and `ratelimit
// exec`, for shell scripts that call rate-limited APIs.
package pipe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/opskit/opskit/ratelimit/bucket"
	"github.com/opskit/opskit/ratelimit/internal/lru"
)

// Options say how fast lines go.
type Options struct {
	// Rate is lines per second (per key with KeyField); Burst how many may
	// go at once after a quiet spell (at least 1).
	Rate  float64
	Burst int
	// KeyField limits each key separately: a JSON object's top-level field
	// name, or a number N for the N-th whitespace-separated field. A line
	// without the field shares the empty key.
	KeyField string
	// Drop discards lines over the rate instead of waiting.
	Drop bool
	// MaxKeys bounds the keys remembered (least recently used go first).
	MaxKeys int
	// MaxLine bounds one line (default 4 MiB).
	MaxLine int
}

// Stats count what Copy did.
type Stats struct {
	Lines, Passed, Dropped int64
	Waited                 time.Duration
}

// Check validates the options.
func (o *Options) Check() error {
	if _, err := bucket.NewZone(bucket.Config{Rate: o.Rate, Burst: o.Burst, MaxKeys: 1}, nil); err != nil {
		return fmt.Errorf("--rate/--burst: %w", err)
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 100_000
	}
	if o.MaxLine <= 0 {
		o.MaxLine = 4 << 20
	}
	return nil
}

// throttle hands out each line's turn.
type throttle struct {
	opts  Options
	keys  *lru.Table[*rate.Limiter]
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

func newThrottle(opts Options, now func() time.Time, sleep func(context.Context, time.Duration) error) *throttle {
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	return &throttle{opts: opts, keys: lru.New[*rate.Limiter](opts.MaxKeys), now: now, sleep: sleep}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait returns once line may go; false (with Drop) if it must be dropped.
func (t *throttle) wait(ctx context.Context, line []byte, st *Stats) (bool, error) {
	key := ""
	if t.opts.KeyField != "" {
		key = fieldOf(line, t.opts.KeyField)
	}
	limp, ok := t.keys.Get(key)
	if !ok {
		if t.keys.Full() {
			t.keys.RemoveOldest()
		}
		limp = t.keys.Insert(key)
		*limp = rate.NewLimiter(rate.Limit(t.opts.Rate), t.opts.Burst)
	}
	now := t.now()
	r := (*limp).ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return true, nil
	}
	if t.opts.Drop {
		r.CancelAt(now)
		return false, nil
	}
	st.Waited += d
	if err := t.sleep(ctx, d); err != nil {
		return false, err
	}
	return true, nil
}

// fieldOf is the line's key: field N (1-based, whitespace-separated) when
// name is a number, else the JSON object's top-level field.
func fieldOf(line []byte, name string) string {
	if n, err := strconv.Atoi(name); err == nil && n > 0 {
		f := bytes.Fields(line)
		if n <= len(f) {
			return string(f[n-1])
		}
		return ""
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(line, &obj) != nil {
		return ""
	}
	raw, ok := obj[name]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// Copy copies lines from in to out at the rate. Lines are written in the
// order read: a line waiting for its key's turn holds back the lines
// behind it.
func Copy(ctx context.Context, in io.Reader, out io.Writer, opts Options) (Stats, error) {
	return copyLines(ctx, in, out, opts, nil, nil)
}

func copyLines(ctx context.Context, in io.Reader, out io.Writer, opts Options, now func() time.Time, sleep func(context.Context, time.Duration) error) (Stats, error) {
	var st Stats
	if err := opts.Check(); err != nil {
		return st, err
	}
	th := newThrottle(opts, now, sleep)
	bw := bufio.NewWriter(out)
	err := eachLine(in, opts.MaxLine, func(line []byte) error {
		st.Lines++
		ok, err := th.wait(ctx, line, &st)
		if err != nil {
			return err
		}
		if !ok {
			st.Dropped++
			return nil
		}
		st.Passed++
		bw.Write(line)
		bw.WriteByte('\n')
		// A line is sent as soon as it may go: whoever reads us is
		// waiting for it.
		return bw.Flush()
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return st, err
}

// eachLine calls fn for every line (without its newline).
func eachLine(in io.Reader, maxLine int, fn func([]byte) error) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("a line is longer than %d bytes: %w", maxLine, err)
		}
		return err
	}
	return nil
}

// ExecResult is one command run, reported on failure.
type ExecResult struct {
	Line     string `json:"line"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// Exec runs argv once per input line at the rate. Arguments equal to {} are
// replaced by the line; without any {}, the line is the command's stdin.
// The commands' stdout and stderr go to stdout and stderr. It returns the
// runs that failed.
func Exec(ctx context.Context, in io.Reader, stdout, stderr io.Writer, argv []string, opts Options) (Stats, []ExecResult, error) {
	var st Stats
	var failed []ExecResult
	if len(argv) == 0 {
		return st, nil, errors.New("exec: no command")
	}
	if err := opts.Check(); err != nil {
		return st, nil, err
	}
	th := newThrottle(opts, nil, nil)
	placeholder := false
	for _, a := range argv[1:] {
		if a == "{}" {
			placeholder = true
		}
	}
	err := eachLine(in, opts.MaxLine, func(line []byte) error {
		st.Lines++
		ok, err := th.wait(ctx, line, &st)
		if err != nil {
			return err
		}
		if !ok {
			st.Dropped++
			return nil
		}
		st.Passed++
		args := make([]string, len(argv)-1)
		for i, a := range argv[1:] {
			if a == "{}" {
				a = string(line)
			}
			args[i] = a
		}
		cmd := exec.CommandContext(ctx, argv[0], args...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if !placeholder {
			cmd.Stdin = strings.NewReader(string(line) + "\n")
		}
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r := ExecResult{Line: string(line), ExitCode: -1, Error: err.Error()}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				r.ExitCode = ee.ExitCode()
			}
			failed = append(failed, r)
		}
		return nil
	})
	return st, failed, err
}
