"""Realistic phantoms (issue #15) and the built-in method's detection on them.

One phantom, built once: nilearn's MNI152 box of tests/unit/test_vesselness.py with a moderate
load of realistic PVS (PSF-blurred, mostly sub-millimetre, fluid 0.25-0.35 x WM) and the
cohort mimics of :data:`realistic.MIMICS` (infarct cavity with rim, lacunes, WMH, sulcal
fundi, ventricle notches), degraded with noise 0.03 and a 10 % bias field.

The floors were measured on this box with the default parameters (seeds 1 and 2; the test
uses seed 1) and are set a little below the measurement, so they catch a regression without
freezing the exact figures. Measured 2026-12-04 with today's defaults (thresholds relative
to the fluid contrast, cluster model clusters-logistic-v3; seed 1 / seed 2): PVS found 0.747 /
0.894; cluster recall 0.75 / 0.82, cluster precision 0.73 / 0.71; element recall (VALDO,
IoU > 0.1) 0.71 / 0.72; Dice 0.68 / 0.71; PVS >= 1.2 mm wide found 0.96 / 0.95; infarct and
lacune (body + 3 mm rim) share of the detected volume 0.000 / 0.000 (2026-12-03, absolute
thresholds and v2: cluster recall 0.73 / 0.82, precision 0.74 / 0.70, Dice 0.69 / 0.71). The box is
not one of the heads the cluster model was fitted on. Without the rule (same candidates,
seed 1): cluster recall 0.82 but precision 0.40, Dice 0.63. Before it (hand-set seeds 4 / 3
noise SDs, seed 1, 2026-12-02): found 0.835, cluster R / P 0.80 / 0.63, Dice 0.71.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcpvs_bidsapp import metrics, vesselness


@pytest.fixture(scope="module")
def realistic_box(realistic_mni_box, realistic_mni_default):
    ph, _, _ = realistic_mni_box
    _, mask, used = realistic_mni_default
    return ph, mask, used


def test_truth_is_faint_like_real_pvs(realistic_box):
    """The truth voxels' median intensity is ~0.75 x local WM (real heads: darkest voxel
    0.57-0.80, half-dip core 0.76-0.86 of the local tissue), not the 0.3 of fluid-dark tubes."""
    ph, _, _ = realistic_box
    truth = ph.truth_mask > 0
    assert truth.sum() > 300
    ratio = np.median(ph.image[truth] / ph.local_tissue[truth])
    assert 0.65 < ratio < 0.85
    assert 1.2 <= ph.psf_fwhm_mm <= 1.6
    rows = ph.table()
    assert len(rows) == len(ph.pvs) > 20
    annotated = [r for r in rows if r["in_truth"] and r["n_truth_voxels"]]
    diam = np.array([2 * r["radius_mm"] for r in annotated])
    assert np.all((diam >= 0.6) & (diam <= 3.0))
    assert np.mean(diam < 1.6) > 0.5  # most PVS sub-millimetre in radius
    assert {r["kind"] for r in rows} == {"dot", "tube"}
    assert {"infarct", "lacune", "wmh"} <= set(ph.mimics)
    assert all(ph.mimics[k].any() for k in ph.mimics)
    assert ph.mimic_rims["infarct"].any()


def test_method_finds_most_realistic_pvs(realistic_box):
    ph, mask, used = realistic_box
    assert used["variant"] == "contrast"
    m = metrics.compare_masks(mask, ph.truth_mask, ph.regions)["all"]
    e = metrics.element_metrics(mask, ph.truth_mask, ignore=ph.ignore_mask)
    annotated = [p for p in ph.pvs if p.in_truth and p.n_truth_voxels]
    found = np.array([(mask[ph.pvs_id == p.id] > 0).any() for p in annotated])
    wide = np.array([2 * p.radius_mm >= 1.2 for p in annotated])
    assert found.mean() > 0.7  # measured 0.747
    assert m["cluster_recall"] > 0.7  # 0.75
    assert m["cluster_precision"] > 0.6  # 0.73
    assert e["element_recall"] > 0.68  # 0.71
    assert m["dice"] > 0.63  # 0.68
    assert wide.sum() > 10 and found[wide].mean() >= 0.85  # 0.96 (issue: >= 0.8)


def test_learned_cluster_rule_trades_little_recall_for_much_precision(
    realistic_box, realistic_mni_box
):
    """On a head it was not fitted on: without the rule the same candidates hold 2-3 noise
    blobs per PVS (measured 2026-12-03 R / P 0.82 / 0.40, Dice 0.63); with it 0.75 / 0.73, 0.68."""
    ph, mask, used = realistic_box
    _, img, aff = realistic_mni_box
    _, off, _ = vesselness.segment_pvs(
        img, ph.regions, (1, 1, 1), affine=aff, params={"cluster_model": ""}
    )
    on_m = metrics.compare_masks(mask, ph.truth_mask, ph.regions)["all"]
    off_m = metrics.compare_masks(off, ph.truth_mask, ph.regions)["all"]
    assert used["cluster_model"] and used["measured"]["cluster_model_sha256"]
    assert used["measured"]["cluster_model_kept"] < used["measured"]["cluster_candidates"]
    assert on_m["cluster_precision"] > off_m["cluster_precision"] + 0.25
    assert on_m["cluster_recall"] > off_m["cluster_recall"] - 0.15
    assert on_m["dice"] > off_m["dice"] + 0.05


def test_lesion_mimics_are_not_pvs(realistic_box):
    """Infarct cavity and lacunes (body + rim) hold under 5 % of the detected volume, and
    under 5 % of their rim is called PVS (issue target; measured 0.000)."""
    ph, mask, _ = realistic_box
    pred = mask > 0
    assert pred.sum() > 100
    for k in ("infarct", "lacune"):
        zone = ph.mimics[k] | ph.mimic_rims[k]
        assert (pred & zone).sum() / pred.sum() < 0.05, k
        assert (pred & ph.mimic_rims[k]).sum() / ph.mimic_rims[k].sum() < 0.05, k
