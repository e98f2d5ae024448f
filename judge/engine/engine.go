// Package engine is judge's evaluator: a short window of values per series,
// the strategies matching each series evaluated on every point, the alert
// state machine (pending for `for`, firing, held by keep_firing_for,
// repeats under max_step, resolved with value and duration), nodata per
// series and per host, and the alert registry that is persisted and sent.
//
// Memory per series: the series struct (112 bytes), its key (the labels
// encoded once, name and values with a separator byte each), a map slot,
// one rule entry per matching strategy (40 bytes), and a window of 2×W
// float64 values, W being the largest window among its strategies (the
// doubled ring keeps the window contiguous, newest first, without copying).
package engine

import (
	"context"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/judge/strategy"
)

// Config tunes an Engine.
type Config struct {
	// MaxSeries bounds the series kept; points of new series beyond it
	// are dropped and counted (0 = no bound).
	MaxSeries int
	// Shards splits the series map to let intake run in parallel.
	Shards int
	// History, when set, refills the windows of series seen for the
	// first time and supplies the c_avg baselines (transfer's query API).
	History History
	// NoRefill keeps History for c_avg only.
	NoRefill bool
	// HistoryQueue bounds the history requests waiting (excess dropped
	// and counted).
	HistoryQueue int
	// SeriesIdleExpiry forgets a series that has not reported for this
	// long, resolving its alerts (0 = keep series forever).
	SeriesIdleExpiry time.Duration
	// ResolvedRetention is how long a delivered resolved alert is still
	// sent (so a receiver that missed it learns it), then forgotten.
	ResolvedRetention time.Duration
}

// History reads past values of a series.
type History interface {
	// Window returns up to n values stored before the Unix time before,
	// newest first.
	Window(ctx context.Context, ls metric.Labels, before int64, step int32, n int) ([]float64, error)
	// Average returns the average over [from, to]; ok is false without data.
	Average(ctx context.Context, ls metric.Labels, from, to int64) (avg float64, ok bool, err error)
}

// historyRequest is a refill (strategy "") or a c_avg baseline to fetch.
type historyRequest struct {
	key      string
	strategy string
	before   int64
	step     int32
	n        int
	from, to int64
}

// baseline is a c_avg rule's comparison value.
type baseline struct {
	value    float64
	ok       bool
	forTime  int64 // the point time it was asked for
	inflight bool
}

// Stats are the engine's counters.
type Stats struct {
	Points        uint64 `json:"points"`
	Unwatched     uint64 `json:"unwatched"`
	OutOfOrder    uint64 `json:"out_of_order"`
	SeriesDropped uint64 `json:"series_dropped"`
	SeriesExpired uint64 `json:"series_expired"`
	HistoryDone   uint64 `json:"history_done"`
	HistoryFailed uint64 `json:"history_failed"`
	HistoryDrop   uint64 `json:"history_dropped"`
	Series        int64  `json:"series"`
	Alerts        int    `json:"alerts"`
	Firing        int    `json:"firing"`
}

// Engine evaluates strategies over the points it is given. It is safe for
// concurrent use.
type Engine struct {
	cfg    Config
	seed   maphash.Seed
	set    atomic.Pointer[ruleSet]
	shards []*shard

	mu     sync.Mutex // guards alerts, dirty, changed, removed and every *Alert
	alerts map[string]*Alert
	dirty  bool // anything changed, values included (for a full save)
	// changed and removed are the alerts whose state changed since the
	// last Changes, for the journal; value updates alone are not here.
	changed map[string]*Alert
	removed map[string]Alert
	// fresh are the alerts to send at once (fired, resolved, changed
	// annotations) since the last Fresh.
	fresh map[string]struct{}

	history chan historyRequest

	exprMu sync.Mutex // guards groups; taken after a shard's lock, before mu
	groups map[string]*exprGroup

	lastExpiry atomic.Int64 // Unix nanoseconds of the last expiry pass

	points, unwatched, outOfOrder, dropped, expired atomic.Uint64
	histDone, histFailed, histDropped               atomic.Uint64
	nseries                                         atomic.Int64
}

