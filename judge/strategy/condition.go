package strategy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Func is a condition function of open-falcon's (and Nightingale's) grammar.
type Func uint8

// The condition functions. Windows count points, newest first.
const (
	FuncAll         Func = iota + 1 // all(#N): every one of the last N points satisfies
	FuncMax                         // max(#N): the largest of the last N
	FuncMin                         // min(#N): the smallest of the last N
	FuncSum                         // sum(#N): their sum
	FuncAvg                         // avg(#N): their mean
	FuncDiff                        // diff(#N): newest minus any of the N before it
	FuncPDiff                       // pdiff(#N): that difference in percent of the older point
	FuncLookup                      // lookup(#M,N): at least M of the last N points satisfy
	FuncStddev                      // stddev(#N) = K: newest outside mean ± K population deviations
	FuncKDiff                       // kdiff(#M,N): at least M of the N diffs satisfy
	FuncKPDiff                      // kpdiff(#M,N): at least M of the N pdiffs satisfy
	FuncHappen                      // happen(#N,M): at least M of the last N points satisfy
	FuncCAvg                        // c_avg(#N,1d): avg(#N) minus the same window's avg one period earlier
	FuncCAvgAbs                     // c_avg_abs: |that difference|
	FuncCAvgRate                    // c_avg_rate: difference in percent of the earlier avg
	FuncCAvgRateAbs                 // c_avg_rate_abs: |that percentage|
)

var funcNames = map[string]Func{
	"all": FuncAll, "max": FuncMax, "min": FuncMin, "sum": FuncSum, "avg": FuncAvg,
	"diff": FuncDiff, "pdiff": FuncPDiff, "lookup": FuncLookup, "stddev": FuncStddev,
	"kdiff": FuncKDiff, "kpdiff": FuncKPDiff, "happen": FuncHappen,
	"c_avg": FuncCAvg, "c_avg_abs": FuncCAvgAbs, "c_avg_rate": FuncCAvgRate, "c_avg_rate_abs": FuncCAvgRateAbs,
}

// String is the function's name in the grammar.
func (f Func) String() string {
	for name, g := range funcNames {
		if g == f {
			return name
		}
	}
	return fmt.Sprintf("Func(%d)", uint8(f))
}

// Op is a comparison operator.
type Op uint8

// Operators; == and != compare with open-falcon's tolerance of 0.0001.
const (
	OpEq Op = iota + 1
	OpNe
	OpLt
	OpLe
	OpGt
	OpGe
)

func (o Op) String() string {
	return [...]string{"?", "==", "!=", "<", "<=", ">", ">="}[o]
}

// EqualTolerance is open-falcon's tolerance for == and !=.
const EqualTolerance = 0.0001

// MaxWindow bounds #N so a typo cannot make every series keep a huge window.
const MaxWindow = 1000

// Compare applies op with open-falcon's semantics: == holds when the values
// differ by less than EqualTolerance, != when they differ by more.
func Compare(left float64, op Op, right float64) bool {
	switch op {
	case OpEq:
		return math.Abs(left-right) < EqualTolerance
	case OpNe:
		return math.Abs(left-right) > EqualTolerance
	case OpLt:
		return left < right
	case OpLe:
		return left <= right
	case OpGt:
		return left > right
	case OpGe:
		return left >= right
	}
	return false
}

// Condition is one parsed condition such as `all(#3) > 90`.
type Condition struct {
	Func Func
	// N is the window in points (#N).
	N int
	// M is the count of lookup, kdiff, kpdiff and happen, or the number of
	// deviations of stddev.
	M int
	// Period is how far back c_avg compares (1d, 1w, ...).
	Period time.Duration
	Op     Op
	// Threshold is the right-hand value.
	Threshold float64
}

// Window is how many points the condition reads: N, or N+1 for the diff
// family, which compares the newest point with the N before it.
func (c *Condition) Window() int {
	switch c.Func {
	case FuncDiff, FuncPDiff, FuncKDiff, FuncKPDiff:
		return c.N + 1
	}
	return c.N
}

// NeedsBaseline reports whether the condition compares with an earlier
// period (the c_avg family).
func (c *Condition) NeedsBaseline() bool { return c.Func >= FuncCAvg }

// String prints the condition in the grammar it was parsed from.
func (c *Condition) String() string {
	var args string
	switch c.Func {
	case FuncLookup, FuncKDiff, FuncKPDiff:
		args = fmt.Sprintf("#%d,%d", c.M, c.N)
	case FuncHappen:
		args = fmt.Sprintf("#%d,%d", c.N, c.M)
	case FuncCAvg, FuncCAvgAbs, FuncCAvgRate, FuncCAvgRateAbs:
		args = fmt.Sprintf("#%d,%s", c.N, formatPeriod(c.Period))
	default:
		args = fmt.Sprintf("#%d", c.N)
	}
	if c.Func == FuncStddev {
		return fmt.Sprintf("stddev(%s) = %d", args, c.M)
	}
	return fmt.Sprintf("%s(%s) %s %s", c.Func, args, c.Op, strconv.FormatFloat(c.Threshold, 'g', -1, 64))
}

