"""BG/WM regions and ICV: Samseg labels -> regions, the fast atlas path, and one Samseg run.

Anatomical checks are made in world (RAS) millimetres so that they hold for any voxel order:
BG in both hemispheres, medial to the insula, inside the brain mask; WM the largest region.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.errors import McpvsError, SamsegError
from mcpvs_bidsapp.methods.regions.samseg import (
    BG_LABELS,
    labels_to_regions,
    looks_skull_stripped,
    read_sbtiv,
    seg_to_native,
)
from mcpvs_bidsapp.synthetic.datasets import resample_head
from mcpvs_bidsapp.workflows.regions import init_regions_wf

# ---------------------------------------------------------------- label extraction (unit)


def _toy_labels() -> np.ndarray:
    lab = np.zeros((40, 40, 40), dtype=np.int32)
    lab[2:38, 2:38, 2:38] = 165  # skull
    lab[5:35, 5:35, 5:35] = 24  # CSF
    lab[8:32, 8:32, 8:32] = 3  # cortex
    lab[10:30, 10:30, 10:30] = 2  # WM
    lab[12:16, 12:16, 12:16] = 77  # WM hypointensity inside WM
    lab[15:20, 20:25, 15:20] = 12  # putamen
    lab[17, 22, 17] = 24  # one dark PVS voxel labelled CSF inside the putamen
    lab[22:25, 22:25, 22:25] = 50  # caudate (other hemisphere)
    return lab


def test_labels_to_regions_codes_and_holes():
    lab = _toy_labels()
    brain, dseg = labels_to_regions(lab)
    assert brain.dtype == np.uint8 and dseg.dtype == np.uint8
    assert not brain[lab == 165].any() and not brain[lab == 0].any()
    assert brain[lab == 24].all()  # CSF is brain (ventricles, sulci)
    assert dseg[17, 22, 17] == 1  # the enclosed PVS voxel stays in the BG it sits in
    assert (dseg[np.isin(lab, BG_LABELS)] == 1).all()
    assert (dseg[lab == 77] == 2).all() and (dseg[lab == 2] == 2).all()
    assert (dseg[lab == 3] == 3).all()
    assert set(np.unique(dseg)) == {0, 1, 2, 3}
    assert not dseg[brain == 0].any()


def test_fast_wm_closing_fills_pvs_in_deep_wm_but_does_not_bridge_gyri():
    """The fast regions' WM-intensity mask is closed to keep dark PVS inside, but only where
    the warped WM prior says deep WM: closed everywhere it bridged thin gyri (issue #15)."""
    from mcpvs_bidsapp.methods.regions.atlas import CLOSING_MIN_PRIOR, _wm_intensity_mask

    shape = (40, 60, 30)
    t1w = np.full(shape, 0.6, np.float32)  # GM-like
    prior = np.full(shape, 0.3, np.float32)
    t1w[5:35, 5:25, 5:25] = 1.0  # deep WM with a 2-voxel dark PVS-like line
    prior[5:35, 5:25, 5:25] = CLOSING_MIN_PRIOR + 0.3
    t1w[10:30, 14:16, 14:16] = 0.6
    t1w[5:35, 30:38, 5:25] = 1.0  # two gyri across a 4-voxel sulcus (GM, CSF, CSF, GM)
    t1w[5:35, 42:50, 5:25] = 1.0
    t1w[5:35, 39:41, 5:25] = 0.3
    prior[5:35, 30:50, 5:25] = CLOSING_MIN_PRIOR - 0.2
    brain = np.ones(shape, bool)
    pvs = (slice(12, 28), slice(14, 16), slice(14, 16))
    sulcus = (slice(8, 32), slice(38, 42), slice(8, 22))
    old = _wm_intensity_mask(t1w, brain, np.ones_like(prior))  # closed everywhere
    assert old[pvs].all() and old[sulcus].all()
    new = _wm_intensity_mask(t1w, brain, prior)
    assert new[pvs].all() and not new[sulcus].any()


def test_read_sbtiv(tmp_path):
    good = tmp_path / "sbtiv.stats"
    good.write_text("# Measure Intra-Cranial, 1534567.250000, mm^3\n")
    assert read_sbtiv(good) == pytest.approx(1534567.25)
    bad = tmp_path / "bad.stats"
    bad.write_text("nothing here\n")
    with pytest.raises(SamsegError, match="bad.stats: no 'Intra-Cranial'"):
        read_sbtiv(bad)


def test_seg_to_native_keeps_the_exact_grid_and_refuses_another(tmp_path):
    affine = np.array([[0, 0, -1.2, 90], [1.0, 0, 0, -120], [0, 0.9, 0.1, -60], [0, 0, 0, 1]])
    ref = nb.Nifti1Image(np.zeros((20, 22, 18), np.float32), affine)
    ref.to_filename(tmp_path / "t1w.nii.gz")
    lab = np.random.default_rng(0).integers(0, 60, (20, 22, 18)).astype(np.int32)
    nb.MGHImage(lab, ref.affine + 1e-5).to_filename(tmp_path / "seg.mgz")
    out = nb.load(
        str(seg_to_native(tmp_path / "seg.mgz", tmp_path / "t1w.nii.gz", tmp_path / "seg.nii.gz"))
    )
    assert np.array_equal(out.affine, nb.load(str(tmp_path / "t1w.nii.gz")).affine)
    assert np.array_equal(np.asanyarray(out.dataobj), lab)
    nb.MGHImage(lab[:-1], ref.affine).to_filename(tmp_path / "seg2.mgz")
    with pytest.raises(SamsegError, match="t1w.nii.gz: Samseg output grid"):
        seg_to_native(tmp_path / "seg2.mgz", tmp_path / "t1w.nii.gz", tmp_path / "x.nii.gz")


@pytest.mark.parametrize(
    "name, stripped",
    [
        ("t1w/mne_sample_brain_t1w.nii.gz", True),  # FreeSurfer brain.mgz
        ("other/niivue_lesion_flair.nii.gz", True),  # skull-stripped FLAIR
        ("t1w/philips_adni_sag3d_mprage_t1w.nii.gz", False),
        ("t1w/arc2017_stroke_t1w.nii.gz", False),
        ("t1w/niivue_otsu_t1w.nii.gz", False),
    ],
)
def test_skull_stripped_inputs_are_flagged(shared_data, name, stripped):
    img = nb.load(str(shared_data / name))
    data = np.asanyarray(img.dataobj)
    assert looks_skull_stripped(data, img.header.get_zooms()[:3]) is stripped


def test_regions_wf_builds_both_methods_and_refuses_others():
    for scheme in ("samseg", "fast"):
        wf = init_regions_wf(scheme=scheme, omp_nthreads=2)
        assert wf.get_node("outputnode").inputs.regions_method == scheme
    with pytest.raises(McpvsError, match="unknown regions method"):
        init_regions_wf(scheme="aseg")


# ---------------------------------------------------------------- anatomy helpers


def _world(img: nb.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)
    return nb.affines.apply_affine(img.affine, ijk)


def check_regions_anatomy(img: nb.Nifti1Image, brain: np.ndarray, dseg: np.ndarray) -> dict:
    """Assert plausible adult anatomy; return volumes (ml) for the caller's own checks."""
    vox_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert dseg.shape == brain.shape == img.shape[:3]
    assert not dseg[brain == 0].any(), "regions outside the brain mask"
    vols = {k: float((dseg == v).sum() * vox_ml) for k, v in (("BG", 1), ("WM", 2), ("other", 3))}
    vols["brain"] = float(brain.sum() * vox_ml)
    assert 1000 < vols["brain"] < 1900, vols
    assert 8 < vols["BG"] < 40, vols
    assert 250 < vols["WM"] < 750, vols
    # both hemispheres: split at the brain's own mid-sagittal x (RAS)
    mid_x = float(np.median(_world(img, brain > 0)[:, 0]))
    bg_xyz = _world(img, dseg == 1)
    left, right = bg_xyz[bg_xyz[:, 0] < mid_x], bg_xyz[bg_xyz[:, 0] > mid_x]
    assert len(left) > 0.35 * len(bg_xyz) and len(right) > 0.35 * len(bg_xyz)
    # BG medial to the insula (~35-40 mm from the midline): nearly all within 33 mm
    lateral = np.abs(bg_xyz[:, 0] - mid_x)
    assert np.percentile(lateral, 98) < 33, np.percentile(lateral, 98)
    assert 8 < np.median(lateral) < 28
    # BG deep: its centroid is within 30 mm of the brain's centroid in y and z
    centre = _world(img, brain > 0).mean(0)
    assert np.all(np.abs(bg_xyz.mean(0)[1:] - centre[1:]) < 30)
    # WM laterally wider than BG (it reaches under the cortex)
    wm_lateral = np.abs(_world(img, dseg == 2)[:, 0] - mid_x)
    assert np.percentile(wm_lateral, 98) > np.percentile(lateral, 98) + 10
    return vols


# ---------------------------------------------------------------- fast path (real images)


@pytest.mark.slow
def test_atlas_priors_from_samseg_mesh(tmp_path_factory):
    from mcpvs_bidsapp.methods.regions.atlas import atlas_priors, samseg_atlas_dir

    path = atlas_priors(tmp_path_factory.mktemp("cache"))
    img = nb.load(str(path))
    template = nb.load(str(samseg_atlas_dir() / "template.nii.gz"))
    assert img.shape == (*template.shape[:3], 3)
    pri = np.asanyarray(img.dataobj)
    assert 0 <= pri.min() and pri.max() <= 1.0001
    bg, wm, brain = pri[..., 0] > 0.5, pri[..., 1] > 0.5, pri[..., 2] > 0.5
    assert 1100 < brain.sum() / 1000 < 1900  # 1 mm template voxels -> ml
    assert not (bg & ~brain).any() and not (wm & ~brain).any()
    # template space is MNI-like: BG sits at |x| 10-32 mm on both sides
    xyz = _world(img.slicer[..., 0], bg)
    assert (xyz[:, 0] < 0).sum() > 0.4 * len(xyz) and (xyz[:, 0] > 0).sum() > 0.4 * len(xyz)
    assert np.percentile(np.abs(xyz[:, 0]), 98) < 33


@pytest.fixture(scope="module")
def fast_regions(philips_t1w, tmp_path_factory):
    """Fast path on the raw Philips head at 1 mm (native grid), run once for the module."""
    wf = init_regions_wf(scheme="fast", omp_nthreads=2)
    wf.base_dir = str(tmp_path_factory.mktemp("fast_wf"))
    wf.inputs.inputnode.t1w = str(philips_t1w)
    res = wf.run()
    nodes = {n.name: n for n in res.nodes()}
    brain = nodes["brain_extraction"].result.outputs.out_mask
    dseg = nodes["regions_fast"].result.outputs.out_dseg
    icv = nodes["brain_extraction"].result.outputs.brain_volume_mm3
    return nb.load(str(philips_t1w)), nb.load(brain), nb.load(dseg), icv


@pytest.mark.slow
def test_fast_regions_anatomy_on_a_real_head(fast_regions):
    img, brain_img, dseg_img, icv = fast_regions
    for out in (brain_img, dseg_img):
        assert out.shape == img.shape and np.allclose(out.affine, img.affine)
    brain = np.asanyarray(brain_img.dataobj)
    dseg = np.asanyarray(dseg_img.dataobj)
    vols = check_regions_anatomy(img, brain, dseg)
    assert icv == pytest.approx(vols["brain"] * 1000, rel=1e-6)


# A raw oblique, reordered input to the fast regions workflow is no longer a case the run meets:
# every step gets the RAS+ working copy (issue #17), and tests/integration/test_invariance.py
# checks the whole participant path on an LIA + oblique copy for exact equality.


# ---------------------------------------------------------------- one Samseg run (fast profile)


@pytest.mark.slow
def test_samseg_regions_and_icv_on_a_real_head(philips_t1w, tmp_path):
    """The one Samseg run of the suite: 2 mm Philips head, fast profile, 2 threads."""
    src = resample_head(philips_t1w, tmp_path / "philips_2mm.nii.gz", 2.0)
    wf = init_regions_wf(scheme="samseg", omp_nthreads=2)
    wf.base_dir = str(tmp_path / "wf")
    wf.inputs.inputnode.t1w = str(src)
    res = wf.run()
    nodes = {n.name: n for n in res.nodes()}
    sam = nodes["samseg"].result.outputs
    reg = nodes["regions"].result.outputs
    img = nb.load(str(src))
    seg = nb.load(sam.out_seg)
    assert seg.shape == img.shape and np.array_equal(seg.affine, img.affine)
    labels = np.asanyarray(seg.dataobj)
    for label in (*BG_LABELS, 2, 41):  # every label we take is there
        assert (labels == label).sum() > 0, label
    assert 1.1e6 < sam.sbtiv_mm3 < 2.0e6  # adult sbTIV, mm3
    brain = np.asanyarray(nb.load(reg.out_mask).dataobj)
    vols = check_regions_anatomy(img, brain, np.asanyarray(nb.load(reg.out_dseg).dataobj))
    assert vols["brain"] * 1000 < sam.sbtiv_mm3 * 1.05  # brain tissue + CSF within ICV