type ruleSet struct {
	set    *strategy.Set
	gen    uint64
	nodata bool // some strategy has nodata: sweeps have work
}

// shard holds series by the 64-bit hash of their key; the rare series
// whose hashes collide are chained.
type shard struct {
	mu     sync.Mutex
	series map[uint64]*series
}

// get returns the series with key, nil if none.
func (sh *shard) get(h uint64, key []byte) *series {
	for s := sh.series[h]; s != nil; s = s.next {
		if s.key == string(key) {
			return s
		}
	}
	return nil
}

// add inserts a series known to be absent.
func (sh *shard) add(h uint64, s *series) {
	s.next = sh.series[h]
	sh.series[h] = s
}

// remove takes a series out of its chain.
func (sh *shard) remove(h uint64, s *series) {
	p := sh.series[h]
	if p == s {
		if s.next == nil {
			delete(sh.series, h)
		} else {
			sh.series[h] = s.next
		}
		return
	}
	for ; p != nil; p = p.next {
		if p.next == s {
			p.next = s.next
			return
		}
	}
}

// each calls fn for every series.
func (sh *shard) each(fn func(*series)) {
	for _, s := range sh.series {
		for ; s != nil; s = s.next {
			fn(s)
		}
	}
}

type series struct {
	key      string  // metric.Labels.AppendKey: the labels themselves, not kept twice
	next     *series // another series with the same hash
	lastTime int64   // newest point's timestamp (seconds)
	lastSeen int64   // wall clock of the newest point's arrival (Unix nanoseconds)
	gen      uint64
	rules    []rule
	buf      []float64 // 2×cap: buf[head:head+n] is the window, newest first
	head, n  int
}

type rule struct {
	st     *strategy.Strategy
	alert  *Alert     // the condition's alert, nil when inactive
	nodata *Alert     // the series' nodata alert, nil when reporting
	flap   *flapState // only for strategies with flap damping, once they fire
	base   *baseline  // only for c_avg strategies
}

// flapState remembers when a series' alert recently changed state.
type flapState struct {
	changes  []time.Time // within the flap window, oldest first
	holding  bool        // held firing because it flaps
	lastHeld bool        // the condition's last outcome, while holding
}

func (f *flapState) record(at time.Time, window time.Duration) {
	keep := f.changes[:0]
	for _, c := range f.changes {
		if at.Sub(c) < window {
			keep = append(keep, c)
		}
	}
	f.changes = append(keep, at)
}

// New returns an engine with no strategies.
func New(cfg Config) *Engine {
	if cfg.Shards <= 0 {
		cfg.Shards = 64
	}
	if cfg.ResolvedRetention <= 0 {
		cfg.ResolvedRetention = 15 * time.Minute
	}
	e := &Engine{cfg: cfg, seed: maphash.MakeSeed(), alerts: map[string]*Alert{}, groups: map[string]*exprGroup{},
		changed: map[string]*Alert{}, removed: map[string]Alert{}, fresh: map[string]struct{}{}}
	e.shards = make([]*shard, cfg.Shards)
	for i := range e.shards {
		e.shards[i] = &shard{series: map[uint64]*series{}}
	}
	e.set.Store(&ruleSet{set: &strategy.Set{}})
	if cfg.History != nil {
		if cfg.HistoryQueue <= 0 {
			cfg.HistoryQueue = 100_000
		}
		e.history = make(chan historyRequest, cfg.HistoryQueue)
	}
	return e
}

// SetStrategies installs a strategy set. Series pick it up at their next
// point (or sweep); alerts of strategies no longer in the set are resolved.
func (e *Engine) SetStrategies(set *strategy.Set, now time.Time) []Transition {
	old := e.set.Load()
	rs := &ruleSet{set: set, gen: old.gen + 1}
	names := map[string]bool{}
	for _, st := range set.List {
		names[st.Name] = true
		rs.nodata = rs.nodata || st.Nodata > 0
	}
	e.set.Store(rs)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Transition
	for _, a := range e.alerts {
		if names[a.Strategy] {
			continue
		}
		switch a.State {
		case StatePending:
			e.removeLocked(a)
		case StateFiring:
			out = append(out, e.resolveLocked(a, a.Value, now))
		}
	}
	return out
}

