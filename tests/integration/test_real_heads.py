"""The built-in method on the real report heads (issue #15), from a participant run's outputs.

The participant run itself takes ~10 min per head (Samseg regions), so these tests read the
derivatives of one made beforehand and skip without them::

    PYTHONPATH=. python benchmarks/builtin_method_real_pvs.py make-bids BIDS
    mcpvs BIDS OUT participant --participant-label philips arc --regions samseg \\
        --method vesselness -w WORK
    MCPVS_REAL_DERIVATIVES=OUT python -m pytest -q -m slow tests/integration/test_real_heads.py

Only the segmentation step is rerun here (with today's defaults), on the run's own
preprocessed T1w, brain mask and regions. Floors and bounds were measured with the defaults on
the Samseg-region outputs (docs/builtin-method.md) and sit a little below / above them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def review():
    env = os.environ.get("MCPVS_REAL_DERIVATIVES")
    if not env:
        pytest.skip("set MCPVS_REAL_DERIVATIVES to a participant run of the shared real heads")
    der = Path(env)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import builtin_method_real_pvs as rp

    def run(stem):
        if not (der / f"sub-{rp.HEADS[stem]}").is_dir():
            pytest.skip(f"no sub-{rp.HEADS[stem]} in {der}")
        return rp.review_head(stem, der)

    return run


def test_philips_finds_pvs_and_bg_pvs(review):
    r = review("philips_adni_sag3d_mprage_t1w")
    # measured with the learned cluster rule and the 2 mm edge rule: 127 clusters, 331 mm³,
    # 10 BG clusters, 80 of 90 labelled PVS-like dots, 16 of 42 labelled not-PVS dots hit
    # (hand-set rules before it: 160 clusters, 69 of 90, 16 of 42), 6 s
    assert r["clusters"] >= 30  # issue target
    assert r["bg_clusters"] > 0  # issue target
    found, total = r["labelled_pvs_found"]
    assert found / total > 0.8
    hit, not_pvs = r["labelled_not_pvs_hit"]
    assert hit / not_pvs < 0.5
    assert r["seconds"] < 60
    assert "low_load" not in r["qc_flags"] and "no_bg_pvs" not in r["qc_flags"]
    # the visual review of every cluster (benchmarks/data/cluster_review.json, 2026-12-02):
    # 62 PVS-like, 22 not, 66 unsure of 150; with the 2 mm edge rule 60 / 9 / 58 of 127. The
    # issue's target (>= 80 % PVS-like) is not met; these bounds keep it from getting worse
    rv = r["cluster_review"]
    assert rv["unreviewed"] <= 0.1 * r["clusters"]
    assert rv["pvs_like_fraction"] > 0.43
    assert rv["not_pvs"] / r["clusters"] < 0.12
    # 58 of the 127 are single voxels; 31 of the 58 "unsure" sit on a dot the separate dot
    # review labelled PVS-like: PVS-like in either review, "not" in neither, 88 of 127 (0.69)
    assert rv["single_voxel"]["clusters"] < 0.6 * r["clusters"]
    assert rv["either_pvs_like_fraction"] > 0.65


def test_stroke_head_keeps_off_the_infarct(review):
    r = review("arc2017_stroke_t1w")
    # measured with the learned cluster rule: 119 clusters, 711 mm³, 21 BG clusters (61, 591
    # mm³, 9 with fragment_z 4 and the 2 mm edge rule), 0 % within
    # 3 mm of the infarct, no cluster on the cavity wall, 12 of 13 labelled PVS-like dots
    assert r["pvs_within_3mm_of_infarct_fraction"] < 0.10  # issue target
    assert r["clusters_on_cavity_wall"] == 0  # issue target
    assert r["bg_clusters"] > 0
    found, total = r["labelled_pvs_found"]
    assert found / total > 0.8
