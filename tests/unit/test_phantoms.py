"""Known-truth phantom generator: geometry, truth rule, determinism, degradation."""

from __future__ import annotations

import numpy as np
import pytest

from mcpvs_bidsapp.synthetic import phantoms


def _disc_fraction(cx: float, cy: float, r: float, n: int = 400) -> float:
    """Fraction of the unit square centred at (cx, cy) inside the disc of radius r at 0."""
    off = (np.arange(n) + 0.5) / n - 0.5
    x, y = np.meshgrid(cx + off, cy + off, indexing="ij")
    return float((x**2 + y**2 <= r * r).mean())


@pytest.mark.parametrize("radius,offset", [(1.0, 0.0), (0.8, 0.5), (1.3, 0.25)])
def test_straight_tube_coverage_and_truth_rule(radius, offset):
    """Coverage of a long straight tube matches the disc/square area; truth = coverage >= 0.5."""
    shape = (21, 21, 30)
    affine = np.eye(4)
    # tube along z through (10 + offset, 10), far longer than the box: a 2D disc cross-section
    c = np.array([10.0 + offset, 10.0])
    cp = np.array([[c[0], c[1], -20.0], [c[0], c[1], 15.0], [c[0], c[1], 50.0]])
    sl, cov = phantoms.tube_coverage(shape, affine, cp, radius)
    full = np.zeros(shape, np.float32)
    full[sl] = cov
    mid = full[:, :, 15]
    for i in range(7, 14):
        for j in range(7, 14):
            expect = _disc_fraction(i - c[0], j - c[1], radius)
            assert mid[i, j] == pytest.approx(expect, abs=0.05), (i, j)
    # the truth rule on the same geometry
    truth = mid >= 0.5
    exact = np.array(
        [[_disc_fraction(i - c[0], j - c[1], radius) >= 0.5 for j in range(21)] for i in range(21)]
    )
    # voxels whose exact coverage is within the supersampling error of 0.5 may go either way
    near = np.array(
        [
            [abs(_disc_fraction(i - c[0], j - c[1], radius) - 0.5) < 0.05 for j in range(21)]
            for i in range(21)
        ]
    )
    assert np.array_equal(truth[~near], exact[~near])
    # a 1 mm-radius tube centred on voxel centres: area π mm² but only 1 truth voxel per slice
    if radius == 1.0 and offset == 0.0:
        assert int(truth.sum()) == 1
        assert mid.sum() == pytest.approx(np.pi, rel=0.08)  # 5³ supersampling error


def test_coverage_respects_voxel_size():
    """The same tube on a 0.5 mm grid covers the same volume as on a 1 mm grid."""
    cp = np.array([[5.0, 5.0, 1.0], [5.0, 5.0, 5.0], [5.0, 5.0, 9.0]])
    a1 = np.eye(4)
    a05 = np.diag([0.5, 0.5, 0.5, 1.0])
    _, c1 = phantoms.tube_coverage((11, 11, 11), a1, cp, 1.0)
    _, c05 = phantoms.tube_coverage((22, 22, 22), a05, cp, 1.0)
    v_true = np.pi * 1.0**2 * 8.0 + 4 / 3 * np.pi * 1.0**3  # a capsule: rounded ends
    assert c1.sum() * 1.0 == pytest.approx(v_true, rel=0.08)
    assert c05.sum() * 0.125 == pytest.approx(v_true, rel=0.08)


@pytest.fixture(scope="module")
def mni():
    return phantoms.mni_regions()


def test_mni_regions_are_anatomical(mni):
    t, aff, brain, regions = mni
    bg, wm = regions == 1, regions == 2
    # BG: both hemispheres, a few cm³ each, deep (near the midline, not at the cortex)
    assert 4_000 < bg.sum() < 40_000
    x = (np.argwhere(bg)[:, 0] * aff[0, 0]) + aff[0, 3]
    assert (x < 0).sum() > 1000 and (x > 0).sum() > 1000
    assert np.abs(x).max() < 40
    assert 300_000 < wm.sum() < 800_000
    assert not (regions[brain == 0] > 0).any()
    # WM is brighter than BG on T1w, and WM median is 1 after scaling
    assert np.median(t[wm]) > np.median(t[bg])
    assert np.median(t[wm]) == pytest.approx(1.0, abs=0.05)


