"""NnUNetPredict: same result as nnUNetv2_predict_from_modelfolder, on the input's own grid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nnunet_tiny import synthetic_case, trained_model_folder

from mcpvs_bidsapp.interfaces import nnunet as node
from mcpvs_bidsapp.methods.pvs import nnunet as pvs_nnunet
from mcpvs_bidsapp.models import store as ms

#: ``MCPVS_TEST_DEVICE=cuda`` runs the node-vs-nnU-Net equality on a GPU (CI has none: cpu)
TEST_DEVICE = os.environ.get("MCPVS_TEST_DEVICE", "cpu")
#: nnU-Net predicts under fp16 autocast on CUDA and cuDNN picks its algorithms per run: two runs
#: of the same model differed by up to 2.3e-4 in probability on an H200 (masks identical)
PROB_ATOL = 1e-4 if TEST_DEVICE == "cpu" else 1e-3


@pytest.fixture(scope="module")
def tiny_store(tiny_model_dir, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    ms.install_model(trained_model_folder(tiny_model_dir), "tiny", store)
    return store


def oblique_affine() -> np.ndarray:
    """A rotated, left-right flipped (non-RAS) 1 mm grid with an arbitrary origin."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = [12.5, -30.0, 7.0]
    return affine


@pytest.fixture(scope="module")
def oblique_case(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An unseen synthetic case (known tubes) stored on an oblique non-RAS grid."""
    folder = tmp_path_factory.mktemp("case")
    img, label = synthetic_case(2024)
    path = folder / "case_0000.nii.gz"  # nnU-Net's channel naming, for the reference CLI
    nib.Nifti1Image(img, oblique_affine()).to_filename(path)
    return path, label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _reference(model_dir: Path, case: Path, out: Path, folds, mirroring, step) -> tuple:
    """nnU-Net's own CLI on the same model folder and settings: (seg, PVS probability)."""
    # nnU-Net's console script ``nnUNetv2_predict_from_modelfolder``, through this interpreter
    # (the script's folder need not be beside it, e.g. a ``pip --target`` install)
    entry = "from nnunetv2.inference.predict_from_raw_data import predict_entry_point_modelfolder"
    cmd = [sys.executable, "-c", f"{entry}; predict_entry_point_modelfolder()"]
    cmd += ["-i", str(case.parent), "-o", str(out), "-m", str(model_dir)]
    cmd += ["-f", *map(str, folds), "-step_size", str(step), "-device", TEST_DEVICE]
    cmd += ["--save_probabilities", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    if not mirroring:
        cmd.append("--disable_tta")
    env = dict(os.environ, nnUNet_def_n_proc="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seg = np.asarray(nib.load(out / "case.nii.gz").dataobj)
    prob = np.load(out / "case.npz")["probabilities"][1].transpose(2, 1, 0)  # z,y,x → file order
    return seg, prob


@pytest.mark.slow
@pytest.mark.parametrize(
    "profile,folds,mirroring,step",
    [("fast-cpu", [0], False, 0.75), ("full-gpu", [0, 1], True, 0.5)],
    ids=["fast-cpu", "full"],
)
def test_node_equals_nnunet_cli(
    tiny_store, oblique_case, tmp_path, profile, folds, mirroring, step
):
    from nipype import Node

    case, truth = oblique_case
    nd = Node(node.NnUNetPredict(), name="nnunet", base_dir=str(tmp_path))
    nd.inputs.in_file = str(case)
    nd.inputs.model_name = "tiny"
    nd.inputs.model_store = str(tiny_store)
    nd.inputs.device = TEST_DEVICE
    nd.inputs.profile = profile  # full-gpu settings forced on the CPU: same arithmetic
    nd.inputs.num_threads = 2
    res = nd.run()

    params = res.outputs.out_parameters
    info = ms.find_model("tiny", tiny_store)
    assert params["Method"] == "nnunet"
    assert params["Model"]["Name"] == "tiny"
    assert params["Model"]["Checksum"] == info.checksum
    assert params["Model"]["Folds"] == folds
    assert params["Model"]["Mirroring"] is mirroring
    assert params["Model"]["StepSize"] == step
    assert params["Model"]["Device"] == TEST_DEVICE
    assert params["SoftwareVersions"]["nnunetv2"]

    mask_img = nib.load(res.outputs.out_mask)
    prob_img = nib.load(res.outputs.out_probseg)
    ref_img = nib.load(case)
    for img in (mask_img, prob_img):  # the input's exact grid
        assert img.shape == ref_img.shape
        assert np.array_equal(img.affine, ref_img.affine)
        assert np.array_equal(img.header.get_sform(), ref_img.header.get_sform())
    assert mask_img.get_data_dtype() == np.uint8
    assert prob_img.get_data_dtype() == np.float32
    mask = np.asarray(mask_img.dataobj)
    prob = np.asarray(prob_img.dataobj)

    ref_seg, ref_prob = _reference(info.path, case, tmp_path / "ref", folds, mirroring, step)
    assert mask.sum() > 50  # not a vacuous comparison of two empty masks
    assert _dice(mask, ref_seg) == 1.0
    np.testing.assert_allclose(prob, ref_prob, atol=PROB_ATOL)
    assert prob.min() >= 0 and prob.max() <= 1
    if profile == "full-gpu":
        # fold 0 learned the tubes; the 2-fold average still finds them on an unseen case
        assert _dice(mask, truth) > 0.5
    else:
        assert _dice(mask, truth) > 0.7


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["fast-cpu", "full-gpu"])
def test_gpu_mask_equals_cpu(tiny_store, oblique_case, tmp_path, profile):
    """--device auto takes the GPU, and the GPU's mask is the CPU's (probabilities to 1e-2)."""
    case, truth = oblique_case
    out = {}
    for device in ("auto", "cpu"):
        params = node.predict_pvs(
            case, "tiny", tiny_store, profile=profile, device=device, num_threads=2,
            out_mask=tmp_path / f"m_{device}.nii.gz", out_probseg=tmp_path / f"p_{device}.nii.gz",
        )  # fmt: skip
        mask = np.asarray(nib.load(tmp_path / f"m_{device}.nii.gz").dataobj)
        prob = np.asarray(nib.load(tmp_path / f"p_{device}.nii.gz").dataobj)
        out[params["Model"]["Device"]] = (mask, prob)
    assert set(out) == {"cuda", "cpu"}
    (mask_gpu, prob_gpu), (mask_cpu, prob_cpu) = out["cuda"], out["cpu"]
    assert mask_cpu.sum() > 50 and _dice(mask_cpu, truth) > 0.5
    assert _dice(mask_gpu, mask_cpu) > 0.999
    np.testing.assert_allclose(prob_gpu, prob_cpu, atol=1e-2)


@pytest.mark.slow
def test_predictor_built_once_per_process(tiny_store, oblique_case, tmp_path, monkeypatch):
    import torch

    case, _ = oblique_case
    pvs_nnunet._PREDICTORS.clear()
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a[0]) or real_load(*a, **k))
    outs = []
    for i in range(2):
        params = node.predict_pvs(
            case, "tiny", tiny_store, device="cpu", folds=[0, 1], mirroring=False,
            out_mask=tmp_path / f"m{i}.nii.gz", out_probseg=tmp_path / f"p{i}.nii.gz",
        )  # fmt: skip
        outs.append(np.asarray(nib.load(tmp_path / f"p{i}.nii.gz").dataobj))
    assert len(calls) == 2  # two folds, loaded for the first case only
    assert len(pvs_nnunet._PREDICTORS) == 1
    assert np.array_equal(outs[0], outs[1])
    assert params["Parameters"]["Profile"] == "fast-cpu"  # auto on a CPU


