// Package sdk assigns units (users, visits, devices) to experiment arms
// in process, from an experiment config, with no network. Assignments are
// GrowthBook's: the same hashes, bucket ranges, namespaces, filters and
// targeting conditions, so a unit gets the same arm here as in GrowthBook's
// SDKs given the same experiment. Evaluation does not allocate.
//
//	a, err := sdk.LoadFile("experiments.yaml")
//	r := a.Evaluate("checkout-button", sdk.Unit{ID: "user-42"}, time.Now())
//	if r.InExperiment { show(r.Variant) }
package sdk

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Unit is what is assigned: its id (the "id" hash attribute) and any
// attributes that targeting conditions and other hash attributes read.
type Unit struct {
	ID         string
	Attributes map[string]any
}

// Reason says why a result is what it is.
type Reason uint8

// Reasons, in the order evaluation checks them.
const (
	ReasonUnknownExperiment Reason = iota
	ReasonSingleVariant
	ReasonInactive
	ReasonOutsideWindow
	ReasonNoHashValue
	ReasonWhitelisted
	ReasonOtherDomain
	ReasonOtherLayerSlot
	ReasonFiltered
	ReasonNamespace
	ReasonTargeting
	ReasonCoverage
	ReasonForced
	ReasonAssigned
)

var reasonNames = [...]string{"unknown_experiment", "single_variant", "inactive", "outside_window", "no_hash_value",
	"whitelisted", "other_domain", "other_layer_slot", "filtered", "namespace", "targeting", "coverage", "forced", "assigned"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// MarshalText writes the reason's name.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Result is one experiment's answer for one unit. A unit outside the
// experiment gets variant 0 (the control) with InExperiment false, as in
// GrowthBook, and must not be logged as exposed.
type Result struct {
	Experiment   string  `json:"experiment"`
	Layer        string  `json:"layer,omitempty"`
	Variant      string  `json:"variant"`
	Index        int     `json:"index"`
	InExperiment bool    `json:"in_experiment"`
	HashUsed     bool    `json:"hash_used"`
	Forced       bool    `json:"forced,omitempty"` // by the whitelist or the experiment's force
	Bucket       float64 `json:"bucket"`           // the unit's hash in [0, 1) when hashed
	HashValue    string  `json:"-"`
	Reason       Reason  `json:"reason"`
}

// Assigner evaluates a compiled config. It is immutable and safe for
// concurrent use; build a new one to change the config.
type Assigner struct {
	experiments []experiment
	byKey       map[string]int
	groups      SavedGroups
}

type experiment struct {
	key, layer    string
	seed          string
	hashVersion   int
	hashAttribute string
	variants      []string
	ranges        []Range
	condition     Condition
	inactive      bool
	start, stop   time.Time
	whitelist     map[string]int
	force         int // -2: none
	namespace     *Namespace
	filters       []filter

	bucket     seededHasher
	domain     *Range // the layer's domain range, if any
	domainHash seededHasher
	slot       *Range // range in a non-launch layer
	layerHash  seededHasher

	config ExperimentConfig
}

type filter struct {
	seed, attribute string
	hashVersion     int
	ranges          []Range
}

const noForce = -2

// New compiles and checks a config: unknown layers or domains, overlapping
// slots in a layer or overlapping domains, bad weights and unknown
// whitelist variants are errors.
func New(c *Config) (*Assigner, error) {
	if c == nil {
		c = &Config{}
	}
	defVersion := c.HashVersion
	if defVersion == 0 {
		defVersion = DefaultHashVersion
	}
	domainSalt := c.DomainSalt
	if domainSalt == "" {
		domainSalt = "domains"
	}
	domains := map[string]Range{}
	for i, d := range c.Domains {
		if d.Name == "" {
			return nil, fmt.Errorf("domain %d has no name", i+1)
		}
		if err := checkRange(d.Range); err != nil {
			return nil, fmt.Errorf("domain %s: %w", d.Name, err)
		}
		for name, other := range domains {
			if overlap(d.Range, other) {
				return nil, fmt.Errorf("domains %s and %s overlap", name, d.Name)
			}
		}
		if _, dup := domains[d.Name]; dup {
			return nil, fmt.Errorf("domain %s defined twice", d.Name)
		}
		domains[d.Name] = d.Range
	}
	layers := map[string]LayerConfig{}
	for i, l := range c.Layers {
		if l.Name == "" {
			return nil, fmt.Errorf("layer %d has no name", i+1)
		}
		if _, dup := layers[l.Name]; dup {
			return nil, fmt.Errorf("layer %s defined twice", l.Name)
		}
		if l.Domain != "" {
			if _, ok := domains[l.Domain]; !ok {
				return nil, fmt.Errorf("layer %s: unknown domain %q", l.Name, l.Domain)
			}
		}
		if l.Salt == "" {
			l.Salt = l.Name
		}
		if l.HashVersion == 0 {
			l.HashVersion = defVersion
		}
		if err := checkVersion(l.HashVersion); err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		layers[l.Name] = l
	}
	a := &Assigner{byKey: map[string]int{}, groups: SavedGroups(c.SavedGroups)}
	for k, list := range a.groups {
		a.groups[k] = normalize(list).([]any)
	}
	type slotOwner struct {
		key, attribute string
		r              Range
	}
	slots := map[string][]slotOwner{}
	for i := range c.Experiments {
		ec := c.Experiments[i]
		e, err := compileExperiment(ec, defVersion)
		if err != nil {
			return nil, err
		}
		if _, dup := a.byKey[e.key]; dup {
			return nil, fmt.Errorf("experiment %s defined twice", e.key)
		}
		if ec.Layer != "" {
			l, ok := layers[ec.Layer]
			if !ok {
				return nil, fmt.Errorf("experiment %s: unknown layer %q", e.key, ec.Layer)
			}
			if l.Domain != "" {
				r := domains[l.Domain]
				e.domain, e.domainHash = &r, newSeededHasher("__", domainSalt, defVersion)
			}
			if !l.Launch {
				r := Range{0, 1}
				if ec.LayerRange != nil {
					r = *ec.LayerRange
				}
				if err := checkRange(r); err != nil {
					return nil, fmt.Errorf("experiment %s: range: %w", e.key, err)
				}
				for _, o := range slots[l.Name] {
					if overlap(o.r, r) {
						return nil, fmt.Errorf("experiments %s and %s overlap in layer %s", o.key, e.key, l.Name)
					}
					if o.attribute != e.hashAttribute {
						return nil, fmt.Errorf("experiments %s and %s in layer %s hash different attributes", o.key, e.key, l.Name)
					}
				}
				slots[l.Name] = append(slots[l.Name], slotOwner{e.key, e.hashAttribute, r})
				e.slot, e.layerHash = &r, newSeededHasher("__", l.Salt, l.HashVersion)
			}
		} else if ec.LayerRange != nil {
			return nil, fmt.Errorf("experiment %s: range needs a layer", e.key)
		}
		a.byKey[e.key] = len(a.experiments)
		a.experiments = append(a.experiments, e)
	}
	return a, nil
}

func compileExperiment(ec ExperimentConfig, defVersion int) (experiment, error) {
	e := experiment{key: ec.Key, layer: ec.Layer, seed: ec.Seed, hashVersion: ec.HashVersion,
		hashAttribute: ec.HashAttribute, start: ec.Start, stop: ec.Stop, force: noForce, config: ec}
	if e.key == "" {
		return e, errors.New("an experiment has no key")
	}
	wrap := func(err error) error { return fmt.Errorf("experiment %s: %w", e.key, err) }
	if e.seed == "" {
		e.seed = e.key
	}
	if e.hashVersion == 0 {
		e.hashVersion = defVersion
	}
	if err := checkVersion(e.hashVersion); err != nil {
		return e, wrap(err)
	}
	if e.hashAttribute == "" {
		e.hashAttribute = "id"
	}
	e.bucket = newSeededHasher("", e.seed, e.hashVersion)
	e.inactive = ec.Active != nil && !*ec.Active
	weights := make([]float64, 0, len(ec.Variants))
	index := map[string]int{}
	for i, v := range ec.Variants {
		name := v.Name
		if name == "" {
			name = strconv.Itoa(i)
		}
		if _, dup := index[name]; dup {
			return e, wrap(fmt.Errorf("variant %q named twice", name))
		}
		index[name] = i
		e.variants = append(e.variants, name)
		if v.Weight < 0 {
			return e, wrap(fmt.Errorf("variant %q has a negative weight", name))
		}
		weights = append(weights, v.Weight)
	}
	if allZero(weights) {
		weights = nil
	} else if !sumsToOne(weights) {
		return e, wrap(errors.New("variant weights must sum to 1"))
	}
	coverage := 1.0
	if ec.Coverage != nil {
		coverage = *ec.Coverage
	}
	if len(ec.Ranges) > 0 {
		if len(ec.Ranges) != len(ec.Variants) {
			return e, wrap(errors.New("ranges needs one range per variant"))
		}
		e.ranges = ec.Ranges
	} else {
		e.ranges = BucketRanges(len(e.variants), coverage, weights)
	}
	cond, err := CompileCondition(ec.Condition)
	if err != nil {
		return e, wrap(fmt.Errorf("condition: %w", err))
	}
	e.condition = cond
	if len(ec.Whitelist) > 0 {
		e.whitelist = make(map[string]int, len(ec.Whitelist))
		for id, name := range ec.Whitelist {
			i, ok := index[name]
			if !ok {
				return e, wrap(fmt.Errorf("whitelist: unknown variant %q for %q", name, id))
			}
			e.whitelist[id] = i
		}
	}
	if ec.Force != nil {
		e.force = *ec.Force
	}
	if ec.Namespace != nil {
		e.namespace = &Namespace{ID: ec.Namespace.ID, Range: ec.Namespace.Range}
	}
	for _, f := range ec.Filters {
		v := f.HashVersion
		if v == 0 {
			v = 2
		}
		attr := f.Attribute
		if attr == "" {
			attr = e.hashAttribute
		}
		e.filters = append(e.filters, filter{seed: f.Seed, attribute: attr, hashVersion: v, ranges: f.Ranges})
	}
	if !e.start.IsZero() && !e.stop.IsZero() && !e.stop.After(e.start) {
		return e, wrap(errors.New("stop is not after start"))
	}
	return e, nil
}

func allZero(ws []float64) bool {
	for _, w := range ws {
		if w != 0 {
			return false
		}
	}
	return true
}

func checkVersion(v int) error {
	if v != 1 && v != 2 {
		return fmt.Errorf("unknown hash version %d (1 or 2)", v)
	}
	return nil
}

func checkRange(r Range) error {
	if r.Start < 0 || r.End > 1 || r.Start > r.End {
		return fmt.Errorf("[%g, %g] is not within [0, 1]", r.Start, r.End)
	}
	return nil
}

func overlap(a, b Range) bool { return a.Start < b.End && b.Start < a.End }

// Experiments lists the configured experiment keys in config order.
func (a *Assigner) Experiments() []string {
	keys := make([]string, len(a.experiments))
	for i := range a.experiments {
		keys[i] = a.experiments[i].key
	}
	return keys
}

// Experiment returns an experiment's config as written (with defaults not
// filled in).
func (a *Assigner) Experiment(key string) (ExperimentConfig, bool) {
	i, ok := a.byKey[key]
	if !ok {
		return ExperimentConfig{}, false
	}
	return a.experiments[i].config, true
}

// Variants returns an experiment's variant names (nil if unknown).
func (a *Assigner) Variants(key string) []string {
	i, ok := a.byKey[key]
	if !ok {
		return nil
	}
	return a.experiments[i].variants
}

// Weights returns the share of the experiment's covered units each variant
// is meant to get, for the sample-ratio check.
func (a *Assigner) Weights(key string) []float64 {
	i, ok := a.byKey[key]
	if !ok {
		return nil
	}
	e := &a.experiments[i]
	w := make([]float64, len(e.ranges))
	total := 0.0
	for j, r := range e.ranges {
		w[j] = r.End - r.Start
		total += w[j]
	}
	for j := range w {
		if total > 0 {
			w[j] /= total
		}
	}
	return w
}

// Evaluate assigns u in the experiment key at time now. It does not allocate.
func (a *Assigner) Evaluate(key string, u Unit, now time.Time) Result {
	i, ok := a.byKey[key]
	if !ok {
		return Result{Experiment: key, Reason: ReasonUnknownExperiment}
	}
	return a.evaluate(&a.experiments[i], u, now)
}

// AssignAll appends to dst the result of every experiment u is in (at most
// one per layer; any number of launch-layer and layerless experiments).
func (a *Assigner) AssignAll(dst []Result, u Unit, now time.Time) []Result {
	for i := range a.experiments {
		if r := a.evaluate(&a.experiments[i], u, now); r.InExperiment {
			dst = append(dst, r)
		}
	}
	return dst
}

func (a *Assigner) evaluate(e *experiment, u Unit, now time.Time) Result {
	r := Result{Experiment: e.key, Layer: e.layer}
	if len(e.variants) > 0 {
		r.Variant = e.variants[0]
	}
	if len(e.variants) < 2 {
		r.Reason = ReasonSingleVariant
		return r
	}
	if e.inactive {
		r.Reason = ReasonInactive
		return r
	}
	if (!e.start.IsZero() && now.Before(e.start)) || (!e.stop.IsZero() && !now.Before(e.stop)) {
		r.Reason = ReasonOutsideWindow
		return r
	}
	hv := hashValue(u, e.hashAttribute)
	r.HashValue = hv
	if hv == "" {
		r.Reason = ReasonNoHashValue
		return r
	}
	if i, ok := e.whitelist[hv]; ok {
		r.Index, r.Variant, r.InExperiment, r.Forced = i, e.variants[i], true, true
		r.Reason = ReasonWhitelisted
		return r
	}
	if e.domain != nil && !inRange(&e.domainHash, hv, *e.domain) {
		r.Reason = ReasonOtherDomain
		return r
	}
	if e.slot != nil && !inRange(&e.layerHash, hv, *e.slot) {
		r.Reason = ReasonOtherLayerSlot
		return r
	}
	if len(e.filters) > 0 {
		if a.filteredOut(e, u) {
			r.Reason = ReasonFiltered
			return r
		}
	} else if e.namespace != nil && !InNamespace(hv, *e.namespace) {
		r.Reason = ReasonNamespace
		return r
	}
	if !e.condition.Empty() && !e.condition.EvalUnit(u, a.groups) {
		r.Reason = ReasonTargeting
		return r
	}
	n, _ := e.bucket.hash(hv)
	r.Bucket = n
	i := ChooseVariation(n, e.ranges)
	if i < 0 {
		r.Reason = ReasonCoverage
		return r
	}
	if e.force != noForce {
		if e.force < 0 || e.force >= len(e.variants) {
			r.Reason = ReasonForced
			return r
		}
		r.Index, r.Variant, r.InExperiment, r.Forced = e.force, e.variants[e.force], true, true
		r.Reason = ReasonForced
		return r
	}
	r.Index, r.Variant, r.InExperiment, r.HashUsed = i, e.variants[i], true, true
	r.Reason = ReasonAssigned
	return r
}

// inRange reports whether value's hash under h falls in r.
func inRange(h *seededHasher, value string, r Range) bool {
	n, ok := h.hash(value)
	return ok && r.Contains(n)
}

func (a *Assigner) filteredOut(e *experiment, u Unit) bool {
	for _, f := range e.filters {
		hv := hashValue(u, f.attribute)
		if hv == "" {
			return true
		}
		n, ok := Hash(f.seed, hv, f.hashVersion)
		if !ok {
			return true
		}
		in := false
		for _, r := range f.ranges {
			if r.Contains(n) {
				in = true
				break
			}
		}
		if !in {
			return true
		}
	}
	return false
}

// hashValue is the unit's value of a hash attribute: the id for "id"
// (unless the attributes hold one), else the attribute as a string.
func hashValue(u Unit, attribute string) string {
	if len(u.Attributes) == 0 {
		if attribute == "id" {
			return u.ID
		}
		return ""
	}
	if v, ok := u.Attributes[attribute]; ok {
		switch x := v.(type) {
		case string:
			return x
		case nil:
			return ""
		default:
			return jsString(x)
		}
	}
	if attribute == "id" {
		return u.ID
	}
	return ""
}
