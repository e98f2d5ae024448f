package statsd

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// Config tunes an Aggregator. Zero fields take the defaults.
type Config struct {
	// Percentiles of timers to report, e.g. 50, 90, 95, 99 (the default).
	Percentiles []float64
	// MaxTimerSamples bounds the values a timer keeps per interval for its
	// percentiles (count, sum, min and max stay exact); default 10000.
	MaxTimerSamples int
	// MaxSetMembers bounds the members a set counts per interval; default
	// 100000.
	MaxSetMembers int
	// MaxSeries bounds the series held; lines of new series beyond it are
	// refused. Default 100000.
	MaxSeries int
	// ExpireAfter is how many intervals a series keeps being reported
	// without new samples (counters as 0, gauges with their last value);
	// default 5.
	ExpireAfter int
}

func (c Config) withDefaults() Config {
	if len(c.Percentiles) == 0 {
		c.Percentiles = []float64{50, 90, 95, 99}
	}
	if c.MaxTimerSamples <= 0 {
		c.MaxTimerSamples = 10000
	}
	if c.MaxSetMembers <= 0 {
		c.MaxSetMembers = 100000
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = 100000
	}
	if c.ExpireAfter <= 0 {
		c.ExpireAfter = 5
	}
	return c
}

// Aggregator folds StatsD samples into per-interval points. Samples enter
// through shards (one per reading goroutine, so readers do not contend);
// Flush merges the shards. A Flush yields, for a series NAME with tags:
//
//	counter: NAME.count (sum, corrected for sample rates) and NAME.rate (per second)
//	gauge:   NAME (the last value; +N/-N change it)
//	timer:   NAME.count, NAME.rate, NAME.sum, NAME.mean, NAME.min, NAME.max, NAME.pXX
//	set:     NAME.count (distinct members)
//
// DogStatsD tags become labels; a tag "endpoint" names the endpoint.
type Aggregator struct {
	cfg    Config
	limits intake.Limits
	shards []*Shard

	mu      sync.Mutex // held by Flush
	series  map[string]*series
	flushes int
}

// series is what outlives an interval: identity, gauge value, last use.
type series struct {
	typ      Type
	name     string
	tags     []metric.Label
	gauge    float64
	lastSeen int // flush number
}

// Shard takes samples from one goroutine at a time.
type Shard struct {
	agg       *Aggregator
	mu        sync.Mutex
	entries   map[string]*entry
	scratch   []byte
	sample    Sample
	datagrams uint64
	received  uint64
	rejected  map[string]uint64 // by reason
}

// entry is one series' samples within an interval, in one shard.
type entry struct {
	typ  Type
	name string
	tags []metric.Label

	count float64 // counter sum, or timer count, rate-corrected
	// gauge
	gaugeSet   bool
	gauge      float64
	gaugeDelta float64
	gaugeAt    int64 // arrival of the last absolute value, for merging shards
	// timer
	n        int
	sum      float64
	min, max float64
	samples  []float64
	// set
	members map[string]struct{}
}

// New returns an aggregator with shards shards.
func New(cfg Config, shards int) *Aggregator {
	a := &Aggregator{cfg: cfg.withDefaults(), limits: intake.DefaultLimits(), series: map[string]*series{}}
	for range max(shards, 1) {
		a.shards = append(a.shards, &Shard{agg: a, entries: map[string]*entry{}, rejected: map[string]uint64{}})
	}
	return a
}

// Shard returns shard i (modulo the number of shards).
func (a *Aggregator) Shard(i int) *Shard { return a.shards[i%len(a.shards)] }

// AddDatagram adds every line of a datagram. now is the arrival time in
// nanoseconds, used only to order gauge values across shards.
func (s *Shard) AddDatagram(datagram []byte, now int64) {
	s.mu.Lock()
	s.datagrams++
	Lines(datagram, func(line []byte) { s.addLocked(line, now) })
	s.mu.Unlock()
}

// AddLine adds one line and returns its parse error, if any.
func (s *Shard) AddLine(line []byte, now int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(line, now)
}

