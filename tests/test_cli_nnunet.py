"""nnU-Net end to end through the CLI: install a (tiny, really trained) model, select it by
name, and find its provenance in every output; a tampered checkpoint stops the run clearly."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcpvs_bidsapp.synthetic.datasets import make_small_bids

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


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
    assert "PVS method: nnunet" in proc.stderr  # auto picked the installed model, and said so

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
