"""nnU-Net v1 models (mcPVS-Net as published): install from every download layout, predict
exactly as v1's own ``predict_from_folder``, and refuse tampered or malicious files.

The model is real: v1's own planner, preprocessing and ``nnUNetTrainerV2``
(tests/nnunet_v1_tiny.py).
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nnunet_tiny import synthetic_case
from nnunet_v1_tiny import _outside, trained_model_folder, v1_predict

from mcpvs_bidsapp.cli.models import main as models_main
from mcpvs_bidsapp.methods.pvs import nnunet as pvs
from mcpvs_bidsapp.models import safe_load
from mcpvs_bidsapp.models import store as ms

pytestmark = pytest.mark.slow  # every test here needs the session's trained v1 model


@pytest.fixture(scope="module")
def v1_store(tiny_v1_model_dir, tmp_path_factory) -> Path:
    """The v1 model installed from the cloud-drive zip (``nnUNet/3d_fullres/...`` root)."""
    store = tmp_path_factory.mktemp("v1store")
    ms.install_model(tiny_v1_model_dir / "tiny_v1_clouddrive.zip", "tinyv1", store)
    return store


@pytest.fixture(scope="module")
def v1_case(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An unseen brain-extracted synthetic case at 2 mm, stored on a rotated, flipped grid."""
    from scipy.spatial.transform import Rotation

    folder = tmp_path_factory.mktemp("v1case")
    img, label = synthetic_case(2024)
    img[_outside()] = 0
    affine = np.eye(4)
    rot = Rotation.from_euler("xyz", [15, -5, 25], degrees=True).as_matrix()
    affine[:3, :3] = rot @ np.diag([-2.0, 2.0, 2.0])
    affine[:3, 3] = [30.0, -12.0, 4.0]
    path = folder / "in" / "case_0000.nii.gz"  # v1's channel naming, for predict_from_folder
    path.parent.mkdir()
    nib.Nifti1Image(img, affine).to_filename(path)
    return path, label


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _reference(model_folder, case, out, workdir, *, folds, tta, step, post=True):
    """v1's own prediction: (labels, PVS softmax in the crop box, file order)."""
    v1_predict(model_folder, case.parent, out, folds=folds, tta=tta, step=step,
               workdir=workdir, postprocessing=post)  # fmt: skip
    seg = np.asarray(nib.load(out / "case.nii.gz").dataobj)
    softmax = np.load(out / "case.npz")["softmax"][1].astype(np.float32)  # float16 on disk
    return seg, softmax.transpose(2, 1, 0)


