package sdk

import (
	"encoding/json"
	"math"
	"os"
	"reflect"
	"testing"
	"time"
)

// specCases is GrowthBook's SDK specification (see testdata/README.md).
type specCases struct {
	Hash            [][]any `json:"hash"`
	GetBucketRange  [][]any `json:"getBucketRange"`
	ChooseVariation [][]any `json:"chooseVariation"`
	InNamespace     [][]any `json:"inNamespace"`
	GetEqualWeights [][]any `json:"getEqualWeights"`
	EvalCondition   [][]any `json:"evalCondition"`
	Run             [][]any `json:"run"`
}

func loadSpec(t *testing.T) specCases {
	t.Helper()
	b, err := os.ReadFile("testdata/growthbook-cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var c specCases
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSpecHash(t *testing.T) {
	cases := loadSpec(t).Hash
	if len(cases) < 10 {
		t.Fatalf("only %d hash cases", len(cases))
	}
	for _, c := range cases {
		seed, value, version := c[0].(string), c[1].(string), int(c[2].(float64))
		got, ok := Hash(seed, value, version)
		if c[3] == nil {
			if ok {
				t.Errorf("Hash(%q, %q, %d) = %v, want no hash", seed, value, version, got)
			}
			continue
		}
		if want := c[3].(float64); !ok || got != want {
			t.Errorf("Hash(%q, %q, %d) = %v, want %v", seed, value, version, got, want)
		}
	}
}

// TestNonASCIIHash checks ids outside ASCII against values computed over
// UTF-16 code units in JavaScript (testdata/nonascii-hashes.js), including
// characters outside the BMP that JavaScript sees as surrogate pairs.
func TestNonASCIIHash(t *testing.T) {
	b, err := os.ReadFile("testdata/nonascii-hashes.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases [][]any
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		seed, value, version, want := c[0].(string), c[1].(string), int(c[2].(float64)), c[3].(float64)
		if got, _ := Hash(seed, value, version); got != want {
			t.Errorf("Hash(%q, %q, %d) = %v, want %v", seed, value, version, got, want)
		}
	}
	// Hashing UTF-8 bytes instead would differ: guard against that mistake.
	if got, _ := Hash("", "café", 1); got == float64(fnvBytes(fnvOffset32, []byte("café"))%1000)/1000 {
		t.Error("café hashed as UTF-8 bytes")
	}
}

func toRanges(v any) []Range {
	var out []Range
	for _, p := range v.([]any) {
		pair := p.([]any)
		out = append(out, Range{pair[0].(float64), pair[1].(float64)})
	}
	return out
}

func TestSpecBucketRanges(t *testing.T) {
	for _, c := range loadSpec(t).GetBucketRange {
		args := c[1].([]any)
		var weights []float64
		if args[2] != nil {
			for _, w := range args[2].([]any) {
				weights = append(weights, w.(float64))
			}
		}
		got := BucketRanges(int(args[0].(float64)), args[1].(float64), weights)
		want := toRanges(c[2])
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", c[0], got, want)
			continue
		}
		for i := range got {
			if math.Abs(got[i].Start-want[i].Start) > 1e-9 || math.Abs(got[i].End-want[i].End) > 1e-9 {
				t.Errorf("%s: %v, want %v", c[0], got, want)
				break
			}
		}
	}
}

func TestSpecChooseVariation(t *testing.T) {
	for _, c := range loadSpec(t).ChooseVariation {
		if got, want := ChooseVariation(c[1].(float64), toRanges(c[2])), int(c[3].(float64)); got != want {
			t.Errorf("%s: %d, want %d", c[0], got, want)
		}
	}
}

func TestSpecInNamespace(t *testing.T) {
	for _, c := range loadSpec(t).InNamespace {
		ns := c[2].([]any)
		got := InNamespace(c[1].(string), Namespace{ID: ns[0].(string), Range: Range{ns[1].(float64), ns[2].(float64)}})
		if got != c[3].(bool) {
			t.Errorf("%s: %v, want %v", c[0], got, c[3])
		}
	}
}

func TestSpecEqualWeights(t *testing.T) {
	for _, c := range loadSpec(t).GetEqualWeights {
		got := EqualWeights(int(c[0].(float64)))
		want := c[1].([]any)
		if len(got) != len(want) {
			t.Fatalf("EqualWeights(%v) = %v, want %v", c[0], got, want)
		}
		for i := range got {
			if math.Abs(got[i]-want[i].(float64)) > 1e-8 {
				t.Errorf("EqualWeights(%v) = %v, want %v", c[0], got, want)
			}
		}
	}
}

func TestSpecEvalCondition(t *testing.T) {
	cases := loadSpec(t).EvalCondition
	if len(cases) < 200 {
		t.Fatalf("only %d condition cases", len(cases))
	}
	for _, c := range cases {
		name := c[0].(string)
		cond, err := CompileCondition(c[1])
		if err != nil {
			t.Errorf("%s: compile: %v", name, err)
			continue
		}
		attrs, _ := c[2].(map[string]any)
		var groups SavedGroups
		if len(c) > 4 {
			groups = SavedGroups{}
			for k, v := range c[4].(map[string]any) {
				groups[k] = v.([]any)
			}
		}
		if got := cond.Eval(attrs, groups); got != c[3].(bool) {
			t.Errorf("%s: %v, want %v (condition %v, attributes %v)", name, got, c[3], c[1], c[2])
		}
	}
}

// runUnsupported are GrowthBook run cases that exercise SDK features this
// package leaves to the application (URL overrides, QA mode, per-request
// forced variations, feature prerequisites, a global off switch).
var runUnsupported = map[string]bool{
	"globally disabled":                        true,
	"querystring force":                        true,
	"querystring force with inactive":          true,
	"Force variation from context":             true,
	"Skips experiments in QA mode":             true,
	"Works in QA mode if forced in context":    true,
	"Works in QA mode if forced in experiment": true,
	"Prerequisite condition passes":            true,
	"Prerequisite condition fails":             true,
}

// TestSpecRun runs GrowthBook's experiment cases through New and Evaluate:
// default and uneven weights, coverage, hash attributes, conditions,
// namespaces, filters, explicit ranges, seeds and hash versions, force.
func TestSpecRun(t *testing.T) {
	cases := loadSpec(t).Run
	ran, skipped := 0, 0
	for _, c := range cases {
		name := c[0].(string)
		if runUnsupported[name] {
			skipped++
			continue
		}
		ctx, _ := c[1].(map[string]any)
		raw := c[2].(map[string]any)
		ec := ExperimentConfig{Key: raw["key"].(string), HashVersion: 1}
		variations := raw["variations"].([]any)
		weights, _ := raw["weights"].([]any)
		for i := range variations {
			v := VariantConfig{}
			if len(weights) == len(variations) {
				v.Weight = weights[i].(float64)
			}
			ec.Variants = append(ec.Variants, v)
		}
		if v, ok := raw["coverage"].(float64); ok {
			ec.Coverage = &v
		}
		if v, ok := raw["hashVersion"].(float64); ok {
			ec.HashVersion = int(v)
		}
		if v, ok := raw["seed"].(string); ok {
			ec.Seed = v
		}
		if v, ok := raw["hashAttribute"].(string); ok {
			ec.HashAttribute = v
		}
		if v, ok := raw["active"].(bool); ok {
			ec.Active = &v
		}
		if v, ok := raw["force"].(float64); ok {
			f := int(v)
			ec.Force = &f
		}
		if v, ok := raw["condition"].(map[string]any); ok {
			ec.Condition = v
		}
		if v, ok := raw["namespace"].([]any); ok {
			ec.Namespace = &NamespaceConfig{ID: v[0].(string), Range: Range{v[1].(float64), v[2].(float64)}}
		}
		if v, ok := raw["ranges"]; ok {
			ec.Ranges = toRanges(v)
		}
		if v, ok := raw["filters"].([]any); ok {
			for _, f := range v {
				fm := f.(map[string]any)
				fc := FilterConfig{Seed: fm["seed"].(string), Ranges: toRanges(fm["ranges"])}
				fc.Attribute, _ = fm["attribute"].(string)
				if hv, ok := fm["hashVersion"].(float64); ok {
					fc.HashVersion = int(hv)
				}
				ec.Filters = append(ec.Filters, fc)
			}
		}
		cfg := &Config{Experiments: []ExperimentConfig{ec}}
		if g, ok := ctx["savedGroups"].(map[string]any); ok {
			cfg.SavedGroups = map[string][]any{}
			for k, v := range g {
				cfg.SavedGroups[k] = v.([]any)
			}
		}
		a, err := New(cfg)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		attrs, _ := ctx["attributes"].(map[string]any)
		r := a.Evaluate(ec.Key, Unit{Attributes: attrs}, time.Now())
		if !reflect.DeepEqual(variations[r.Index], c[3]) || r.InExperiment != c[4].(bool) || r.HashUsed != c[5].(bool) {
			t.Errorf("%s: value %v in=%v hashUsed=%v (%s), want %v in=%v hashUsed=%v",
				name, variations[r.Index], r.InExperiment, r.HashUsed, r.Reason, c[3], c[4], c[5])
		}
		ran++
	}
	if skipped != len(runUnsupported) || ran < 60 {
		t.Errorf("ran %d cases, skipped %d (expected to skip exactly %d)", ran, skipped, len(runUnsupported))
	}
}
