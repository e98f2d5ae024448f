// Package stats holds the tests an experiment report needs: Welch's t-test,
// the two-proportion z-test, Pearson's chi-square goodness of fit, boxplot
// (IQR) fences and CUPED, with the distribution functions behind them.
package stats

import (
	"math"
)

// NormalCDF is the standard normal distribution function.
func NormalCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

// NormalQuantile is the inverse of NormalCDF, for p in (0, 1).
func NormalQuantile(p float64) float64 { return -math.Sqrt2 * math.Erfcinv(2*p) }

// StudentTCDF is the distribution function of Student's t with df degrees
// of freedom (df may be fractional, as Welch's approximation gives).
func StudentTCDF(t, df float64) float64 {
	if math.IsInf(df, 1) || df > 1e7 {
		return NormalCDF(t)
	}
	x := df / (df + t*t)
	tail := 0.5 * RegularizedBeta(x, df/2, 0.5)
	if t > 0 {
		return 1 - tail
	}
	return tail
}

// StudentTQuantile inverts StudentTCDF for p in (0, 1) by bisection on a
// bracket that always holds the answer.
func StudentTQuantile(p, df float64) float64 {
	if p == 0.5 {
		return 0
	}
	lo, hi := -1.0, 1.0
	for StudentTCDF(lo, df) > p {
		lo *= 2
	}
	for StudentTCDF(hi, df) < p {
		hi *= 2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if StudentTCDF(mid, df) < p {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo < 1e-12*math.Max(1, math.Abs(mid)) {
			break
		}
	}
	return (lo + hi) / 2
}

// ChiSquareSurvival is P(X > x) for a chi-square variable with df degrees
// of freedom: the p-value of a chi-square statistic.
func ChiSquareSurvival(x, df float64) float64 {
	if x <= 0 {
		return 1
	}
	return RegularizedGammaQ(df/2, x/2)
}

// RegularizedBeta is the regularized incomplete beta function I_x(a, b),
// by its continued fraction (Lentz's method), using the symmetry
// I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges faster.
func RegularizedBeta(x, a, b float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	lga, _ := math.Lgamma(a)
	lgb, _ := math.Lgamma(b)
	lgab, _ := math.Lgamma(a + b)
	front := math.Exp(lgab - lga - lgb + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaFraction(x, a, b) / a
	}
	return 1 - front*betaFraction(1-x, b, a)/b
}

func betaFraction(x, a, b float64) float64 {
	const tiny = 1e-300
	c, d := 1.0, 1-(a+b)*x/(a+1)
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	f := d
	for m := 1; m <= 10000; m++ {
		fm := float64(m)
		// Even step.
		num := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		f *= d * c
		// Odd step.
		num = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < 1e-15 {
			break
		}
	}
	return f
}

// RegularizedGammaQ is the upper regularized incomplete gamma function
// Q(a, x) = Γ(a, x) / Γ(a): a series below x = a + 1, a continued fraction
// above.
func RegularizedGammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lga, _ := math.Lgamma(a)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 100000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-16 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+a*math.Log(x)-lga)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 100000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return math.Exp(-x+a*math.Log(x)-lga) * h
}
