// Package throttle caps the bytes per second of readers and writers with
// golang.org/x/time/rate limiters; several limiters (per agent, per
// transfer) can apply to one stream at once.
package throttle

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"golang.org/x/time/rate"
)

// chunk is the most bytes moved per limiter wait.
const chunk = 64 << 10

// NewLimiter returns a limiter of bytesPerSec, or nil for no cap.
func NewLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), chunk)
}

func wait(ctx context.Context, n int, limiters []*rate.Limiter) error {
	for _, l := range limiters {
		if l != nil {
			if err := l.WaitN(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reader caps reads from r by every non-nil limiter.
func Reader(ctx context.Context, r io.Reader, limiters ...*rate.Limiter) io.Reader {
	return &reader{ctx: ctx, r: r, limiters: limiters}
}

type reader struct {
	ctx      context.Context
	r        io.Reader
	limiters []*rate.Limiter
}

func (t *reader) Read(p []byte) (int, error) {
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if werr := wait(t.ctx, n, t.limiters); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Writer caps writes to w by every non-nil limiter.
func Writer(ctx context.Context, w io.Writer, limiters ...*rate.Limiter) io.Writer {
	return &writer{ctx: ctx, w: w, limiters: limiters}
}

type writer struct {
	ctx      context.Context
	w        io.Writer
	limiters []*rate.Limiter
}

func (t *writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunk)
		if err := wait(t.ctx, n, t.limiters); err != nil {
			return written, err
		}
		m, err := t.w.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// ParseRate reads a byte rate such as "50MB/s", "10MiB/s", "512k" or
// "1000000" (bytes per second; the "/s" is optional). "" and "0" mean no cap.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "/s"), "ps")
	if t == "" || t == "0" {
		return 0, nil
	}
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("rate %q: want a number of bytes per second such as 50MB/s", s)
	}
	mult := map[string]float64{"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6, "mib": 1 << 20,
		"g": 1e9, "gb": 1e9, "gib": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("rate %q: unknown unit %q (B, kB, KiB, MB, MiB, GB, GiB)", s, unit)
	}
	r := v * mult
	if r > math.MaxInt64/2 {
		return 0, fmt.Errorf("rate %q: too large", s)
	}
	return int64(r), nil
}
