package sdk

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkEvaluate measures one experiment evaluation (the 10,000,000/s
// target is 100 ns/op on one core).
func BenchmarkEvaluate(b *testing.B) {
	a := mustNew(b, layeredConfig)
	ids := make([]Unit, 1024)
	for i := range ids {
		ids[i] = Unit{ID: "user-" + strconv.Itoa(i*7919)}
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_ = a.Evaluate("ui-a", ids[i&1023], now)
	}
}

// BenchmarkEvaluateTargeted adds a two-clause targeting condition.
func BenchmarkEvaluateTargeted(b *testing.B) {
	a := mustNew(b, `
experiments:
  - key: targeted
    variants: [{name: c}, {name: t}]
    condition: {country: {$in: [US, CA]}, age: {$gte: 18}}
`)
	u := Unit{ID: "user-12345", Attributes: map[string]any{"country": "US", "age": 30.0}}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Evaluate("targeted", u, now)
	}
}

func BenchmarkHashV2(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Hash("checkout-button", "user-1234567", 2)
	}
}

// BenchmarkEvaluateNoLayer is an experiment outside any layer: one hash.
func BenchmarkEvaluateNoLayer(b *testing.B) {
	a := mustNew(b, `
experiments:
  - key: checkout-button
    variants: [{name: c}, {name: t}]
`)
	u := Unit{ID: "user-1234567"}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Evaluate("checkout-button", u, now)
	}
}
