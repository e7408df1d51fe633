"""Measures against an independent count on a phantom of known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mcpvs_bidsapp.measures import cluster_census, region_measures
from mcpvs_bidsapp.outputs.spec import MEASURE_COLUMNS


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


def _draw_tube(shape, start, direction, length, radius):
    """Voxels within ``radius`` of the segment start + t * direction, 0 <= t <= length."""
    grid = np.indices(shape).reshape(3, -1).T.astype(float)
    rel = grid - start
    t = np.clip(rel @ direction, 0, length)
    dist = np.linalg.norm(rel - np.outer(t, direction), axis=1)
    return (dist <= radius).reshape(shape)


def test_oblique_tubes_match_an_independent_count():
    """Randomly oriented separated tubes: count exact, each cluster's volume, length, axis."""
    rng = np.random.default_rng(20241125)
    shape = (64, 64, 64)
    dseg = np.full(shape, 2, np.uint8)
    mask = np.zeros(shape, bool)
    tubes = []
    centres = [(16, 16, 16), (48, 16, 16), (16, 48, 16), (48, 48, 16),
               (16, 16, 48), (48, 16, 48), (16, 48, 48), (48, 48, 48)]  # fmt: skip
    for centre in centres:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        length = rng.uniform(8, 16)
        radius = rng.choice([0.5, 1.0, 1.5])
        start = np.asarray(centre) - direction * length / 2
        tube = _draw_tube(shape, start, direction, length, radius)
        assert not (tube & mask).any()
        mask |= tube
        tubes.append((tube, direction, length, radius))
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    census = cluster_census(mask, dseg, affine)
    assert len(census) == len(tubes)  # separated tubes: count exact
    voxel = 0.8**3
    for tube, direction, length, radius in tubes:
        # the census row whose centroid lies in this tube's own voxels (drawn independently)
        ijk = np.argwhere(tube)
        centre_mm = ijk.mean(0) * 0.8
        row = census.iloc[
            np.argmin(np.linalg.norm(census[["centroid_x_mm", "centroid_y_mm",
                                             "centroid_z_mm"]].to_numpy() - centre_mm, axis=1))
        ]  # fmt: skip
        assert abs(row.volume_mm3 - tube.sum() * voxel) <= voxel  # within one voxel
        axis = row[["orientation_x", "orientation_y", "orientation_z"]].to_numpy(float)
        if radius < 1:  # a thin line: its principal axis is the tube's direction
            assert abs(axis @ direction) > 0.97
        # length of the drawn segment plus its rounded caps, within about a voxel
        assert abs(row.length_mm - (length + 2 * radius) * 0.8) <= 1.5 * 0.8
        assert row.mean_width_mm > 0


def test_interface_writes_tables_with_wmh_overlap(tmp_path):
    """PVSMeasures on NIfTI files: what the workflow runs, n/a where undefined."""
    import nibabel as nb

    from mcpvs_bidsapp.interfaces.measures import PVSMeasures

    mask, dseg, brain = _known_phantom()
    affine = np.diag([0.5, 1.0, 2.0, 1.0])
    wmh = np.zeros(mask.shape, bool)
    wmh[10, 10, 10:20] = True  # half of the 20-voxel WM tube
    files = {}
    for name, data in (("mask", mask), ("dseg", dseg), ("brain", brain), ("wmh", wmh)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nb.Nifti1Image(data.astype(np.uint8), affine).to_filename(files[name])
    result = PVSMeasures(
        in_mask=str(files["mask"]), in_dseg=str(files["dseg"]),
        in_brain_mask=str(files["brain"]), icv_mm3=1.5e6, in_wmh=str(files["wmh"]),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(result.outputs.out_measures, sep="\t", keep_default_na=False)
    rows = table.set_index("region")
    assert list(table.columns) == list(MEASURE_COLUMNS)
    assert np.isclose(float(rows.loc["WM", "wmh_overlap_pct"]), 100 * 10 / 60, rtol=1e-5)
    assert float(rows.loc["BG", "wmh_overlap_pct"]) == 0.0
    census = pd.read_csv(result.outputs.out_clusters, sep="\t")
    assert len(census) == 3 and census.volume_mm3.sum() == 75 * 0.5 * 1.0 * 2.0