// Strategies returns the set in force.
func (e *Engine) Strategies() *strategy.Set { return e.set.Load().set }

func (e *Engine) shardOf(key []byte) (*shard, uint64) {
	h := maphash.Bytes(e.seed, key)
	return e.shards[h%uint64(len(e.shards))], h
}

// Ingest evaluates points that arrived at now (wall clock, for nodata) and
// returns the transitions they caused. Timers (for, keep_firing_for,
// repeat_interval) run on the points' own timestamps.
func (e *Engine) Ingest(now time.Time, pts []metric.Point) []Transition {
	rs := e.set.Load()
	var out []Transition
	var key []byte
	nowNanos := now.UnixNano()
	e.points.Add(uint64(len(pts)))
	for i := range pts {
		p := &pts[i]
		sts := rs.set.ForMetric(p.Labels.Name())
		if len(sts) == 0 {
			e.unwatched.Add(1)
			continue
		}
		key = p.Labels.AppendKey(key[:0])
		sh, h := e.shardOf(key)
		sh.mu.Lock()
		s := sh.get(h, key)
		if s == nil {
			if e.cfg.MaxSeries > 0 && e.nseries.Load() >= int64(e.cfg.MaxSeries) {
				sh.mu.Unlock()
				e.dropped.Add(1)
				continue
			}
			s = &series{key: string(key)}
			sh.add(h, s)
			e.nseries.Add(1)
			if s.gen != rs.gen {
				e.rematch(s, rs)
			}
			if w := len(s.buf) / 2; w > 1 && e.history != nil && !e.cfg.NoRefill {
				e.ask(historyRequest{key: s.key, before: p.Time, step: p.Step, n: w - 1})
			}
		}
		if s.gen != rs.gen {
			e.rematch(s, rs)
		}
		if s.lastTime != 0 && p.Time <= s.lastTime {
			// Open-falcon's judge ignores a point not newer than the last;
			// nor does a replayed old point count as the series reporting.
			sh.mu.Unlock()
			e.outOfOrder.Add(1)
			continue
		}
		s.lastSeen = nowNanos
		s.push(p.Value)
		s.lastTime = p.Time
		at := time.Unix(p.Time, 0).UTC()
		for j := range s.rules {
			out = e.evaluate(s, &s.rules[j], p, at, out)
		}
		sh.mu.Unlock()
	}
	return out
}

// exprGroup holds the latest value of each metric of an expression for
// one endpoint and tag set, and the expression's alert there.
type exprGroup struct {
	rule   rule
	key    string // the series key without the metric name
	values []float64
	times  []int64
}

// evaluateExpr records the point as its metric's latest value in the
// expression's group and evaluates the expression once every metric has
// a value no older than three steps.
func (e *Engine) evaluateExpr(s *series, r *rule, p *metric.Point, at time.Time, out []Transition) []Transition {
	x := r.st.Expr
	gk := keyWithout(s.key, metric.NameLabel)
	e.exprMu.Lock()
	defer e.exprMu.Unlock()
	g := e.groups[r.st.Name+"\x00"+gk]
	if g == nil {
		g = &exprGroup{rule: rule{st: r.st}, key: gk, values: make([]float64, len(x.Metrics)), times: make([]int64, len(x.Metrics))}
		e.mu.Lock()
		if a := e.alerts[alertKey(r.st.Name, KindCondition, gk)]; a != nil && a.State != StateResolved {
			g.rule.alert = a
		}
		e.mu.Unlock()
		e.groups[r.st.Name+"\x00"+gk] = g
	}
	if g.rule.st != r.st || len(g.values) != len(x.Metrics) {
		// The strategy was reloaded: start its inputs afresh.
		g.rule.st = r.st
		g.values, g.times = make([]float64, len(x.Metrics)), make([]int64, len(x.Metrics))
	}
	i := x.Index(keyGet(s.key, metric.NameLabel))
	if i < 0 {
		return out
	}
	g.values[i], g.times[i] = p.Value, p.Time
	for _, t := range g.times {
		if t == 0 || p.Time-t > 3*int64(max(p.Step, 1)) {
			return out
		}
	}
	v, held, ok := x.Eval(g.values)
	if !ok {
		return out
	}
	return e.apply(&g.rule, gk, (&series{key: gk}).labels, held, v, at, out)
}