def _crop_box(case: Path) -> tuple[slice, ...]:
    """v1's crop to non-zero (its bounding box), in the file's voxel order."""
    data = np.asarray(nib.load(case).dataobj)
    idx = np.nonzero(data)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def test_every_download_layout_installs_the_same_model(tiny_v1_model_dir, tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    cloud = ms.install_model(tiny_v1_model_dir / "tiny_v1_clouddrive.zip", "cloud", store)
    with zipfile.ZipFile(tiny_v1_model_dir / "tiny_v1_export.zip") as zf:  # v1's own export
        assert zf.namelist()[0].startswith("3d_fullres/Task901_TinyTubesV1/")
    export = ms.install_model(tiny_v1_model_dir / "tiny_v1_export.zip", "export", store)
    alone = tmp_path / "Downloads" / "nnUNetTrainerV2__nnUNetPlansv2.1"  # the trainer folder only
    shutil.copytree(trained_model_folder(tiny_v1_model_dir), alone)
    trainer_only = ms.install_model(alone, None, store)

    assert cloud.checksum == export.checksum == trainer_only.checksum
    for info in (cloud, export, trainer_only):
        assert info.nnunet_version == 1
        assert (info.configuration, info.trainer, info.plans) == (
            "3d_fullres", "nnUNetTrainerV2", "nnUNetPlansv2.1"
        )  # fmt: skip
        assert info.dataset_name == "Task901_TinyTubesV1"
        assert info.postprocessing == "postprocessing.json"
        assert info.folds == (0, 1)
        assert info.checkpoints == {
            "0": "model_final_checkpoint.model",
            "1": "model_final_checkpoint.model",
        }
        assert info.labels == {"background": 0, "label_1": 1}
        src = trained_model_folder(tiny_v1_model_dir)
        for rel in ("plans.pkl", "postprocessing.json", "fold_1/model_final_checkpoint.model.pkl",
                    "fold_0/model_final_checkpoint.model"):  # fmt: skip
            assert info.files[rel] == ms.sha256_file(src / rel)
        assert not (info.path / "fold_0" / "model_best.model").exists()  # only what runs
    assert trainer_only.name == "task901_tinytubesv1"  # named from what its pickle says

    # a v2 model beside them: each keeps its own format
    v2 = ms.install_model(tiny_model_dir / "tiny_export.zip", "v2", store)
    versions = {m.name: m.nnunet_version for m in ms.list_models(store)}
    assert versions == {"cloud": 1, "export": 1, "task901_tinytubesv1": 1, "v2": 2}
    assert v2.files.keys() >= {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}
    assert models_main(["verify", "--model-store", str(store)]) == 0


@pytest.mark.parametrize(
    "profile,folds,tta,step",
    [("fast-cpu", [0], False, 0.75), ("full-gpu", [0, 1], True, 0.5)],
    ids=["fast-cpu", "full"],
)
def test_node_equals_v1_predict_from_folder(
    v1_store, v1_case, tiny_v1_model_dir, tmp_path, profile, folds, tta, step
):
    from nipype import Node

    from mcpvs_bidsapp.interfaces.nnunet import NnUNetPredict

    case, truth = v1_case
    nd = Node(NnUNetPredict(), name="nnunet", base_dir=str(tmp_path))
    nd.inputs.in_file = str(case)
    nd.inputs.model_name = "tinyv1"
    nd.inputs.model_store = str(v1_store)
    nd.inputs.device = "cpu"
    nd.inputs.profile = profile
    nd.inputs.num_threads = 2
    res = nd.run()
    mask = np.asarray(nib.load(res.outputs.out_mask).dataobj)
    prob = np.asarray(nib.load(res.outputs.out_probseg).dataobj)
    for out in (res.outputs.out_mask, res.outputs.out_probseg):
        assert np.array_equal(nib.load(out).affine, nib.load(case).affine)

    info = ms.find_model("tinyv1", v1_store)
    seg, softmax = _reference(info.path, case, tmp_path / "ref", tiny_v1_model_dir,
                              folds=folds, tta=tta, step=step)  # fmt: skip
    assert mask.sum() > 50  # not two empty masks
    assert np.array_equal(mask, seg)  # identical voxels
    box = _crop_box(case)
    np.testing.assert_allclose(prob[box], softmax, atol=1e-3)  # v1 stores float16
    assert prob.sum() == pytest.approx(prob[box].sum())  # nothing outside v1's crop
    # the model learned the tubes: Dice 0.876 (fast-cpu) and 0.885 (full) with the seeded build
    # (the same model in every session; unseeded builds scattered round 0.8, one CI run 0.798)
    assert _dice(mask, truth) > 0.8

    record = res.outputs.out_parameters["Model"]
    assert record["NnUNetVersion"] == 1
    assert (record["Trainer"], record["Plans"]) == ("nnUNetTrainerV2", "nnUNetPlansv2.1")
    assert record["Checkpoints"] == {str(f): "model_final_checkpoint.model" for f in folds}
    assert record["MirrorAxes"] == [0, 1, 2] and record["Mirroring"] is tta
    assert record["Postprocessing"] == {
        "File": "postprocessing.json", "Applied": False, "Enabled": True,
        "ForWhichClasses": [], "MinValidObjectSizes": None,
    }  # fmt: skip
    assert res.outputs.out_parameters["SoftwareVersions"]["nnunet"] == "1.7.1"


def _copy_model(tiny_v1_model_dir: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained_model_folder(tiny_v1_model_dir), dest)
    return dest


def test_postprocessing_json_largest_component_rule(tiny_v1_model_dir, v1_case, tmp_path):
    """A postprocessing.json that keeps only the largest PVS component: applied exactly as v1's
    load_remove_save does, and only when enabled."""
    from scipy import ndimage as ndi

    case, _ = v1_case
    folder = _copy_model(tiny_v1_model_dir, tmp_path / "3d_fullres" / "Task901_TinyTubesV1" /
                         "nnUNetTrainerV2__nnUNetPlansv2.1")  # fmt: skip
    pp = json.loads((folder / "postprocessing.json").read_text())
    pp["for_which_classes"] = [1]
    (folder / "postprocessing.json").write_text(json.dumps(pp))
    store = tmp_path / "store"
    ms.install_model(folder, "pp", store)

    kw = dict(device="cpu", folds=[0], mirroring=False, step_size=0.75)
    on = pvs.predict_pvs(case, "pp", store, out_mask=tmp_path / "on.nii.gz",
                         out_probseg=tmp_path / "p_on.nii.gz", **kw)  # fmt: skip
    off = pvs.predict_pvs(case, "pp", store, out_mask=tmp_path / "off.nii.gz",
                          out_probseg=tmp_path / "p_off.nii.gz", postprocessing=False,
                          **kw)  # fmt: skip
    mask_on = np.asarray(nib.load(tmp_path / "on.nii.gz").dataobj)
    mask_off = np.asarray(nib.load(tmp_path / "off.nii.gz").dataobj)
    assert on["Model"]["Postprocessing"]["Applied"] is True
    assert off["Model"]["Postprocessing"]["Applied"] is False
    assert ndi.label(mask_off)[1] > 3  # several tubes before the rule
    assert ndi.label(mask_on)[1] == 1  # v1 labels with scipy's default (6-connected) structure
    assert (mask_on <= mask_off).all()

    seg, _ = _reference(folder, case, tmp_path / "ref", tiny_v1_model_dir, folds=[0], tta=False,
                        step=0.75)  # fmt: skip
    assert np.array_equal(mask_on, seg)
    seg_raw, _ = _reference(folder, case, tmp_path / "ref_raw", tiny_v1_model_dir, folds=[0],
                            tta=False, step=0.75, post=False)  # fmt: skip
    assert np.array_equal(mask_off, seg_raw)


def _rename_trainer(folder: Path, trainer: str) -> None:
    """What training with another v1 trainer writes: its name in every .model.pkl."""
    for pkl in folder.rglob("*.model.pkl"):
        restored = safe_load.load_pickle(pkl)
        restored["name"] = trainer
        pkl.write_bytes(pickle.dumps(restored))


def test_trainer_variant_runs_its_own_network(tiny_v1_model_dir, v1_case, tmp_path):
    """nnUNetTrainerV2_ReLU has exactly nnUNetTrainerV2's weights but ReLU instead of LeakyReLU:
    the trainer's own network must run (as v1's predict does), not the default one."""
    case, _ = v1_case
    folder = _copy_model(
        tiny_v1_model_dir, tmp_path / "m" / "nnUNetTrainerV2_ReLU__nnUNetPlansv2.1"
    )
    _rename_trainer(folder, "nnUNetTrainerV2_ReLU")
    store = tmp_path / "store"
    ms.install_model(folder, "relu", store, configuration="3d_fullres")
    ms.install_model(trained_model_folder(tiny_v1_model_dir), "leaky", store)
    kw = dict(device="cpu", folds=[0], mirroring=False, step_size=0.75)
    relu = pvs.predict_pvs(case, "relu", store, out_mask=tmp_path / "r.nii.gz",
                           out_probseg=tmp_path / "rp.nii.gz", **kw)  # fmt: skip
    pvs.predict_pvs(case, "leaky", store, out_mask=tmp_path / "l.nii.gz",
                    out_probseg=tmp_path / "lp.nii.gz", **kw)  # fmt: skip
    assert relu["Model"]["Trainer"] == "nnUNetTrainerV2_ReLU"
    prob_relu = np.asarray(nib.load(tmp_path / "rp.nii.gz").dataobj)
    prob_leaky = np.asarray(nib.load(tmp_path / "lp.nii.gz").dataobj)
    assert np.abs(prob_relu - prob_leaky).max() > 1e-3  # another network really ran

    seg, softmax = _reference(folder, case, tmp_path / "ref", tiny_v1_model_dir, folds=[0],
                              tta=False, step=0.75)  # fmt: skip
    assert np.array_equal(np.asarray(nib.load(tmp_path / "r.nii.gz").dataobj), seg)
    np.testing.assert_allclose(prob_relu[_crop_box(case)], softmax, atol=1e-3)


def test_unknown_trainer_is_refused(tiny_v1_model_dir, v1_case, tmp_path):
    case, _ = v1_case
    folder = _copy_model(
        tiny_v1_model_dir, tmp_path / "m" / "nnUNetTrainerV2_MyLab__nnUNetPlansv2.1"
    )
    _rename_trainer(folder, "nnUNetTrainerV2_MyLab")
    store = tmp_path / "store"
    ms.install_model(folder, "mylab", store, configuration="3d_fullres")
    with pytest.raises(
        pvs.NnUNetError, match="trainer 'nnUNetTrainerV2_MyLab' is not part of nnunet"
    ) as err:
        pvs.predict_pvs(case, "mylab", store, device="cpu", out_mask=tmp_path / "m.nii.gz",
                        out_probseg=tmp_path / "p.nii.gz")  # fmt: skip
    assert len(str(err.value).splitlines()) == 1


class _Marker:
    """A pickle that creates a file when unpickled (what a malicious model would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _rehash(entry: Path) -> None:
    """Record the current files' checksums, as an older mcpvs (checksums only) installed them."""
    manifest = json.loads((entry / ms.MANIFEST_NAME).read_text())
    files = {rel: ms.sha256_file(entry / ms.MODEL_SUBDIR / rel) for rel in manifest["files"]}
    manifest["files"] = files
    manifest["checksum"] = ms._model_checksum(files)
    (entry / ms.MANIFEST_NAME).write_text(json.dumps(manifest))


def test_tampered_and_malicious_v1_files_are_refused(tiny_v1_model_dir, v1_case, tmp_path, capsys):
    import torch

    case, _ = v1_case
    store = tmp_path / "store"
    info = ms.install_model(tiny_v1_model_dir / "tiny_v1_clouddrive.zip", "v1", store)
    out = {"out_mask": tmp_path / "m.nii.gz", "out_probseg": tmp_path / "p.nii.gz"}

    # 1. tampered plans.pkl / .model: checksums, one line naming the file
    for rel in ("plans.pkl", "fold_0/model_final_checkpoint.model"):
        path = info.path / rel
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ms.ChecksumMismatchError, match=rel.replace(".", r"\.")) as err:
            pvs.predict_pvs(case, "v1", store, device="cpu", **out)
        assert len(str(err.value).splitlines()) == 1
        path.write_bytes(original)
    ms.verify_model("v1", store, deep=True)  # restored: fine again

    # 2. a .model.pkl carrying a malicious pickle, in the download: refused at install
    marker = tmp_path / "PWNED"
    bad = _copy_model(tiny_v1_model_dir, tmp_path / "bad" / "3d_fullres" / "Task901_TinyTubesV1" /
                      "nnUNetTrainerV2__nnUNetPlansv2.1")  # fmt: skip
    restored = safe_load.load_pickle(bad / "fold_0" / "model_final_checkpoint.model.pkl")
    restored["plans"]["payload"] = _Marker(marker)
    (bad / "fold_0" / "model_final_checkpoint.model.pkl").write_bytes(pickle.dumps(restored))
    assert models_main(["install", str(bad), "--name", "bad", "--model-store", str(store)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_final_checkpoint.model.pkl" in err
    assert "refusing to load it: its pickle calls io.open" in err
    assert not (store / "bad").exists() and not marker.exists()

    # 3. the same file slipped into an installed model whose checksums were re-recorded (what
    # an older mcpvs, which only hashed, would have accepted): verify and the predictor refuse
    shutil.copy2(bad / "fold_0" / "model_final_checkpoint.model.pkl",
                 info.path / "fold_0" / "model_final_checkpoint.model.pkl")  # fmt: skip
    _rehash(info.root)
    assert models_main(["verify", "v1", "--model-store", str(store)]) == 1
    with pytest.raises(safe_load.UnsafeModelFileError, match="io.open"):
        pvs.predict_pvs(case, "v1", store, device="cpu", **out)

    # 4. a malicious .model (torch checkpoint) and plans.pkl, likewise
    checkpoint = safe_load.load_checkpoint(info.path / "fold_1" / "model_final_checkpoint.model")
    checkpoint["plot_stuff"] = _Marker(marker)
    torch.save(checkpoint, info.path / "fold_1" / "model_final_checkpoint.model")
    plans = safe_load.load_pickle(info.path / "plans.pkl")
    plans["x"] = _Marker(marker)
    (info.path / "plans.pkl").write_bytes(pickle.dumps(plans))
    _rehash(info.root)
    for path in (info.path / "fold_1" / "model_final_checkpoint.model", info.path / "plans.pkl"):
        loader = safe_load.load_checkpoint if path.suffix == ".model" else safe_load.load_pickle
        with pytest.raises(safe_load.UnsafeModelFileError, match=str(path)):
            loader(path)
    with pytest.raises(safe_load.UnsafeModelFileError):
        pvs.predict_pvs(case, "v1", store, device="cpu", folds=[1], **out)
    assert not marker.exists()


def test_cpu_device_on_a_gpu_machine(v1_store, v1_case, tmp_path, monkeypatch):
    """v1 moves the network and every tile to the GPU whenever torch reports one; --device cpu
    must still run on the CPU (here torch is made to report a GPU it does not have: v1's own
    ``.cuda()`` calls would fail) and give the same labels."""
    import torch

    case, _ = v1_case
    kw = dict(folds=[0], mirroring=False, step_size=0.75)
    pvs.predict_pvs(case, "tinyv1", v1_store, device="cpu", out_mask=tmp_path / "a.nii.gz",
                    out_probseg=tmp_path / "ap.nii.gz", **kw)  # fmt: skip
    pvs._PREDICTORS.clear()  # build the trainer again, under a "GPU" machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    record = pvs.predict_pvs(case, "tinyv1", v1_store, device="cpu",
                             out_mask=tmp_path / "b.nii.gz", out_probseg=tmp_path / "bp.nii.gz",
                             **kw)  # fmt: skip
    assert record["Model"]["Device"] == "cpu"
    assert torch.cuda.is_available()  # restored to what the caller set
    for name in ("a", "ap"):
        other = name.replace("a", "b")
        np.testing.assert_array_equal(
            np.asarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj),
            np.asarray(nib.load(tmp_path / f"{other}.nii.gz").dataobj),
        )
