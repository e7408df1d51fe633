"""Derivatives of a real head, made by hand per docs/outputs.md, for report tests.

The images are real T1w heads (make_small_bids); the masks are simple and known: a
thresholded brain mask, box-shaped BG/WM regions and straight synthetic PVS tubes. Files are
written by the pipeline's own WriteDerivatives, so names and sidecars follow the contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage

from mcpvs_bidsapp.interfaces.derivatives import WriteDerivatives
from mcpvs_bidsapp.measures import cluster_census, region_measures
from mcpvs_bidsapp.synthetic.datasets import make_small_bids

RUN_ID = "20261125-120000_abcdef"


def _masks(t1w: Path) -> dict[str, np.ndarray]:
    img = nb.load(str(t1w))
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    smooth = ndimage.gaussian_filter(data, 1.5)
    brain = smooth > 0.35 * np.percentile(smooth[smooth > 0], 98)
    brain = ndimage.binary_opening(brain, iterations=2)
    labels, _ = ndimage.label(brain)
    brain = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    brain = ndimage.binary_fill_holes(brain)
    # regions: a box in the middle of the brain is "BG", bright voxels elsewhere "WM"
    ijk = np.argwhere(brain)
    lo, hi = ijk.min(0), ijk.max(0)
    centre = ((lo + hi) / 2).astype(int)
    half = np.maximum((hi - lo) // 10, 2)
    dseg = np.where(brain, 3, 0).astype(np.uint8)
    bright = data > np.percentile(data[brain], 60)
    dseg[brain & bright] = 2
    box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half, strict=True))
    dseg[box] = np.where(brain[box], 1, 0)
    # PVS: straight 1-voxel tubes, 3 in the BG box, 5 higher up in the WM
    pvs = np.zeros(data.shape, bool)
    axis = int(np.argmax(np.abs(img.affine[:3, :3])[2]))  # the voxel axis closest to S-I
    others = [a for a in range(3) if a != axis]
    for n, (off_a, off_b) in enumerate([(-2, -2), (0, 2), (2, -1)]):
        idx = [0, 0, 0]
        idx[others[0]] = centre[others[0]] + off_a * (1 + n % 2)
        idx[others[1]] = centre[others[1]] + off_b
        sl = [idx[0], idx[1], idx[2]]
        sl[axis] = slice(centre[axis] - half[axis] + 1, centre[axis] + half[axis])
        pvs[tuple(sl)] = True
    wm_level = lo[axis] + int(0.75 * (hi[axis] - lo[axis]))
    for n in range(5):
        idx = [0, 0, 0]
        idx[others[0]] = centre[others[0]] + (n - 2) * max(half[others[0]], 3)
        idx[others[1]] = centre[others[1]] + (n % 2) * 3
        sl = [idx[0], idx[1], idx[2]]
        sl[axis] = slice(wm_level - 3, wm_level + 3)
        pvs[tuple(sl)] = True
    pvs &= brain
    return {"brain": brain, "dseg": dseg, "pvs": pvs, "data": data * brain}


def write_fake_derivatives(bids_dir: Path, output_dir: Path, t1w: Path, work: Path) -> None:
    """Every derivative of one T1w, as a successful run would commit them."""
    img = nb.load(str(t1w))
    m = _masks(t1w)
    work.mkdir(parents=True, exist_ok=True)

    def save(name: str, data, dtype) -> str:
        path = work / name
        nb.Nifti1Image(np.asarray(data).astype(dtype), img.affine).to_filename(path)
        return str(path)

    brain_f = save("brain.nii.gz", m["brain"], np.uint8)
    wm_mean = float(m["data"][m["dseg"] == 2].mean())
    preproc_f = save("preproc.nii.gz", m["data"] / wm_mean, np.float32)
    dseg_f = save("dseg.nii.gz", m["dseg"], np.uint8)
    pvs_f = save("pvs.nii.gz", m["pvs"], np.uint8)
    prob_f = save("prob.nii.gz", m["pvs"] * 0.9, np.float32)
    icv = float(m["brain"].sum() * abs(np.linalg.det(img.affine[:3, :3])))
    census = cluster_census(m["pvs"], m["dseg"], img.affine)
    measures = region_measures(m["pvs"], m["dseg"], m["brain"], img.affine, icv, census)
    measures.to_csv(work / "measures.tsv", sep="\t", index=False, na_rep="n/a")
    census.to_csv(work / "clusters.tsv", sep="\t", index=False, na_rep="n/a")
    WriteDerivatives(
        base_directory=str(output_dir),
        bids_dir=str(bids_dir),
        source_file=str(t1w),
        brain_mask=brain_f,
        preproc_t1w=preproc_f,
        regions_dseg=dseg_f,
        pvs_mask=pvs_f,
        pvs_probseg=prob_f,
        measures=str(work / "measures.tsv"),
        clusters=str(work / "clusters.tsv"),
        segment_parameters={
            "Method": "vesselness",
            "MethodDescription": "test fixture: synthetic tubes",
            "Parameters": {"scales_mm": [0.5, 1.0]},
        },
        regions_method="fixture",
        icv_source="brain mask volume",
    ).run(cwd=str(work))


def write_status(output_dir: Path, label: str, runs: list[dict]) -> Path:
    log = output_dir / f"sub-{label}" / "log" / RUN_ID
    log.mkdir(parents=True, exist_ok=True)
    status = {
        "run_id": RUN_ID,
        "participant_label": label,
        "started": "2026-11-25T12:00:00",
        "finished": "2026-11-25T12:10:00",
        "mcpvs_version": "test",
        "method": "vesselness",
        "runs": runs,
    }
    path = log / "mcpvs_status.json"
    path.write_text(json.dumps(status, indent=2))
    return path


CRASH_TEXT = """Node: mcpvs_wf.sub_02_wf.t1w_sub_02.segment_wf.vesselness
Working directory: /tmp/work/mcpvs_wf/sub_02_wf/t1w_sub_02/segment_wf/vesselness

