"""Measures against an independent count on a phantom of known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mcpvs_bidsapp.interfaces.measures import cluster_census, region_measures


def _known_phantom():
    """Three separated straight tubes: two in WM (z-oriented), one in BG (x-oriented)."""
    shape = (60, 60, 60)
    dseg = np.zeros(shape, np.uint8)
    dseg[5:55, 5:55, 5:55] = 3
    dseg[5:55, 5:30, 5:55] = 2  # WM half
    dseg[5:55, 30:55, 5:55] = 1  # BG half
    mask = np.zeros(shape, bool)
    mask[10, 10, 10:30] = True  # WM, 20 voxels along z
    mask[20:22, 20:22, 15:25] = True  # WM, 2x2x10 = 40 voxels
    mask[10:25, 40, 40] = True  # BG, 15 voxels along x
    brain = dseg > 0
    return mask, dseg, brain


def test_counts_and_volumes_match_independent_truth():
    mask, dseg, brain = _known_phantom()
    affine = np.diag([0.5, 1.0, 2.0, 1.0])  # anisotropic: volumes must use the voxel size
    census = cluster_census(mask, dseg, affine)
    measures = region_measures(mask, dseg, brain, affine, icv_mm3=1.5e6, census=census)
    rows = measures.set_index("region")
    voxel = 0.5 * 1.0 * 2.0
    assert rows.loc["WM", "pvs_count"] == 2 and rows.loc["BG", "pvs_count"] == 1
    assert rows.loc["whole_brain", "pvs_count"] == 3
    assert rows.loc["WM", "pvs_volume_mm3"] == 60 * voxel
    assert rows.loc["BG", "pvs_volume_mm3"] == 15 * voxel
    assert rows.loc["whole_brain", "pvs_volume_mm3"] == 75 * voxel
    assert np.isclose(rows.loc["WM", "pvsnm"], 1e6 * 60 * voxel / 1.5e6)
    assert np.isclose(rows.loc["WM", "mean_cluster_volume_mm3"], 30 * voxel)
    assert pd.isna(rows.loc["WM", "wmh_overlap_pct"])

    # per-cluster shape: the 20-voxel z tube is 20 * 2 mm long, oriented along z
    tube = census.loc[census.n_voxels == 20].iloc[0]
    assert np.isclose(tube.length_mm, 40.0)
    assert np.allclose(
        [tube.orientation_x, tube.orientation_y, abs(tube.orientation_z)], [0, 0, 1], atol=1e-6
    )
    bg_tube = census.loc[census.region == "BG"].iloc[0]
    assert np.isclose(bg_tube.length_mm, 7.5)


def test_diagonal_neighbours_are_one_cluster_and_wmh_overlap():
    mask, dseg, brain = _known_phantom()
    mask[:] = False
    for i in range(10):  # a diagonal line: 26-connected, one cluster
        mask[10 + i, 10 + i, 10 + i] = True
    wmh = np.zeros_like(mask)
    wmh[10:15, 10:15, 10:15] = True  # covers 5 of the 10 voxels
    census = cluster_census(mask, dseg, np.eye(4))
    measures = region_measures(mask, dseg, brain, np.eye(4), 1e6, census, wmh=wmh)
    assert len(census) == 1
    assert measures.set_index("region").loc["WM", "wmh_overlap_pct"] == 50.0


def test_empty_mask_gives_zero_volume_and_no_clusters():
    mask, dseg, brain = _known_phantom()
    mask[:] = False
    census = cluster_census(mask, dseg, np.eye(4))
    measures = region_measures(mask, dseg, brain, np.eye(4), 1e6, census)
    assert census.empty
    assert (measures.pvs_volume_mm3 == 0).all() and (measures.pvs_count == 0).all()
    assert measures.mean_cluster_volume_mm3.isna().all()
