"""Storage order (issue #17, item 1): one head stored RAS, LPI, LIA or oblique gives the same
measures, on both region paths and with the built-in method.

Every step runs on a RAS+ copy of the validated T1w (exact: a permutation), the world-space
steps (atlas registration, Samseg) on its voxel frame, and the writer maps every output back
to the input's own grid (mcpvs_bidsapp/orientation.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from mcpvs_bidsapp.interfaces.validation import ValidateT1w
from mcpvs_bidsapp.orientation import deobliqued_copy, obliquity_deg, to_grid
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.synthetic.datasets import (
    make_small_bids,
    reorder,
    resample_head,
    storage_orders,
    with_bias_field,
)

ORDERS = ("RAS", "LPI", "LIA", "oblique")


@pytest.fixture(scope="module")
def crop_copies(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The 96x96x48 Philips crop stored four ways (it is itself 4° oblique, as scanned)."""
    root = tmp_path_factory.mktemp("orders")
    img = nb.load(shared_data / "t1w" / "philips_bgcrop_96x96x48_t1w.nii.gz")
    paths = {}
    for order, copy in storage_orders(img).items():
        paths[order] = root / f"sub-{order}_T1w.nii.gz"
        copy.to_filename(paths[order])
    return paths


def test_copies_are_one_head(crop_copies):
    """The fixture itself: same voxels at the same world positions (oblique: turned 22°)."""
    ras = nb.load(crop_copies["RAS"])
    centre = nb.affines.apply_affine(ras.affine, [10, 20, 30])
    value = np.asanyarray(ras.dataobj)[10, 20, 30]
    for order in ("LPI", "LIA"):
        img = nb.load(crop_copies[order])
        assert "".join(nb.aff2axcodes(img.affine)) == order
        ijk = np.rint(nb.affines.apply_affine(np.linalg.inv(img.affine), centre)).astype(int)
        assert np.asanyarray(img.dataobj)[tuple(ijk)] == value
    assert obliquity_deg(nb.load(crop_copies["oblique"]).affine) > 20


def test_every_storage_order_gives_the_steps_one_image(crop_copies, tmp_path):
    """The validated T1w every step reads is the same array for all four copies, and the
    world-space steps' frame is the same affine; on main it was each file's own order."""
    seen = {}
    for order, path in crop_copies.items():
        node = ValidateT1w(in_file=str(path))
        (tmp_path / order).mkdir()
        out = node.run(cwd=str(tmp_path / order)).outputs.out_file
        img = nb.load(out)
        assert "".join(nb.aff2axcodes(img.affine)) == "RAS"
        seen[order] = (np.asanyarray(img.dataobj), deobliqued_copy(img).get_sform(), img)
    data, frame, ras = seen["RAS"]
    for order in ("LPI", "LIA", "oblique"):
        assert np.array_equal(seen[order][0], data), order
        assert np.array_equal(seen[order][1], frame), order
    for order in ("LPI", "LIA"):  # the true affine is kept (float32 rounding apart)
        assert np.allclose(seen[order][2].affine, ras.affine, atol=1e-4)
        back = to_grid(seen[order][2], nb.load(crop_copies[order]))  # and maps back exactly
        assert np.array_equal(back, np.asanyarray(nb.load(crop_copies[order]).dataobj))


def test_to_grid_refuses_another_grid(crop_copies):
    ras, lia = nb.load(crop_copies["RAS"]), nb.load(crop_copies["LIA"])
    shifted = nb.Nifti1Image(np.asanyarray(ras.dataobj), ras.affine + np.eye(4) * 0)
    shifted.affine[0, 3] += 1.0  # one voxel off: another grid, not another order
    with pytest.raises(ValueError, match="not the input's grid"):
        to_grid(nb.Nifti1Image(np.asanyarray(ras.dataobj), shifted.affine), lia)


def test_samseg_gets_one_frame_for_every_copy(crop_copies, tmp_path, monkeypatch):
    """Samseg registers its atlas in world space: it must be given the same image for every
    copy (on main it got each file as it was), and its labels come back on the true grid."""
    from mcpvs_bidsapp.methods.regions import samseg as samseg_module

    given = {}

    def fake_samseg(cmd, **kwargs):  # what Samseg reads, and a seg.mgz on its grid
        src = Path(cmd[cmd.index("-i") + 1])
        out = Path(cmd[cmd.index("-o") + 1])
        img = nb.load(src)
        given[src.parent.name] = (np.asanyarray(img.dataobj), img.affine)
        labels = (np.asanyarray(img.dataobj) > 60).astype(np.int32) * 2
        nb.MGHImage(labels, img.affine).to_filename(out / "seg.mgz")
        (out / "sbtiv.stats").write_text("# Measure Intra-Cranial, 1400000.0, mm^3\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(samseg_module.subprocess, "run", fake_samseg)
    for order, path in crop_copies.items():
        valid = tmp_path / f"valid_{order}"
        valid.mkdir()
        t1w = ValidateT1w(in_file=str(path)).run(cwd=str(valid)).outputs.out_file
        result = samseg_module.run_samseg(t1w, tmp_path / order)
        seg = nb.load(result["seg"])
        assert np.array_equal(seg.affine, nb.load(t1w).affine)  # the true grid again
    data, affine = given["RAS"]
    for order in ("LPI", "LIA", "oblique"):
        assert np.array_equal(given[order][0], data) and np.array_equal(given[order][1], affine)


# ------------------------------------------------------------------ end to end (real runs)


def _measures(out: Path, label: str) -> pd.DataFrame:
    path = out / f"sub-{label}" / "anat" / f"sub-{label}_desc-pvs_measures.tsv"
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False).set_index("region")


