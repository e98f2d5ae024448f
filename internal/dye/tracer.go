package dye

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/opskit/opskit/internal/metric"
)

// DefaultCapacity is the number of trace records a Tracer keeps.
const DefaultCapacity = 4096

// Record is one hop of one dyed item, as GET /admin/trace answers it.
type Record struct {
	// Time is when the item entered the hop (the record is made when it
	// leaves, Duration later), so that sorting by Time gives the journey's
	// order across daemons.
	Time     time.Time `json:"time"`
	Dye      string    `json:"dye"`
	Daemon   string    `json:"daemon"`
	Instance string    `json:"instance"`
	Hop      string    `json:"hop"`
	Item     string    `json:"item"`
	// Duration is the time the item spent in this hop, in seconds.
	Duration float64 `json:"duration_seconds"`
}

// Options configure a Tracer.
type Options struct {
	// Daemon is the daemon kind (collector, transfer, ...), Instance the
	// daemon's own name (its listen address); both go into every record.
	Daemon, Instance string
	Log              *slog.Logger
	// Capacity bounds the ring buffer (default DefaultCapacity).
	Capacity int
	// LogPerSecond bounds the dye lines logged (default 100; beyond,
	// records are still kept, and counted as not logged).
	LogPerSecond float64
	// Now replaces the clock (tests).
	Now func() time.Time
}

// ruleSet is what the atomic pointer holds: the rules in force and the
// earliest end among them, so that expiry is one comparison.
type ruleSet struct {
	rules    []Rule
	earliest time.Time
}

// Tracer holds a daemon's dye rules and its recent trace records. A nil
// *Tracer matches nothing and records nothing.
type Tracer struct {
	opts     Options
	rules    atomic.Pointer[ruleSet] // nil when no rule is in force
	logRate  *rate.Limiter
	unlogged atomic.Uint64

	mu    sync.Mutex // rule changes and the ring
	ring  []Record
	next  int
	count int
}