Node inputs:

in_file = <undefined>

Traceback (most recent call last):
  File "nipype/pipeline/plugins/multiproc.py", line 67, in run_node
    result["result"] = node.run(updatehash=updatehash)
RuntimeError: sub-02_T1w.nii.gz: vesselness failed <script>alert(1)</script>
"""


def make_report_dataset(tmp: Path, shared_data: Path, zoom_mm: float | None = 2.0):
    """sub-01 succeeded (derivatives on disk), sub-02 failed (status + crash file only)."""
    bids = make_small_bids(tmp / "bids", shared_data, n_participants=2, zoom_mm=zoom_mm)
    out = tmp / "out"
    t1w = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    write_fake_derivatives(bids, out, t1w, tmp / "work")
    write_status(
        out,
        "01",
        [{"source": "sub-01/anat/sub-01_T1w.nii.gz", "entities": {"subject": "01"},
          "status": "success", "error": None}],
    )  # fmt: skip
    write_status(
        out,
        "02",
        [{"source": "sub-02/anat/sub-02_T1w.nii.gz", "entities": {"subject": "02"},
          "status": "failed",
          "error": "sub-02_T1w.nii.gz: vesselness failed (step t1w_sub_02.segment_wf)"}],
    )  # fmt: skip
    crash = out / "sub-02" / "log" / RUN_ID / "crash-20261125-120500-root-vesselness-ab12.txt"
    crash.write_text(CRASH_TEXT)
    # what a real run writes first: it makes the folder recognisably mcpvs's (issue #17)
    from mcpvs_bidsapp.bids import container_info, dataset_description

    (out / "dataset_description.json").write_text(
        json.dumps(dataset_description(container_info()), indent=2)
    )
    return bids, out


def make_phantom_report_dataset(tmp: Path, labels=("01",), load: str = "many") -> tuple[Path, Path]:
    """Successful participants on nilearn's MNI152 with inserted PVS (no ../shared/data needed):
    the regions are the template's, the PVS mask is the inserted truth, so the report shows
    a brain whose PVS sit where PVS sit."""
    from mcpvs_bidsapp.synthetic.phantoms import phantom_from_mni

    bids = tmp / "bids"
    out = tmp / "out"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "phantom", "BIDSVersion": "1.9.0"})
    )
    for n, label in enumerate(labels):
        image, truth, brain, regions = phantom_from_mni(load=load, seed=20 + n)
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        t1w = anat / f"sub-{label}_T1w.nii.gz"
        image.to_filename(t1w)
        (anat / f"sub-{label}_T1w.json").write_text(
            json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3})
        )
        work = tmp / f"work-{label}"
        work.mkdir(parents=True, exist_ok=True)
        affine = image.affine

        def save(name, data, dtype, work=work, affine=affine):
            path = work / name
            nb.Nifti1Image(np.asarray(data).astype(dtype), affine).to_filename(path)
            return str(path)

        b = np.asanyarray(brain.dataobj) > 0
        d = np.asanyarray(regions.dataobj).astype(np.uint8)
        m = np.asanyarray(truth.dataobj) > 0
        data = np.asanyarray(image.dataobj, dtype=np.float32) * b
        icv = float(b.sum() * abs(np.linalg.det(affine[:3, :3])))
        census = cluster_census(m, d, affine)
        measures = region_measures(m, d, b, affine, icv, census)
        measures.to_csv(work / "measures.tsv", sep="\t", index=False, na_rep="n/a")
        census.to_csv(work / "clusters.tsv", sep="\t", index=False, na_rep="n/a")
        prob = ndimage.gaussian_filter(m.astype(np.float32), 0.7)
        WriteDerivatives(
            base_directory=str(out),
            bids_dir=str(bids),
            source_file=str(t1w),
            brain_mask=save("brain.nii.gz", b, np.uint8),
            preproc_t1w=save("preproc.nii.gz", data / float(np.median(data[d == 2])), np.float32),
            regions_dseg=save("dseg.nii.gz", d, np.uint8),
            pvs_mask=save("pvs.nii.gz", m, np.uint8),
            pvs_probseg=save("prob.nii.gz", np.clip(prob / max(prob.max(), 1e-6), 0, 1), "f4"),
            measures=str(work / "measures.tsv"),
            clusters=str(work / "clusters.tsv"),
            segment_parameters={
                "Method": "vesselness",
                "MethodDescription": "test fixture: the inserted PVS",
                "Parameters": {"scales_mm": [0.5, 1.0], "threshold": 0.2},
            },
            regions_method="fixture",
            icv_source="brain mask volume",
        ).run(cwd=str(work))
        write_status(
            out,
            label,
            [{"source": f"sub-{label}/anat/sub-{label}_T1w.nii.gz",
              "entities": {"subject": label}, "status": "success", "error": None}],
        )  # fmt: skip
    return bids, out
