"""--wmh-derivatives: finding each T1w's WMH mask and refusing masks off its grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.bids import T1wInput, collect_wmh, find_wmh_mask
from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.outputs.read import t1w_entities


def _img(path: Path, shape=(8, 9, 10), affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    nb.Nifti1Image(np.zeros(shape, np.uint8), affine).to_filename(path)
    return path


def _t1w(root: Path, name: str) -> T1wInput:
    parts = [p for p in name.split("_") if p.startswith(("sub-", "ses-"))]
    path = _img(root.joinpath(*parts, "anat", name))
    return T1wInput(path=path, entities=t1w_entities(path))


def test_matches_by_subject_session_and_run(tmp_path):
    bids, wmh = tmp_path / "bids", tmp_path / "wmh"
    run1 = _t1w(bids, "sub-01_ses-A_run-1_T1w.nii.gz")
    run2 = _t1w(bids, "sub-01_ses-A_run-2_T1w.nii.gz")
    other_ses = _t1w(bids, "sub-01_ses-B_T1w.nii.gz")
    anat = wmh / "sub-01" / "ses-A" / "anat"
    m1 = _img(anat / "sub-01_ses-A_run-1_desc-WMH_mask.nii.gz")
    m2 = _img(anat / "sub-01_ses-A_run-2_label-WMH_mask.nii.gz")
    _img(anat / "sub-01_ses-A_run-1_space-MNI152NLin2009cAsym_desc-WMH_mask.nii.gz")
    _img(anat / "sub-01_ses-A_run-1_desc-brain_mask.nii.gz")
    assert find_wmh_mask(wmh, run1) == m1
    assert find_wmh_mask(wmh, run2) == m2
    assert find_wmh_mask(wmh, other_ses) is None


def test_session_level_mask_serves_all_runs_but_ambiguity_is_an_error(tmp_path):
    bids, wmh = tmp_path / "bids", tmp_path / "wmh"
    t1w = _t1w(bids, "sub-02_run-1_T1w.nii.gz")
    mask = _img(wmh / "sub-02" / "anat" / "sub-02_desc-WMH_mask.nii.gz")
    assert find_wmh_mask(wmh, t1w) == mask
    _img(wmh / "sub-02" / "anat" / "sub-02_space-T1w_label-WMH_mask.nii.gz")
    with pytest.raises(BIDSError, match="several WMH masks match"):
        find_wmh_mask(wmh, t1w)


def test_masks_off_the_t1w_grid_are_refused_with_one_line(tmp_path):
    bids, wmh = tmp_path / "bids", tmp_path / "wmh"
    good = _t1w(bids, "sub-01_T1w.nii.gz")
    shifted = _t1w(bids, "sub-02_T1w.nii.gz")
    small = _t1w(bids, "sub-03_T1w.nii.gz")
    missing = _t1w(bids, "sub-04_T1w.nii.gz")
    _img(wmh / "sub-01" / "anat" / "sub-01_desc-WMH_mask.nii.gz")
    moved = np.eye(4)
    moved[:3, 3] = [1.5, 0, 0]
    _img(wmh / "sub-02" / "anat" / "sub-02_desc-WMH_mask.nii.gz", affine=moved)
    _img(wmh / "sub-03" / "anat" / "sub-03_desc-WMH_mask.nii.gz", shape=(4, 4, 4))
    found, problems = collect_wmh(wmh, [good, shifted, small, missing])
    assert list(found) == [str(good.path)]
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert "sub-02_desc-WMH_mask.nii.gz: not on the grid of sub-02_T1w.nii.gz" in problems[0]
    assert "different affine" in problems[0]
    assert "shape 4x4x4 vs 8x9x10" in problems[1]
    assert problems[2].startswith("sub-04_T1w.nii.gz: no WMH mask")


def test_missing_folder_is_a_usage_error(tmp_path):
    with pytest.raises(BIDSError, match="--wmh-derivatives is not a folder"):
        collect_wmh(tmp_path / "nope", [])
