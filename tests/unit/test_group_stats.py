"""Each group statistic against a reference value computed independently of our code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mcpvs_bidsapp.group import stats

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
)

# McDonald, Handbook of Biological Statistics: mussel shell data, the example of
# scipy.stats.f_oneway's documentation (F = 7.121019471642447, p = 0.0002812242314534544).
MUSSELS = {
    "tillamook": [0.0571, 0.0813, 0.0831, 0.0976, 0.0817, 0.0859, 0.0735, 0.0659, 0.0923, 0.0836],
    "newport": [0.0873, 0.0662, 0.0672, 0.0819, 0.0749, 0.0649, 0.0835, 0.0725],
    "petersburg": [0.0974, 0.1352, 0.0817, 0.1016, 0.0968, 0.1064, 0.105],
    "magadan": [0.1033, 0.0915, 0.0781, 0.0685, 0.0677, 0.0697, 0.0764, 0.0689],
    "tvarminne": [0.0703, 0.1026, 0.0956, 0.0973, 0.1039, 0.1045],
}

# NIST StRD certified values for the Longley data (higher difficulty linear regression).
LONGLEY_B = {
    "GNPDEFL": 15.0618722713733,
    "GNP": -0.358191792925910e-01,
    "UNEMP": -2.02022980381683,
    "ARMED": -1.03322686717359,
    "POP": -0.511041056535807e-01,
    "YEAR": 1829.15146461355,
}
LONGLEY_R2 = 0.995479004577296


def test_icc_matches_shrout_fleiss_table():
    res = stats.icc(SHROUT_FLEISS).set_index("type")
    # published to two decimals: ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71
    assert res.loc["ICC1", "icc"] == pytest.approx(0.17, abs=0.005)
    assert res.loc["ICC2", "icc"] == pytest.approx(0.29, abs=0.005)
    assert res.loc["ICC3", "icc"] == pytest.approx(0.71, abs=0.005)
    # their mean squares: BMS 11.24, WMS 6.26, EMS 1.02 -> F = BMS/WMS and BMS/EMS
    assert res.loc["ICC1", "f"] == pytest.approx(11.24 / 6.26, rel=0.01)
    assert res.loc["ICC3", "f"] == pytest.approx(11.24 / 1.02, rel=0.01)
    assert (res["ci_low"] < res["icc"]).all() and (res["icc"] < res["ci_high"]).all()


def test_icc_of_identical_sessions_is_one_and_of_noise_near_zero():
    rng = np.random.default_rng(3)
    true = rng.normal(100, 20, 40)
    same = np.column_stack([true, true + 1e-3 * rng.normal(size=40)])
    assert stats.icc(same).set_index("type").loc["ICC3", "icc"] == pytest.approx(1, abs=1e-5)
    noise = rng.normal(size=(200, 3))
    assert abs(stats.icc(noise).set_index("type").loc["ICC2", "icc"]) < 0.1


def test_regression_reproduces_nist_longley():
    from statsmodels.datasets import longley

    data = longley.load_pandas().data
    res, notes = stats.regression(data, "TOTEMP", list(LONGLEY_B))
    res = res.set_index("term")
    for term, certified in LONGLEY_B.items():
        assert res.loc[term, "b"] == pytest.approx(certified, rel=1e-6)
    assert res["r2"].iloc[0] == pytest.approx(LONGLEY_R2, rel=1e-9)
    # standardised beta = b * sd(x) / sd(y), by definition
    for term in LONGLEY_B:
        expect = LONGLEY_B[term] * data[term].std() / data["TOTEMP"].std()
        assert res.loc[term, "beta_std"] == pytest.approx(expect, rel=1e-5)
    assert not notes


def test_regression_dummy_codes_text_covariates_and_drops_incomplete_rows():
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            "age": rng.uniform(50, 90, n),
            "hypertension": rng.choice(["no", "yes"], n),
        }
    )
    frame["y"] = 2 * frame["age"] + 30 * (frame["hypertension"] == "yes") + rng.normal(0, 5, n)
    frame.loc[3, "age"] = np.nan
    res, notes = stats.regression(frame, "y", ["age", "hypertension"])
    res = res.set_index("term")
    assert res.loc["hypertension[T.yes]", "b"] == pytest.approx(30, abs=3)
    assert res["n"].iloc[0] == n - 1
    assert any("reference level 'no'" in n for n in notes)


def test_spearman_matches_rank_formula_and_ci_brackets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    res = stats.spearman(x, y)
    d = sps.rankdata(x) - sps.rankdata(y)
    n = len(x)
    assert res["rho"] == pytest.approx(1 - 6 * (d**2).sum() / (n * (n**2 - 1)), abs=1e-12)
    assert res["ci_low"] < res["rho"] < res["ci_high"]
    assert res["p"] < 0.05


def test_anova_matches_scipy_documented_example():
    kept = {k: np.array(v) for k, v in MUSSELS.items()}
    res = stats.oneway_anova(kept)
    assert res["f"] == pytest.approx(7.121019471642447, rel=1e-9)
    assert res["p"] == pytest.approx(0.0002812242314534544, rel=1e-6)
    assert (res["df1"], res["df2"]) == (4, 34)
    assert 0 < res["eta2"] < 1
    assert res["welch_p"] < 0.05


def test_split_groups_excludes_small_groups():
    values = np.arange(13, dtype=float)
    groups = [1] * 6 + [2] * 5 + [3] * 2
    kept, dropped = stats.split_groups(values, groups, 5)
    assert sorted(kept) == [1, 2] and sorted(dropped) == [3]


def test_smm_reduces_to_t_and_normal():
    # one comparison: SMM(1, df) is |t_df|
    for c, df in [(2.0, 10), (2.0, 2.3), (9.0, 30), (40.0, 300)]:
        assert stats.smm_sf(c, 1, df) == pytest.approx(2 * sps.t.sf(c, df), rel=1e-8)
    # infinite df: k independent |Z|
    c = 2.5
    assert stats.smm_sf(c, 3, np.inf) == pytest.approx(1 - (1 - 2 * sps.norm.sf(c)) ** 3)
    assert stats.smm_ppf(0.05, 2, np.inf) == pytest.approx(
        sps.norm.ppf((1 + np.sqrt(0.95)) / 2), rel=1e-6
    )


@pytest.mark.parametrize("k,df,c", [(3, 10, 2.5), (6, 7.3, 3.2), (10, 40, 3.0)])
def test_smm_matches_scipy_multivariate_t(k, df, c):
    """SMM(k, df) box probability = multivariate t with identity scale (as PMCMRplus uses
    mvtnorm::pmvt); scipy's Genz quasi-Monte-Carlo integration is the independent reference."""
    mvt = sps.multivariate_t(loc=np.zeros(k), shape=np.eye(k), df=df)
    ref = 1 - mvt.cdf(np.full(k, c), lower_limit=np.full(k, -c), random_state=7, maxpts=200000)
    assert stats.smm_sf(c, k, df) == pytest.approx(ref, abs=5e-4)