// keyWithout drops one label from a series key.
func keyWithout(key, name string) string {
	var b strings.Builder
	for key != "" {
		n, after, _ := strings.Cut(key, "\xff")
		v, rest, _ := strings.Cut(after, "\xff")
		if n != name {
			b.WriteString(n)
			b.WriteByte(0xff)
			b.WriteString(v)
			b.WriteByte(0xff)
		}
		key = rest
	}
	return b.String()
}

// ask queues a history request; a full queue drops it (counted).
func (e *Engine) ask(req historyRequest) bool {
	select {
	case e.history <- req:
		return true
	default:
		e.histDropped.Add(1)
		return false
	}
}

// baselineFor returns the c_avg rule's latest fetched baseline and asks
// for a fresh one once per step: evaluation never waits for transfer.
func (e *Engine) baselineFor(s *series, r *rule, p *metric.Point) float64 {
	if e.history == nil {
		return math.NaN()
	}
	if r.base == nil {
		r.base = &baseline{}
	}
	b := r.base
	if !b.inflight && (b.forTime == 0 || p.Time-b.forTime >= int64(p.Step)) {
		c := r.st.Cond
		to := p.Time - int64(c.Period/time.Second)
		from := to - int64(c.N-1)*int64(p.Step)
		if e.ask(historyRequest{key: s.key, strategy: r.st.Name, from: from, to: to, before: p.Time}) {
			b.inflight = true
		}
	}
	if !b.ok {
		return math.NaN()
	}
	return b.value
}