// New returns a Tracer with no rules.
func New(opts Options) *Tracer {
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	if opts.LogPerSecond <= 0 {
		opts.LogPerSecond = 100
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Tracer{opts: opts, ring: make([]Record, opts.Capacity),
		logRate: rate.NewLimiter(rate.Limit(opts.LogPerSecond), int(max(opts.LogPerSecond, 1)))}
}

// Active reports whether any rule may be in force: one atomic load. Hot
// paths call it before looking at their items.
func (t *Tracer) Active() bool { return t != nil && t.rules.Load() != nil }

// current returns the rules in force at now, dropping expired ones.
func (t *Tracer) current(now time.Time) []Rule {
	rs := t.rules.Load()
	if rs == nil {
		return nil
	}
	if now.Before(rs.earliest) {
		return rs.rules
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rs = t.rules.Load()
	if rs == nil {
		return nil
	}
	t.storeLocked(rs.rules, now)
	if rs = t.rules.Load(); rs == nil {
		return nil
	}
	return rs.rules
}

// storeLocked publishes the unexpired rules of list (nil when none).
func (t *Tracer) storeLocked(list []Rule, now time.Time) {
	var keep []Rule
	var earliest time.Time
	for _, r := range list {
		if !now.Before(r.Until) {
			t.opts.Log.Info("dye rule expired", "dye", r.ID)
			continue
		}
		keep = append(keep, r)
		if earliest.IsZero() || r.Until.Before(earliest) {
			earliest = r.Until
		}
	}
	if len(keep) == 0 {
		t.rules.Store(nil)
		return
	}
	t.rules.Store(&ruleSet{rules: keep, earliest: earliest})
}

// Set adds rule r, or replaces the rule of the same id.
func (t *Tracer) Set(r Rule) error {
	if err := r.Check(); err != nil {
		return err
	}
	now := t.opts.Now()
	if !now.Before(r.Until) {
		return fmt.Errorf("%w %q: until %s has passed", ErrBadRule, r.ID, r.Until.Format(time.RFC3339))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var list []Rule
	if rs := t.rules.Load(); rs != nil {
		list = slices.Clone(rs.rules)
	}
	i := slices.IndexFunc(list, func(x Rule) bool { return x.ID == r.ID })
	if i >= 0 {
		list[i] = r
	} else {
		if len(list) >= MaxRules {
			return fmt.Errorf("%w: already %d rules in force", ErrBadRule, MaxRules)
		}
		list = append(list, r)
	}
	t.storeLocked(list, now)
	t.opts.Log.Info("dye rule set", "dye", r.ID, "match", r.Match.String(), "until", r.Until.Format(time.RFC3339))
	return nil
}

// Delete removes the rule id; it reports whether there was one.
func (t *Tracer) Delete(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	rs := t.rules.Load()
	if rs == nil {
		return false
	}
	i := slices.IndexFunc(rs.rules, func(x Rule) bool { return x.ID == id })
	if i < 0 {
		return false
	}
	t.storeLocked(slices.Delete(slices.Clone(rs.rules), i, i+1), t.opts.Now())
	t.opts.Log.Info("dye rule removed", "dye", id)
	return true
}

// Rules lists the rules in force.
func (t *Tracer) Rules() []Rule {
	if t == nil {
		return nil
	}
	return slices.Clone(t.current(t.opts.Now()))
}

// MatchLabels returns the id of the first rule a point's labels match, or "".
func (t *Tracer) MatchLabels(ls metric.Labels) string {
	if !t.Active() {
		return ""
	}
	return matchRules(t.current(t.opts.Now()), ls)
}

// MatchMap returns the id of the first rule an alert's series (its labels
// by name, the metric name under __name__) matches, or "".
func (t *Tracer) MatchMap(series map[string]string) string {
	if !t.Active() {
		return ""
	}
	return matchRules(t.current(t.opts.Now()), Map(series))
}

func matchRules[L labelGetter](rules []Rule, ls L) string {
	for i := range rules {
		if matchesLabels(&rules[i].Match, ls) {
			return rules[i].ID
		}
	}
	return ""
}

// MatchLine returns the id of the first rule a log line matches, or "".
// host is the collector's endpoint, path the file's.
func (t *Tracer) MatchLine(host, path string, line []byte) string {
	if !t.Active() {
		return ""
	}
	rules := t.current(t.opts.Now())
	for i := range rules {
		if rules[i].Match.matchesLine(host, path, line) {
			return rules[i].ID
		}
	}
	return ""
}

// Points records hop for every point of pts that a rule matches. took,
// when not nil, gives a point's time in the hop. With no rule in force it
// costs one atomic load.
func (t *Tracer) Points(hop string, pts []metric.Point, took func(p *metric.Point) time.Duration) {
	if !t.Active() {
		return
	}
	rules := t.current(t.opts.Now())
	for i := range pts {
		p := &pts[i]
		if id := matchRules(rules, p.Labels); id != "" {
			var d time.Duration
			if took != nil {
				d = took(p)
			}
			t.Hop(id, hop, PointSummary(p), d)
		}
	}
}

// PointSummary describes a point in a trace record.
func PointSummary(p *metric.Point) string {
	return p.Labels.String() + " " + strconv.FormatFloat(p.Value, 'g', -1, 64) + " @" + strconv.FormatInt(p.Time, 10)
}

// Hop records that the item dyed id has just passed hop, having spent took
// there, and logs it at info. Use it for items that carry their dye themselves (an
// alert's annotation, a request's header): it needs no rule.
func (t *Tracer) Hop(id, hop, item string, took time.Duration) {
	if t == nil || id == "" {
		return
	}
	rec := Record{Time: t.opts.Now().Add(-took), Dye: id, Daemon: t.opts.Daemon, Instance: t.opts.Instance, Hop: hop, Item: item, Duration: took.Seconds()}
	t.mu.Lock()
	t.ring[t.next] = rec
	t.next = (t.next + 1) % len(t.ring)
	t.count = min(t.count+1, len(t.ring))
	t.mu.Unlock()
	if !t.logRate.Allow() {
		t.unlogged.Add(1)
		return
	}
	t.opts.Log.LogAttrs(context.Background(), slog.LevelInfo, "dyed item", slog.String("dye", id), slog.String("hop", hop),
		slog.String("item", item), slog.Duration("took", took))
}

// Unlogged counts the records kept but not logged (over the log rate).
func (t *Tracer) Unlogged() uint64 {
	if t == nil {
		return 0
	}
	return t.unlogged.Load()
}

// Trace returns the kept records of dye id ("" for all), in the order the
// items entered their hops.
func (t *Tracer) Trace(id string) []Record {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Record, 0, min(t.count, 64))
	start := (t.next - t.count + len(t.ring)) % len(t.ring)
	for k := range t.count {
		r := t.ring[(start+k)%len(t.ring)]
		if id == "" || r.Dye == id {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// NewID makes a rule id: "dye-" and 8 random hex digits.
func NewID() string {
	var b [4]byte
	rand.Read(b[:])
	return "dye-" + hex.EncodeToString(b[:])
}
