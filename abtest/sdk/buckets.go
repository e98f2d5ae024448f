package sdk

// Range is a half-open interval [Start, End) of the hash space [0, 1).
type Range struct {
	Start float64 `json:"start" yaml:"start"`
	End   float64 `json:"end" yaml:"end"`
}

// Contains reports whether n is in [Start, End).
func (r Range) Contains(n float64) bool { return n >= r.Start && n < r.End }

// EqualWeights returns n weights of 1/n (none for n < 1).
func EqualWeights(n int) []float64 {
	if n < 1 {
		return []float64{}
	}
	w := make([]float64, n)
	for i := range w {
		w[i] = 1 / float64(n)
	}
	return w
}

// BucketRanges computes each variation's range as GrowthBook does: variation
// i owns the slice of width weights[i] starting at the sum of the weights
// before it, of which only the first coverage fraction is used. Starts do not
// depend on coverage, so raising coverage only adds units to an arm and never
// moves one between arms. Coverage is clamped to [0, 1]; weights that are
// missing, of the wrong count, or not summing to 1 (±0.01) become equal.
func BucketRanges(numVariations int, coverage float64, weights []float64) []Range {
	coverage = min(max(coverage, 0), 1)
	if len(weights) != numVariations || !sumsToOne(weights) {
		weights = EqualWeights(numVariations)
	}
	ranges := make([]Range, len(weights))
	cumulative := 0.0
	for i, w := range weights {
		ranges[i] = Range{Start: cumulative, End: cumulative + coverage*w}
		cumulative += w
	}
	return ranges
}

func sumsToOne(weights []float64) bool {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	return total >= 0.99 && total <= 1.01
}

// ChooseVariation returns the index of the first range holding n, or -1 when
// n falls outside every range (the unit is not in the experiment).
func ChooseVariation(n float64, ranges []Range) int {
	for i, r := range ranges {
		if r.Contains(n) {
			return i
		}
	}
	return -1
}

// Namespace is GrowthBook's namespace: experiments sharing an ID and holding
// disjoint ranges are mutually exclusive.
type Namespace struct {
	ID    string
	Range Range
}

// InNamespace reports whether the unit with hashValue falls in ns, hashing
// with seed "__"+ID and version 1 as GrowthBook does.
func InNamespace(hashValue string, ns Namespace) bool {
	n, ok := hashSeeded("__", ns.ID, hashValue, 1)
	return ok && ns.Range.Contains(n)
}
