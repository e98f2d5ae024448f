// Package intaketest holds test helpers for intake protocols: an Appender
// that records what it is given and can be told to fail, and a reader of
// counters from a metrics set.
package intaketest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// Appender records every point appended, and the size of each call. SetErr
// makes Append fail; SetRefuse makes it refuse some points.
type Appender struct {
	mu     sync.Mutex
	points []metric.Point
	calls  []int
	err    error
	refuse func(metric.Point) bool
	notify chan struct{}
}

// NewAppender returns an empty recording appender.
func NewAppender() *Appender { return &Appender{notify: make(chan struct{}, 1)} }

// Append records pts, or returns the configured error, or fails when ctx
// is already done.
func (a *Appender) Append(ctx context.Context, pts []metric.Point) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	// As real storage would, refuse to store under a cancelled context.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append with a done context: %w", err)
	}
	var partial intake.PartialError
	for i, p := range pts {
		if a.refuse != nil && a.refuse(p) {
			partial.Rejected = append(partial.Rejected, intake.PointReject{Index: i, Reason: intake.ReasonOutOfOrder, Detail: "refused by the test appender"})
			continue
		}
		a.points = append(a.points, p)
	}
	a.calls = append(a.calls, len(pts))
	select {
	case a.notify <- struct{}{}:
	default:
	}
	if len(partial.Rejected) > 0 {
		return &partial
	}
	return nil
}

// SetRefuse makes Append refuse the points for which refuse returns true
// (as out of order), store the others and return an *intake.PartialError.
func (a *Appender) SetRefuse(refuse func(metric.Point) bool) {
	a.mu.Lock()
	a.refuse = refuse
	a.mu.Unlock()
}

// SetErr makes later Append calls fail with err (nil to succeed again).
func (a *Appender) SetErr(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

// Points returns a copy of what was appended so far.
func (a *Appender) Points() []metric.Point {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]metric.Point(nil), a.points...)
}

// Calls returns the number of points of each successful Append call.
func (a *Appender) Calls() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.calls...)
}

// WaitPoints waits until at least n points were appended or the timeout
// passes, and returns what was appended.
func (a *Appender) WaitPoints(n int, timeout time.Duration) []metric.Point {
	deadline := time.After(timeout)
	for {
		if pts := a.Points(); len(pts) >= n {
			return pts
		}
		select {
		case <-a.notify:
		case <-deadline:
			return a.Points()
		}
	}
}

// Counter returns the value of the counter named exactly name (with its
// labels, as written in the exposition) in set, or 0 when absent.
func Counter(set *metrics.Set, name string) float64 {
	var b bytes.Buffer
	set.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// WaitCounter waits until the counter reaches want or the timeout passes,
// and returns its last value. Servers count after Append returns, so a test
// that saw the points may still have to wait for the count.
func WaitCounter(set *metrics.Set, name string, want float64, timeout time.Duration) float64 {
	deadline := time.Now().Add(timeout)
	for {
		v := Counter(set, name)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(2 * time.Millisecond)
	}
}
