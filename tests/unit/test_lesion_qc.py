"""Lesion masks beside the T1w or by --lesion-mask, and the QC flags of the measures."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp import measures
from mcpvs_bidsapp.bids import T1wInput, collect_lesions, lesion_beside, lesion_from_pattern
from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.group.collect import qc_label
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.read import t1w_entities


def _img(path: Path, shape=(8, 9, 10), affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4) if affine is None else affine).to_filename(
        path
    )
    return path


def _t1w(root: Path, name: str) -> T1wInput:
    parts = [p for p in name.split("_") if p.startswith(("sub-", "ses-"))]
    path = _img(root.joinpath(*parts, "anat", name))
    return T1wInput(path=path, entities=t1w_entities(path))


def test_bids_lesion_masks_beside_the_t1w_are_found(tmp_path):
    roi = _t1w(tmp_path, "sub-01_ses-A_run-1_T1w.nii.gz")
    desc = _t1w(tmp_path, "sub-02_T1w.nii.gz")
    none = _t1w(tmp_path, "sub-03_T1w.nii.gz")
    m1 = _img(roi.path.parent / "sub-01_ses-A_run-1_label-lesion_roi.nii.gz")
    _img(roi.path.parent / "sub-01_ses-A_run-2_label-lesion_roi.nii.gz")  # another run's
    m2 = _img(desc.path.parent / "sub-02_desc-lesion_mask.nii")
    assert lesion_beside(roi) == m1
    assert lesion_beside(desc) == m2
    assert lesion_beside(none) is None
    found, problems = collect_lesions([roi, desc, none], None, tmp_path)
    assert found == {str(roi.path): str(m1), str(desc.path): str(m2)} and not problems


def test_lesion_pattern_placeholders_globs_and_problems(tmp_path):
    a = _t1w(tmp_path, "sub-01_ses-A_T1w.nii.gz")
    b = _t1w(tmp_path, "sub-02_T1w.nii.gz")
    c = _t1w(tmp_path, "sub-03_T1w.nii.gz")
    d = _t1w(tmp_path, "sub-04_T1w.nii.gz")
    les = tmp_path / "derivatives" / "lesions"
    ma = _img(les / "sub-01" / "sub-01_ses-A_desc-lesion_mask.nii.gz")
    _img(les / "sub-02" / "sub-02_desc-lesion_mask.nii.gz", shape=(4, 4, 4))  # off grid
    _img(les / "sub-04" / "sub-04_x_desc-lesion_mask.nii.gz")
    _img(les / "sub-04" / "sub-04_y_desc-lesion_mask.nii.gz")  # two matches
    pattern = "derivatives/lesions/sub-{subject}/{prefix}*_desc-lesion_mask.nii.gz"
    assert lesion_from_pattern(pattern, a, tmp_path) == [ma]
    found, problems = collect_lesions([a, b, c, d], pattern, tmp_path)
    assert found == {str(a.path): str(ma)}
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert "not on the grid of sub-02_T1w.nii.gz" in problems[0]
    assert "sub-03_T1w.nii.gz: no lesion mask matches" in problems[1]
    assert "matches 2 files" in problems[2]
    with pytest.raises(BIDSError, match="unknown placeholder"):
        lesion_from_pattern("{participant}.nii.gz", a, tmp_path)


def test_lesion_mask_travels_to_the_segmenter_measures_and_writer(tmp_path):
    """workflows.base gives the lesion mask to the built-in method, the measures and the
    writer; a segmenter that does not declare accepts_lesion_mask does not get it."""
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.workflows.base import init_t1w_wf

    t1w = _t1w(tmp_path / "bids", "sub-01_T1w.nii.gz")
    (tmp_path / "bids" / "dataset_description.json").write_text("{}")
    les = _img(t1w.path.parent / "sub-01_label-lesion_roi.nii.gz")
    settings = Settings.from_options(
        tmp_path / "bids", tmp_path / "out", "participant", method="vesselness", regions="fast"
    )
    plan = settings.resolve()
    from dataclasses import replace

    wf = init_t1w_wf(plan, replace(t1w, lesion_file=les))
    # the steps run on the RAS+ copy: the mask goes through its own reorientation node first
    canonical = wf.get_node("lesion_canonical")
    assert canonical.inputs.in_file == str(les)
    fed = {
        (v.fullname.split(".", 1)[-1], dst)
        for u, v, d in wf._graph.edges(data=True)
        if u is canonical
        for _, dst in d["connect"]
    }
    assert fed == {("segment_wf", "inputnode.lesion_mask"), ("measures", "in_lesion")}, fed
    assert wf.get_node("write_derivatives").inputs.lesion_file == str(les)


def _head():
    """A 40 mm cube: WM with a BG block, a ventricle-like fluid box, brain everywhere."""
    shape = (40, 40, 40)
    dseg = np.full(shape, spec.Region.WM, np.uint8)
    dseg[22:30, 8:16, 14:26] = spec.Region.BG
    t1w = np.ones(shape, np.float32)
    t1w[16:24, 26:36, 14:26] = 0.2  # fluid body 8x10x12 mm
    dseg[16:24, 26:36, 14:26] = spec.Region.OTHER
    return t1w, dseg, np.ones(shape, np.uint8), np.eye(4)


def _flags(mask, **kw):
    t1w, dseg, brain, affine = _head()
    census = measures.cluster_census(mask, dseg, affine)
    return measures.qc_flags(mask, dseg, brain, affine, census, t1w=t1w, **kw)


def test_qc_flags_low_load_no_bg_and_asymmetry():
    mask = np.zeros((40, 40, 40), np.uint8)
    mask[5, 5, 5] = mask[8, 30, 8] = 1  # two WM dots on the low-x side
    out = _flags(mask)
    raised = {f["flag"] for f in out["QCFlags"]}
    assert raised == {"low_load", "no_bg_pvs"}  # asymmetry needs >= QC_MIN_CLUSTERS clusters
    assert out["QCChecks"]["low_load"]["value"] == 2
    assert out["QCChecks"]["asymmetry"]["value"] == 1.0
    assert all(f["message"] and "\n" not in f["message"] for f in out["QCFlags"])
    # 24 separate dots, all on one side, 2 in the BG: asymmetry only
    mask[:] = 0
    for k in range(24):
        mask[2 + 4 * (k % 4), 2 + 4 * (k // 4), 4] = 1
    mask[24, 10, 20] = mask[27, 13, 20] = 1
    out = _flags(mask)
    assert [f["flag"] for f in out["QCFlags"]] == ["asymmetry"]


def test_qc_flag_pvs_next_to_a_fluid_body_or_the_lesion():
    mask = np.zeros((40, 40, 40), np.uint8)
    for k in range(25):  # 25 far dots, spread over both halves
        mask[3 + 7 * (k % 5), 3 + 4 * (k // 5), 36] = 1
    assert not _flags(mask)["QCChecks"]["near_lesion_or_csf"]["raised"]
    wall = mask.copy()
    wall[15, 26:36, 14:26] = 1  # a band along the fluid body's wall
    near = _flags(wall)["QCChecks"]["near_lesion_or_csf"]
    assert near["raised"] and near["value"] > 0.25
    lesion = np.zeros((40, 40, 40), bool)
    lesion[0:12, 0:12, 30:40] = True  # a lesion mask around many of the far dots
    flag = _flags(mask, lesion=lesion)["QCChecks"]["near_lesion_or_csf"]
    assert flag["lesion_mask"] and flag["value"] > 0


def test_qc_flag_coarse_voxels():
    """A voxel edge above validation.COARSE_VOXEL_MM (1.5 mm) is flagged beside the numbers;
    1 mm and 1.5 mm are not. Only the affine decides: the same mask at 2 mm or 1 x 1 x 2 mm
    (a thick-slice clinical T1w) raises it, with the voxel size in its message."""
    from mcpvs_bidsapp.validation import COARSE_VOXEL_MM

    t1w, dseg, brain, _ = _head()
    mask = np.zeros((40, 40, 40), np.uint8)
    mask[5, 5, 5] = 1
    for zooms, shown in (((1, 1, 1), None), ((1.5, 1.5, 1.5), None),
                         ((2, 2, 2), "2x2x2 mm"), ((1, 1, 2), "1x1x2 mm")):  # fmt: skip
        raised = shown is not None
        affine = np.diag([*zooms, 1.0])
        census = measures.cluster_census(mask, dseg, affine)
        out = measures.qc_flags(mask, dseg, brain, affine, census, t1w=t1w)
        check = out["QCChecks"]["coarse_voxels"]
        assert check["raised"] is raised and check["value"] == max(zooms), zooms
        assert check["threshold"] == COARSE_VOXEL_MM
        flags = {f["flag"]: f["message"] for f in out["QCFlags"]}
        assert ("coarse_voxels" in flags) is raised
        if raised:
            assert shown in flags["coarse_voxels"]
    # an oblique 1.5 mm affine stored in float32: its column norms read 1.50000002, which is
    # not coarser than 1.5 mm (the sizes are quantised as the voxel-wise steps read them)
    c, s = np.cos(0.01), np.sin(0.01)
    affine = np.eye(4)
    affine[:3, :3] = (1.5 * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])).astype(np.float32)
    assert np.linalg.norm(affine[:3, :3], axis=0).max() > 1.5
    census = measures.cluster_census(mask, dseg, affine)
    out = measures.qc_flags(mask, dseg, brain, affine, census, t1w=t1w)
    assert not out["QCChecks"]["coarse_voxels"]["raised"]


def test_group_table_qc_label():
    assert qc_label({}) == spec.NA
    assert qc_label({"QCFlags": []}) == spec.QC_OK
    assert qc_label({"QCFlags": [{"flag": "low_load"}, {"flag": "no_bg_pvs"}]}) == (
        "low_load;no_bg_pvs"
    )


@pytest.mark.parametrize("regions", ["fast", "samseg"])
def test_builtin_method_on_fast_regions_carries_a_flag(tmp_path, regions):
    """The built-in method on --regions fast finds grey matter folded into the coarse WM
    region (docs/builtin-method.md): every T1w of such a run carries the coarse_regions flag
    (measures sidecar, report banner, group qc_flags); with Samseg regions it does not."""
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.workflows.base import init_t1w_wf

    t1w = _t1w(tmp_path / "bids", "sub-01_T1w.nii.gz")
    (tmp_path / "bids" / "dataset_description.json").write_text("{}")
    plan = Settings.from_options(
        tmp_path / "bids", tmp_path / "out", "participant", method="vesselness", regions=regions
    ).resolve()
    wf = init_t1w_wf(plan, t1w)
    node = wf.get_node("measures")
    caveats = node.inputs.caveats if regions == "fast" else []
    # on fast regions the method also drops clusters held in the region's outer 2.5 mm
    seg = wf.get_node("segment_wf").get_node("vesselness")
    want = {"edge_cluster_mm": 2.5} if regions == "fast" else {}
    assert dict(seg.inputs.parameters or {}) == want
    assert [c["flag"] for c in caveats or []] == (["coarse_regions"] if regions == "fast" else [])
    if regions == "samseg":
        assert not node.inputs.caveats  # undefined: no caveat
    t1, dseg, brain, affine = _head()
    census = measures.cluster_census(np.zeros(dseg.shape, bool), dseg, affine)
    out = measures.qc_flags(
        np.zeros(dseg.shape, bool), dseg, brain, affine, census, caveats=caveats or None
    )
    names = [f["flag"] for f in out["QCFlags"]]
    assert ("coarse_regions" in names) == (regions == "fast")
    assert out["QCChecks"].get("coarse_regions", {"raised": False})["raised"] == (regions == "fast")