func formatPeriod(d time.Duration) string {
	switch {
	case d%(7*24*time.Hour) == 0:
		return fmt.Sprintf("%dw", d/(7*24*time.Hour))
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// ParseCondition parses `FUNC(#ARGS) OP NUMBER`, e.g. `all(#3) > 90`,
// `lookup(#2,3) >= 1`, `happen(#5,3) > 0`, `stddev(#10) = 3`,
// `c_avg_rate(#3,1d) > 50`.
func ParseCondition(s string) (*Condition, error) {
	text := strings.TrimSpace(s)
	open := strings.IndexByte(text, '(')
	if open <= 0 {
		return nil, fmt.Errorf("condition %q: want FUNC(#N) OP VALUE, e.g. all(#3) > 90", s)
	}
	name := strings.TrimSpace(text[:open])
	fn, ok := funcNames[name]
	if !ok {
		return nil, fmt.Errorf("condition %q: unknown function %q (want all, max, min, sum, avg, diff, pdiff, lookup, stddev, kdiff, kpdiff, happen, c_avg, c_avg_abs, c_avg_rate, c_avg_rate_abs)", s, name)
	}
	closeAt := strings.IndexByte(text[open:], ')')
	if closeAt < 0 {
		return nil, fmt.Errorf("condition %q: missing ')'", s)
	}
	closeAt += open
	c := &Condition{Func: fn}
	if err := c.parseArgs(strings.TrimSpace(text[open+1 : closeAt])); err != nil {
		return nil, fmt.Errorf("condition %q: %w", s, err)
	}
	rest := strings.TrimSpace(text[closeAt+1:])
	op, n := parseOp(rest)
	if op == 0 {
		return nil, fmt.Errorf("condition %q: want an operator (== != < <= > >=) after %s(...)", s, name)
	}
	c.Op = op
	valText := strings.TrimSpace(rest[n:])
	v, err := strconv.ParseFloat(valText, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("condition %q: threshold %q is not a finite number", s, valText)
	}
	c.Threshold = v
	if fn == FuncStddev {
		// open-falcon writes `stddev(#N) = K`: K is the number of
		// deviations, not a value compared with an operator.
		if op != OpEq || v != math.Trunc(v) || v < 1 || v > 100 {
			return nil, fmt.Errorf("condition %q: stddev takes `= K` with K a whole number of deviations from 1 to 100", s)
		}
		c.M = int(v)
	}
	return c, nil
}

func (c *Condition) parseArgs(args string) error {
	if !strings.HasPrefix(args, "#") {
		return fmt.Errorf("arguments %q: want #N", args)
	}
	parts := strings.Split(args[1:], ",")
	ints := func(want int) ([]int, error) {
		if len(parts) != want {
			return nil, fmt.Errorf("%s takes %d argument(s), got %d", c.Func, want, len(parts))
		}
		out := make([]int, want)
		for i, p := range parts {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n < 1 || n > MaxWindow {
				return nil, fmt.Errorf("argument %q: want a whole number from 1 to %d", strings.TrimSpace(p), MaxWindow)
			}
			out[i] = n
		}
		return out, nil
	}
	switch c.Func {
	case FuncLookup, FuncKDiff, FuncKPDiff:
		v, err := ints(2)
		if err != nil {
			return err
		}
		c.M, c.N = v[0], v[1]
	case FuncHappen:
		v, err := ints(2)
		if err != nil {
			return err
		}
		c.N, c.M = v[0], v[1]
	case FuncCAvg, FuncCAvgAbs, FuncCAvgRate, FuncCAvgRateAbs:
		if len(parts) != 2 {
			return fmt.Errorf("%s takes #N and a period such as 1d or 1w", c.Func)
		}
		parts = parts[:1]
		v, err := ints(1)
		if err != nil {
			return err
		}
		c.N = v[0]
		p, err := ParsePeriod(strings.TrimSpace(args[1:][strings.IndexByte(args[1:], ',')+1:]))
		if err != nil {
			return err
		}
		c.Period = p
	default:
		v, err := ints(1)
		if err != nil {
			return err
		}
		c.N = v[0]
	}
	if c.M > c.N && c.Func != FuncStddev {
		return fmt.Errorf("%s: the count %d is larger than the window %d", c.Func, c.M, c.N)
	}
	return nil
}

// ParsePeriod reads a c_avg period: a Go duration or a whole number of days
// (1d) or weeks (1w).
func ParsePeriod(s string) (time.Duration, error) {
	if n := len(s); n > 1 && (s[n-1] == 'd' || s[n-1] == 'w') {
		k, err := strconv.Atoi(s[:n-1])
		if err == nil && k > 0 && k <= 520 {
			unit := 24 * time.Hour
			if s[n-1] == 'w' {
				unit *= 7
			}
			return time.Duration(k) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("period %q: want e.g. 1d, 1w or 12h", s)
	}
	return d, nil
}

func parseOp(s string) (Op, int) {
	for _, c := range []struct {
		text string
		op   Op
	}{{"==", OpEq}, {"!=", OpNe}, {"<=", OpLe}, {">=", OpGe}, {"<", OpLt}, {">", OpGt}, {"=", OpEq}} {
		if strings.HasPrefix(s, c.text) {
			return c.op, len(c.text)
		}
	}
	return 0, 0
}

// Eval applies the condition to a window, newest point first. It returns
// the value the condition reports (the newest point for all, lookup,
// happen and stddev; the computed figure otherwise), whether it holds, and
// whether there were enough points to judge at all: with too few points a
// condition is not judged, as in open-falcon. baseline is the earlier
// period's average for the c_avg family (ignored otherwise).
func (c *Condition) Eval(vs []float64, baseline float64) (value float64, triggered, enough bool) {
	need := c.Window()
	if len(vs) < need {
		return 0, false, false
	}
	vs = vs[:need]
	switch c.Func {
	case FuncAll:
		for _, v := range vs {
			if !Compare(v, c.Op, c.Threshold) {
				return vs[0], false, true
			}
		}
		return vs[0], true, true
	case FuncMax:
		m := vs[0]
		for _, v := range vs[1:] {
			m = max(m, v)
		}
		return m, Compare(m, c.Op, c.Threshold), true
	case FuncMin:
		m := vs[0]
		for _, v := range vs[1:] {
			m = min(m, v)
		}
		return m, Compare(m, c.Op, c.Threshold), true
	case FuncSum:
		s := sum(vs)
		return s, Compare(s, c.Op, c.Threshold), true
	case FuncAvg:
		a := sum(vs) / float64(len(vs))
		return a, Compare(a, c.Op, c.Threshold), true
	case FuncDiff, FuncPDiff:
		// The first older point whose difference satisfies fires; with none,
		// the value reported is the last difference computed.
		var left float64
		for _, old := range vs[1:] {
			d, ok := c.diff(vs[0], old)
			if !ok {
				continue
			}
			left = d
			if Compare(d, c.Op, c.Threshold) {
				return d, true, true
			}
		}
		return left, false, true
	case FuncKDiff, FuncKPDiff:
		hits := 0
		var left float64
		for _, old := range vs[1:] {
			d, ok := c.diff(vs[0], old)
			if !ok {
				continue
			}
			left = d
			if Compare(d, c.Op, c.Threshold) {
				hits++
				if hits == c.M {
					return d, true, true
				}
			}
		}
		return left, false, true
	case FuncLookup, FuncHappen:
		hits := 0
		for _, v := range vs {
			if Compare(v, c.Op, c.Threshold) {
				hits++
				if hits == c.M {
					// open-falcon's lookup reports the newest point,
					// Nightingale's happen the M-th that satisfied.
					if c.Func == FuncHappen {
						return v, true, true
					}
					return vs[0], true, true
				}
			}
		}
		return vs[0], false, true
	case FuncStddev:
		mean := sum(vs) / float64(len(vs))
		var sq float64
		for _, v := range vs {
			sq += (v - mean) * (v - mean)
		}
		sd := math.Sqrt(sq / float64(len(vs)))
		k := float64(c.M)
		return vs[0], vs[0] < mean-k*sd || vs[0] > mean+k*sd, true
	case FuncCAvg, FuncCAvgAbs, FuncCAvgRate, FuncCAvgRateAbs:
		if math.IsNaN(baseline) {
			return 0, false, false
		}
		a := sum(vs) / float64(len(vs))
		var left float64
		switch c.Func {
		case FuncCAvg:
			left = a - baseline
		case FuncCAvgAbs:
			left = math.Abs(a - baseline)
		case FuncCAvgRate, FuncCAvgRateAbs:
			if baseline == 0 {
				// A percentage of nothing is undefined: not judged.
				return 0, false, false
			}
			left = (a - baseline) / math.Abs(baseline) * 100
			if c.Func == FuncCAvgRateAbs {
				left = math.Abs(left)
			}
		}
		return left, Compare(left, c.Op, c.Threshold), true
	}
	return 0, false, false
}

// diff is newest-old, or its percentage of old for the pdiff kinds; an old
// value of zero is skipped there, as open-falcon does.
func (c *Condition) diff(newest, old float64) (float64, bool) {
	if c.Func == FuncDiff || c.Func == FuncKDiff {
		return newest - old, true
	}
	if old == 0 {
		return 0, false
	}
	return (newest - old) / old * 100, true
}

func sum(vs []float64) float64 {
	var s float64
	for _, v := range vs {
		s += v
	}
	return s
}
