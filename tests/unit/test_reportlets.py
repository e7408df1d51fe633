"""The zoomed PVS figures on a small synthetic head: scale, outlines around (not over) the
voxels, the rating section first, and the same figure whatever axis the image was stored on."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
from PIL import Image

from mcpvs_bidsapp.outputs.spec import Region
from mcpvs_bidsapp.reports import panels, reportlets

SHAPE = (80, 90, 50)


def _head(tmp_path, stored: str):
    """A brain-like volume: WM 1.0, BG 0.8, 'other' 0.6; dark 1-voxel PVS in the BG on
    section 20 (6 of them) and 22 (2); written axially or sagittally stored."""
    t1 = np.zeros(SHAPE, np.float32)
    dseg = np.zeros(SHAPE, np.uint8)
    dseg[8:72, 8:82, 5:45] = Region.OTHER
    dseg[14:66, 14:76, 10:40] = Region.WM
    dseg[25:38, 30:60, 15:28] = Region.BG  # left
    dseg[42:55, 30:60, 15:28] = Region.BG  # right
    t1[dseg == Region.OTHER] = 0.6
    t1[dseg == Region.WM] = 1.0
    t1[dseg == Region.BG] = 0.8
    pvs = np.zeros(SHAPE, np.uint8)
    for i, (x, y) in enumerate([(28, 35), (32, 45), (35, 52), (45, 36), (48, 44), (51, 55)]):
        pvs[x, y, 20] = 1
        if i < 2:
            pvs[x, y, 22] = 1
    t1[pvs > 0] = 0.2
    brain = (dseg > 0).astype(np.uint8)
    affine = np.eye(4)
    if stored == "sagittal":  # voxel axes (S->I, A->P, L->R)... any permutation with flips
        perm = lambda a: np.transpose(a, (2, 1, 0))[::-1, ::-1]  # noqa: E731
        affine = np.array([[0, 0, 1, 0], [0, -1, 0, SHAPE[1] - 1],
                           [-1, 0, 0, SHAPE[2] - 1], [0, 0, 0, 1]], float)  # fmt: skip
        t1, dseg, pvs, brain = perm(t1), perm(dseg), perm(pvs), perm(brain)
    files = {}
    for name, data in (("preproc", t1), ("dseg", dseg), ("pvs_mask", pvs), ("brain", brain)):
        files[name] = tmp_path / f"{stored}_{name}.nii.gz"
        nb.Nifti1Image(np.ascontiguousarray(data), affine).to_filename(files[name])
    return files


@pytest.fixture
def zooms(tmp_path):
    out = {}
    for stored in ("axial", "sagittal"):
        f = _head(tmp_path, stored)
        png = tmp_path / f"{stored}_zoom.png"
        reportlets.plot_pvs_zoom(f["preproc"], f["pvs_mask"], f["dseg"], "BG", png)
        out[stored] = np.asarray(Image.open(png).convert("RGB"))
    reportlets.clear_cache()
    return out


def test_zoom_is_the_same_whatever_the_storage_order(zooms):
    assert zooms["axial"].shape == zooms["sagittal"].shape
    assert np.array_equal(zooms["axial"], zooms["sagittal"])


def test_zoom_scale_and_outlines_around_the_voxels(tmp_path):
    f = _head(tmp_path, "axial")
    vol = reportlets.load(f["preproc"])
    view = panels.section(vol.data, vol.zooms, "axial", 20)
    # a 1 mm voxel becomes a 7 x 7 pixel square
    img, (ri, ci) = panels.enlarge(view, reportlets.ZOOM_PX_PER_MM, slice(0, 90), slice(0, 80))
    assert img.shape == (90 * 7, 80 * 7) and reportlets.ZOOM_PX_PER_MM >= 6
    mask_v = panels.section(reportlets.load(f["pvs_mask"]).data > 0, vol.zooms, "axial", 20)
    mask, _ = panels.enlarge(mask_v, 7.0, slice(0, 90), slice(0, 80))
    rgb = panels.grey(img, (0.0, 1.2))
    before = rgb.copy()
    panels.outline(rgb, mask, reportlets.PVS_RGB)
    changed = np.any(rgb != before, axis=-1)
    assert changed.any() and not (changed & mask).any()  # drawn around, never over a PVS
    assert (rgb[mask] == before[mask]).all()


def test_zoom_shows_the_rating_section_first(tmp_path):
    f = _head(tmp_path, "axial")
    png = tmp_path / "zoom.png"
    reportlets.plot_pvs_zoom(f["preproc"], f["pvs_mask"], f["dseg"], "BG", png)
    rgb = np.asarray(Image.open(png).convert("RGB"))
    red = np.all(rgb == reportlets.PVS_RGB, axis=-1)
    # outlined panels (right of each pair) hold the red rings; the plain ones none
    half = rgb.shape[1] // 2
    assert red[:, half:].sum() > 0 and red[:, : half - 10].sum() == 0
    # the rating section: 6 PVS on section 20 (22, with 2, is too close to be shown too)
    from mcpvs_bidsapp.visual_scores import estimate

    est = estimate(nb.load(f["pvs_mask"]).get_fdata(), nb.load(f["dseg"]).get_fdata(), np.eye(4))
    assert (est["BG"].section, est["BG"].count, est["BG"].score) == (20, 6, 2)
