"""Model safety under adversarial inputs (issue #17, items 10-13), with a real nnU-Net v2 model.

* a malicious checkpoint is refused in one line, in every format the store accepts, and the
  file its pickle would create never appears;
* ``--method auto`` with an installed model that fails verification stops, never falls back;
* reinstalling a model under the same name is not served from the work directory's cache;
* plans with ``NibabelIOWithReorient`` work; a trainer whose network differs from the plans'
  default (same weights) is run with its own network, and an unknown trainer is refused.

The first tests need no trained model and run in the fast suite.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mcpvs_bidsapp.models import safe_load
from mcpvs_bidsapp.models import store as ms


class _Marker:
    """Unpickling this creates ``path`` (what a malicious model file would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


# --------------------------------------------------------------------------- no model needed


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_torch_file_refused_in_one_line(tmp_path, fmt):
    import torch

    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint_final.pth"
    payload = {"network_weights": {"w": torch.zeros(2)}, "logging": {"x": _Marker(marker)}}
    torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(safe_load.UnsafeModelFileError) as err:
        safe_load.load_checkpoint(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert str(path) in message and "io.open" in message and "nothing from it was run" in message
    assert not marker.exists()


def test_malicious_plain_pickle_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model_final_checkpoint.model.pkl"
    path.write_bytes(pickle.dumps({"init": (), "name": "x", "plans": _Marker(marker)}))
    with pytest.raises(safe_load.UnsafeModelFileError, match=r"calls io\.open") as err:
        safe_load.load_pickle(path)
    assert len(str(err.value).splitlines()) == 1 and not marker.exists()
    # a different callable that real files never hold: also refused, before it is called
    path.write_bytes(pickle.dumps({"f": shutil.rmtree}))
    with pytest.raises(safe_load.UnsafeModelFileError, match=r"shutil\.rmtree"):
        safe_load.load_pickle(path)


def test_real_pickle_contents_load_under_either_numpy_spelling(tmp_path):
    """What v1 files hold (OrderedDict, arrays, numpy scalars) loads; a file written under
    numpy 2 (``numpy._core``) loads under numpy 1 and the other way round."""
    from collections import OrderedDict

    import torch

    plans = OrderedDict(
        spacing=np.array([2.4, 2.0, 2.0]), mean=np.float64(3.5), n=np.int64(2), names=["a"]
    )
    # protocol 2 names globals as text (GLOBAL "module\\nname"), so the spelling can be swapped
    # in place; find_class sees the same (module, name) under protocol 4 (as v1 writes)
    variants = {
        "p4": pickle.dumps(plans, protocol=4),
        **{name: pickle.dumps(plans, protocol=2).replace(src, dst) for name, src, dst in (
            ("numpy2", b"numpy.core.multiarray", b"numpy._core.multiarray"),
            ("numpy1", b"numpy._core.multiarray", b"numpy.core.multiarray"),
        )},
    }  # fmt: skip
    for name, data in variants.items():
        path = tmp_path / f"plans_{name}.pkl"
        path.write_bytes(data)
        loaded = safe_load.load_pickle(path)
        assert np.array_equal(loaded["spacing"], plans["spacing"])
        assert loaded["mean"] == 3.5 and loaded["n"] == 2 and isinstance(loaded, OrderedDict)
    assert b"numpy._core.multiarray" in variants["numpy2"] + variants["numpy1"]
    checkpoint = tmp_path / "model_final_checkpoint.model"
    torch.save({"state_dict": OrderedDict(w=torch.ones(3)), "epoch": 3,
                "plot_stuff": ([np.float32(0.5)], [np.float64(0.25)])}, checkpoint)  # fmt: skip
    loaded = safe_load.load_checkpoint(checkpoint)
    assert loaded["plot_stuff"][0][0] == np.float32(0.5) and loaded["state_dict"]["w"].sum() == 3


def test_unreadable_files_are_one_line(tmp_path):
    broken = tmp_path / "checkpoint_final.pth"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ms.ModelStoreError, match="not a readable torch checkpoint") as err:
        safe_load.load_checkpoint(broken)
    assert len(str(err.value).splitlines()) == 1
    truncated = tmp_path / "plans.pkl"
    truncated.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(ms.ModelStoreError, match="plans.pkl: not a readable nnU-Net pickle"):
        safe_load.load_pickle(truncated)


# --------------------------------------------------------------------------- with a real v2 model


def _v2_folder(tiny_model_dir: Path, dest: Path, name: str = "nnUNetTrainer") -> Path:
    from nnunet_tiny import trained_model_folder

    folder = dest / "Dataset901_TinyTubes" / f"{name}__nnUNetPlans__3d_fullres"
    shutil.copytree(trained_model_folder(tiny_model_dir), folder,
                    ignore=shutil.ignore_patterns("checkpoint_best.pth"))  # fmt: skip
    return folder


def _rehash(entry: Path) -> None:
    """Re-record the files' checksums, as an older mcpvs (checksums only) installed them."""
    manifest = json.loads((entry / ms.MANIFEST_NAME).read_text())
    manifest["files"] = {r: ms.sha256_file(entry / ms.MODEL_SUBDIR / r) for r in manifest["files"]}
    manifest["checksum"] = ms._model_checksum(manifest["files"])
    (entry / ms.MANIFEST_NAME).write_text(json.dumps(manifest))


def _case(tmp_path: Path) -> Path:
    from nnunet_tiny import synthetic_case

    img, _ = synthetic_case(2024)
    path = tmp_path / "case" / "case_0000.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [20.0, -5.0, 3.0]
    nib.Nifti1Image(img, affine).to_filename(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_v2_checkpoint_never_runs(tiny_model_dir, tmp_path, capsys, fmt):
    """Item 10: install refuses it; slipped in behind re-recorded checksums, verify and the
    node refuse it; the marker its pickle would create never appears."""
    import torch

    from mcpvs_bidsapp.cli.models import main as models_main
    from mcpvs_bidsapp.interfaces.nnunet import NnUNetPredict

    marker = tmp_path / "PWNED"
    folder = _v2_folder(tiny_model_dir, tmp_path / "src")
    good = folder / "fold_0" / "checkpoint_final.pth"
    evil = tmp_path / "evil.pth"
    checkpoint = safe_load.load_checkpoint(good)
    checkpoint["logging"]["note"] = _Marker(marker)
    torch.save(checkpoint, evil, _use_new_zipfile_serialization=fmt == "zip")

    store = tmp_path / "store"
    shutil.copy2(evil, good)
    assert models_main(["install", str(folder), "--name", "evil", "--model-store", str(store)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold_0/checkpoint_final.pth" in err, err
    assert "io.open" in err and not (store / "evil").exists()

    shutil.copy2(_v2_folder(tiny_model_dir, tmp_path / "clean") / "fold_0" / good.name, good)
    info = ms.install_model(folder, "evil", store)
    shutil.copy2(evil, info.path / "fold_0" / "checkpoint_final.pth")
    _rehash(info.root)
    assert models_main(["verify", "evil", "--model-store", str(store)]) == 1
    assert "refusing to load it" in capsys.readouterr().err
    case = _case(tmp_path)
    iface = NnUNetPredict(in_file=str(case), model_name="evil", model_store=str(store),
                          device="cpu", folds=[0])  # fmt: skip
    with pytest.raises(RuntimeError, match="refusing to load it: its pickle calls io.open") as exc:
        iface.run(cwd=str(tmp_path))
    assert len(str(exc.value).strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.slow
def test_auto_stops_on_a_model_that_fails_verification(tiny_model_dir, tmp_path):
    """Item 11: installed but tampered -> the run stops (no fallback, the right message)."""
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.errors import BIDSError
    from mcpvs_bidsapp.methods import resolve_segmenter

    store = tmp_path / "store"

    def settings(method="auto"):
        return Settings.from_options(tmp_path, tmp_path / "out", "participant", method=method,
                                     model="tiny", model_store=store)  # fmt: skip

    assert resolve_segmenter(settings())[0].name == "vesselness"  # not installed: built-in
    info = ms.install_model(_v2_folder(tiny_model_dir, tmp_path / "src"), "tiny", store)
    segmenter, options = resolve_segmenter(settings())
    assert segmenter.name == "nnunet" and options["model_checksum"] == info.checksum
    with open(info.path / "plans.json", "a") as fobj:  # tampered after install
        fobj.write(" ")
    for method in ("auto", "nnunet"):
        with pytest.raises(BIDSError, match="installed but failed verification.*checksum") as err:
            resolve_segmenter(settings(method))
        assert "no model" not in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.mark.slow
def test_reinstalled_model_is_not_served_from_the_cache(tiny_model_dir, tmp_path):
    """Item 12: same name, other weights, same work dir -> the new model's prediction."""
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.methods import resolve_segmenter
    from mcpvs_bidsapp.methods.pvs.nnunet import predict_pvs
    from mcpvs_bidsapp.workflows.segment import init_segment_wf

    store, case = tmp_path / "store", _case(tmp_path)
    first = _v2_folder(tiny_model_dir, tmp_path / "a")
    second = _v2_folder(tiny_model_dir, tmp_path / "b")  # fold 1's weights as fold 0
    shutil.copy2(
        second / "fold_1" / "checkpoint_final.pth", second / "fold_0" / "checkpoint_final.pth"
    )
    settings = Settings.from_options(
        tmp_path, tmp_path / "out", "participant", method="nnunet", model="m",
        model_store=store, device="cpu", folds=[0], profile="fast-cpu",
    )  # fmt: skip

    def run_workflow() -> np.ndarray:
        _, options = resolve_segmenter(settings)
        wf = init_segment_wf(method="nnunet", options=options)
        wf.base_dir = str(tmp_path / "work")
        wf.inputs.inputnode.preproc_t1w = str(case)
        wf.run(plugin="Linear")
        out = tmp_path / "work" / "segment_wf" / "nnunet" / "pvs_probseg.nii.gz"
        return np.asarray(nib.load(out).dataobj)

    ms.install_model(first, "m", store)
    prob_first = run_workflow()
    ms.install_model(second, "m", store, force=True)
    prob_second = run_workflow()
    predict_pvs(case, "m", store, device="cpu", folds=[0], mirroring=False,
                out_mask=tmp_path / "m.nii.gz", out_probseg=tmp_path / "p.nii.gz")  # fmt: skip
    expected = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    assert np.abs(prob_first - expected).max() > 1e-3  # the two models differ
    np.testing.assert_array_equal(prob_second, expected)  # and the second one ran


@pytest.mark.slow
def test_nibabel_reorient_plans_work(tiny_model_dir, tmp_path):
    """Item 13: plans naming NibabelIOWithReorient (the bool mask crashed _to_native); the
    mask equals nnUNetv2_predict_from_modelfolder's with the same plans."""
    from test_nnunet_node import _reference

    from mcpvs_bidsapp.methods.pvs.nnunet import predict_pvs

    folder = _v2_folder(tiny_model_dir, tmp_path / "src")
    plans = json.loads((folder / "plans.json").read_text())
    plans["image_reader_writer"] = "NibabelIOWithReorient"
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    store, case = tmp_path / "store", _case(tmp_path)
    info = ms.install_model(folder, "reorient", store)
    record = predict_pvs(case, "reorient", store, device="cpu", folds=[0], mirroring=False,
                         step_size=0.75, out_mask=tmp_path / "m.nii.gz",
                         out_probseg=tmp_path / "p.nii.gz")  # fmt: skip
    assert record["Model"]["ImageReader"] == "NibabelIOWithReorient"
    mask = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)
    prob = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    seg, _ = _reference(info.path, case, tmp_path / "ref", [0], False, 0.75)
    assert mask.sum() > 50 and np.array_equal(mask, seg)
    assert ((prob > 0.5) == (mask > 0)).mean() > 0.999  # the map is on the same grid


_RELU_TRAINER = '''
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans


class nnUNetTrainerMcpvsReLU(nnUNetTrainer):
    """The plans' network with ReLU instead of LeakyReLU: the same weights, other outputs."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["nonlin"] = "torch.nn.ReLU"
        return get_network_from_plans(
            configuration_manager.network_arch_class_name, kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels, num_output_channels, allow_init=True,
            deep_supervision=enable_deep_supervision)
'''


def _set_trainer(folder: Path, trainer: str) -> Path:
    import torch

    for ckpt in folder.rglob("checkpoint_final.pth"):
        checkpoint = safe_load.load_checkpoint(ckpt)
        checkpoint["trainer_name"] = trainer
        torch.save(checkpoint, ckpt)
    renamed = folder.with_name(f"{trainer}__nnUNetPlans__3d_fullres")
    return folder.rename(renamed)


@pytest.mark.slow
def test_trainer_with_its_own_network(tiny_model_dir, tmp_path, monkeypatch):
    """Item 13: a trainer whose network differs only in its nonlinearity runs that network
    (found through nnU-Net's $nnUNet_extTrainer); an unknown trainer is refused."""
    import importlib.util

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from mcpvs_bidsapp.methods.pvs.nnunet import NnUNetError, predict_pvs

    store, case = tmp_path / "store", _case(tmp_path)
    kw = dict(device="cpu", folds=[0], mirroring=False, step_size=0.75)
    unknown = _set_trainer(_v2_folder(tiny_model_dir, tmp_path / "u"), "nnUNetTrainerMyLabReLU")
    ms.install_model(unknown, "unknown", store)
    with pytest.raises(
        NnUNetError, match="trainer 'nnUNetTrainerMyLabReLU' is not installed"
    ) as err:
        predict_pvs(case, "unknown", store, out_mask=tmp_path / "u.nii.gz",
                    out_probseg=tmp_path / "up.nii.gz", **kw)  # fmt: skip
    assert len(str(err.value).splitlines()) == 1

    ext = tmp_path / "ext_trainers"
    ext.mkdir()
    (ext / "relu_trainer.py").write_text(_RELU_TRAINER)
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    relu = _set_trainer(_v2_folder(tiny_model_dir, tmp_path / "r"), "nnUNetTrainerMcpvsReLU")
    ms.install_model(relu, "relu", store)
    ms.install_model(_v2_folder(tiny_model_dir, tmp_path / "d"), "default", store)
    record = predict_pvs(case, "relu", store, out_mask=tmp_path / "r.nii.gz",
                         out_probseg=tmp_path / "rp.nii.gz", **kw)  # fmt: skip
    predict_pvs(case, "default", store, out_mask=tmp_path / "d.nii.gz",
                out_probseg=tmp_path / "dp.nii.gz", **kw)  # fmt: skip
    assert record["Model"]["Trainer"] == "nnUNetTrainerMcpvsReLU"
    assert record["Model"]["Network"] == "trainer:nnUNetTrainerMcpvsReLU"
    prob_relu = np.asarray(nib.load(tmp_path / "rp.nii.gz").dataobj)
    prob_default = np.asarray(nib.load(tmp_path / "dp.nii.gz").dataobj)
    assert np.abs(prob_relu - prob_default).max() > 1e-3  # another network ran

    # reference: the trainer's network built by hand, in nnU-Net's own predictor
    spec = importlib.util.spec_from_file_location("relu_trainer_ref", ext / "relu_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = ms.find_model("relu", store)
    plans = PlansManager(load_json(str(info.path / "plans.json")))
    config = plans.get_configuration("3d_fullres")
    dataset = load_json(str(info.path / "dataset.json"))
    net = module.nnUNetTrainerMcpvsReLU.build_network_architecture(plans, config, 1, 2, False)
    weights = torch.load(info.checkpoint_path(0), weights_only=False)["network_weights"]
    predictor = nnUNetPredictor(tile_step_size=0.75, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)  # fmt: skip
    predictor.manual_initialization(net, plans, config, [weights], dataset,
                                    "nnUNetTrainerMcpvsReLU", (0, 1, 2))  # fmt: skip
    image, props = plans.image_reader_writer_class().read_images([str(case)])
    _, probs = predictor.predict_single_npy_array(image, props, None, None, True)
    np.testing.assert_allclose(prob_relu, probs[1].transpose(2, 1, 0), atol=1e-6)
