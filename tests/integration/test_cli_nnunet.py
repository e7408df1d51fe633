"""nnU-Net end to end through the CLI: install a (tiny, really trained) model, select it by
name, and find its provenance in every output; a tampered checkpoint stops the run clearly."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcpvs_bidsapp.synthetic.datasets import make_small_bids

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the tiny-model builders


def mcpvs(*args) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=2400,
        env={**os.environ, "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
def test_model_selected_by_name_end_to_end(tiny_model_dir, shared_data, tmp_path):
    from nnunet_tiny import trained_model_folder

    store = tmp_path / "store"
    proc = mcpvs(
        "models",
        "install",
        trained_model_folder(tiny_model_dir),
        "--name",
        "tiny",
        "--model-store",
        store,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((store / "tiny" / "mcpvs_model.json").read_text())

    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1, zoom_mm=2.0)
    out = tmp_path / "out"
    proc = mcpvs(
        bids,
        out,
        "participant",
        "--regions",
        "fast",
        "--n4-mask",
        "brain",
        "--model",
        "tiny",
        "--model-store",
        store,
        "--profile",
        "fast-cpu",
        "-w",
        tmp_path / "work",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # auto picked the installed model, and the plan's line says so
    plan_line = next(ln for ln in proc.stderr.splitlines() if "; method " in ln)
    assert "method nnunet (" in plan_line and "(--method auto)" in plan_line, plan_line

    anat = out / "sub-01" / "anat"
    meta = json.loads((anat / "sub-01_space-T1w_desc-pvs_mask.json").read_text())
    assert meta["Method"] == "nnunet"
    assert meta["Model"]["Name"] == "tiny"
    assert meta["Model"]["Checksum"] == manifest["checksum"]
    assert meta["Model"]["Folds"] == [0] and meta["Model"]["Mirroring"] is False
    assert meta["Model"]["Device"] == "cpu"
    assert {"mcpvs", "nnunetv2", "torch"} <= set(meta["SoftwareVersions"])
    measures_meta = json.loads((anat / "sub-01_desc-pvs_measures.json").read_text())
    assert measures_meta["Method"] == "nnunet"
    assert measures_meta["ModelChecksum"] == manifest["checksum"]
    assert measures_meta["N4Mask"] == "brain"  # --n4-mask brain, recorded for the group level
    report = html.unescape((out / "sub-01.html").read_text())  # summary and methods say so too
    assert "brain mask as N4's mask (-x)" in report
    assert "brain-extracted with deepbet" in report and "within the brain mask" in report
    assert (anat / "sub-01_space-T1w_desc-pvs_probseg.nii.gz").exists()

    # the group level reads the method and the model from the outputs
    proc = mcpvs(bids, out, "group")
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, row = (out / "group_pvs.tsv").read_text().splitlines()[:2]
    record = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert record["method"] == "nnunet" and record["model_checksum"] == manifest["checksum"]
    assert record["n4_mask"] == "brain"

    # a changed checkpoint is refused before anything is unpickled, in one line
    checkpoint = next((store / "tiny").rglob("checkpoint_*.pth"))
    with open(checkpoint, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    proc = mcpvs(
        bids,
        tmp_path / "out2",
        "participant",
        "--regions",
        "fast",
        "--method",
        "nnunet",
        "--model",
        "tiny",
        "--model-store",
        store,
        "-w",
        tmp_path / "work2",
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mcpvs: error: model 'tiny': ") and "checksum" in last, last
    assert not (tmp_path / "out2" / "sub-01").exists()


@pytest.mark.slow
def test_v1_model_participant_run_and_check_demo(tiny_v1_model_dir, shared_data, tmp_path):
    """A v1 model installed from a cloud-drive zip: the participant run's mask is v1's own
    predict_from_folder's on the same preprocessed image, voxel for voxel, and check-demo
    says so (and says DIFFERENT for a wrong expected mask)."""
    import nibabel as nib
    import numpy as np
    from nnunet_v1_tiny import v1_predict

    from mcpvs_bidsapp.synthetic.datasets import resample_head

    store = tmp_path / "store"
    zip_path = tiny_v1_model_dir / "tiny_v1_clouddrive.zip"
    proc = mcpvs("models", "install", zip_path, "--name", "tinyv1", "--model-store", store)
    assert proc.returncode == 0, proc.stderr
    assert "tinyv1   (nnU-Net v1)" in proc.stdout
    manifest = json.loads((store / "tinyv1" / "mcpvs_model.json").read_text())

    raw = tmp_path / "RawT1w.nii.gz"
    resample_head(shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz", raw, 2.0)
    empty = tmp_path / "empty_mask.nii.gz"
    raw_img = nib.load(raw)
    nib.Nifti1Image(np.zeros(raw_img.shape, np.uint8), raw_img.affine).to_filename(empty)
    demo = ["models", "check-demo", raw, None, "--model", "tinyv1", "--model-store", store,
            "--profile", "fast-cpu", "--device", "cpu", "--n4-mask", "brain", "--omp-nthreads",
            "2", "-w", tmp_path / "w", "--keep", tmp_path / "out"]  # fmt: skip

    # 1. a wrong expected mask: the pipeline runs, the verdict says so, exit 1
    demo[3] = empty
    proc = mcpvs(*demo)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "verdict: DIFFERENT" in proc.stdout and "Dice         0.0000" in proc.stdout

    # 2. the run's outputs: provenance of the v1 model, and v1's own labels
    anat = tmp_path / "out" / "sub-demo" / "anat"
    meta = json.loads((anat / "sub-demo_space-T1w_desc-pvs_mask.json").read_text())
    assert meta["Model"]["NnUNetVersion"] == 1
    assert meta["Model"]["Checksum"] == manifest["checksum"]
    assert meta["Model"]["Trainer"] == "nnUNetTrainerV2"
    assert meta["Model"]["Plans"] == "nnUNetPlansv2.1"
    assert meta["Model"]["Checkpoints"] == {"0": "model_final_checkpoint.model"}
    assert meta["Model"]["Postprocessing"]["File"] == "postprocessing.json"
    assert meta["SoftwareVersions"]["nnunet"] == "1.7.1"
    ref_in = tmp_path / "v1_in"
    ref_in.mkdir()
    shutil.copy(anat / "sub-demo_desc-preproc_T1w.nii.gz", ref_in / "demo_0000.nii.gz")
    v1_predict(store / "tinyv1" / "model", ref_in, tmp_path / "v1_out", folds=[0], tta=False,
               step=0.75, workdir=tiny_v1_model_dir)  # fmt: skip
    expected = tmp_path / "v1_out" / "demo.nii.gz"
    ours = np.asarray(nib.load(anat / "sub-demo_space-T1w_desc-pvs_mask.nii.gz").dataobj)
    theirs = np.asarray(nib.load(expected).dataobj)
    assert ours.sum() > 100 and np.array_equal(ours, theirs)

    # 3. check-demo against v1's own mask (the work folder is reused: nothing recomputed)
    demo[3] = expected
    proc = mcpvs(*demo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verdict: REPRODUCED" in proc.stdout and "Dice         1.0000" in proc.stdout
    assert "element F1   1.0000" in proc.stdout
