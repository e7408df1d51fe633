"""Metrics on masks whose overlap is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcpvs_bidsapp import metrics


def _two_cubes():
    truth = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(truth)
    truth[2:6, 2:6, 2:6] = True  # 64 voxels
    pred[4:8, 2:6, 2:6] = True  # 64 voxels, 32 shared
    return pred, truth


def test_voxel_metrics_known_overlap():
    pred, truth = _two_cubes()
    assert metrics.dice(pred, truth) == pytest.approx(0.5)
    assert metrics.precision(pred, truth) == pytest.approx(0.5)
    assert metrics.recall(pred, truth) == pytest.approx(0.5)
    pred2 = pred.copy()
    pred2[10:12, 10:12, 10:12] = True  # +8 false-positive voxels
    assert metrics.precision(pred2, truth) == pytest.approx(32 / 72)
    assert metrics.recall(pred2, truth) == pytest.approx(0.5)


def test_volume_difference_uses_voxel_size():
    pred, truth = _two_cubes()
    pred[10:12, 10:12, 10:12] = True  # 72 vs 64 voxels
    absd, rel = metrics.volume_difference(pred, truth, zooms=(0.5, 1.0, 2.0))
    assert absd == pytest.approx(8 * 1.0)
    assert rel == pytest.approx(8 / 64)


def test_empty_mask_conventions():
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    assert metrics.dice(z, z) == 1.0
    assert metrics.dice(one, z) == 0.0
    assert math.isnan(metrics.precision(z, one))
    assert math.isnan(metrics.recall(one, z))
    assert math.isnan(metrics.volume_difference(one, z)[1])
    cd = metrics.cluster_detection(z, z)
    assert cd["cluster_f1"] == 1.0
    cd = metrics.cluster_detection(one, z)
    assert cd["cluster_precision"] == 0.0 and cd["cluster_f1"] == 0.0


def test_cluster_detection_26_connectivity():
    truth = np.zeros((30, 30, 30), bool)
    # three true clusters; the first is a diagonal line (one cluster only with 26-connectivity)
    for i in range(5):
        truth[2 + i, 2 + i, 2 + i] = True
    truth[15:17, 15:17, 15:17] = True
    truth[25, 25, 25] = True
    pred = np.zeros_like(truth)
    pred[4, 4, 4] = True  # hits the diagonal cluster
    pred[16, 16, 16] = True  # hits the cube
    pred[10, 25, 3] = True  # false positive
    cd = metrics.cluster_detection(pred, truth)
    assert cd["n_true_clusters"] == 3
    assert cd["n_pred_clusters"] == 3
    assert cd["cluster_recall"] == pytest.approx(2 / 3)
    assert cd["cluster_precision"] == pytest.approx(2 / 3)
    assert cd["cluster_f1"] == pytest.approx(2 / 3)


def test_compare_masks_per_region():
    pred, truth = _two_cubes()
    regions = np.zeros(pred.shape, np.uint8)
    regions[:, :10] = 1  # BG holds both cubes
    regions[:, 10:] = 2  # WM: empty in both
    out = metrics.compare_masks(pred, truth, regions, zooms=(1, 1, 1))
    assert set(out) == {"all", "BG", "WM"}
    assert out["BG"]["dice"] == pytest.approx(0.5)
    assert out["WM"]["dice"] == 1.0  # both empty there
    assert out["all"]["true_volume_mm3"] == 64.0
    with pytest.raises(ValueError, match="shape"):
        metrics.compare_masks(pred, truth[:-1])


def test_element_metrics_valdo_rule():
    """26-connected elements, matched one-to-one only when IoU > 0.1."""
    from mcpvs_bidsapp.metrics import element_metrics

    truth = np.zeros((24, 24, 24), bool)
    truth[2:4, 2:4, 2:10] = True  # A: 32 voxels
    truth[10:12, 10:12, 2:10] = True  # B: 32 voxels
    truth[16, 16, 2:10] = True  # C and D: two tubes side by side, 8 voxels each
    truth[16, 19, 2:10] = True
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 2:9] = True  # A found (IoU 28/32)
    pred[10, 10, 2:4] = True  # touches B, IoU 2/32 < 0.1: not a match
    pred[16:17, 16:20, 2:10] = True  # one blob over C and D: matches one of them only
    pred[22, 2, 2] = True  # a false positive, touching nothing
    got = element_metrics(pred, truth)
    assert (got["n_pred_elements"], got["n_true_elements"]) == (4, 4)
    assert (got["element_tp"], got["element_fp"], got["element_fn"]) == (2, 2, 2)
    assert got["element_precision"] == 0.5 and got["element_recall"] == 0.5
    assert got["element_f1"] == 0.5
    # diagonal neighbours are one element (26-connectivity)
    diag = np.zeros_like(truth)
    diag[5, 5, 5] = diag[6, 6, 6] = True
    assert element_metrics(diag, diag)["n_true_elements"] == 1
    # a stricter threshold drops the blob's match (IoU 8/32 = 0.25)
    assert element_metrics(pred, truth, iou_threshold=0.3)["element_tp"] == 1
    # empty conventions
    empty = np.zeros_like(truth)
    assert element_metrics(empty, empty)["element_f1"] == 1.0
    missed = element_metrics(empty, truth)
    assert missed["element_f1"] == 0.0 and np.isnan(missed["element_precision"])


def test_element_metrics_iou_rule_and_one_to_one():
    """VALDO rule: IoU > 0.1, one-to-one; differs from 'any overlap' where it should."""
    truth = np.zeros((40, 40, 40), bool)
    pred = np.zeros_like(truth)
    truth[2:4, 2:4, 2:12] = True  # A: 40 voxels, predicted well
    pred[2:4, 2:4, 3:12] = True  # IoU 36/40
    truth[20:28, 20:28, 20:28] = True  # B: 512 voxels, grazed by one voxel only
    pred[27, 27, 27] = True  # any-overlap: found; IoU 1/512: not found
    # C and D: two true dots bridged by one predicted band -> one match only
    truth[10, 30, 5:7] = True
    truth[10, 30, 9:11] = True
    pred[10, 30, 5:11] = True  # IoU with each: 2/6 > 0.1, but one-to-one
    pred[35, 35, 35] = True  # plain false positive
    em = metrics.element_metrics(pred, truth)
    assert em["n_true_elements"] == 4 and em["n_pred_elements"] == 4
    assert em["element_tp"] == 2  # A and one of C/D
    assert em["element_fn"] == 2  # B and the other of C/D
    assert em["element_fp"] == 2  # the graze and the lone voxel
    assert em["element_recall"] == pytest.approx(0.5)
    assert em["element_precision"] == pytest.approx(0.5)
    # elements in label (scan) order: A, C, D, B
    assert em["true_sizes"].tolist() == [40, 2, 2, 512]
    assert em["true_matched"].tolist() in ([True, True, False, False], [True, False, True, False])
    assert em["true_iou"][0] == pytest.approx(36 / 40)
    # the any-overlap rule is more lenient on the same masks
    cd = metrics.cluster_detection(pred, truth)
    assert cd["cluster_recall"] == pytest.approx(1.0)
    # a higher IoU threshold drops the C/D match (IoU 1/3)
    assert metrics.element_metrics(pred, truth, iou_threshold=0.5)["element_tp"] == 1
    # compare_masks reports them beside voxel Dice
    out = metrics.compare_masks(pred, truth)
    assert out["all"]["element_recall"] == pytest.approx(0.5)


def test_element_metrics_empty_and_ignore():
    z = np.zeros((8, 8, 8), bool)
    em = metrics.element_metrics(z, z)
    assert em["element_f1"] == 1.0 and em["n_true_elements"] == 0
    one = z.copy()
    one[3, 3, 3] = True
    em = metrics.element_metrics(one, z)
    assert em["element_precision"] == 0.0 and em["element_fp"] == 1
    assert math.isnan(metrics.element_metrics(z, one)["element_precision"])
    # an unmatched prediction inside the ignore mask is neither TP nor FP
    ig = z.copy()
    ig[2:5, 2:5, 2:5] = True
    em = metrics.element_metrics(one, z, ignore=ig)
    assert em["n_ignored_elements"] == 1 and em["element_fp"] == 0
    with pytest.raises(ValueError, match="shape"):
        metrics.element_metrics(one, z[:-1])
