"""The reproducible registration helper: identical warps run to run, and it really registers."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from mcpvs_bidsapp.registration import RegistrationJob, Warp, run_registration
from mcpvs_bidsapp.synthetic.datasets import resample_head


@pytest.fixture(scope="module")
def moved_head(philips_t1w, tmp_path_factory):
    """A 3 mm head and the same head moved by 8 degrees and 6 mm in world space."""
    tmp = tmp_path_factory.mktemp("reg")
    fixed = resample_head(philips_t1w, tmp / "fixed.nii.gz", 3.0)
    img = nb.load(str(fixed))
    a = np.deg2rad(8)
    move = np.array(
        [[np.cos(a), -np.sin(a), 0, 6], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    moving = tmp / "moving.nii.gz"
    nb.Nifti1Image(np.asanyarray(img.dataobj), move @ img.affine).to_filename(moving)
    return tmp, fixed, moving


def _warp(tmp, fixed, moving, name: str):
    out = tmp / f"{name}.nii.gz"
    job = RegistrationJob(
        fixed_file=str(fixed),
        moving_file=str(moving),
        warps=[Warp(str(moving), str(out), "linear")],
        reg_spacing_mm=None,
        registration_kwargs={"type_of_transform": "Affine", "aff_metric": "mattes"},
    )
    run_registration(job)
    return np.asanyarray(nb.load(str(out)).dataobj)


@pytest.mark.slow  # two ANTs registrations of a real head: 20 s on a loaded 2-core machine
def test_registration_is_identical_run_to_run_and_aligns(moved_head, monkeypatch):
    tmp, fixed, moving = moved_head
    # the parent asks for 2 ITK threads; the child must still run single-threaded and seeded
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    first = _warp(tmp, fixed, moving, "w1")
    second = _warp(tmp, fixed, moving, "w2")
    assert np.array_equal(first, second)

    ref = np.asanyarray(nb.load(str(fixed)).dataobj, dtype=np.float32)
    # the moved head resampled onto the fixed grid through world space = the misalignment
    unregistered = resample_from_to(nb.load(str(moving)), nb.load(str(fixed)), order=1)
    unregistered = np.asanyarray(unregistered.dataobj, dtype=np.float32)
    head = ref > np.percentile(ref, 60)
    r_before = np.corrcoef(ref[head], unregistered[head])[0, 1]
    r_after = np.corrcoef(ref[head], first[head])[0, 1]
    assert r_after > 0.95 and r_after > r_before + 0.1


def test_registration_failure_is_one_line_naming_the_file(moved_head):
    tmp, fixed, _ = moved_head
    bad = tmp / "not_an_image.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(RuntimeError, match="not_an_image.nii.gz") as err:
        _warp(tmp, fixed, bad, "never")
    assert "\n" not in str(err.value)
