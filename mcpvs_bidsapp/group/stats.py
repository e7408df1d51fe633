"""The paper's group statistics (Huang et al. 2024, sections 2.6-2.9).

Library-backed where a maintained implementation exists: OLS from statsmodels, Spearman and
Pearson from scipy, one-way and Welch ANOVA from statsmodels. Two pieces are written here,
each validated in tests/unit/test_group_stats.py against independent reference values:

* Dunnett's T3 (Dunnett 1980): no library in our environment has it (scikit-posthocs has
  Tamhane T2 but not T3; statsmodels 0.15 has none; scipy.stats.dunnett is many-to-one with
  equal variances). It needs the studentized maximum modulus (SMM) distribution, which we get
  by one-dimensional numerical integration with scipy (the same quantity R's PMCMRplus gets
  from mvtnorm::pmvt with an identity correlation matrix).
* Intra-class correlations (Shrout & Fleiss 1979; CIs from McGraw & Wong 1996): pingouin
  has them, but every pingouin release that supports pandas 3 needs numpy >= 2.2, which our
  pins (numpy 1.26 for Samseg/antspyx) rule out. They are closed-form functions of the
  two-way ANOVA mean squares.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats

ALPHA = 0.05
_SMM_GRID = 4001  # odd, for Simpson's rule


# --------------------------------------------------------------------------- regression
def _design(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Numeric design matrix: numeric columns as they are, text/boolean columns as
    0/1 dummies against their first (sorted) level, so "yes/no" covariates work."""
    parts, notes = [], []
    for col in columns:
        values = frame[col]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum() and values.notna().any():
            parts.append(numeric.rename(col).astype(float))
            continue
        levels = sorted(values.dropna().astype(str).unique())
        if len(levels) < 2:
            notes.append(f"{col}: fewer than two levels, left out")
            continue
        for level in levels[1:]:
            dummy = (values.astype(str) == level).astype(float)
            dummy[values.isna()] = np.nan
            parts.append(dummy.rename(f"{col}[T.{level}]"))
        notes.append(f"{col}: categorical, reference level {levels[0]!r}")
    design = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)
    return design, notes


def _zscore(frame: pd.DataFrame) -> pd.DataFrame:
    return (frame - frame.mean()) / frame.std(ddof=1)