func (s *Shard) addLocked(line []byte, now int64) error {
	smp := &s.sample
	if err := ParseLine(line, smp); err != nil {
		s.rejected[err.Error()]++
		return err
	}
	// The key is "type|name|tags": the raw bytes, so a known series costs
	// one map lookup and no allocation.
	k := append(s.scratch[:0], byte(smp.Type), '|')
	k = append(k, smp.Name...)
	k = append(k, '|')
	k = append(k, smp.Tags...)
	s.scratch = k
	e := s.entries[string(k)]
	if e == nil {
		var err error
		if e, err = s.newEntry(smp); err != nil {
			s.rejected[err.Error()]++
			return err
		}
		s.entries[string(k)] = e
	}
	s.received++
	switch smp.Type {
	case Counter:
		e.count += smp.Value / smp.Rate
	case Gauge:
		if smp.Delta {
			e.gaugeDelta += smp.Value
		} else {
			e.gaugeSet, e.gauge, e.gaugeDelta, e.gaugeAt = true, smp.Value, 0, now
		}
	case Timer:
		e.count += 1 / smp.Rate
		if e.n == 0 || smp.Value < e.min {
			e.min = smp.Value
		}
		if e.n == 0 || smp.Value > e.max {
			e.max = smp.Value
		}
		e.n++
		e.sum += smp.Value
		if len(e.samples) < s.agg.cfg.MaxTimerSamples {
			e.samples = append(e.samples, smp.Value)
		}
	case Set:
		if e.members == nil {
			e.members = map[string]struct{}{}
		}
		if _, ok := e.members[string(smp.SetMember)]; !ok && len(e.members) < s.agg.cfg.MaxSetMembers {
			e.members[string(smp.SetMember)] = struct{}{}
		}
	}
	return nil
}

// errTooManySeries refuses a line of a new series beyond MaxSeries.
var errTooManySeries = errorString("too_many_series")

type errorString string

func (e errorString) Error() string { return string(e) }

func (s *Shard) newEntry(smp *Sample) (*entry, error) {
	if len(s.entries) >= s.agg.cfg.MaxSeries {
		return nil, errTooManySeries
	}
	name := sanitizeName(smp.Name)
	if name == "" {
		return nil, ErrBadName
	}
	tags, err := parseTags(smp.Tags)
	if err != nil {
		return nil, err
	}
	// Check the series as transfer will, with room for the longest suffix.
	pairs := append([]metric.Label{{Name: metric.NameLabel, Value: name + ".p99_999"}}, tags...)
	if rej := s.agg.limits.ValidateLabels(metric.New(pairs...)); rej != nil {
		return nil, errorString(rej.Reason)
	}
	return &entry{typ: smp.Type, name: name, tags: tags}, nil
}

// sanitizeName applies StatsD's key rules: runs of spaces become "_", "/"
// becomes "-", and anything but letters, digits, "_", "-", "." is removed.
func sanitizeName(b []byte) string {
	var sb strings.Builder
	space := false
	for _, c := range b {
		switch {
		case c == ' ' || c == '\t':
			if !space {
				sb.WriteByte('_')
			}
			space = true
			continue
		case c == '/':
			sb.WriteByte('-')
		case c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'):
			sb.WriteByte(c)
		}
		space = false
	}
	return strings.Trim(sb.String(), ".")
}

// parseTags turns DogStatsD "k:v,k2:v2,flag" into labels ("flag" becomes
// flag="true"). Tag names keep letters, digits and "_"; values lose the
// characters open-falcon's tag syntax reserves ("," and "=").
func parseTags(raw []byte) ([]metric.Label, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var out []metric.Label
	for _, t := range strings.Split(string(raw), ",") {
		if t == "" {
			continue
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			v = "true"
		}
		k = strings.Map(func(r rune) rune {
			if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
				return r
			}
			return '_'
		}, k)
		v = strings.Map(func(r rune) rune {
			if r == ',' || r == '=' || r < 0x20 || r == 0x7f || r == 0xfffd {
				return '_'
			}
			return r
		}, strings.TrimSpace(v))
		if k == "" || strings.Trim(k, "_") == "" || k == metric.NameLabel || v == "" {
			return nil, ErrBadTags
		}
		out = append(out, metric.Label{Name: k, Value: v})
		if len(out) > 32 {
			return nil, ErrBadTags
		}
	}
	return out, nil
}

// Counts are a flush's intake figures.
type Counts struct {
	Datagrams uint64
	Received  uint64            // lines
	Rejected  map[string]uint64 // by reason
}