// RunHistory answers history requests until ctx ends (with workers
// goroutines); it returns at once when the engine has no History.
func (e *Engine) RunHistory(ctx context.Context, workers int) error {
	if e.history == nil {
		return nil
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case req := <-e.history:
					e.fetch(ctx, req)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func (e *Engine) fetch(ctx context.Context, req historyRequest) {
	ls := (&series{key: req.key}).labels()
	var vals []float64
	var avg float64
	var ok bool
	var err error
	if req.strategy == "" {
		vals, err = e.cfg.History.Window(ctx, ls, req.before, req.step, req.n)
	} else {
		avg, ok, err = e.cfg.History.Average(ctx, ls, req.from, req.to)
	}
	if err != nil {
		e.histFailed.Add(1)
	} else {
		e.histDone.Add(1)
	}
	key := []byte(req.key)
	sh, h := e.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.get(h, key)
	if s == nil {
		return
	}
	if req.strategy == "" {
		s.appendOlder(vals)
		return
	}
	for j := range s.rules {
		if r := &s.rules[j]; r.st.Name == req.strategy && r.base != nil {
			r.base.inflight = false
			if err == nil {
				r.base.value, r.base.ok, r.base.forTime = avg, ok, req.before
			}
		}
	}
}

// appendOlder puts values older than the window's behind it (newest
// first), as far as the window has room.
func (s *series) appendOlder(vals []float64) {
	c := len(s.buf) / 2
	for _, v := range vals {
		if s.n >= c {
			return
		}
		pos := (s.head + s.n) % c
		s.buf[pos], s.buf[pos+c] = v, v
		s.n++
	}
}

// labels decodes the series' labels from its key.
func (s *series) labels() metric.Labels {
	var ls metric.Labels
	rest := s.key
	for rest != "" {
		name, after, _ := strings.Cut(rest, "\xff")
		value, after2, _ := strings.Cut(after, "\xff")
		ls = append(ls, metric.Label{Name: name, Value: value})
		rest = after2
	}
	return ls
}

// keyGet returns one label's value from a series key without allocating.
func keyGet(key, name string) string {
	for key != "" {
		n, after, _ := strings.Cut(key, "\xff")
		v, rest, _ := strings.Cut(after, "\xff")
		if n == name {
			return v
		}
		key = rest
	}
	return ""
}

func (s *series) push(v float64) {
	c := len(s.buf) / 2
	if c == 0 {
		return
	}
	s.head--
	if s.head < 0 {
		s.head = c - 1
	}
	s.buf[s.head] = v
	s.buf[s.head+c] = v
	if s.n < c {
		s.n++
	}
}

func (s *series) window() []float64 { return s.buf[s.head : s.head+s.n] }

// rematch recomputes the strategies watching s after a new set came in,
// keeps its values, and re-attaches alerts from the registry.
func (e *Engine) rematch(s *series, rs *ruleSet) {
	s.gen = rs.gen
	s.rules = s.rules[:0]
	w := 0
	e.mu.Lock()
	ls := s.labels()
	for _, st := range rs.set.ForMetric(ls.Name()) {
		if !st.Matches(ls) {
			continue
		}
		r := rule{st: st}
		if a := e.alerts[alertKey(st.Name, KindCondition, s.key)]; a != nil && a.State != StateResolved {
			r.alert = a
		}
		if a := e.alerts[alertKey(st.Name, KindNodata, s.key)]; a != nil && a.State != StateResolved {
			r.nodata = a
		}
		s.rules = append(s.rules, r)
		w = max(w, st.Window())
	}
	e.mu.Unlock()
	if w != len(s.buf)/2 {
		old := s.window()
		n := min(len(old), w)
		buf := make([]float64, 2*w)
		copy(buf, old[:n])
		copy(buf[w:], old[:n])
		s.buf, s.head, s.n = buf, 0, n
	}
}

// evaluate runs one strategy on a series after a new point.
func (e *Engine) evaluate(s *series, r *rule, p *metric.Point, at time.Time, out []Transition) []Transition {
	newest := p.Value
	if r.nodata != nil {
		e.mu.Lock()
		if r.nodata.State == StateFiring {
			out = append(out, e.resolveLocked(r.nodata, newest, at))
		}
		e.mu.Unlock()
		r.nodata = nil
	}
	if r.st.Expr != nil {
		return e.evaluateExpr(s, r, p, at, out)
	}
	c := r.st.Cond
	if c == nil {
		return out
	}
	base := math.NaN()
	if c.NeedsBaseline() {
		base = e.baselineFor(s, r, p)
	}
	v, held, enough := c.Eval(s.window(), base)
	if !enough {
		return out
	}
	return e.apply(r, s.key, s.labels, held, v, at, out)
}

// apply moves a rule's alert through its states after an evaluation: key
// and labels identify what it watches (a series, or an expression's
// endpoint and tags).
func (e *Engine) apply(r *rule, key string, labels func() metric.Labels, held bool, v float64, at time.Time, out []Transition) []Transition {
	a := r.alert
	if !held && a == nil {
		return out // the common case: nothing to do, no lock
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if held {
		if a == nil || a.State == StateResolved {
			a = e.newAlertLocked(r.st, KindCondition, key, labels(), at)
			r.alert = a
		}
		a.Value, a.LastHeld = v, at
		e.dirty = true
		if f := r.flap; f != nil && f.holding && !f.lastHeld {
			f.lastHeld = true
			f.record(at, r.st.Flap.Window)
		}
		switch {
		case a.State == StatePending && at.Sub(a.ActiveAt) >= r.st.For:
			out = append(out, e.fireLocked(r.st, a, at))
			if r.st.Flap.Changes > 0 {
				if r.flap == nil {
					r.flap = &flapState{}
				}
				r.flap.record(at, r.st.Flap.Window)
			}
		case a.State == StateFiring && r.st.RepeatEvery > 0 && at.Sub(a.LastNotified) >= r.st.RepeatEvery &&
			(r.st.MaxStep == 0 || a.Notified < r.st.MaxStep):
			a.Notified++
			a.LastNotified = at
			a.Annotations = r.st.Render(v, a.Labels)
			e.announceLocked(a)
			out = append(out, a.transition("repeat", at))
		}
		return out
	}
	switch a.State {
	case StatePending:
		e.removeLocked(a)
		r.alert = nil
	case StateFiring:
		if r.st.KeepFiringFor > 0 && at.Sub(a.LastHeld) < r.st.KeepFiringFor {
			return out
		}
		if f := r.flap; f != nil {
			if f.holding {
				if f.lastHeld {
					f.lastHeld = false
					f.record(at, r.st.Flap.Window)
				}
				if at.Sub(f.changes[len(f.changes)-1]) < r.st.Flap.Window {
					a.Value = v
					return out // still flapping: held firing until steady for a window
				}
				f.holding = false
				f.changes = f.changes[:0]
			} else if f.record(at, r.st.Flap.Window); len(f.changes) > r.st.Flap.Changes {
				f.holding, f.lastHeld = true, false
				a.Value = v
				a.Annotations["flapping"] = "true"
				e.announceLocked(a)
				return out
			}
		}
		out = append(out, e.resolveLocked(a, v, at))
		r.alert = nil
	}
	return out
}

func (e *Engine) newAlertLocked(st *strategy.Strategy, kind Kind, seriesKey string, ls metric.Labels, at time.Time) *Alert {
	labels := make(map[string]string, len(ls)+len(st.Labels)+4)
	for k, v := range st.Labels {
		labels[k] = v
	}
	var seriesMap map[string]string
	if ls != nil {
		seriesMap = labelsMap(ls)
		for _, l := range ls {
			name := l.Name
			if name == metric.NameLabel {
				name = "metric"
			}
			labels[name] = l.Value
		}
	}
	if st.Expr != nil {
		labels["metric"] = st.Expr.String()
	}
	labels["alertname"] = st.Name
	labels["priority"] = string(rune('0' + st.Priority))
	labels["severity"] = st.Severity
	if kind != KindCondition {
		labels["nodata"] = map[Kind]string{KindNodata: "series", KindHostNodata: "host"}[kind]
	}
	a := &Alert{Key: alertKey(st.Name, kind, seriesKey), Strategy: st.Name, Kind: kind, State: StatePending,
		Series: seriesMap, Labels: labels, ActiveAt: at}
	e.alerts[a.Key] = a
	e.touchLocked(a)
	return a
}

func (e *Engine) fireLocked(st *strategy.Strategy, a *Alert, at time.Time) Transition {
	a.State = StateFiring
	a.StartsAt = at
	a.EndsAt = time.Time{}
	a.Notified = 1
	a.LastNotified = at
	a.Delivered = false
	a.Annotations = st.Render(a.Value, a.Labels)
	e.announceLocked(a)
	return a.transition("firing", at)
}

func (e *Engine) resolveLocked(a *Alert, value float64, at time.Time) Transition {
	a.State = StateResolved
	a.EndsAt = at
	a.ResolvedValue = value
	a.Delivered = false
	e.announceLocked(a)
	return a.transition("resolved", at)
}

// Sweep checks nodata at now: a series matched by a strategy with
// `nodata: D` that has not reported for D raises a nodata alert; when every
// series of a host under that strategy is silent, one host alert stands for
// them all. It also forgets resolved alerts that were delivered and are
// older than the retention.
func (e *Engine) Sweep(now time.Time) []Transition {
	rs := e.set.Load()
	out := e.expire(now)
	type hostKey struct{ strategy, endpoint string }
	type hostCount struct {
		st           *strategy.Strategy
		total, stale int
	}
	hosts := map[hostKey]*hostCount{}
	nowNanos := now.UnixNano()
	for _, sh := range e.shards {
		if !rs.nodata {
			break
		}
		sh.mu.Lock()
		sh.each(func(s *series) {
			if s.gen != rs.gen {
				e.rematch(s, rs)
			}
			for _, r := range s.rules {
				if r.st.Nodata <= 0 {
					continue
				}
				hk := hostKey{r.st.Name, keyGet(s.key, metric.EndpointLabel)}
				hc := hosts[hk]
				if hc == nil {
					hc = &hostCount{st: r.st}
					hosts[hk] = hc
				}
				hc.total++
				if time.Duration(nowNanos-s.lastSeen) >= r.st.Nodata {
					hc.stale++
				}
			}
		})
		sh.mu.Unlock()
	}
	for _, sh := range e.shards {
		if !rs.nodata {
			break
		}
		sh.mu.Lock()
		sh.each(func(s *series) {
			for j := range s.rules {
				r := &s.rules[j]
				if r.st.Nodata <= 0 || r.nodata != nil || time.Duration(nowNanos-s.lastSeen) < r.st.Nodata {
					continue
				}
				hc := hosts[hostKey{r.st.Name, keyGet(s.key, metric.EndpointLabel)}]
				if hc.stale == hc.total {
					continue // the host alert stands for it
				}
				e.mu.Lock()
				a := e.newAlertLocked(r.st, KindNodata, s.key, s.labels(), now)
				out = append(out, e.fireLocked(r.st, a, now))
				e.mu.Unlock()
				r.nodata = a
			}
		})
		sh.mu.Unlock()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for hk, hc := range hosts {
		if hc.stale != hc.total {
			continue
		}
		key := alertKey(hk.strategy, KindHostNodata, hk.endpoint)
		if a := e.alerts[key]; a != nil && a.State == StateFiring {
			continue
		}
		a := e.newAlertLocked(hc.st, KindHostNodata, hk.endpoint, metric.New(metric.Label{Name: metric.EndpointLabel, Value: hk.endpoint}), now)
		a.Series = nil
		out = append(out, e.fireLocked(hc.st, a, now))
	}
	for _, a := range e.alerts {
		switch {
		case a.Kind == KindHostNodata && a.State == StateFiring:
			hc := hosts[hostKey{a.Strategy, a.Labels[metric.EndpointLabel]}]
			if hc == nil || hc.stale < hc.total {
				out = append(out, e.resolveLocked(a, 0, now))
			}
		case a.State == StateResolved && a.Delivered && now.Sub(a.DeliveredAt) > e.cfg.ResolvedRetention:
			e.removeLocked(a)

		}
	}
	return out
}

func (e *Engine) touchLocked(a *Alert) {
	e.changed[a.Key] = a
	delete(e.removed, a.Key)
	e.dirty = true
}

// expire forgets series idle for longer than SeriesIdleExpiry, resolving
// their alerts; it runs at most every tenth of the expiry (and at least
// once a minute).
func (e *Engine) expire(now time.Time) []Transition {
	idle := e.cfg.SeriesIdleExpiry
	if idle <= 0 || now.UnixNano()-e.lastExpiry.Load() < int64(min(idle/10, time.Minute)) {
		return nil
	}
	e.lastExpiry.Store(now.UnixNano())
	var out []Transition
	for _, sh := range e.shards {
		sh.mu.Lock()
		var victims []*series
		sh.each(func(s *series) {
			if time.Duration(now.UnixNano()-s.lastSeen) > idle {
				victims = append(victims, s)
			}
		})
		for _, s := range victims {
			e.mu.Lock()
			for _, r := range s.rules {
				for _, a := range []*Alert{r.alert, r.nodata} {
					switch {
					case a == nil:
					case a.State == StateFiring:
						out = append(out, e.resolveLocked(a, a.Value, now))
					case a.State == StatePending:
						e.removeLocked(a)
					}
				}
			}
			e.mu.Unlock()
			sh.remove(maphash.String(e.seed, s.key), s)
			e.nseries.Add(-1)
			e.expired.Add(1)
		}
		sh.mu.Unlock()
	}
	return out
}

// announceLocked records a change receivers must hear of at once.
func (e *Engine) announceLocked(a *Alert) {
	e.touchLocked(a)
	e.fresh[a.Key] = struct{}{}
}

// Fresh returns the alerts that changed for receivers since the last
// call, as they are now (firing or resolved), and forgets them.
func (e *Engine) Fresh() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.fresh))
	for k := range e.fresh {
		delete(e.fresh, k)
		if a := e.alerts[k]; a != nil && (a.State == StateFiring || a.State == StateResolved) {
			out = append(out, copyAlert(a))
		}
	}
	sortAlerts(out)
	return out
}

func (e *Engine) removeLocked(a *Alert) {
	delete(e.alerts, a.Key)
	delete(e.changed, a.Key)
	e.removed[a.Key] = copyAlert(a)
	e.dirty = true
}

// Changes returns the alerts whose state changed (put) and those
// forgotten (removed) since the last call, for a journal.
func (e *Engine) Changes() (put, removed []Alert) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, a := range e.changed {
		put = append(put, copyAlert(a))
		delete(e.changed, k)
	}
	for k, a := range e.removed {
		removed = append(removed, a)
		delete(e.removed, k)
	}
	sortAlerts(put)
	sortAlerts(removed)
	return put, removed
}