def _ras_mask(out: Path, label: str, derivative: spec.Derivative) -> np.ndarray:
    img = nb.load(out / f"sub-{label}" / "anat" / derivative.name(f"sub-{label}"))
    return np.asanyarray(nb.as_closest_canonical(img).dataobj) > 0


@pytest.fixture(scope="module")
def one_head_three_ways(shared_data, tmp_path_factory):
    """One run of the 2 mm Philips head as three participants (``--regions fast``, the
    built-in method): ``RAS`` as it is, ``obliqueLIA`` (its voxels 22° oblique and stored in
    FreeSurfer's LIA order: a permutation and an obliquity at once) and ``bias`` (times a
    0.64-1.57 field)."""
    from mcpvs_bidsapp.cli.run import main

    root = tmp_path_factory.mktemp("invariance")
    bids = root / "bids"
    make_small_bids(bids, shared_data, n_participants=0)
    head = resample_head(
        shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz", root / "h.nii.gz", 2.0
    )
    img = nb.load(head)
    copies = {
        "RAS": storage_orders(img)["RAS"],
        "obliqueLIA": reorder(storage_orders(img)["oblique"], "LIA"),
        "bias": with_bias_field(img),
    }
    for label, copy in copies.items():
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        copy.to_filename(anat / f"sub-{label}_T1w.nii.gz")
    out = root / "out"
    code = main([
        str(bids), str(out), "participant", "--regions", "fast", "--method", "vesselness",
        "--nprocs", "2", "--omp-nthreads", "1", "-w", str(root / "work"),
    ])  # fmt: skip
    assert code == 0
    return bids, out


@pytest.mark.slow
def test_fast_regions_and_builtin_method_ignore_storage_order(one_head_three_ways):
    """Every measure of every region is equal, and so are the masks once brought to one
    voxel order; the outputs are on the input's own grid. On main the registration's 2 mm
    grid started at each file's first voxel, N4's B-spline mesh too, and ANTs registered the
    22° turned head from scratch."""
    bids, out = one_head_three_ways
    ref = _measures(out, "RAS")
    assert ref.loc["WM", "region_volume_mm3"] > 2e5 and ref.loc["BG", "region_volume_mm3"] > 5e3
    assert ref.loc["whole_brain", "pvs_count"] > 0
    order = "obliqueLIA"
    pd.testing.assert_frame_equal(_measures(out, order), ref, check_exact=True, obj=order)
    for derivative in (spec.BRAIN_MASK, spec.REGIONS_DSEG, spec.PVS_MASK):
        assert np.array_equal(
            _ras_mask(out, order, derivative), _ras_mask(out, "RAS", derivative)
        ), derivative.key
    img = nb.load(out / f"sub-{order}" / "anat" / spec.PVS_MASK.name(f"sub-{order}"))
    src = nb.load(bids / f"sub-{order}" / "anat" / f"sub-{order}_T1w.nii.gz")
    assert img.shape == src.shape and np.allclose(img.affine, src.affine, atol=1e-5)
    assert "".join(nb.aff2axcodes(img.affine)) == "LIA"


@pytest.mark.slow
def test_fast_wm_region_follows_the_bias_corrected_image(one_head_three_ways):
    """Issue #17, item 2: the fast path's WM refinement read the raw T1w; a strong bias field
    shrank the WM region by 40 % while the ICV stayed. It now reads the N4 image."""
    _, out = one_head_three_ways
    ref, biased = _measures(out, "RAS"), _measures(out, "bias")
    assert biased.loc["WM", "icv_mm3"] == pytest.approx(ref.loc["WM", "icv_mm3"], rel=0.01)
    assert biased.loc["WM", "region_volume_mm3"] == pytest.approx(
        ref.loc["WM", "region_volume_mm3"], rel=0.05
    )
    assert biased.loc["BG", "region_volume_mm3"] == pytest.approx(
        ref.loc["BG", "region_volume_mm3"], rel=0.05
    )