// Flush merges the shards' samples of the interval that ends now into
// points stamped ts (Unix seconds) and returns them with the lines counted
// since the previous Flush. interval is the length of the interval, for
// rates.
func (a *Aggregator) Flush(ts int64, interval time.Duration) ([]metric.Point, Counts) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushes++
	counts := Counts{Rejected: map[string]uint64{}}
	merged := map[string]*entry{}
	for _, s := range a.shards {
		s.mu.Lock()
		entries := s.entries
		s.entries = make(map[string]*entry, len(entries))
		counts.Received += s.received
		counts.Datagrams += s.datagrams
		s.received, s.datagrams = 0, 0
		for r, n := range s.rejected {
			counts.Rejected[r] += n
		}
		clear(s.rejected)
		s.mu.Unlock()
		for k, e := range entries {
			if m := merged[k]; m != nil {
				m.merge(e)
			} else {
				merged[k] = e
			}
		}
	}
	secs := interval.Seconds()
	if secs <= 0 {
		secs = 1
	}
	var pts []metric.Point
	emit := func(sr *series, suffix string, v float64) {
		pairs := make([]metric.Label, 0, len(sr.tags)+1)
		pairs = append(pairs, metric.Label{Name: metric.NameLabel, Value: sr.name + suffix})
		pairs = append(pairs, sr.tags...)
		pts = append(pts, metric.Point{Labels: metric.New(pairs...), Time: ts, Value: v, Type: metric.Gauge})
	}
	for k, e := range merged {
		sr := a.series[k]
		if sr == nil {
			sr = &series{typ: e.typ, name: e.name, tags: e.tags}
			a.series[k] = sr
		}
		sr.lastSeen = a.flushes
		switch e.typ {
		case Counter:
			emit(sr, ".count", e.count)
			emit(sr, ".rate", e.count/secs)
		case Gauge:
			if e.gaugeSet {
				sr.gauge = e.gauge
			}
			sr.gauge += e.gaugeDelta
			emit(sr, "", sr.gauge)
		case Timer:
			emit(sr, ".count", e.count)
			emit(sr, ".rate", e.count/secs)
			emit(sr, ".sum", e.sum)
			emit(sr, ".mean", e.sum/float64(e.n))
			emit(sr, ".min", e.min)
			emit(sr, ".max", e.max)
			slices.Sort(e.samples)
			for _, p := range a.cfg.Percentiles {
				emit(sr, ".p"+percentileName(p), percentile(e.samples, p))
			}
		case Set:
			emit(sr, ".count", float64(len(e.members)))
		}
	}
	// Series without samples this interval: report their idle value until
	// they expire.
	for k, sr := range a.series {
		if _, fresh := merged[k]; fresh {
			continue
		}
		if a.flushes-sr.lastSeen >= a.cfg.ExpireAfter {
			delete(a.series, k)
			continue
		}
		switch sr.typ {
		case Counter:
			emit(sr, ".count", 0)
			emit(sr, ".rate", 0)
		case Gauge:
			emit(sr, "", sr.gauge)
		case Timer:
			emit(sr, ".count", 0)
			emit(sr, ".rate", 0)
		case Set:
			emit(sr, ".count", 0)
		}
	}
	return pts, counts
}

// merge folds another shard's entry of the same series into e.
func (e *entry) merge(o *entry) {
	e.count += o.count
	switch e.typ {
	case Gauge:
		// Different shards hear different senders; the latest absolute value
		// wins and every shard's later changes apply on top.
		if o.gaugeSet && (!e.gaugeSet || o.gaugeAt > e.gaugeAt) {
			e.gaugeSet, e.gauge, e.gaugeAt = true, o.gauge, o.gaugeAt
		}
		e.gaugeDelta += o.gaugeDelta
	case Timer:
		if o.n > 0 {
			if e.n == 0 || o.min < e.min {
				e.min = o.min
			}
			if e.n == 0 || o.max > e.max {
				e.max = o.max
			}
		}
		e.n += o.n
		e.sum += o.sum
		e.samples = append(e.samples, o.samples...)
	case Set:
		if e.members == nil {
			e.members = map[string]struct{}{}
		}
		for m := range o.members {
			e.members[m] = struct{}{}
		}
	}
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// percentileName writes 99 as "99" and 99.9 as "99_9".
func percentileName(p float64) string {
	return strings.ReplaceAll(strconv.FormatFloat(p, 'f', -1, 64), ".", "_")
}