@pytest.mark.slow
def test_variant_trainer_name_uses_plans_network(tiny_model_dir, oblique_case, tmp_path):
    """A model trained with a trainer variant (e.g. nnUNetTrainer_250epochs) must load without
    nnU-Net's trainer lookup (which imports timm → torchvision, broken with CPU torch)."""
    import torch

    src = trained_model_folder(tiny_model_dir)
    variant = tmp_path / "Dataset901_TinyTubes" / "nnUNetTrainer_250epochs__nnUNetPlans__3d_fullres"
    shutil.copytree(src, variant, ignore=shutil.ignore_patterns("checkpoint_best.pth"))
    ckpt_path = variant / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    ckpt["trainer_name"] = "nnUNetTrainer_250epochs"
    torch.save(ckpt, ckpt_path)
    store = tmp_path / "store"
    info = ms.install_model(variant, "variant", store)
    assert info.trainer == "nnUNetTrainer_250epochs"

    case, _ = oblique_case
    params = node.predict_pvs(
        case, "variant", store, device="cpu", folds=[0],
        out_mask=tmp_path / "m.nii.gz", out_probseg=tmp_path / "p.nii.gz",
    )  # fmt: skip
    assert params["Model"]["Trainer"] == "nnUNetTrainer_250epochs"
    base = node.predict_pvs(
        case, "tiny", ms.install_model(src, "tiny", store).root.parent, device="cpu", folds=[0],
        out_mask=tmp_path / "m0.nii.gz", out_probseg=tmp_path / "p0.nii.gz",
    )  # fmt: skip
    assert base["Model"]["Trainer"] == "nnUNetTrainer"
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj),
        np.asarray(nib.load(tmp_path / "p0.nii.gz").dataobj),
    )