def test_dunnett_t3_on_mussels_is_bracketed_by_welch_and_sidak():
    kept = {k: np.array(v) for k, v in MUSSELS.items()}
    res = stats.dunnett_t3(kept)
    m = len(res)
    assert m == 10
    for rec in res.itertuples():
        welch = sps.ttest_ind(kept[rec.group2], kept[rec.group1], equal_var=False)
        assert rec.t == pytest.approx(welch.statistic, rel=1e-10)
        assert rec.df == pytest.approx(welch.df, rel=1e-10)
        # Sidak's inequality: unadjusted p <= T3 p <= 1 - (1 - p)^m
        assert welch.pvalue <= rec.p_adj <= 1 - (1 - welch.pvalue) ** m + 1e-12
        # the simultaneous CI excludes 0 exactly when p < 0.05
        assert (rec.ci_low > 0 or rec.ci_high < 0) == (rec.p_adj < 0.05)


def test_tukey_outliers():
    values = np.r_[np.linspace(10, 20, 50), 100.0, np.nan]
    flags = stats.tukey_outliers(values)
    assert flags[50] and not flags[:50].any() and not flags[51]


def test_regression_unknown_vendor_rows_leave_only_the_vendor_model():
    rng = np.random.default_rng(4)
    n = 60
    frame = pd.DataFrame(
        {"age": rng.uniform(50, 90, n), "vendor": rng.choice(["GE", "Siemens", "Philips"], n)}
    )
    frame["y"] = frame["age"] + rng.normal(0, 5, n)
    frame.loc[:4, "vendor"] = np.nan
    without, _ = stats.regression(frame, "y", ["age"])
    with_vendor, _ = stats.regression(frame, "y", ["age"], "vendor")
    assert without["n"].iloc[0] == n
    assert with_vendor["n"].iloc[0] == n - 5
    assert with_vendor["term"].str.startswith("vendor[T.").sum() == 2


def test_overlap_metrics_and_empty_mask_conventions():
    from mcpvs_bidsapp.group.analyses.manual import overlap

    truth = np.zeros((4, 4, 4), bool)
    truth[0, :, :] = True  # 16 voxels
    pred = np.zeros_like(truth)
    pred[0, :2, :] = True  # 8 true positives
    pred[3, 0, :] = True  # 4 false positives
    res = overlap(pred, truth)
    assert (res["tp_voxels"], res["fp_voxels"], res["fn_voxels"]) == (8, 4, 8)
    assert res["dice"] == pytest.approx(16 / 28)
    assert res["precision"] == pytest.approx(8 / 12)
    assert res["recall"] == pytest.approx(8 / 16)
    empty = overlap(np.zeros_like(truth), np.zeros_like(truth))
    assert empty["dice"] == 1.0 and np.isnan(empty["precision"]) and np.isnan(empty["recall"])
