"""Bad T1w inputs: each gives one line naming the file and the problem."""

from __future__ import annotations

import gzip

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.errors import InputImageError
from mcpvs_bidsapp.validation import load_t1w


def _save(path, data, zooms=(1.0, 1.0, 1.0)):
    img = nb.Nifti1Image(np.asarray(data), np.diag([*zooms, 1.0]))
    img.to_filename(path)
    return path


@pytest.fixture
def good_data():
    rng = np.random.default_rng(0)
    return rng.normal(100, 10, (40, 40, 40)).astype(np.float32)


def test_good_image_loads(tmp_path, good_data):
    img, data, warnings = load_t1w(_save(tmp_path / "sub-01_T1w.nii.gz", good_data))
    assert data.shape == (40, 40, 40) and data.dtype == np.float32
    assert warnings == []


def test_singleton_4d_is_accepted(tmp_path, good_data):
    _, data, _ = load_t1w(_save(tmp_path / "sub-01_T1w.nii.gz", good_data[..., None]))
    assert data.shape == (40, 40, 40)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, d: p.write_bytes(b""), "file is empty"),
        (lambda p, d: p.write_bytes(b"this is not an image"), "not a readable NIfTI"),
        (lambda p, d: _save(p, np.stack([d, d], -1)), r"image is 4D \(shape 40x40x40x2\)"),
        (lambda p, d: _save(p, d[:, :, 0]), "image is 2D"),
        (lambda p, d: _save(p, np.zeros_like(d)), "image is all zeros"),
        (lambda p, d: _save(p, np.full_like(d, 7)), "image is constant"),
        (lambda p, d: _save(p, np.where(d > 110, np.nan, d)), "NaN/Inf voxels"),
        (lambda p, d: _save(p, np.where(d > 125, np.inf, d)), "NaN/Inf voxels"),
        (lambda p, d: _save(p, d[:10, :10, :10]), "too small"),
        (lambda p, d: _save(p, d, zooms=(1, 1, 6)), "too coarse"),
    ],
)
def test_bad_images_one_clear_line(tmp_path, good_data, make, message):
    path = tmp_path / "sub-01_T1w.nii.gz"
    make(path, good_data)
    with pytest.raises(InputImageError, match=message) as err:
        load_t1w(path)
    text = str(err.value)
    assert text.startswith("sub-01_T1w.nii.gz: ")
    assert "\n" not in text


def test_truncated_gzip(tmp_path, good_data):
    path = _save(tmp_path / "sub-01_T1w.nii.gz", good_data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputImageError, match="sub-01_T1w.nii.gz: (truncated|not a readable)"):
        load_t1w(path)


def test_corrupt_gzip_payload(tmp_path, good_data):
    path = tmp_path / "sub-01_T1w.nii.gz"
    _save(path, good_data)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[400:4000] = b"\xff" * 3600  # header intact, data garbage but finite? force NaN bytes
    path.write_bytes(gzip.compress(bytes(raw))[:-40])
    with pytest.raises(InputImageError, match="sub-01_T1w.nii.gz: "):
        load_t1w(path)


def test_anisotropic_and_inconsistent_headers_warn(tmp_path, good_data):
    img = nb.Nifti1Image(good_data, np.diag([1.0, 1.0, 3.0, 1.0]))
    qform = np.diag([1.0, 1.0, 3.0, 1.0])
    qform[0, 3] = 20
    img.set_qform(qform, code=1)
    img.set_sform(np.diag([1.0, 1.0, 3.0, 1.0]), code=1)
    path = tmp_path / "sub-01_T1w.nii.gz"
    img.to_filename(path)
    _, _, warnings = load_t1w(path)
    text = " ".join(warnings)
    assert "coarser than the 1 mm-class" in text
    assert "anisotropic" in text
    assert "qform and sform disagree" in text


# ---------------------------------------------- careless conversions (issue #17, item 5)


@pytest.fixture(scope="module")
def philips_2mm(shared_data, tmp_path_factory):
    from mcpvs_bidsapp.synthetic.datasets import resample_head

    src = shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz"
    return resample_head(src, tmp_path_factory.mktemp("p2") / "sub-01_T1w.nii.gz", 2.0)


def test_int16_wrapped_intensities_are_refused(philips_2mm, tmp_path):
    """A float head cast to int16 without scaling: bright tissue wraps round to large negative
    values (brain median -9,100 on the 1 mm head); on main: WM region 0, PVS 0, written as
    numbers."""
    img = nb.load(philips_2mm)
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    assert data.max() > 32767  # the Philips scaling: up to ~1.6e5
    wrapped = data.astype(np.int64).astype(np.int16)  # what a careless conversion does
    path = tmp_path / "sub-01_T1w.nii.gz"
    out = nb.Nifti1Image(wrapped, img.affine)
    out.set_data_dtype(np.int16)
    out.to_filename(path)
    with pytest.raises(InputImageError, match=r"negative .*wrapped round .*int16") as err:
        load_t1w(path)
    assert str(err.value).startswith("sub-01_T1w.nii.gz: ")


