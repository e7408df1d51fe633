"""Model store: install (folder and nnU-Net export zip), list, verify, refuse tampered files."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from nnunet_tiny import trained_model_folder

from mcpvs_bidsapp.cli.models import main as models_main
from mcpvs_bidsapp.models import store as ms


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_install_from_folder_list_verify(tiny_model_dir, tmp_path):
    src = trained_model_folder(tiny_model_dir)
    store = tmp_path / "store"
    info = ms.install_model(src, "tiny", store)

    assert info.configuration == "3d_fullres"
    assert info.trainer == "nnUNetTrainer"
    assert info.plans == "nnUNetPlans"
    assert info.folds == (0, 1)
    assert info.checkpoints == {"0": "checkpoint_final.pth", "1": "checkpoint_final.pth"}
    assert info.labels == {"background": 0, "PVS": 1}
    # every checkpoint's recorded sha256 is that of the source file
    for fold in (0, 1):
        rel = f"fold_{fold}/checkpoint_final.pth"
        assert info.files[rel] == _sha(src / rel)
        assert (info.path / rel).is_file()
    assert info.files["plans.json"] == _sha(src / "plans.json")
    assert info.files["dataset.json"] == _sha(src / "dataset.json")
    assert not (info.path / "fold_0" / "checkpoint_best.pth").exists()  # only what runs

    listed = ms.list_models(store)
    assert [m.name for m in listed] == ["tiny"]
    assert listed[0].checksum == info.checksum
    assert ms.verify_model("tiny", store).checksum == info.checksum

    with pytest.raises(ms.ModelStoreError, match="already installed"):
        ms.install_model(src, "tiny", store)
    again = ms.install_model(src, "tiny", store, force=True)
    assert again.checksum == info.checksum  # same files, same model checksum


@pytest.mark.slow
def test_install_from_export_zip_matches_folder(tiny_model_dir, tmp_path):
    zip_path = tiny_model_dir / "tiny_export.zip"
    with zipfile.ZipFile(zip_path) as zf:  # really nnU-Net's export layout
        names = zf.namelist()
    assert any(n.endswith("nnUNetTrainer__nnUNetPlans__3d_fullres/plans.json") for n in names)

    store = tmp_path / "store"
    from_zip = ms.install_model(zip_path, "tinyzip", store)
    from_dir = ms.install_model(trained_model_folder(tiny_model_dir), "tinydir", store)
    for rel in ("fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "plans.json"):
        assert from_zip.files[rel] == from_dir.files[rel]
    manifest = json.loads((from_zip.root / ms.MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == _sha(zip_path)
    assert {m.name for m in ms.list_models(store)} == {"tinyzip", "tinydir"}


@pytest.mark.slow
def test_cli_install_list_verify_remove(tiny_model_dir, tmp_path, capsys):
    store = str(tmp_path / "store")
    zip_path = str(tiny_model_dir / "tiny_export.zip")
    assert models_main(["install", zip_path, "--name", "mcpvsnet", "--model-store", store]) == 0
    assert models_main(["list", "--json", "--model-store", store]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("[") :])
    assert listed[0]["name"] == "mcpvsnet" and listed[0]["folds"] == [0, 1]
    assert listed[0]["trainer"] == "nnUNetTrainer"
    assert models_main(["verify", "--model-store", store]) == 0
    assert "mcpvsnet: OK" in capsys.readouterr().out
    assert models_main(["remove", "mcpvsnet", "--model-store", store]) == 0
    assert ms.list_models(store) == []


@pytest.mark.slow
def test_env_var_selects_store(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MCPVS_MODEL_STORE", str(tmp_path / "envstore"))
    ms.install_model(trained_model_folder(tiny_model_dir), "tiny")
    assert (tmp_path / "envstore" / "tiny" / ms.MANIFEST_NAME).is_file()
    assert [m.name for m in ms.list_models()] == ["tiny"]


@pytest.mark.slow
def test_tampered_checkpoint_refused_before_unpickling(tiny_model_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    ms.install_model(trained_model_folder(tiny_model_dir), "tiny", store)
    info = ms.get_model("tiny", store)  # verified once: cached for this process
    ckpt = info.path / "fold_1" / "checkpoint_final.pth"
    _flip_byte(ckpt)

    with pytest.raises(ms.ChecksumMismatchError, match=r"fold_1/checkpoint_final\.pth"):
        ms.verify_model("tiny", store)
    # the per-process cache notices the change too
    with pytest.raises(ms.ChecksumMismatchError, match="refusing to load"):
        ms.get_model("tiny", store)

    # the node stops before any checkpoint is unpickled
    import torch

    from mcpvs_bidsapp.interfaces import nnunet as node

    def _no_load(*args, **kwargs):
        raise AssertionError("torch.load was called on an unverified model")

    monkeypatch.setattr(torch, "load", _no_load)
    img = tmp_path / "t1w.nii.gz"
    _write_small_image(img)
    with pytest.raises(ms.ChecksumMismatchError, match="checkpoint_final.pth"):
        node.predict_pvs(
            img,
            "tiny",
            store,
            device="cpu",
            folds=[1],
            out_mask=tmp_path / "m.nii.gz",
            out_probseg=tmp_path / "p.nii.gz",
        )
    assert models_main(["verify", "tiny", "--model-store", str(store)]) == 1


def _write_small_image(path: Path) -> None:
    import nibabel as nib
    import numpy as np

    nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_filename(path)


@pytest.mark.slow
def test_reading_never_writes_to_store(tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    ms.install_model(trained_model_folder(tiny_model_dir), "tiny", store)
    before = _snapshot(store)
    ms.list_models(store)
    ms.verify_model("tiny", store)
    ms.get_model("tiny", store)
    assert models_main(["list", "--model-store", str(store)]) == 0
    assert _snapshot(store) == before


def test_bad_sources_give_one_line_errors(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(ms.ModelStoreError, match="no such file"):
        ms.install_model(tmp_path / "nope", "x", store)
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    with pytest.raises(ms.ModelStoreError, match="not a zip file"):
        ms.install_model(not_zip, "x", store)
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(ms.ModelStoreError, match="no nnU-Net trained-model folder"):
        ms.install_model(folder, "x", store)
    with pytest.raises(ms.ModelStoreError, match="checkpoint_final.pth"):
        ms.describe_model_folder(folder)
    with pytest.raises(ms.ModelStoreError, match="invalid model name"):
        ms.check_name("../evil")
    with pytest.raises(ms.ModelStoreError, match="no model named 'mcpvsnet'.*mcpvs models install"):
        ms.get_model("mcpvsnet", store)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.txt", "x")
    with pytest.raises(ms.ModelStoreError, match="unsafe path"):
        ms.install_model(evil, "x", store)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_cli_error_is_one_line(tmp_path, capsys):
    rc = models_main(["install", str(tmp_path / "missing.zip"), "--model-store", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("mcpvs models: error:") and "missing.zip" in err
    assert len(err.splitlines()) == 1
