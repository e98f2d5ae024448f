package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestQuantilesBySelection: selection finds what Quantile finds on the
// sorted sample, with duplicates, NaNs, infinities and every small size.
func TestQuantilesBySelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pools := map[string]func() float64{
		"continuous": func() float64 { return rng.NormFloat64() },
		"few values": func() float64 { return float64(rng.IntN(3)) },
		"mostly 0":   func() float64 { return float64(rng.IntN(20)/19) * rng.Float64() },
		"odd values": func() float64 {
			return []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, -1, 1}[rng.IntN(6)]
		},
	}
	for name, draw := range pools {
		for n := 1; n <= 60; n++ {
			for range 20 {
				xs := make([]float64, n)
				for i := range xs {
					xs[i] = draw()
				}
				sorted := slices.Clone(xs)
				slices.Sort(sorted)
				for _, pq := range [][2]float64{{0.25, 0.75}, {0, 1}, {0.5, 0.5}, {0.1, 0.9}} {
					gp, gq := quantilesBySelection(slices.Clone(xs), pq[0], pq[1])
					wp, wq := Quantile(sorted, pq[0]), Quantile(sorted, pq[1])
					if !sameFloat(gp, wp) || !sameFloat(gq, wq) {
						t.Fatalf("%s, %v, quantiles %v: selection %v %v, sorted %v %v", name, xs, pq, gp, gq, wp, wq)
					}
				}
			}
		}
	}
	if p, q := quantilesBySelection(nil, 0.25, 0.75); !math.IsNaN(p) || !math.IsNaN(q) {
		t.Fatalf("empty sample: %v %v", p, q)
	}
}

func sameFloat(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
