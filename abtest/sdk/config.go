package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultHashVersion is the hash version of experiments, layers and domains
// that do not name one in a config file. Version 2 is GrowthBook's current
// one; version 1 correlates seeds that differ only in their last characters.
const DefaultHashVersion = 2

// Config is an experiment config file: domains split traffic into mutually
// exclusive parts, layers inside them hold experiments that exclude each
// other, and experiments in different layers overlap independently (each
// layer hashes with its own salt), as in Google's overlapping experiment
// infrastructure.
type Config struct {
	// HashVersion is the default for domains, layers and experiments.
	HashVersion int `yaml:"hash_version" json:"hash_version,omitempty"`
	// DomainSalt is the salt every domain's range is hashed with (they
	// share it so that disjoint ranges exclude each other).
	DomainSalt  string             `yaml:"domain_salt" json:"domain_salt,omitempty"`
	SavedGroups map[string][]any   `yaml:"saved_groups" json:"saved_groups,omitempty"`
	Domains     []DomainConfig     `yaml:"domains" json:"domains,omitempty"`
	Layers      []LayerConfig      `yaml:"layers" json:"layers,omitempty"`
	Experiments []ExperimentConfig `yaml:"experiments" json:"experiments"`
}

// DomainConfig is a share of all traffic; layers in it see only its units.
type DomainConfig struct {
	Name  string `yaml:"name" json:"name"`
	Range Range  `yaml:"range" json:"range"`
}

// LayerConfig groups experiments a unit can be in at most one of (each holds
// a disjoint range of the layer). A launch layer holds gradual rollouts and
// holdbacks instead: its experiments overlap, each limited by its coverage.
type LayerConfig struct {
	Name        string `yaml:"name" json:"name"`
	Salt        string `yaml:"salt" json:"salt,omitempty"` // default: the name
	Domain      string `yaml:"domain" json:"domain,omitempty"`
	Launch      bool   `yaml:"launch" json:"launch,omitempty"`
	HashVersion int    `yaml:"hash_version" json:"hash_version,omitempty"`
}

// ExperimentConfig is one experiment as written in the config file.
type ExperimentConfig struct {
	Key           string            `yaml:"key" json:"key"`
	Layer         string            `yaml:"layer" json:"layer,omitempty"`
	LayerRange    *Range            `yaml:"range" json:"range,omitempty"` // share of the layer; default all
	Seed          string            `yaml:"seed" json:"seed,omitempty"`   // default: the key
	HashVersion   int               `yaml:"hash_version" json:"hash_version,omitempty"`
	HashAttribute string            `yaml:"hash_attribute" json:"hash_attribute,omitempty"` // default "id"
	Variants      []VariantConfig   `yaml:"variants" json:"variants"`
	Coverage      *float64          `yaml:"coverage" json:"coverage,omitempty"` // default 1
	Condition     map[string]any    `yaml:"condition" json:"condition,omitempty"`
	Active        *bool             `yaml:"active" json:"active,omitempty"` // default true
	Start         time.Time         `yaml:"start" json:"start,omitzero"`
	Stop          time.Time         `yaml:"stop" json:"stop,omitzero"`
	Whitelist     map[string]string `yaml:"whitelist" json:"whitelist,omitempty"` // unit id -> variant name
	Namespace     *NamespaceConfig  `yaml:"namespace" json:"namespace,omitempty"`
	Filters       []FilterConfig    `yaml:"filters" json:"filters,omitempty"`
	Ranges        []Range           `yaml:"ranges" json:"ranges,omitempty"` // explicit per-variant ranges
	Force         *int              `yaml:"force" json:"force,omitempty"`
	Ramp          []RampStep        `yaml:"ramp" json:"ramp,omitempty"`
	Guardrails    []Guardrail       `yaml:"guardrails" json:"guardrails,omitempty"`
}

// VariantConfig is one arm; weights are relative shares summing to 1
// (all weights omitted means equal shares).
type VariantConfig struct {
	Name   string  `yaml:"name" json:"name"`
	Weight float64 `yaml:"weight" json:"weight,omitempty"`
}

// NamespaceConfig is GrowthBook's experiment namespace.
type NamespaceConfig struct {
	ID    string `yaml:"id" json:"id"`
	Range Range  `yaml:"range" json:"range"`
}

// FilterConfig is GrowthBook's filter: the unit passes when the hash of the
// attribute with the seed falls in one of the ranges.
type FilterConfig struct {
	Seed        string  `yaml:"seed" json:"seed"`
	Attribute   string  `yaml:"attribute" json:"attribute,omitempty"`
	HashVersion int     `yaml:"hash_version" json:"hash_version,omitempty"` // default 2
	Ranges      []Range `yaml:"ranges" json:"ranges"`
}

// RampStep is a coverage to reach once the previous step has held for
// After (and passed the sample-ratio and guardrail checks).
type RampStep struct {
	Coverage float64       `yaml:"coverage" json:"coverage"`
	After    time.Duration `yaml:"after" json:"after"`
}

// Guardrail is a metric whose treatment mean may not fall more than
// MaxDrop (relative, e.g. 0.05) below control for a ramp to advance.
type Guardrail struct {
	Metric  string  `yaml:"metric" json:"metric"`
	MaxDrop float64 `yaml:"max_drop" json:"max_drop"`
}

// UnmarshalYAML reads a range written as [start, end].
func (r *Range) UnmarshalYAML(n *yaml.Node) error {
	var pair []float64
	if err := n.Decode(&pair); err != nil || len(pair) != 2 {
		return fmt.Errorf("line %d: a range is [start, end]", n.Line)
	}
	r.Start, r.End = pair[0], pair[1]
	return nil
}

// UnmarshalJSON reads a range written as [start, end].
func (r *Range) UnmarshalJSON(b []byte) error {
	var pair []float64
	if err := json.Unmarshal(b, &pair); err != nil || len(pair) != 2 {
		return errors.New("a range is [start, end]")
	}
	r.Start, r.End = pair[0], pair[1]
	return nil
}

// MarshalJSON writes [start, end].
func (r Range) MarshalJSON() ([]byte, error) { return json.Marshal([2]float64{r.Start, r.End}) }

// ParseConfig parses a YAML (or JSON) config strictly: unknown keys are
// errors, so a typo does not silently change an experiment.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && err.Error() != "EOF" {
		return nil, fmt.Errorf("parse experiment config: %w", err)
	}
	return &c, nil
}

// LoadFile reads and compiles a config file.
func LoadFile(path string) (*Assigner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read experiment config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a, err := New(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}
