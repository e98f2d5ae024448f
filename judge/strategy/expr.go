package strategy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Expr is an expression across metrics of one endpoint (and the same
// tags), e.g. `df.bytes.used / df.bytes.total * 100 > 90`: arithmetic
// (+ - * / and parentheses) over the latest value of each metric, compared
// with a threshold. Metric names are letters, digits, '_' and '.'.
type Expr struct {
	// Metrics are the metric names used, in order of first appearance.
	Metrics   []string
	Op        Op
	Threshold float64
	root      exprNode
	text      string
}

type exprNode struct {
	op          byte // 0 number, 'm' metric, + - * / binary, 'n' negation
	num         float64
	metric      int
	left, right *exprNode
}

// String is the expression as written (spaces normalised).
func (x *Expr) String() string { return x.text }

// Index returns the position of a metric in Metrics, -1 if absent.
func (x *Expr) Index(name string) int {
	for i, m := range x.Metrics {
		if m == name {
			return i
		}
	}
	return -1
}

// Eval computes the left side from values (one per Metrics entry) and
// compares it; ok is false when a division by zero leaves it undefined.
func (x *Expr) Eval(values []float64) (value float64, held, ok bool) {
	v := x.root.eval(values)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, false
	}
	return v, Compare(v, x.Op, x.Threshold), true
}

func (n *exprNode) eval(vals []float64) float64 {
	switch n.op {
	case 0:
		return n.num
	case 'm':
		return vals[n.metric]
	case 'n':
		return -n.left.eval(vals)
	}
	l, r := n.left.eval(vals), n.right.eval(vals)
	switch n.op {
	case '+':
		return l + r
	case '-':
		return l - r
	case '*':
		return l * r
	}
	if r == 0 {
		return math.NaN()
	}
	return l / r
}

// ParseExpr parses `ARITHMETIC OP NUMBER`.
func ParseExpr(s string) (*Expr, error) {
	opAt, op, opLen := -1, Op(0), 0
	for i := 0; i < len(s); i++ {
		if o, n := parseOp(s[i:]); o != 0 {
			opAt, op, opLen = i, o, n
			break
		}
	}
	if opAt < 0 {
		return nil, fmt.Errorf("expression %q: want ARITHMETIC OP VALUE, e.g. disk.used / disk.total > 0.9", s)
	}
	thrText := strings.TrimSpace(s[opAt+opLen:])
	thr, err := strconv.ParseFloat(thrText, 64)
	if err != nil || math.IsNaN(thr) || math.IsInf(thr, 0) {
		return nil, fmt.Errorf("expression %q: threshold %q is not a finite number", s, thrText)
	}
	p := &exprParser{text: s[:opAt]}
	x := &Expr{Op: op, Threshold: thr}
	p.x = x
	root, err := p.sum(0)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", s, err)
	}
	p.space()
	if p.i < len(p.text) {
		return nil, fmt.Errorf("expression %q: unexpected %q at byte %d", s, p.text[p.i:], p.i)
	}
	if len(x.Metrics) == 0 {
		return nil, fmt.Errorf("expression %q: uses no metric", s)
	}
	x.root = *root
	x.text = strings.Join(strings.Fields(s[:opAt]), " ") + " " + op.String() + " " + strconv.FormatFloat(thr, 'g', -1, 64)
	return x, nil
}

type exprParser struct {
	text string
	i    int
	x    *Expr
}

// maxDepth bounds nesting so a hostile file cannot exhaust the stack.
const maxDepth = 64

func (p *exprParser) space() {
	for p.i < len(p.text) && (p.text[p.i] == ' ' || p.text[p.i] == '\t') {
		p.i++
	}
}

func (p *exprParser) sum(depth int) (*exprNode, error) {
	left, err := p.product(depth)
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i >= len(p.text) || (p.text[p.i] != '+' && p.text[p.i] != '-') {
			return left, nil
		}
		op := p.text[p.i]
		p.i++
		right, err := p.product(depth)
		if err != nil {
			return nil, err
		}
		left = &exprNode{op: op, left: left, right: right}
	}
}

func (p *exprParser) product(depth int) (*exprNode, error) {
	left, err := p.factor(depth)
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i >= len(p.text) || (p.text[p.i] != '*' && p.text[p.i] != '/') {
			return left, nil
		}
		op := p.text[p.i]
		p.i++
		right, err := p.factor(depth)
		if err != nil {
			return nil, err
		}
		left = &exprNode{op: op, left: left, right: right}
	}
}

func (p *exprParser) factor(depth int) (*exprNode, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	p.space()
	if p.i >= len(p.text) {
		return nil, fmt.Errorf("expression ends where a value was expected")
	}
	c := p.text[p.i]
	switch {
	case c == '(':
		p.i++
		n, err := p.sum(depth + 1)
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.text) || p.text[p.i] != ')' {
			return nil, fmt.Errorf("missing ')' at byte %d", p.i)
		}
		p.i++
		return n, nil
	case c == '-':
		p.i++
		n, err := p.factor(depth + 1)
		if err != nil {
			return nil, err
		}
		return &exprNode{op: 'n', left: n}, nil
	case c >= '0' && c <= '9':
		start := p.i
		for p.i < len(p.text) && (p.text[p.i] >= '0' && p.text[p.i] <= '9' || p.text[p.i] == '.') {
			p.i++
		}
		v, err := strconv.ParseFloat(p.text[start:p.i], 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q", p.text[start:p.i])
		}
		return &exprNode{num: v}, nil
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		start := p.i
		for p.i < len(p.text) {
			d := p.text[p.i]
			if d == '_' || d == '.' || d >= 'a' && d <= 'z' || d >= 'A' && d <= 'Z' || d >= '0' && d <= '9' {
				p.i++
				continue
			}
			break
		}
		name := p.text[start:p.i]
		idx := p.x.Index(name)
		if idx < 0 {
			idx = len(p.x.Metrics)
			p.x.Metrics = append(p.x.Metrics, name)
		}
		return &exprNode{op: 'm', metric: idx}, nil
	}
	return nil, fmt.Errorf("unexpected %q at byte %d", c, p.i)
}
