package sdk

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func mustNew(t testing.TB, yamlText string) *Assigner {
	t.Helper()
	c, err := ParseConfig([]byte(yamlText))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const layeredConfig = `
layers:
  - name: ui
  - name: pricing
experiments:
  - key: ui-a
    layer: ui
    range: [0, 0.5]
    variants: [{name: control}, {name: treatment}]
  - key: ui-b
    layer: ui
    range: [0.5, 1]
    variants: [{name: control}, {name: treatment}]
  - key: price-a
    layer: pricing
    range: [0, 0.5]
    variants: [{name: control}, {name: treatment}]
  - key: price-b
    layer: pricing
    range: [0.5, 1]
    variants: [{name: control}, {name: treatment}]
`

// TestLayerIndependence assigns 1,000,000 ids in two layers of two
// experiments each and checks that the 4 × 4 joint distribution of arms is
// uniform: a chi-square statistic below 37.70, the 0.999 quantile for 15
// degrees of freedom. It also checks the exclusion inside each layer.
func TestLayerIndependence(t *testing.T) {
	a := mustNew(t, layeredConfig)
	const n = 1_000_000
	var joint [4][4]int
	now := time.Now()
	var buf []Result
	for i := range n {
		u := Unit{ID: fmt.Sprintf("user-%d", i)}
		buf = a.AssignAll(buf[:0], u, now)
		arm := map[string]int{}
		for _, r := range buf {
			offset := 0
			if strings.HasSuffix(r.Experiment, "-b") {
				offset = 2
			}
			if _, dup := arm[r.Layer]; dup {
				t.Fatalf("%s is in two experiments of layer %s", u.ID, r.Layer)
			}
			arm[r.Layer] = offset + r.Index
		}
		if len(arm) != 2 {
			t.Fatalf("%s is in %d layers, want 2: %+v", u.ID, len(arm), buf)
		}
		joint[arm["ui"]][arm["pricing"]]++
	}
	expected := float64(n) / 16
	chi2 := 0.0
	for i := range joint {
		for j := range joint[i] {
			d := float64(joint[i][j]) - expected
			chi2 += d * d / expected
		}
	}
	if chi2 > 37.70 {
		t.Errorf("joint distribution not uniform: chi-square %.1f over 15 df: %v", chi2, joint)
	}
	t.Logf("chi-square %.2f (15 df): %v", chi2, joint)
}

// TestCoverageRampKeepsArms raises coverage step by step: a unit once in an
// arm stays in that arm.
func TestCoverageRampKeepsArms(t *testing.T) {
	arms := map[string]int{}
	for _, coverage := range []float64{0.05, 0.2, 0.5, 1} {
		a := mustNew(t, fmt.Sprintf(`
experiments:
  - key: ramp
    coverage: %g
    variants: [{name: c, weight: 0.3}, {name: t, weight: 0.7}]
`, coverage))
		in := 0
		for i := range 20000 {
			id := fmt.Sprint(i)
			r := a.Evaluate("ramp", Unit{ID: id}, time.Now())
			if !r.InExperiment {
				if _, was := arms[id]; was {
					t.Fatalf("coverage %g: unit %s left the experiment", coverage, id)
				}
				continue
			}
			in++
			if prev, was := arms[id]; was && prev != r.Index {
				t.Fatalf("coverage %g: unit %s moved from arm %d to %d", coverage, id, prev, r.Index)
			}
			arms[id] = r.Index
		}
		if share := float64(in) / 20000; share < coverage-0.02 || share > coverage+0.02 {
			t.Errorf("coverage %g: %.3f of units in", coverage, share)
		}
	}
}

func TestEvaluateRules(t *testing.T) {
	a := mustNew(t, `
saved_groups:
  staff: [alice, bob]
domains:
  - {name: search, range: [0, 0.5]}
  - {name: home, range: [0.5, 1]}
layers:
  - {name: results, domain: search}
  - {name: launch, launch: true}
experiments:
  - key: ranking
    layer: results
    variants: [{name: old}, {name: new}]
    whitelist: {qa-1: new}
  - key: country
    variants: [{name: c}, {name: t}]
    condition: {country: {$in: [US, CA]}}
  - key: staff-only
    variants: [{name: c}, {name: t}]
    condition: {id: {$inGroup: staff}}
  - key: windowed
    variants: [{name: c}, {name: t}]
    start: 2026-01-01T00:00:00Z
    stop: 2026-02-01T00:00:00Z
  - key: off
    active: false
    variants: [{name: c}, {name: t}]
  - key: company
    hash_attribute: company
    variants: [{name: c}, {name: t}]
  - key: rollout
    layer: launch
    coverage: 0.1
    variants: [{name: off}, {name: on}]
  - key: holdback
    layer: launch
    variants: [{name: holdback, weight: 0.05}, {name: launched, weight: 0.95}]
`)
	jan := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	// Find a unit in each domain to test the domain split.
	var inSearch, inHome string
	for i := 0; inSearch == "" || inHome == ""; i++ {
		id := fmt.Sprint("u", i)
		if r := a.Evaluate("ranking", Unit{ID: id}, jan); r.Reason == ReasonOtherDomain {
			inHome = id
		} else if r.InExperiment {
			inSearch = id
		}
	}
	tests := []struct {
		name, exp string
		unit      Unit
		now       time.Time
		in        bool
		forced    bool
		variant   string
		reason    Reason
	}{
		{"whitelist forces and flags", "ranking", Unit{ID: "qa-1"}, jan, true, true, "new", ReasonWhitelisted},
		{"domain member", "ranking", Unit{ID: inSearch}, jan, true, false, "", ReasonAssigned},
		{"other domain", "ranking", Unit{ID: inHome}, jan, false, false, "old", ReasonOtherDomain},
		{"targeting pass", "country", Unit{ID: "u1", Attributes: map[string]any{"country": "CA"}}, jan, true, false, "", ReasonAssigned},
		{"targeting fail", "country", Unit{ID: "u1", Attributes: map[string]any{"country": "FR"}}, jan, false, false, "c", ReasonTargeting},
		{"targeting missing attribute", "country", Unit{ID: "u1"}, jan, false, false, "c", ReasonTargeting},
		{"saved group", "staff-only", Unit{ID: "x", Attributes: map[string]any{"id": "alice"}}, jan, true, false, "", ReasonAssigned},
		{"not in saved group", "staff-only", Unit{ID: "x", Attributes: map[string]any{"id": "carol"}}, jan, false, false, "c", ReasonTargeting},
		{"unit id is the id attribute", "staff-only", Unit{ID: "bob"}, jan, true, false, "", ReasonAssigned},
		{"id attribute wins over the unit id", "staff-only", Unit{ID: "bob", Attributes: map[string]any{"id": "carol"}}, jan, false, false, "c", ReasonTargeting},
		{"inside window", "windowed", Unit{ID: "u1"}, jan, true, false, "", ReasonAssigned},
		{"before window", "windowed", Unit{ID: "u1"}, jan.AddDate(0, -1, 0), false, false, "c", ReasonOutsideWindow},
		{"at stop", "windowed", Unit{ID: "u1"}, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), false, false, "c", ReasonOutsideWindow},
		{"inactive", "off", Unit{ID: "u1"}, jan, false, false, "c", ReasonInactive},
		{"hash attribute missing", "company", Unit{ID: "u1"}, jan, false, false, "c", ReasonNoHashValue},
		{"hash attribute present", "company", Unit{ID: "u1", Attributes: map[string]any{"company": "acme"}}, jan, true, false, "", ReasonAssigned},
		{"unknown experiment", "nope", Unit{ID: "u1"}, jan, false, false, "", ReasonUnknownExperiment},
		{"empty id", "country", Unit{Attributes: map[string]any{"country": "US"}}, jan, false, false, "c", ReasonNoHashValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := a.Evaluate(tc.exp, tc.unit, tc.now)
			if r.InExperiment != tc.in || r.Forced != tc.forced || r.Reason != tc.reason || (tc.variant != "" && r.Variant != tc.variant) {
				t.Errorf("got %+v, want in=%v forced=%v variant=%q reason=%s", r, tc.in, tc.forced, tc.variant, tc.reason)
			}
		})
	}
	// Launch layer: experiments overlap; rollout covers about 10 %.
	rolled, held, both := 0, 0, 0
	for i := range 20000 {
		u := Unit{ID: fmt.Sprint("l", i)}
		r1 := a.Evaluate("rollout", u, jan)
		r2 := a.Evaluate("holdback", u, jan)
		if r1.InExperiment {
			rolled++
		}
		if r2.Variant == "holdback" {
			held++
		}
		if r1.InExperiment && r2.InExperiment {
			both++
		}
	}
	if rolled < 1800 || rolled > 2200 || held < 850 || held > 1150 || both < 1800 {
		t.Errorf("launch layer: rollout %d, holdback %d, in both %d of 20000", rolled, held, both)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ name, config, want string }{
		{"unknown key", "experiments: [{key: a, variantz: []}]", "variantz"},
		{"no key", "experiments: [{variants: [{name: a}, {name: b}]}]", "no key"},
		{"duplicate", "experiments: [{key: a}, {key: a}]", "twice"},
		{"weights", "experiments: [{key: a, variants: [{name: a, weight: 0.5}, {name: b, weight: 0.2}]}]", "sum to 1"},
		{"unknown layer", "experiments: [{key: a, layer: x}]", "unknown layer"},
		{"overlap in layer", "layers: [{name: l}]\nexperiments: [{key: a, layer: l, range: [0, 0.6]}, {key: b, layer: l, range: [0.5, 1]}]", "overlap"},
		{"domains overlap", "domains: [{name: a, range: [0, 0.6]}, {name: b, range: [0.5, 1]}]", "overlap"},
		{"bad range", "layers: [{name: l}]\nexperiments: [{key: a, layer: l, range: [0.5, 0.2]}]", "not within"},
		{"range shape", "layers: [{name: l}]\nexperiments: [{key: a, layer: l, range: [0.5]}]", "[start, end]"},
		{"whitelist variant", "experiments: [{key: a, variants: [{name: c}, {name: t}], whitelist: {u: x}}]", "unknown variant"},
		{"hash version", "experiments: [{key: a, hash_version: 3}]", "hash version"},
		{"window", "experiments: [{key: a, start: 2026-02-01T00:00:00Z, stop: 2026-01-01T00:00:00Z}]", "stop"},
		{"layer attributes", "layers: [{name: l}]\nexperiments: [{key: a, layer: l, range: [0, 0.5]}, {key: b, layer: l, range: [0.5, 1], hash_attribute: device}]", "different attributes"},
		{"condition", "experiments: [{key: a, condition: {$or: 3}}]", "list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.config))
			if err == nil {
				_, err = New(c)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	a := mustNew(t, layeredConfig+`
  - key: targeted
    variants: [{name: c}, {name: t}]
    condition: {country: {$in: [US, CA]}, age: {$gte: 18}}
`)
	u := Unit{ID: "user-12345", Attributes: map[string]any{"country": "US", "age": 30.0}}
	now := time.Now()
	buf := make([]Result, 0, 8)
	allocs := testing.AllocsPerRun(1000, func() {
		_ = a.Evaluate("ui-a", u, now)
		_ = a.Evaluate("targeted", u, now)
		buf = a.AssignAll(buf[:0], u, now)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per evaluation, want 0", allocs)
	}
}