// Identity is the alert's key rebuilt from what it is made of (its
// strategy, kind, and series or endpoint); "" if it has none.
func (a *Alert) Identity() string {
	switch {
	case a.Kind == KindHostNodata:
		return alertKey(a.Strategy, a.Kind, a.Labels[metric.EndpointLabel])
	case a.Series != nil:
		return alertKey(a.Strategy, a.Kind, labelsFromMap(a.Series).Key())
	}
	return ""
}

// Outgoing returns the alerts to send to Alertmanager now: every firing
// alert and the resolved ones still within their retention or not yet
// delivered. Pending alerts are judge's own business.
func (e *Engine) Outgoing() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.alerts))
	for _, a := range e.alerts {
		if a.State == StateFiring || a.State == StateResolved {
			out = append(out, copyAlert(a))
		}
	}
	sortAlerts(out)
	return out
}

// MarkDelivered records that the resolved alerts among sent reached every
// destination at now; they are forgotten ResolvedRetention later.
func (e *Engine) MarkDelivered(sent []Alert, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range sent {
		if a := e.alerts[s.Key]; a != nil && a.State == StateResolved && a.EndsAt.Equal(s.EndsAt) && !a.Delivered {
			a.Delivered = true
			a.DeliveredAt = now
			e.touchLocked(a)
		}
	}
}

