"""The paper's visual rating rules (section 2.6) applied to masks with known PVS counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mcpvs_bidsapp.measures import cluster_census, region_measures
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.spec import Region
from mcpvs_bidsapp.visual_scores import BG_UNCOUNTABLE, bg_score, estimate, wm_score

SHAPE = (60, 60, 40)


@pytest.mark.parametrize(
    ("count", "score"),
    [(0, 1), (4, 1), (5, 2), (10, 2), (11, 3), (BG_UNCOUNTABLE, 3), (BG_UNCOUNTABLE + 1, 4)],
)
def test_bg_rule(count, score):
    assert bg_score(count) == score


@pytest.mark.parametrize(
    ("total", "most", "score"),
    [(0, 0, 1), (9, 3, 1), (10, 1, 2), (40, 10, 2), (40, 11, 3), (40, 20, 3), (40, 21, 4)],
)
def test_wm_rule(total, most, score):
    assert wm_score(total, most) == score


def _regions() -> np.ndarray:
    dseg = np.zeros(SHAPE, np.uint8)
    dseg[5:55, 5:55, 2:38] = Region.OTHER
    dseg[10:50, 10:50, 20:36] = Region.WM
    dseg[15:45, 15:45, 5:15] = Region.BG
    return dseg


def _dots(mask: np.ndarray, k: int, n: int, x0: int = 16, y0: int = 16) -> None:
    """``n`` separate one-voxel PVS on axial section ``k`` (3 voxels apart)."""
    for i in range(n):
        mask[x0 + 3 * (i % 8), y0 + 3 * (i // 8), k] = 1


def test_counts_sections_and_scores_on_a_planted_mask():
    dseg = _regions()
    mask = np.zeros(SHAPE, np.uint8)
    _dots(mask, 8, 7)  # BG: 7 on section 8 ...
    _dots(mask, 11, 3)  # ... and 3 on section 11: a rater counts 7 -> score 2
    _dots(mask, 30, 15, x0=12, y0=12)  # WM: 15 on one section -> score 3
    mask[40, 40, 22:34] = 1  # one WM tube through 12 sections: one more cluster, 1 per section
    est = estimate(mask, dseg, np.eye(4))
    assert (est["BG"].count, est["BG"].section, est["BG"].score) == (7, 8, 2)
    assert (est["WM"].count, est["WM"].section, est["WM"].total, est["WM"].score) == (16, 30, 16, 3)


def test_no_pvs_reads_the_section_where_the_region_is_largest():
    dseg = _regions()
    dseg[15:45, 15:48, 9] = Region.BG  # section 9 holds the most BG
    est = estimate(np.zeros(SHAPE, np.uint8), dseg, np.eye(4))
    assert (est["BG"].score, est["BG"].count, est["BG"].section) == (1, 0, 9)
    assert est["WM"].score == 1 and est["WM"].total == 0


def test_sections_are_axial_whatever_the_storage_order():
    """The same head stored sagittally (voxel axis 0 = S-I, flipped) gives the same scores and
    the same RAS section numbers."""
    dseg = _regions()
    mask = np.zeros(SHAPE, np.uint8)
    _dots(mask, 8, 12)
    _dots(mask, 31, 22, x0=12, y0=12)
    axial = estimate(mask, dseg, np.eye(4))
    # stored as (S->I, A, R): voxel axis 0 is the z axis flipped, 1 is y, 2 is x
    stored = np.transpose(mask, (2, 1, 0))[::-1]
    stored_dseg = np.transpose(dseg, (2, 1, 0))[::-1]
    affine = np.array(
        [[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, SHAPE[2] - 1], [0, 0, 0, 1]], dtype=float
    )
    sagittal = estimate(stored, stored_dseg, affine)
    assert axial == sagittal
    assert (axial["BG"].count, axial["BG"].score) == (12, 3)
    assert (axial["WM"].count, axial["WM"].section, axial["WM"].score) == (22, 31, 4)


def test_measures_carry_the_estimates_and_the_group_columns_exist():
    dseg = _regions()
    mask = np.zeros(SHAPE, np.uint8)
    _dots(mask, 8, 6)
    brain = dseg > 0
    census = cluster_census(mask, dseg, np.eye(4))
    table = region_measures(mask, dseg, brain, np.eye(4), float(brain.sum()), census)
    assert list(table.columns) == list(spec.MEASURE_COLUMNS)
    rows = table.set_index("region")
    assert rows.loc["BG", "est_visual_score"] == 2 and rows.loc["BG", "est_visual_count"] == 6
    assert rows.loc["WM", "est_visual_score"] == 1
    assert pd.isna(rows.loc[spec.WHOLE_BRAIN, "est_visual_score"])
    assert set(spec.VISUAL_SCORE_COLUMNS) <= set(spec.GROUP_MEASURE_COLUMNS)


def test_weighted_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    from mcpvs_bidsapp.group.analyses.agreement import agreement, kappa_fast

    rng = np.random.default_rng(4)
    rated = rng.integers(1, 5, 60)
    est = np.clip(rated + rng.choice([-1, 0, 0, 1], 60), 1, 4)
    for weights in ("linear", "quadratic"):
        want = cohen_kappa_score(rated, est, labels=[1, 2, 3, 4], weights=weights)
        assert kappa_fast(rated, est, weights) == pytest.approx(want)
    result = agreement(rated, est)
    assert result["n"] == 60 and result["exact_pct"] == pytest.approx(100 * np.mean(rated == est))
    assert result["kappa_quadratic_ci_low"] < result["kappa_quadratic"]
    assert result["kappa_quadratic"] < result["kappa_quadratic_ci_high"]
    perfect = agreement([1, 2, 3, 4] * 3, [1, 2, 3, 4] * 3)
    assert perfect["kappa_linear"] == pytest.approx(1.0) and perfect["within_one_pct"] == 100