def test_negative_intercept_is_refused(shared_data, tmp_path):
    """``scl_inter = -500`` on the uint8 crop puts the whole image below zero (N4 ignores
    voxels <= 0; BG PVS 54 -> 0 mm³ on main, no warning)."""
    img = nb.load(shared_data / "t1w" / "philips_bgcrop_96x96x48_t1w.nii.gz")
    out = nb.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    out.header.set_slope_inter(1.0, -500.0)
    path = tmp_path / "sub-01_T1w.nii.gz"
    out.to_filename(path)
    with pytest.raises(InputImageError, match=r"intercept \(scl_inter = -500\)"):
        load_t1w(path)


def test_real_heads_and_a_little_noise_below_zero_pass(shared_data, philips_2mm, tmp_path):
    """The check does not refuse real images: every head in ../shared/data, and a float
    head whose background noise dips a little below zero (a denoised/interpolated image)."""
    for path in sorted((shared_data / "t1w").glob("*.nii.gz")):
        load_t1w(path)
    img = nb.load(philips_2mm)
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    noisy = data + rng.normal(0, 0.01 * np.percentile(data, 99), data.shape)
    assert (noisy < 0).mean() > 0.1
    load_t1w(_save_affine(tmp_path / "sub-01_T1w.nii.gz", noisy.astype(np.float32), img.affine))


def _save_affine(path, data, affine):
    nb.Nifti1Image(data, affine).to_filename(path)
    return path


@pytest.mark.slow
def test_a_head_no_t1w_can_be_is_refused(philips_2mm):
    """A contrast-inverted head named T1w passed on main as "success" (ICV 4,266 cm³).
    Inverted inside the head, deepbet takes the whole head for the brain (3.9 L here);
    inverted as a whole, it finds a brain-sized mask, but deep tissue is darker than the
    surface. The real head passes."""
    from scipy import ndimage as ndi

    from mcpvs_bidsapp.interfaces.brain import deepbet_mask
    from mcpvs_bidsapp.validation import check_head

    img = nb.load(philips_2mm)
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    zooms = img.header.get_zooms()[:3]
    head = ndi.binary_fill_holes(
        ndi.binary_closing(data > 0.1 * np.percentile(data, 99), iterations=3)
    )
    cases = {
        "real": data,
        "inverted inside the head": np.where(head, data.max() - data, 0),
        "inverted": data.max() - data,
    }
    found = {}
    for name, array in cases.items():
        brain = deepbet_mask(nb.Nifti1Image(array.astype(np.float32), img.affine)) > 0
        icv = float(brain.sum() * np.prod(zooms))
        try:
            found[name] = check_head("sub-01_T1w.nii.gz", array, brain, icv, zooms)
        except InputImageError as err:
            found[name] = str(err)
    assert found["real"] == []
    assert "more than any human's" in found["inverted inside the head"]
    assert "not T1-weighted" in found["inverted"]
    for name in ("inverted inside the head", "inverted"):
        assert found[name].startswith("sub-01_T1w.nii.gz: ") and "\n" not in found[name]


def test_an_empty_region_gives_na_not_zero():
    """An empty WM region gave "PVS 0" as a number on main; now n/a, and a warning says why."""
    from mcpvs_bidsapp.measures import cluster_census, region_measures
    from mcpvs_bidsapp.validation import check_head

    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[5:35, 5:35, 5:35] = True
    dseg = np.where(brain, 3, 0).astype(np.uint8)
    dseg[15:25, 15:25, 15:25] = 1  # BG only: no WM (a crop around the basal ganglia)
    pvs = np.zeros(shape, bool)
    pvs[18:20, 18, 16:22] = True
    affine = np.eye(4)
    census = cluster_census(pvs, dseg, affine)
    table = region_measures(pvs, dseg, brain, affine, 1.4e6, census).set_index("region")
    assert table.loc["BG", "pvs_volume_mm3"] == 12 and table.loc["BG", "pvs_count"] == 1
    assert np.isnan(table.loc["WM", "pvs_volume_mm3"]) and np.isnan(table.loc["WM", "pvsnm"])
    assert np.isnan(table.loc["WM", "pvs_count"]) and table.loc["WM", "region_volume_mm3"] == 0
    t1w = np.where(brain, 100.0, 0.0)
    warnings = check_head("sub-01_T1w.nii.gz", t1w, brain, 1.4e6, (1, 1, 1), dseg)
    assert any("no WM region was found; its measures are n/a" in w for w in warnings)
