# Computes reference values for the stats package's tests with SciPy and
# NumPy (Debian's python3-scipy): python3 reference.py > reference.json
import json
import numpy as np
from scipy import stats

rng = np.random.default_rng(20261121)
out = {"scipy": __import__("scipy").__version__, "numpy": np.__version__}

out["t_cdf"] = [[t, df, stats.t.cdf(t, df)] for t, df in
                [(-3.2, 4.5), (-1.0, 1.0), (0.3, 2.0), (1.96, 30.0), (2.5, 123.4), (-0.01, 1e5), (6.0, 3.0)]]
out["t_ppf"] = [[p, df, stats.t.ppf(p, df)] for p, df in
                [(0.975, 1.0), (0.975, 5.5), (0.975, 40.0), (0.995, 12.0), (0.025, 7.0)]]
out["chi2_sf"] = [[x, df, stats.chi2.sf(x, df)] for x, df in
                  [(0.5, 1), (3.84, 1), (10.0, 3), (37.7, 15), (250.0, 200), (1e-3, 2)]]

welch = []
for n1, n2, m1, m2, s1, s2 in [(40, 55, 10.0, 11.0, 3.0, 5.0), (200, 180, 0.5, 0.52, 0.2, 0.25), (8, 12, 100.0, 90.0, 30.0, 10.0)]:
    a = rng.normal(m1, s1, n1).round(6)
    b = rng.normal(m2, s2, n2).round(6)
    r = stats.ttest_ind(b, a, equal_var=False)
    va, vb = a.var(ddof=1) / n1, b.var(ddof=1) / n2
    df = (va + vb) ** 2 / (va ** 2 / (n1 - 1) + vb ** 2 / (n2 - 1))
    q = stats.t.ppf(0.975, df)
    d = b.mean() - a.mean()
    se = np.sqrt(va + vb)
    welch.append({"control": a.tolist(), "treatment": b.tolist(), "t": r.statistic, "p": r.pvalue,
                  "df": df, "ci": [d - q * se, d + q * se]})
out["welch"] = welch

z = []
for x1, n1, x2, n2 in [(120, 1000, 150, 1000), (45, 380, 60, 410), (5000, 100000, 5210, 100500)]:
    p1, p2 = x1 / n1, x2 / n2
    p = (x1 + x2) / (n1 + n2)
    stat = (p2 - p1) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    q = stats.norm.ppf(0.975)
    z.append({"x1": x1, "n1": n1, "x2": x2, "n2": n2, "z": stat, "p": 2 * stats.norm.sf(abs(stat)),
              "ci": [p2 - p1 - q * se, p2 - p1 + q * se]})
out["ztest"] = z

chi = []
for obs, shares in [([5000, 5100], [0.5, 0.5]), ([4800, 5200], [0.5, 0.5]), ([3300, 3350, 3500], [1, 1, 1]), ([980, 9020], [0.1, 0.9])]:
    total = sum(obs)
    exp = [total * s / sum(shares) for s in shares]
    r = stats.chisquare(obs, exp)
    chi.append({"observed": obs, "shares": shares, "stat": r.statistic, "p": r.pvalue})
out["chisquare"] = chi

iqr = []
for n in [7, 10, 101]:
    xs = np.concatenate([rng.lognormal(1, 0.6, n), [250.0]]).round(6)
    q1, q3 = np.percentile(xs, [25, 75])
    iqr.append({"values": xs.tolist(), "q1": q1, "q3": q3, "lower": q1 - 1.5 * (q3 - q1), "upper": q3 + 1.5 * (q3 - q1)})
out["iqr"] = iqr

x = rng.normal(50, 10, 300).round(6)
y = (0.8 * x + rng.normal(0, 5, 300)).round(6)
c = np.cov(x, y, ddof=1)
out["cuped"] = {"x": x.tolist(), "y": y.tolist(), "theta": c[0, 1] / c[0, 0]}

print(json.dumps(out))