// Snapshot returns every alert (pending, firing, resolved kept) and whether
// anything changed since the last snapshot.
func (e *Engine) Snapshot() ([]Alert, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.alerts))
	for _, a := range e.alerts {
		out = append(out, copyAlert(a))
	}
	sortAlerts(out)
	changed := e.dirty
	e.dirty = false
	return out, changed
}

// List returns every alert held, without touching the change flag.
func (e *Engine) List() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.alerts))
	for _, a := range e.alerts {
		out = append(out, copyAlert(a))
	}
	sortAlerts(out)
	return out
}

// MarkDirty makes the next Snapshot report a change (after a failed save).
func (e *Engine) MarkDirty() {
	e.mu.Lock()
	e.dirty = true
	e.mu.Unlock()
}

// Restore loads persisted alerts after a restart, before any point: series
// are rebuilt from their labels and count as reporting at now, so nodata
// waits its full duration again, and a firing alert that keeps holding is
// not announced a second time.
func (e *Engine) Restore(alerts []Alert, now time.Time) {
	rs := e.set.Load()
	e.mu.Lock()
	for i := range alerts {
		a := alerts[i]
		// Keys hold label separators that JSON does not carry intact:
		// rebuild them from what they are made of.
		if a.Key = a.Identity(); a.Key == "" {
			continue
		}
		e.alerts[a.Key] = &a
	}
	e.mu.Unlock()
	var key []byte
	for _, a := range alerts {
		if a.Series == nil || a.State == StateResolved || a.Series[metric.NameLabel] == "" {
			continue // expression groups re-attach when their metrics report
		}
		ls := labelsFromMap(a.Series)
		key = ls.AppendKey(key[:0])
		sh, h := e.shardOf(key)
		sh.mu.Lock()
		if sh.get(h, key) == nil {
			s := &series{key: string(key), lastSeen: now.UnixNano()}
			sh.add(h, s)
			e.nseries.Add(1)
			e.rematch(s, rs)
		}
		sh.mu.Unlock()
	}
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	st := Stats{Points: e.points.Load(), Unwatched: e.unwatched.Load(), OutOfOrder: e.outOfOrder.Load(),
		SeriesDropped: e.dropped.Load(), SeriesExpired: e.expired.Load(), Series: e.nseries.Load(),
		HistoryDone: e.histDone.Load(), HistoryFailed: e.histFailed.Load(), HistoryDrop: e.histDropped.Load()}
	e.mu.Lock()
	st.Alerts = len(e.alerts)
	for _, a := range e.alerts {
		if a.State == StateFiring {
			st.Firing++
		}
	}
	e.mu.Unlock()
	return st
}
