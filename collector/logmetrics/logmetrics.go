// Package logmetrics turns log lines into metrics: per input, counters of
// the lines matching named regular expressions, and optionally a number
// captured from them summed or averaged, reported each interval (e.g. the
// rate of ERROR lines per file). It wraps the tailer's Emitter, so it sees
// every event on its way out.
//
// For a rule named NAME, each file (tags input=..., path=...) reports:
//
//	log.NAME.count  COUNTER  lines matched since start (stored as a rate)
//	log.NAME.sum    COUNTER  sum of the captured values (aggregate: sum)
//	log.NAME.avg    GAUGE    mean of the values captured in the interval (aggregate: avg)
package logmetrics

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/metric"
)

type rule struct {
	input string
	name  string
	re    *regexp.Regexp
	value int // capture group index; 0 when the rule counts only
	avg   bool
}

type seriesKey struct {
	r    *rule
	path string
}

type tally struct {
	count, sum   float64 // running totals
	winSum, winN float64 // values of the current interval (avg)
}

// Counter counts matches; it is an Emitter in front of the real one.
type Counter struct {
	next  tail.Emitter
	rules map[*tail.Input][]*rule

	mu     sync.Mutex
	series map[seriesKey]*tally
	// MaxSeries bounds the (rule, path) pairs kept; lines of new ones
	// beyond it are not counted.
	maxSeries int
}

// New checks the inputs' metric rules and returns a Counter in front of
// next. It returns nil (and no error) when no input has rules.
func New(inputs []*tail.Input, next tail.Emitter) (*Counter, error) {
	c := &Counter{next: next, rules: map[*tail.Input][]*rule{}, series: map[seriesKey]*tally{}, maxSeries: 10000}
	n := 0
	for _, in := range inputs {
		for _, m := range in.Metrics {
			if m.Name == "" || !regexp.MustCompile(`^[A-Za-z0-9_.-]+$`).MatchString(m.Name) {
				return nil, fmt.Errorf("input %s: metric name %q: want letters, digits, _ . -", in.Name, m.Name)
			}
			re, err := regexp.Compile(m.Pattern)
			if err != nil {
				return nil, fmt.Errorf("input %s: metric %s: %w", in.Name, m.Name, err)
			}
			r := &rule{input: in.Name, name: m.Name, re: re}
			switch m.Aggregate {
			case "", "sum":
			case "avg":
				r.avg = true
			default:
				return nil, fmt.Errorf("input %s: metric %s: aggregate %q: want sum or avg", in.Name, m.Name, m.Aggregate)
			}
			if m.Value != "" {
				if i := re.SubexpIndex(m.Value); i > 0 {
					r.value = i
				} else if i, err := strconv.Atoi(m.Value); err == nil && i > 0 && i <= re.NumSubexp() {
					r.value = i
				} else {
					return nil, fmt.Errorf("input %s: metric %s: value %q names no capture group of %q", in.Name, m.Name, m.Value, m.Pattern)
				}
			}
			c.rules[in] = append(c.rules[in], r)
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	return c, nil
}

// Emit counts ev against its input's rules and passes it on.
func (c *Counter) Emit(ctx context.Context, ev *tail.Event) error {
	if rules := c.rules[ev.Input]; len(rules) > 0 {
		c.count(rules, ev)
	}
	return c.next.Emit(ctx, ev)
}

func (c *Counter) count(rules []*rule, ev *tail.Event) {
	for _, r := range rules {
		var v float64
		var hasValue bool
		if r.value > 0 {
			m := r.re.FindSubmatchIndex(ev.Line)
			if m == nil {
				continue
			}
			if m[2*r.value] >= 0 {
				f, err := strconv.ParseFloat(string(ev.Line[m[2*r.value]:m[2*r.value+1]]), 64)
				v, hasValue = f, err == nil
			}
		} else if !r.re.Match(ev.Line) {
			continue
		}
		c.mu.Lock()
		k := seriesKey{r, ev.Path}
		t := c.series[k]
		if t == nil {
			if len(c.series) >= c.maxSeries {
				c.mu.Unlock()
				continue
			}
			t = &tally{}
			c.series[k] = t
		}
		t.count++
		if hasValue {
			t.sum += v
			t.winSum += v
			t.winN++
		}
		c.mu.Unlock()
	}
}

// Flush passes on.
func (c *Counter) Flush(ctx context.Context) error { return c.next.Flush(ctx) }

// Points returns the interval's points, stamped now, and starts a new
// interval.
func (c *Counter) Points(now time.Time, step time.Duration) []metric.Point {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, st := now.Unix(), int32(step/time.Second)
	var out []metric.Point
	for k, t := range c.series {
		labels := func(suffix string) metric.Labels {
			return metric.New(
				metric.Label{Name: metric.NameLabel, Value: "log." + k.r.name + "." + suffix},
				metric.Label{Name: "input", Value: k.r.input},
				metric.Label{Name: "path", Value: k.path})
		}
		out = append(out, metric.Point{Labels: labels("count"), Time: ts, Value: t.count, Step: st, Type: metric.Counter})
		if k.r.value > 0 && !k.r.avg {
			out = append(out, metric.Point{Labels: labels("sum"), Time: ts, Value: t.sum, Step: st, Type: metric.Counter})
		}
		if k.r.value > 0 && k.r.avg && t.winN > 0 {
			out = append(out, metric.Point{Labels: labels("avg"), Time: ts, Value: t.winSum / t.winN, Step: st, Type: metric.Gauge})
		}
		t.winSum, t.winN = 0, 0
	}
	return out
}

// Writer takes points (collector's spool writer).
type Writer interface {
	Write(ctx context.Context, pts []metric.Point) error
}

// Run writes the points every interval until ctx ends. A failed write is
// logged; the totals carry on into the next interval.
func (c *Counter) Run(ctx context.Context, interval time.Duration, w Writer, log *slog.Logger) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if pts := c.Points(now, interval); len(pts) > 0 {
				if err := w.Write(ctx, pts); err != nil && ctx.Err() == nil {
					log.Warn("log metrics not written", "points", len(pts), "err", err)
				}
			}
		}
	}
}
