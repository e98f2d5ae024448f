package stats

import (
	"cmp"
	"math"
	"slices"
)

// Summary is the count, mean and sample variance (n-1) of a sample.
type Summary struct {
	N        int     `json:"n"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
}

// Summarize computes a Summary in one pass (Welford's method, stable for
// large means).
func Summarize(xs []float64) Summary {
	var s Summary
	var m2 float64
	for _, x := range xs {
		s.N++
		d := x - s.Mean
		s.Mean += d / float64(s.N)
		m2 += d * (x - s.Mean)
	}
	if s.N > 1 {
		s.Variance = m2 / float64(s.N-1)
	}
	return s
}

// Comparison is a treatment against control: the absolute difference
// (treatment − control) and the relative one (difference / control), each
// with a two-sided confidence interval, and the p-value.
type Comparison struct {
	Diff     float64    `json:"diff"`
	DiffCI   [2]float64 `json:"diff_ci"`
	Relative float64    `json:"relative"`
	RelCI    [2]float64 `json:"relative_ci"`
	Stat     float64    `json:"stat"`         // t or z
	DF       float64    `json:"df,omitempty"` // Welch–Satterthwaite degrees of freedom
	PValue   float64    `json:"p_value"`
}

// Welch is Welch's unequal-variance t-test of treatment against control at
// confidence level (e.g. 0.95). The relative interval uses the delta method.
func Welch(control, treatment Summary, level float64) Comparison {
	var c Comparison
	if control.N < 2 || treatment.N < 2 {
		return nan(c)
	}
	vc := control.Variance / float64(control.N)
	vt := treatment.Variance / float64(treatment.N)
	se := math.Sqrt(vc + vt)
	c.Diff = treatment.Mean - control.Mean
	c.DF = (vc + vt) * (vc + vt) / (vc*vc/float64(control.N-1) + vt*vt/float64(treatment.N-1))
	if se == 0 {
		c.Stat, c.PValue = 0, 1
		c.DiffCI = [2]float64{c.Diff, c.Diff}
	} else {
		c.Stat = c.Diff / se
		c.PValue = 2 * StudentTCDF(-math.Abs(c.Stat), c.DF)
		q := StudentTQuantile(1-(1-level)/2, c.DF)
		c.DiffCI = [2]float64{c.Diff - q*se, c.Diff + q*se}
	}
	relative(&c, control.Mean, treatment.Mean, vc, vt, level)
	return c
}

// TwoProportions is the two-proportion z-test: the p-value from the pooled
// standard error (the null hypothesis of equal rates), the interval from the
// unpooled one.
func TwoProportions(controlHits, controlN, treatmentHits, treatmentN int, level float64) Comparison {
	var c Comparison
	if controlN == 0 || treatmentN == 0 {
		return nan(c)
	}
	n1, n2 := float64(controlN), float64(treatmentN)
	p1, p2 := float64(controlHits)/n1, float64(treatmentHits)/n2
	pooled := float64(controlHits+treatmentHits) / (n1 + n2)
	c.Diff = p2 - p1
	sePooled := math.Sqrt(pooled * (1 - pooled) * (1/n1 + 1/n2))
	if sePooled == 0 {
		c.PValue = 1
	} else {
		c.Stat = c.Diff / sePooled
		c.PValue = 2 * NormalCDF(-math.Abs(c.Stat))
	}
	v1, v2 := p1*(1-p1)/n1, p2*(1-p2)/n2
	z := NormalQuantile(1 - (1-level)/2)
	se := math.Sqrt(v1 + v2)
	c.DiffCI = [2]float64{c.Diff - z*se, c.Diff + z*se}
	relative(&c, p1, p2, v1, v2, level)
	return c
}

// relative fills the relative difference t/c − 1 and its delta-method
// interval, var ≈ vt/c² + t²·vc/c⁴ (normal quantile).
func relative(c *Comparison, control, treatment, vc, vt, level float64) {
	if control == 0 {
		c.Relative, c.RelCI = math.NaN(), [2]float64{math.NaN(), math.NaN()}
		return
	}
	c.Relative = treatment/control - 1
	se := math.Sqrt(vt/(control*control) + treatment*treatment*vc/math.Pow(control, 4))
	z := NormalQuantile(1 - (1-level)/2)
	c.RelCI = [2]float64{c.Relative - z*se, c.Relative + z*se}
}

func nan(c Comparison) Comparison {
	n := math.NaN()
	return Comparison{Diff: n, DiffCI: [2]float64{n, n}, Relative: n, RelCI: [2]float64{n, n}, Stat: n, PValue: n}
}

// ChiSquareGoodnessOfFit tests observed counts against expected shares
// (normalized to sum 1): Pearson's statistic and its p-value with
// len(observed)-1 degrees of freedom. It is the sample-ratio-mismatch check.
func ChiSquareGoodnessOfFit(observed []int, shares []float64) (stat, pValue float64) {
	if len(observed) != len(shares) || len(observed) < 2 {
		return math.NaN(), math.NaN()
	}
	total, shareSum := 0.0, 0.0
	for i := range observed {
		total += float64(observed[i])
		shareSum += shares[i]
	}
	if total == 0 || shareSum == 0 {
		return 0, 1
	}
	df := -1.0
	for i := range observed {
		e := total * shares[i] / shareSum
		if e == 0 {
			continue
		}
		d := float64(observed[i]) - e
		stat += d * d / e
		df++
	}
	return stat, ChiSquareSurvival(stat, df)
}

// Quantile is the p-quantile of sorted xs by linear interpolation between
// order statistics (Hyndman and Fan's type 7, the default of R and NumPy).
func Quantile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	h := p * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// Fences are Tukey's boxplot fences Q1 − k·IQR and Q3 + k·IQR.
type Fences struct {
	Q1    float64 `json:"q1"`
	Q3    float64 `json:"q3"`
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// IQRFences computes the fences of xs (in any order) with multiplier k.
// The quartiles are Quantile's, found by selection rather than a full sort
// (a report over a million units spent most of its statistics time
// sorting).
func IQRFences(xs []float64, k float64) Fences {
	work := slices.Clone(xs)
	q1, q3 := quantilesBySelection(work, 0.25, 0.75)
	iqr := q3 - q1
	return Fences{Q1: q1, Q3: q3, Lower: q1 - k*iqr, Upper: q3 + k*iqr}
}

// quantilesBySelection is Quantile(sorted a, p) for p <= q, reordering a
// instead of sorting it: O(len(a)) on average.
func quantilesBySelection(a []float64, p, q float64) (float64, float64) {
	n := len(a)
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	// Quantile interpolates between the order statistics lo and lo+1 of
	// h = p·(n−1), lo = ⌊h⌋; orderStats finds both in a, which holds the
	// ranks from offset on.
	orderStats := func(a []float64, offset, lo int) (x, next float64) {
		x = selectRank(a, lo-offset)
		if lo >= n-1 {
			return x, x
		}
		// Selection left every element ranked above lo to its right.
		return x, minimum(a[lo-offset+1:])
	}
	hp, hq := p*float64(n-1), q*float64(n-1)
	lp, lq := int(math.Floor(hp)), int(math.Floor(hq))
	xp, nextP := orderStats(a, 0, lp)
	xq, nextQ := xp, nextP
	if lq > lp {
		xq, nextQ = orderStats(a[lp+1:], lp+1, lq)
	}
	interpolate := func(h float64, lo int, x, next float64) float64 {
		if lo >= n-1 {
			return x
		}
		return x + (h-float64(lo))*(next-x)
	}
	return interpolate(hp, lp, xp, nextP), interpolate(hq, lq, xq, nextQ)
}

// selectRank reorders a so that a[k] is the element of rank k (0-based,
// in slices.Sort's order) with nothing greater before it and nothing less
// after it, and returns it. Three-way partitioning keeps runs of equal
// values (many units with 0) linear.
func selectRank(a []float64, k int) float64 {
	lo, hi := 0, len(a) // a[lo:hi] holds rank k
	for hi-lo > 1 {
		pivot := medianOf3(a[lo], a[lo+(hi-lo)/2], a[hi-1])
		lt, i, gt := lo, lo, hi
		for i < gt {
			switch {
			case cmp.Less(a[i], pivot):
				a[lt], a[i] = a[i], a[lt]
				lt++
				i++
			case cmp.Less(pivot, a[i]):
				gt--
				a[i], a[gt] = a[gt], a[i]
			default:
				i++
			}
		}
		switch {
		case k < lt:
			hi = lt
		case k >= gt:
			lo = gt
		default:
			return a[k] // equal to the pivot
		}
	}
	return a[k]
}

func medianOf3(a, b, c float64) float64 {
	if cmp.Less(b, a) {
		a, b = b, a
	}
	if cmp.Less(c, b) {
		b = c
		if cmp.Less(b, a) {
			b = a
		}
	}
	return b
}

// minimum is the least of a (not empty) in slices.Sort's order.
func minimum(a []float64) float64 {
	m := a[0]
	for _, x := range a[1:] {
		if cmp.Less(x, m) {
			m = x
		}
	}
	return m
}

// Contains reports whether x is within the fences (inclusive).
func (f Fences) Contains(x float64) bool { return x >= f.Lower && x <= f.Upper }

// CUPEDTheta is the CUPED coefficient cov(x, y) / var(x) over all units
// pooled across arms, x being the pre-period covariate of metric y.
// Adjusting y − θ(x − mean x) removes the variance x explains without
// biasing the difference between arms.
func CUPEDTheta(x, y []float64) (theta, meanX float64) {
	if len(x) != len(y) || len(x) < 2 {
		return 0, 0
	}
	mx, my := Summarize(x).Mean, Summarize(y).Mean
	var cov, vx float64
	for i := range x {
		cov += (x[i] - mx) * (y[i] - my)
		vx += (x[i] - mx) * (x[i] - mx)
	}
	if vx == 0 {
		return 0, mx
	}
	return cov / vx, mx
}
