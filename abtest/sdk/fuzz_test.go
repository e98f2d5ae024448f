package sdk

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzConfig feeds arbitrary config files to ParseConfig and New: they
// must fail cleanly or give an assigner that evaluates without panicking.
func FuzzConfig(f *testing.F) {
	f.Add([]byte(layeredConfig))
	f.Add([]byte("experiments: [{key: a, variants: [{name: c}, {name: t}], condition: {$or: [{a: {$gt: 3}}, {b: {$regex: '^x'}}]}}]"))
	f.Add([]byte("domains: [{name: d, range: [0, 1]}]\nlayers: [{name: l, domain: d}]\nexperiments: [{key: a, layer: l}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		a, err := New(c)
		if err != nil {
			return
		}
		u := Unit{ID: "u1", Attributes: map[string]any{"a": 4.0, "b": "xy", "tags": []any{"p", 1.0}}}
		for _, key := range a.Experiments() {
			r := a.Evaluate(key, u, time.Now())
			if r.InExperiment && (r.Index < 0 || r.Index >= len(a.Variants(key))) {
				t.Fatalf("%s: index %d of %d variants", key, r.Index, len(a.Variants(key)))
			}
		}
		_ = a.AssignAll(nil, u, time.Now())
	})
}

// FuzzCondition compiles arbitrary JSON conditions and evaluates them
// against arbitrary JSON attributes: no panic, same answer twice.
func FuzzCondition(f *testing.F) {
	f.Add([]byte(`{"age": {"$gte": 18}, "country": {"$in": ["US", "CA"]}}`), []byte(`{"age": 20, "country": "US"}`))
	f.Add([]byte(`{"$not": {"tags": {"$elemMatch": {"$eq": "x"}}}}`), []byte(`{"tags": ["x", 1, null]}`))
	f.Add([]byte(`{"v": {"$vgt": "1.2.3-rc.1"}}`), []byte(`{"v": "v1.10.0+build"}`))
	f.Fuzz(func(t *testing.T, cond, attrs []byte) {
		var c, a any
		if json.Unmarshal(cond, &c) != nil || json.Unmarshal(attrs, &a) != nil {
			return
		}
		compiled, err := CompileCondition(c)
		if err != nil {
			return
		}
		m, _ := a.(map[string]any)
		if compiled.Eval(m, nil) != compiled.Eval(m, nil) {
			t.Fatal("condition answered differently twice")
		}
	})
}
