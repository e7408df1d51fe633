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