def regression(
    frame: pd.DataFrame,
    outcome: str,
    covariates: list[str],
    vendor: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Multiple linear regression of ``outcome`` on ``covariates`` (+ vendor dummies).

    Standardised beta = OLS coefficients after z-scoring the outcome and every predictor
    (dummies included), as SPSS reports them (the paper's Table 3); the unstandardised
    coefficients come from a second fit on the raw scale. Rows with a missing value in any
    variable of the model are left out (listwise), and ``n`` says how many remained.
    """
    import statsmodels.api as sm  # imported here: statsmodels is slow to import

    columns = list(covariates) + ([vendor] if vendor else [])
    x, notes = _design(frame, columns)
    if vendor:
        # reference vendor = the most frequent one, so the dummies read "vs the usual scanner";
        counts = frame[vendor].value_counts()
        dummies = [c for c in x.columns if c.startswith(f"{vendor}[T.")]
        levels = sorted(frame[vendor].dropna().astype(str).unique())
        # ties broken alphabetically, so the reference does not depend on row order
        ref = str(sorted(counts[counts == counts.max()].index)[0]) if len(counts) else None
        if ref is not None and ref != levels[0] and len(levels) > 1:
            x = x.drop(columns=dummies)
            for level in levels:
                if level != ref:
                    dummy = (frame[vendor].astype(str) == level).astype(float)
                    dummy[frame[vendor].isna()] = np.nan
                    x[f"{vendor}[T.{level}]"] = dummy
            notes = [n for n in notes if not n.startswith(f"{vendor}:")]
            notes.append(f"{vendor}: categorical, reference level {ref!r}")
    y = pd.to_numeric(frame[outcome], errors="coerce").rename(outcome)
    data = pd.concat([y, x], axis=1).dropna()
    constant = [c for c in x.columns if data[c].std(ddof=1) == 0 or data[c].nunique() < 2]
    if constant:
        notes.append(f"constant in the complete cases, left out: {', '.join(constant)}")
        data = data.drop(columns=constant)
    terms = [c for c in data.columns if c != outcome]
    n = len(data)
    if not terms or n < len(terms) + 3:
        notes.append(f"{outcome}: {n} complete cases for {len(terms)} predictors; not fitted")
        return pd.DataFrame(), notes
    exog = sm.add_constant(data[terms], has_constant="add")
    if np.linalg.matrix_rank(exog.to_numpy()) < exog.shape[1]:
        notes.append(
            f"{outcome}: predictors are collinear ({', '.join(terms)}; e.g. a covariate that "
            "duplicates the vendor); not fitted"
        )
        return pd.DataFrame(), notes
    raw = sm.OLS(data[outcome], exog).fit()
    zdata = _zscore(data)
    std = sm.OLS(zdata[outcome], sm.add_constant(zdata[terms], has_constant="add")).fit()
    ci_std = std.conf_int(ALPHA)
    ci_raw = raw.conf_int(ALPHA)
    rows = []
    for term in terms:
        rows.append(
            {
                "term": term,
                "beta_std": std.params[term],
                "beta_std_ci_low": ci_std.loc[term, 0],
                "beta_std_ci_high": ci_std.loc[term, 1],
                "b": raw.params[term],
                "b_ci_low": ci_raw.loc[term, 0],
                "b_ci_high": ci_raw.loc[term, 1],
                "se": raw.bse[term],
                "t": raw.tvalues[term],
                "p": raw.pvalues[term],
            }
        )
    out = pd.DataFrame(rows)
    out.insert(0, "outcome", outcome)
    out["n"] = n
    out["r2"] = raw.rsquared
    out["r2_adj"] = raw.rsquared_adj
    out["f"] = raw.fvalue
    out["f_p"] = raw.f_pvalue
    return out, notes


# --------------------------------------------------------------------------- correlation
def _paired_finite(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite (complete-case analysis)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def spearman(x, y) -> dict:
    """Spearman's rho (scipy) with a 95 % CI from Fisher's z and the Bonett & Wright (2000)
    standard error sqrt((1 + rho^2 / 2) / (n - 3))."""
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n, "rho": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    res = stats.spearmanr(x, y)
    rho = float(res.statistic)
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    half = stats.norm.ppf(1 - ALPHA / 2) * math.sqrt((1 + rho**2 / 2) / (n - 3))
    return {
        "n": n,
        "rho": rho,
        "ci_low": math.tanh(z - half),
        "ci_high": math.tanh(z + half),
        "p": float(res.pvalue),
    }


def pearson(x, y) -> dict:
    """Pearson's r with scipy's Fisher-z CI (volume agreement, the paper's Fig. 1)."""
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n, "r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(1 - ALPHA)
    return {
        "n": n,
        "r": float(res.statistic),
        "ci_low": ci.low,
        "ci_high": ci.high,
        "p": float(res.pvalue),
    }


# --------------------------------------------------------------------------- ANOVA
def split_groups(values, groups, min_group_size: int) -> tuple[dict, dict]:
    """Finite values per group; groups smaller than ``min_group_size`` set apart (paper: 5)."""
    frame = pd.DataFrame({"v": np.asarray(values, float), "g": np.asarray(groups, object)})
    frame = frame[np.isfinite(frame["v"]) & frame["g"].notna()]
    kept, dropped = {}, {}
    for level, sub in frame.groupby("g", sort=True):
        (kept if len(sub) >= min_group_size else dropped)[level] = sub["v"].to_numpy()
    return kept, dropped


def oneway_anova(kept: dict) -> dict:
    """Classic one-way ANOVA and Welch's ANOVA (statsmodels ``anova_oneway``), with eta^2."""
    from statsmodels.stats.oneway import anova_oneway

    samples = list(kept.values())
    if len(samples) < 2:
        return {}
    classic = anova_oneway(samples, use_var="equal")
    welch = anova_oneway(samples, use_var="unequal")
    allv = np.concatenate(samples)
    grand = allv.mean()
    ss_between = sum(len(s) * (s.mean() - grand) ** 2 for s in samples)
    ss_total = ((allv - grand) ** 2).sum()
    return {
        "n": int(allv.size),
        "k": len(samples),
        "f": float(classic.statistic),
        "df1": float(classic.df_num),
        "df2": float(classic.df_denom),
        "p": float(classic.pvalue),
        "eta2": float(ss_between / ss_total) if ss_total > 0 else math.nan,
        "welch_f": float(welch.statistic),
        "welch_df2": float(welch.df_denom),
        "welch_p": float(welch.pvalue),
    }


# --------------------------------------------------------------------------- Dunnett's T3
def smm_sf(c: float, k: int, df: float) -> float:
    """P(M > c) for the studentized maximum modulus M = max_i |Z_i| / S of ``k`` independent
    standard normals over one S = sqrt(chi^2_df / df) ("SMM(k, df)").

    P(M > c) = integral over s of (1 - [2 Phi(c s) - 1]^k) f_S(s) ds, evaluated with the
    composite Simpson rule on a fine log-s grid (vectorised: adaptive ``quad`` per p-value
    made a 1,000-participant cohort take minutes). The survival form is integrated directly
    (-expm1(k log1p(-2 Phi(-c s)))) so that small p-values keep their relative accuracy.
    """
    if c <= 0:
        return 1.0
    if not np.isfinite(df) or df > 1e6:
        return float(-np.expm1(k * np.log1p(-2 * special.ndtr(-c))))
    s_lo = 1e-8
    s_hi = math.sqrt(stats.chi2.isf(1e-17, df) / df) * 1.05
    logs = np.linspace(math.log(s_lo), math.log(s_hi), _SMM_GRID)
    s = np.exp(logs)
    log_f = (
        math.log(2.0)
        + (df / 2) * math.log(df / 2)
        - special.gammaln(df / 2)
        + (df - 1) * logs
        - df * s**2 / 2
    )
    tail = -np.expm1(k * np.log1p(-2 * special.ndtr(-c * s)))
    # ds = s d(log s); below s_lo the tail is 1, so add P(S < s_lo) exactly
    value = integrate.simpson(tail * np.exp(log_f + logs), x=logs)
    value += stats.chi2.cdf(df * s_lo**2, df)
    return float(min(max(value, 0.0), 1.0))


def smm_ppf(alpha: float, k: int, df: float) -> float:
    """Critical value c with P(M > c) = alpha."""
    return float(optimize.brentq(lambda c: smm_sf(c, k, df) - alpha, 1e-6, 100.0, xtol=1e-8))


def dunnett_t3(kept: dict, alpha: float = ALPHA) -> pd.DataFrame:
    """All pairs of groups: Welch t with Satterthwaite df, p and simultaneous CI from
    SMM(m, df_ij) with m = k(k-1)/2 comparisons (Dunnett 1980)."""
    levels = list(kept)
    m = len(levels) * (len(levels) - 1) // 2
    rows = []
    for a, b in combinations(levels, 2):
        xa, xb = kept[a], kept[b]
        na, nb = len(xa), len(xb)
        va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
        se = math.sqrt(va + vb)
        diff = xb.mean() - xa.mean()
        if se == 0:
            t, df, p, crit = math.nan, math.nan, math.nan, math.nan
        else:
            t = diff / se
            df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
            p = smm_sf(abs(t), m, df)
            crit = smm_ppf(alpha, m, df)
        pooled = math.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
        rows.append(
            {
                "group1": a,
                "group2": b,
                "n1": na,
                "n2": nb,
                "mean1": xa.mean(),
                "mean2": xb.mean(),
                "diff": diff,
                "ci_low": diff - crit * se,
                "ci_high": diff + crit * se,
                "hedges_g": (diff / pooled) * (1 - 3 / (4 * (na + nb) - 9)) if pooled else math.nan,
                "se": se,
                "t": t,
                "df": df,
                "p_adj": p,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- ICC
def icc(matrix) -> pd.DataFrame:
    """ICC(1,1), ICC(2,1), ICC(3,1) of an n targets x k measurements matrix (no missing).

    Shrout & Fleiss (1979) definitions from the two-way ANOVA mean squares; F tests against
    ICC = 0; 95 % CIs from Shrout & Fleiss (ICC1, ICC3) and McGraw & Wong (1996, ICC2).
    """
    x = np.asarray(matrix, float)
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("ICC needs at least two targets and two measurements")
    with np.errstate(divide="ignore", invalid="ignore"):  # perfect agreement: inf F, nan CI
        return _icc(x, n, k)


def _icc(x: np.ndarray, n: int, k: int) -> pd.DataFrame:
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((x - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    msc = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    msw = (ss_cols + ss_err) / (n * (k - 1))
    q = 1 - ALPHA / 2
    rows = []

    # ICC(1,1): one-way random
    icc1 = (msr - msw) / (msr + (k - 1) * msw)
    f1, d1, d2 = msr / msw, n - 1, n * (k - 1)
    fl, fu = f1 / stats.f.ppf(q, d1, d2), f1 * stats.f.ppf(q, d2, d1)
    rows.append(
        (
            "ICC1",
            "one-way random, single measurement",
            icc1,
            f1,
            d1,
            d2,
            stats.f.sf(f1, d1, d2),
            (fl - 1) / (fl + k - 1),
            (fu - 1) / (fu + k - 1),
        )
    )

    # ICC(2,1): two-way random, absolute agreement
    icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    f2, d1, d2 = msr / mse, n - 1, (n - 1) * (k - 1)
    a = k * icc2 / (n * (1 - icc2))
    b = 1 + k * icc2 * (n - 1) / (n * (1 - icc2))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / d2)
    fl, fu = stats.f.ppf(q, n - 1, v), stats.f.ppf(q, v, n - 1)
    lo2 = n * (msr - fl * mse) / (fl * (k * msc + (k * n - k - n) * mse) + n * msr)
    hi2 = n * (fu * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fu * msr)
    rows.append(
        (
            "ICC2",
            "two-way random, absolute agreement, single measurement",
            icc2,
            f2,
            d1,
            d2,
            stats.f.sf(f2, d1, d2),
            lo2,
            hi2,
        )
    )

    # ICC(3,1): two-way mixed, consistency
    icc3 = (msr - mse) / (msr + (k - 1) * mse)
    fl, fu = f2 / stats.f.ppf(q, d1, d2), f2 * stats.f.ppf(q, d2, d1)
    rows.append(
        (
            "ICC3",
            "two-way mixed, consistency, single measurement",
            icc3,
            f2,
            d1,
            d2,
            stats.f.sf(f2, d1, d2),
            (fl - 1) / (fl + k - 1),
            (fu - 1) / (fu + k - 1),
        )
    )
    out = pd.DataFrame(
        rows, columns=["type", "description", "icc", "f", "df1", "df2", "p", "ci_low", "ci_high"]
    )
    out["n_targets"] = n
    out["n_measurements"] = k
    return out


# --------------------------------------------------------------------------- outliers
def tukey_outliers(values, factor: float = 1.5) -> np.ndarray:
    """Boolean mask of values outside [Q1 - factor IQR, Q3 + factor IQR] (Tukey fences)."""
    v = np.asarray(values, float)
    finite = v[np.isfinite(v)]
    if finite.size < 4:
        return np.zeros(v.shape, bool)
    q1, q3 = np.percentile(finite, [25, 75])
    iqr = q3 - q1
    with np.errstate(invalid="ignore"):
        return (v < q1 - factor * iqr) | (v > q3 + factor * iqr)