def test_insert_pvs_truth_in_regions_and_deterministic(mni):
    t, aff, brain, regions = mni
    kw = dict(load="mild", seed=5, csf_level=0.3)
    a = phantoms.insert_pvs(t, aff, brain, regions == 2, regions == 1, **kw)
    b = phantoms.insert_pvs(t, aff, brain, regions == 2, regions == 1, **kw)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.truth_mask, b.truth_mask)
    truth = a.truth_mask > 0
    assert truth.sum() > 200
    assert set(np.unique(regions[truth])) <= {1, 2}  # truth only inside BG and WM
    # tubes darken the image only where they are, towards the CSF level
    changed = a.image != t
    assert np.array_equal(changed, a.coverage > 0)
    assert np.all(a.image[truth] < t[truth])
    assert np.all(a.image[truth] <= 0.5 * t[truth] + 0.5 * 0.3 + 1e-5)
    # both regions loaded; inferior-BG distractors inserted but not part of the truth
    kinds = {(tb.region, tb.in_truth) for tb in a.tubes}
    assert ("BG", True) in kinds and ("WM", True) in kinds and ("BG", False) in kinds
    c = phantoms.insert_pvs(t, aff, brain, regions == 2, regions == 1, load="mild", seed=6)
    assert not np.array_equal(a.truth_mask, c.truth_mask)


def test_loads_scale_volume_and_zero_load_is_untouched(mni):
    t, aff, brain, regions = mni
    vols = []
    for load in ("none", "few", "moderate"):
        ph = phantoms.insert_pvs(t, aff, brain, regions == 2, regions == 1, load=load, seed=1)
        vols.append(int(ph.truth_mask.sum()))
        if load == "none":
            assert np.array_equal(ph.image, t) and not ph.tubes
    assert vols[0] == 0 < vols[1] < vols[2]


def test_degrade_is_seeded_and_does_what_it_says(mni):
    t, aff, brain, regions = mni
    a = phantoms.degrade(t, seed=3, bias_strength=0.2, noise_sd=0.03, reference=1.0, mask=brain)
    b = phantoms.degrade(t, seed=3, bias_strength=0.2, noise_sd=0.03, reference=1.0, mask=brain)
    c = phantoms.degrade(t, seed=4, bias_strength=0.2, noise_sd=0.03, reference=1.0, mask=brain)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not (a[brain == 0] != 0).any()
    # noise: residual after removing the smooth part has about the requested SD in WM
    clean = phantoms.degrade(t, seed=3, bias_strength=0.2, noise_sd=0.0, reference=1.0, mask=brain)
    wm = regions == 2
    assert np.std((a - clean)[wm]) == pytest.approx(0.03, rel=0.25)
    # bias: smooth multiplicative field within exp(±0.2)
    ratio = clean[wm] / t[wm]
    assert ratio.min() >= np.exp(-0.2) - 1e-4 and ratio.max() <= np.exp(0.2) + 1e-4
    assert ratio.std() > 0.02
    # gamma < 1 brightens grey relative to white (a vendor-like contrast change)
    g = phantoms.degrade(
        t, seed=3, bias_strength=0, noise_sd=0, contrast_gamma=0.8, reference=1.0, mask=brain
    )
    bg = regions == 1
    assert np.median(g[bg]) / np.median(g[wm]) > np.median(t[bg]) / np.median(t[wm])
    # contrast_scale: every contrast to the reference scaled by k, mixtures stay linear
    k = phantoms.degrade(
        t, seed=3, bias_strength=0, noise_sd=0, contrast_scale=0.8, reference=1.0, mask=brain
    )
    inside = brain > 0
    assert np.allclose(1 - k[inside], 0.8 * (1 - t[inside]), atol=1e-5)


@pytest.mark.slow
def test_phantom_from_mni_offline():
    img, truth, brain, regions = phantoms.phantom_from_mni("few", seed=2)
    assert img.shape == truth.shape == brain.shape == regions.shape == (197, 233, 189)
    assert np.allclose(img.affine, truth.affine)
    tr = np.asarray(truth.dataobj)
    assert tr.dtype == np.uint8 and 20 < tr.sum() < 3000
    assert set(np.unique(np.asarray(regions.dataobj)[tr > 0])) <= {1, 2}