def test_resolve_profile_presets_and_overrides():
    five = (0, 1, 2, 3, 4)
    fast = node.resolve_profile("fast-cpu", "cpu", available_folds=five)
    assert fast == {
        "profile": "fast-cpu", "device": "cpu", "folds": [0], "mirroring": False, "step_size": 0.75
    }  # fmt: skip
    full = node.resolve_profile("full-gpu", "cpu", available_folds=five)
    assert full["folds"] == [0, 1, 2, 3, 4] and full["mirroring"] and full["step_size"] == 0.5
    # explicit options win over the preset
    mixed = node.resolve_profile("full-gpu", "cpu", folds=[2], mirroring=False, step_size=0.6,
                                 available_folds=five)  # fmt: skip
    assert (mixed["folds"], mixed["mirroring"], mixed["step_size"]) == ([2], False, 0.6)
    # fast-cpu takes the first fold when fold 0 is absent
    assert node.resolve_profile("fast-cpu", "cpu", available_folds=(3, 4))["folds"] == [3]
    with pytest.raises(node.NnUNetError, match="fold.*7.*not installed"):
        node.resolve_profile("auto", "cpu", folds=[7], available_folds=five)
    with pytest.raises(node.NnUNetError, match="step size"):
        node.resolve_profile("auto", "cpu", step_size=1.5, available_folds=five)


def test_auto_device_follows_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert node.resolve_device("auto") == "cpu"
    assert node.resolve_profile("auto", "auto", available_folds=(0, 1))["profile"] == "fast-cpu"
    with pytest.raises(node.NnUNetError, match="no CUDA GPU"):
        node.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert node.resolve_device("auto") == "cuda"
    auto = node.resolve_profile("auto", "auto", available_folds=(0, 1))
    assert auto["profile"] == "full-gpu" and auto["folds"] == [0, 1] and auto["mirroring"]


def test_pvs_label_choice():
    assert node.pvs_label({"background": 0, "PVS": 1}) == ("PVS", 1)
    assert node.pvs_label({"background": 0, "foreground": 1}) == ("foreground", 1)
    assert node.pvs_label({"background": 0, "bg_pvs": 1, "wmh": 2}) == ("bg_pvs", 1)
    with pytest.raises(node.NnUNetError, match="which label is PVS"):
        node.pvs_label({"background": 0, "a": 1, "b": 2})


def test_bad_input_is_one_clear_line(tmp_path):
    img4d = tmp_path / "bold.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)).to_filename(img4d)
    with pytest.raises(node.NnUNetError, match=r"bold\.nii\.gz: a 3D image is needed"):
        node.predict_pvs(img4d, "tiny", tmp_path / "store", device="cpu")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(node.NnUNetError, match="broken.nii.gz: cannot be read"):
        node.predict_pvs(broken, "tiny", tmp_path / "store", device="cpu")
    img3d = tmp_path / "t1w.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_filename(img3d)
    iface = node.NnUNetPredict(
        in_file=str(img3d), model_name="mcpvsnet", model_store=str(tmp_path / "empty")
    )
    with pytest.raises(RuntimeError, match="no model named 'mcpvsnet'") as err:
        iface.run(cwd=str(tmp_path))
    assert "t1w.nii.gz" in str(err.value)
