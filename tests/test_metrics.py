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
