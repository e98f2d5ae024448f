package stats

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

// reference holds values computed with SciPy and NumPy by
// testdata/reference.py (see that file for how to regenerate them).
type reference struct {
	TCDF   [][3]float64 `json:"t_cdf"`
	TPPF   [][3]float64 `json:"t_ppf"`
	Chi2SF [][3]float64 `json:"chi2_sf"`
	Welch  []struct {
		Control, Treatment []float64
		T, P, DF           float64
		CI                 [2]float64
	} `json:"welch"`
	ZTest []struct {
		X1, N1, X2, N2 int
		Z, P           float64
		CI             [2]float64
	} `json:"ztest"`
	ChiSquare []struct {
		Observed []int
		Shares   []float64
		Stat, P  float64
	} `json:"chisquare"`
	IQR []struct {
		Values               []float64
		Q1, Q3, Lower, Upper float64
	} `json:"iqr"`
	CUPED struct {
		X, Y  []float64
		Theta float64
	} `json:"cuped"`
}

func loadReference(t *testing.T) reference {
	t.Helper()
	b, err := os.ReadFile("testdata/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.IsNaN(got) || math.Abs(got-want) > tol*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g", what, got, want)
	}
}

func TestDistributionsAgainstSciPy(t *testing.T) {
	r := loadReference(t)
	for _, c := range r.TCDF {
		near(t, "StudentTCDF", StudentTCDF(c[0], c[1]), c[2], 1e-9)
	}
	for _, c := range r.TPPF {
		near(t, "StudentTQuantile", StudentTQuantile(c[0], c[1]), c[2], 1e-8)
	}
	for _, c := range r.Chi2SF {
		near(t, "ChiSquareSurvival", ChiSquareSurvival(c[0], c[1]), c[2], 1e-9)
	}
}

func TestWelchAgainstSciPy(t *testing.T) {
	for i, c := range loadReference(t).Welch {
		got := Welch(Summarize(c.Control), Summarize(c.Treatment), 0.95)
		near(t, "t", got.Stat, c.T, 1e-9)
		near(t, "p", got.PValue, c.P, 1e-9)
		near(t, "df", got.DF, c.DF, 1e-9)
		near(t, "ci low", got.DiffCI[0], c.CI[0], 1e-8)
		near(t, "ci high", got.DiffCI[1], c.CI[1], 1e-8)
		if t.Failed() {
			t.Fatalf("case %d", i)
		}
	}
}

func TestTwoProportionsAgainstSciPy(t *testing.T) {
	for _, c := range loadReference(t).ZTest {
		got := TwoProportions(c.X1, c.N1, c.X2, c.N2, 0.95)
		near(t, "z", got.Stat, c.Z, 1e-9)
		near(t, "p", got.PValue, c.P, 1e-9)
		near(t, "ci low", got.DiffCI[0], c.CI[0], 1e-9)
		near(t, "ci high", got.DiffCI[1], c.CI[1], 1e-9)
	}
}

func TestChiSquareAgainstSciPy(t *testing.T) {
	for _, c := range loadReference(t).ChiSquare {
		stat, p := ChiSquareGoodnessOfFit(c.Observed, c.Shares)
		near(t, "chi-square", stat, c.Stat, 1e-9)
		near(t, "p", p, c.P, 1e-9)
	}
}

func TestIQRFencesAgainstNumPy(t *testing.T) {
	for _, c := range loadReference(t).IQR {
		f := IQRFences(c.Values, 1.5)
		near(t, "q1", f.Q1, c.Q1, 1e-12)
		near(t, "q3", f.Q3, c.Q3, 1e-12)
		near(t, "lower", f.Lower, c.Lower, 1e-12)
		near(t, "upper", f.Upper, c.Upper, 1e-12)
		if f.Contains(250) {
			t.Errorf("the injected outlier 250 is inside %+v", f)
		}
	}
}

func TestCUPEDThetaAgainstNumPy(t *testing.T) {
	c := loadReference(t).CUPED
	theta, _ := CUPEDTheta(c.X, c.Y)
	near(t, "theta", theta, c.Theta, 1e-12)
}

func TestEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		got  Comparison
		nan  bool
		p    float64
	}{
		{"welch one unit", Welch(Summary{N: 1, Mean: 3}, Summary{N: 5, Mean: 2, Variance: 1}, 0.95), true, 0},
		{"welch zero variance", Welch(Summary{N: 3, Mean: 2}, Summary{N: 3, Mean: 2}, 0.95), false, 1},
		{"z no units", TwoProportions(0, 0, 1, 10, 0.95), true, 0},
		{"z all convert", TwoProportions(10, 10, 20, 20, 0.95), false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.nan != math.IsNaN(tc.got.PValue) || (!tc.nan && tc.got.PValue != tc.p) {
				t.Errorf("p = %v, want nan=%v p=%v", tc.got.PValue, tc.nan, tc.p)
			}
		})
	}
	if s, p := ChiSquareGoodnessOfFit([]int{0, 0}, []float64{1, 1}); s != 0 || p != 1 {
		t.Errorf("chi-square of nothing = %v, %v", s, p)
	}
	if q := Quantile([]float64{5}, 0.25); q != 5 {
		t.Errorf("quantile of one value = %v", q)
	}
}
