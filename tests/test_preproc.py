"""Preprocessing as the mcPVS-Net authors ran it: brain mask -> N4 (masked image) -> FCM.

Real image: the Philips MPRAGE of ../shared/data resampled to 2 mm (N4/FCM/deepbet are
resolution-agnostic; 2 mm keeps each test to seconds).  Known truth comes from the image
itself: a smooth bias field we multiply in, and the package's own CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage as ndi

from mcpvs_bidsapp.errors import InputImageError
from mcpvs_bidsapp.interfaces.brain import deepbet_mask
from mcpvs_bidsapp.interfaces.fcm import fcm_normalize
from mcpvs_bidsapp.interfaces.n4 import n4_masked
from mcpvs_bidsapp.interfaces.validation import ValidateT1w
from mcpvs_bidsapp.synthetic.datasets import resample_head
from mcpvs_bidsapp.workflows.preproc import init_preproc_wf


@pytest.fixture(scope="module")
def head2mm(philips_t1w, tmp_path_factory) -> tuple[nb.Nifti1Image, np.ndarray]:
    """The Philips head at 2 mm and its deepbet brain mask."""
    path = resample_head(philips_t1w, tmp_path_factory.mktemp("head") / "philips_2mm.nii.gz", 2.0)
    img = nb.load(str(path))
    mask = deepbet_mask(img, num_threads=2)
    return img, mask


def _wm_mask(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brightest of three intensity classes in the brain, eroded: WM on an unbiased T1w."""
    from skimage.filters import threshold_multiotsu

    brain = mask > 0
    thr = threshold_multiotsu(data[brain], classes=3)
    return ndi.binary_erosion((data > thr[-1]) & brain, iterations=1)


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_brain_mask_volume_is_adult(head2mm):
    img, mask = head2mm
    volume_ml = mask.sum() * np.prod(img.header.get_zooms()[:3]) / 1000
    assert 1000 < volume_ml < 1900, volume_ml


@pytest.mark.parametrize("whole_image", [True, False])
def test_n4_removes_an_added_bias_field(head2mm, whole_image):
    img, mask = head2mm
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    wm = _wm_mask(data, mask)
    # smooth multiplicative field, +-30 % across the head along two axes (a strong coil bias)
    idx = np.indices(data.shape, dtype=np.float32)
    ramp = (idx[0] / data.shape[0] - 0.5) + 0.6 * (idx[2] / data.shape[2] - 0.5)
    biased = data * np.exp(0.6 * ramp)
    corrected, _ = n4_masked(biased, mask, img.affine, num_threads=2, whole_image=whole_image)
    cv_biased, cv_corrected = _cv(biased[wm]), _cv(corrected[wm])
    assert cv_corrected < 0.8 * cv_biased, (cv_biased, cv_corrected)
    # the head has its own bias too: compare with N4 of the unbiased head, which must differ
    # from N4 of the biased one by much less than the field we added (up to a global scale)
    reference, _ = n4_masked(data, mask, img.affine, num_threads=2, whole_image=whole_image)
    residual = np.log(corrected[wm] / reference[wm])
    added = 0.6 * ramp[wm]
    assert residual.std() < 0.5 * added.std(), (residual.std(), added.std())
    inside = mask > 0
    assert np.all(corrected[~inside] == 0)


def test_n4_keeps_contrast_whatever_the_intensity_range(head2mm):
    """N4 is multiplicative: a head stored with WM near 1 (a normalised input, the demo's
    phantoms) must come out as the same image up to scale. An additive shift to positive
    values once halved the PVS contrast of such images."""
    img, mask = head2mm
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    small = data / np.median(data[_wm_mask(data, mask)])  # WM ~ 1, CSF and PVS near 0.3
    big, _ = n4_masked(data, mask, img.affine, num_threads=2, whole_image=False)
    low, _ = n4_masked(small, mask, img.affine, num_threads=2, whole_image=False)
    inside = (mask > 0) & (big > 0)
    ratio = low[inside] / big[inside]
    assert ratio.std() / ratio.mean() < 0.02, ratio.std() / ratio.mean()


def test_fcm_puts_white_matter_at_the_target(head2mm):
    img, mask = head2mm
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    corrected, _ = n4_masked(data, mask, img.affine, num_threads=2)
    n4_img = nb.Nifti1Image(corrected, img.affine)
    out = fcm_normalize(n4_img, nb.Nifti1Image(mask, img.affine))
    wm = _wm_mask(corrected, mask)
    # intensity-normalization's FCM target for WM is 1.0 (membership-weighted WM mean)
    assert 0.92 < float(np.median(out[wm])) < 1.08
    gm_csf = (mask > 0) & ~ndi.binary_dilation(wm, iterations=2)
    assert float(np.median(out[gm_csf])) < 0.9


def test_fcm_equals_the_packages_cli(head2mm, tmp_path):
    """Our call and ``intensity-normalize fcm IMG -m MASK -o OUT --tissue-type wm`` agree."""
    img, mask = head2mm
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    corrected, _ = n4_masked(data, mask, img.affine, num_threads=2)
    in_file, mask_file, out_file = (
        tmp_path / "n4.nii.gz",
        tmp_path / "m.nii.gz",
        tmp_path / "o.nii.gz",
    )
    nb.Nifti1Image(corrected, img.affine).to_filename(in_file)
    nb.Nifti1Image(mask.astype(np.uint8), img.affine).to_filename(mask_file)
    cli = Path(sys.executable).with_name("intensity-normalize")
    cmd = [str(cli), "fcm", str(in_file), "-m", str(mask_file), "-o", str(out_file)]
    subprocess.run(cmd + ["--tissue-type", "wm", "--modality", "t1"], check=True)
    ours = fcm_normalize(nb.load(str(in_file)), nb.load(str(mask_file)))
    theirs = np.asanyarray(nb.load(str(out_file)).dataobj, dtype=np.float32)
    inside = mask > 0
    # the CLI's c-means starts from an unseeded random point: same fixed point, tiny jitter
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize(
    "shape, fill, message",
    [
        ((40, 40, 40, 3), 1.0, "image is 4D"),
        ((64, 64), 1.0, "image is 2D"),
        ((40, 40, 40), 0.0, "image is all zeros"),
        ((40, 40, 40), np.nan, "NaN"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line(tmp_path, shape, fill, message):
    rng = np.random.default_rng(0)
    data = np.full(shape, fill, dtype=np.float32)
    if fill == 1.0:
        data *= rng.normal(100, 10, shape).astype(np.float32)
    path = tmp_path / "sub-01_T1w.nii.gz"
    nb.Nifti1Image(data, np.eye(4)).to_filename(path)
    wf = init_preproc_wf(regions="fast", n4_mask="brain", omp_nthreads=1)
    validate = wf.get_node("validate").interface
    assert isinstance(validate, ValidateT1w)
    validate.inputs.in_file = str(path)
    with pytest.raises(InputImageError) as err:
        validate.run()
    line = str(err.value)
    assert line.startswith("sub-01_T1w.nii.gz: ") and message in line and "\n" not in line


@pytest.mark.parametrize(
    ("requested", "method", "whole_image"),
    [
        ("auto", "nnunet", True),  # the model gets the image it was trained on
        ("auto", "vesselness", False),  # the built-in method was validated with -x brain
        ("whole-image", "vesselness", True),
        ("brain", "nnunet", False),
    ],
)
def test_n4_mask_follows_the_method_unless_chosen(
    tmp_path, monkeypatch, requested, method, whole_image
):
    from mcpvs_bidsapp import methods
    from mcpvs_bidsapp.bids import T1wInput
    from mcpvs_bidsapp.cli.parser import build_parser
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.outputs.read import t1w_entities
    from mcpvs_bidsapp.workflows.base import init_t1w_wf

    assert build_parser().get_default("n4_mask") == "auto"
    path = tmp_path / "sub-01_T1w.nii.gz"
    nb.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_filename(path)  # built only
    # the model check is tested with real models (test_models.py); here only the N4 choice
    nnunet = methods.segmenter("nnunet")
    monkeypatch.setattr(
        type(nnunet), "resolve", lambda self, s: {"model_name": "m", "model_store": str(tmp_path)}
    )
    settings = Settings.from_options(
        tmp_path, tmp_path / "out", "participant", n4_mask=requested, method=method
    )
    plan = settings.resolve()
    assert plan.method == method and plan.n4_mask.value == (
        "whole-image" if whole_image else "brain"
    )
    wf = init_t1w_wf(plan, T1wInput(path=path, entities=t1w_entities(path)))
    n4_mask = wf.get_node("preproc_wf.n4").interface.inputs.n4_mask
    assert n4_mask == ("whole-image" if whole_image else "brain")
    with pytest.raises(ValueError, match="n4_mask"):
        init_preproc_wf(regions="fast", n4_mask="auto")
