"""Run an installed nnU-Net v2 model (mcPVS-Net) in-process on a preprocessed T1w.

Why in-process rather than calling ``nnUNetv2_predict``: the predictor (network plus the weights of
every fold) is built once per process and reused for every case; the model is verified by
checksum before its checkpoints are unpickled; the outputs land on the input's exact grid with a
provenance record. The computation itself is nnU-Net's own (``nnUNetPredictor``: same
preprocessing, sliding window, Gaussian weighting, mirroring, fold averaging and resampling), so
results equal ``nnUNetv2_predict_from_modelfolder`` with the same settings (checked by tests).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mcpvs_bidsapp.errors import ModelStoreError, NnUNetError
from mcpvs_bidsapp.models.store import ModelInfo, get_model

LOGGER = logging.getLogger("mcpvs.nnunet")

PROFILES = ("auto", "fast-cpu", "full-gpu")
#: the paper's inference (nnU-Net defaults) and a CPU profile that fits in minutes per participant
PROFILE_SETTINGS = {
    "full-gpu": {"folds": "all", "mirroring": True, "step_size": 0.5},
    "fast-cpu": {"folds": "first", "mirroring": False, "step_size": 0.75},
}


def resolve_device(device: str = "auto") -> str:
    """``auto`` is CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device not in ("auto", "cuda", "cpu"):
        raise NnUNetError(f"unknown device {device!r} (use auto, cuda or cpu)")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise NnUNetError(
            "--device cuda was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


def resolve_profile(
    profile: str = "auto",
    device: str = "auto",
    folds=None,
    mirroring: bool | None = None,
    step_size: float | None = None,
    available_folds=(0, 1, 2, 3, 4),
) -> dict:
    """Inference settings from a profile, with explicit choices winning.

    ``fast-cpu``: the first available fold (fold 0 when present), no mirroring, tile step 0.75.
    ``full-gpu``: every fold, mirroring, tile step 0.5 — nnU-Net's defaults, as in the paper.
    ``auto`` picks ``full-gpu`` on CUDA and ``fast-cpu`` on the CPU.
    """
    if profile not in PROFILES:
        raise NnUNetError(f"unknown profile {profile!r} (use {', '.join(PROFILES)})")
    device = resolve_device(device)
    if profile == "auto":
        profile = "full-gpu" if device == "cuda" else "fast-cpu"
    preset = PROFILE_SETTINGS[profile]
    available = list(available_folds)
    if not available:
        raise NnUNetError("the model has no folds")
    if folds is None:
        if preset["folds"] == "all":
            folds = available
        else:
            folds = [0] if 0 in available else [available[0]]
    else:
        folds = [int(f) if str(f) != "all" else "all" for f in folds]
        missing = [f for f in folds if f not in available]
        if missing:
            raise NnUNetError(
                f"fold(s) {', '.join(map(str, missing))} not installed "
                f"(available: {', '.join(map(str, available))})"
            )
        if not folds:
            raise NnUNetError("no folds selected")
    step = preset["step_size"] if step_size is None else float(step_size)
    if not 0 < step <= 1:
        raise NnUNetError(f"tile step size must be in (0, 1], got {step}")
    return {
        "profile": profile,
        "device": device,
        "folds": list(folds),
        "mirroring": preset["mirroring"] if mirroring is None else bool(mirroring),
        "step_size": step,
    }


# --------------------------------------------------------------------------- predictor

#: one predictor per (model checksum, folds, device, mirroring, step) in this process
_PREDICTORS: dict[tuple, object] = {}


def _build_network(trainer_name, plans_manager, configuration_manager, dataset_json, weights):
    """The network the checkpoints were trained with.

    nnU-Net's own loader looks the trainer class up by name, which imports every trainer module;
    for any name but ``nnUNetTrainer`` that pulls in timm → torchvision, which fails with CPU
    torch. Most trainer variants (epochs, learning rate, augmentation, loss) keep the default
    architecture, which we build straight from the plans as ``nnUNetTrainer`` does. Only when the
    weights do not fit it (a trainer with its own architecture) do we ask nnU-Net for the class.
    """
    import inspect

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        n_in,
        n_out,
        allow_init=True,
        deep_supervision=False,
    )
    try:
        network.load_state_dict(weights)
        return network
    except RuntimeError as plain_err:
        if trainer_name == "nnUNetTrainer":
            first = str(plain_err).splitlines()[0]
            raise NnUNetError(f"weights do not fit the plans' network: {first}") from None
        LOGGER.info("trainer %s has its own architecture; importing it", trainer_name)
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        trainer_class = recursive_find_trainer_class_by_name(trainer_name)
        build = trainer_class.build_network_architecture
        if "plans_manager" in inspect.signature(build).parameters:
            network = build(plans_manager, configuration_manager, n_in, n_out, False)
        else:  # nnU-Net < 2.6 signature
            network = build(
                configuration_manager.network_arch_class_name,
                configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import,
                n_in,
                n_out,
                enable_deep_supervision=False,
            )
        network.load_state_dict(weights)
    except Exception as err:  # noqa: BLE001 - any import/build failure becomes one clear line
        raise NnUNetError(
            f"trainer {trainer_name!r} uses its own network and it could not be built here: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    return network


def load_predictor(model: ModelInfo, folds, device: str, mirroring: bool, step_size: float):
    """An ``nnUNetPredictor`` for ``model`` (verified), cached per process."""
    key = (model.checksum, tuple(folds), device, bool(mirroring), float(step_size))
    if key in _PREDICTORS:
        return _PREDICTORS[key]
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = load_json(str(model.path / "dataset.json"))
    plans_manager = PlansManager(load_json(str(model.path / "plans.json")))
    parameters, trainer_name, configuration, mirror_axes = [], None, None, None
    for i, fold in enumerate(folds):
        # checksum verified by get_model() just before: nnU-Net checkpoints need full unpickling
        checkpoint = torch.load(
            model.checkpoint_path(fold), map_location=torch.device("cpu"), weights_only=False
        )
        if i == 0:
            trainer_name = checkpoint.get("trainer_name", model.trainer)
            configuration = checkpoint.get("init_args", {}).get(
                "configuration", model.configuration
            )
            mirror_axes = checkpoint.get("inference_allowed_mirroring_axes")
        parameters.append(checkpoint["network_weights"])
        del checkpoint
    configuration_manager = plans_manager.get_configuration(configuration)
    network = _build_network(
        trainer_name, plans_manager, configuration_manager, dataset_json, parameters[0]
    )
    # nnU-Net prints "perform_everything_on_device=True is only supported for cuda devices!"
    # for every CPU predictor, whatever it is given: noise in a cohort's logs, so swallowed
    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(
            tile_step_size=step_size,
            use_gaussian=True,
            use_mirroring=mirroring,
            perform_everything_on_device=device == "cuda",
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration_manager,
        parameters,
        dataset_json,
        trainer_name,
        mirror_axes,
    )
    _PREDICTORS[key] = predictor
    return predictor


def pvs_label(labels: dict, wanted: str | None = None) -> tuple[str, int]:
    """The model's PVS label: ``wanted``, else one named like PVS, else the only one."""
    fg = {k: v for k, v in labels.items() if k != "ignore" and v != 0}
    if wanted:
        if wanted not in fg:
            raise NnUNetError(f"model has no label {wanted!r} (labels: {', '.join(fg)})")
        return wanted, int(fg[wanted])
    named = [k for k in fg if "pvs" in k.lower() or "perivascular" in k.lower()]
    if len(named) == 1:
        return named[0], int(fg[named[0]])
    if len(fg) == 1:
        ((name, value),) = fg.items()
        return name, int(value)
    raise NnUNetError(f"cannot tell which label is PVS among {', '.join(fg)}; give pvs_label")


def _to_native(arr: np.ndarray, properties: dict, reader: str, ref: nib.Nifti1Image) -> np.ndarray:
    """nnU-Net array (z, y, x as SimpleITK orders voxels) → the input file's own voxel order."""
    data = np.asarray(arr).transpose(2, 1, 0)
    if reader == "NibabelIOWithReorient":
        stuff = properties["nibabel_stuff"]
        img = nib.Nifti1Image(data, stuff["reoriented_affine"])
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(stuff["reoriented_affine"]),
            nib.orientations.io_orientation(stuff["original_affine"]),
        )
        data = np.asarray(img.as_reoriented(ornt).dataobj)
    elif reader not in ("SimpleITKIO", "NibabelIO"):
        raise NnUNetError(f"image reader {reader!r} of the model's plans is not supported")
    if data.shape != ref.shape[:3]:
        raise NnUNetError(f"prediction shape {data.shape} differs from input {ref.shape[:3]}")
    return data


def software_versions(device: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {}
    for pkg in ("nnunetv2", "torch", "dynamic-network-architectures"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    if device == "cuda":
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def predict_pvs(
    in_file: str | os.PathLike,
    model_name: str,
    model_store=None,
    *,
    profile: str = "auto",
    device: str = "auto",
    folds=None,
    mirroring: bool | None = None,
    step_size: float | None = None,
    num_threads: int = 1,
    label: str | None = None,
    out_mask: str | os.PathLike = "pvs_mask.nii.gz",
    out_probseg: str | os.PathLike = "pvs_probseg.nii.gz",
) -> dict:
    """Segment PVS in ``in_file``; write mask and probability map on its grid; return the record."""
    import time

    import torch

    in_file = Path(in_file)
    try:
        ref = nib.load(str(in_file))
    except Exception as err:  # noqa: BLE001
        raise NnUNetError(f"{in_file}: cannot be read as NIfTI ({err})") from None
    if len(ref.shape) != 3:
        raise NnUNetError(f"{in_file}: a 3D image is needed, got shape {ref.shape}")
    model = get_model(model_name, model_store)  # verified: safe to unpickle its checkpoints
    if len(model.channel_names) != 1:
        raise NnUNetError(f"model {model.name!r} needs {len(model.channel_names)} input channels")
    settings = resolve_profile(profile, device, folds, mirroring, step_size, model.folds)
    label_name, label_value = pvs_label(model.labels, label)

    torch.set_num_threads(max(1, int(num_threads)))
    t0 = time.monotonic()
    predictor = load_predictor(
        model, settings["folds"], settings["device"], settings["mirroring"], settings["step_size"]
    )
    if predictor.label_manager.has_regions:
        raise NnUNetError(f"model {model.name!r} is region-based; not supported")
    reader_cls = predictor.plans_manager.image_reader_writer_class
    image, properties = reader_cls().read_images([str(in_file)])
    seg, probs = predictor.predict_single_npy_array(image, properties, None, None, True)
    index = list(predictor.label_manager.all_labels).index(label_value)  # softmax channel
    reader = reader_cls.__name__
    mask = _to_native(seg == label_value, properties, reader, ref).astype(np.uint8)
    prob = _to_native(probs[index], properties, reader, ref).astype(np.float32)
    elapsed = time.monotonic() - t0

    for data, path, dtype in ((mask, out_mask, np.uint8), (prob, out_probseg, np.float32)):
        hdr = ref.header.copy()
        hdr.set_data_dtype(dtype)
        img = nib.Nifti1Image(data, ref.affine, hdr)
        img.header.set_slope_inter(1, 0)
        img.set_qform(ref.get_qform(), int(ref.header["qform_code"]))
        img.set_sform(ref.get_sform(), int(ref.header["sform_code"]))
        img.to_filename(str(path))

    return {
        "Method": "nnunet",
        "MethodDescription": (
            "nnU-Net v2 prediction (nnUNetPredictor, Gaussian-weighted sliding window, "
            "softmax averaged over folds); mask = argmax label, probseg = softmax of the PVS label"
        ),
        "Model": {
            "Name": model.name,
            "Checksum": model.checksum,
            "Configuration": model.configuration,
            "Trainer": predictor.trainer_name,
            "Plans": model.plans,
            "Folds": settings["folds"],
            "Mirroring": settings["mirroring"],
            "StepSize": settings["step_size"],
            "Device": settings["device"],
        },
        "Parameters": {
            "Profile": settings["profile"],
            "Threads": int(num_threads),
            "PVSLabel": {"Name": label_name, "Value": label_value},
            "ElapsedSeconds": round(elapsed, 2),
        },
        "SoftwareVersions": software_versions(settings["device"]),
    }


# --------------------------------------------------------------------------- Nipype interface


class _NnUNetPredictInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="preprocessed T1w (native grid)")
    model_name = traits.Str("mcpvsnet", usedefault=True, desc="installed model name")
    model_store = traits.Str(desc="model store folder (default: $MCPVS_MODEL_STORE or ~/.local)")
    model_checksum = traits.Str(
        desc="checksum verified when the run was planned: part of the node's inputs, so a model "
        "reinstalled under the same name never reuses a cached prediction, and a model that "
        "changed since is refused"
    )
    profile = traits.Enum(*PROFILES, usedefault=True, desc="auto | fast-cpu | full-gpu")
    device = traits.Enum("auto", "cuda", "cpu", usedefault=True, desc="where to run")
    folds = traits.List(traits.Int, desc="folds to average (default: from the profile)")
    mirroring = traits.Bool(desc="test-time mirroring (default: from the profile)")
    step_size = traits.Range(0.0, 1.0, desc="sliding-window step (default: from the profile)")
    num_threads = traits.Int(1, usedefault=True, desc="torch CPU threads (--omp-nthreads)")
    pvs_label = traits.Str(desc="name of the model's PVS label (default: found from dataset.json)")


class _NnUNetPredictOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="binary PVS mask (uint8), same grid as in_file")
    out_probseg = File(exists=True, desc="PVS probability (float32 in [0, 1]), same grid")
    out_parameters = traits.Dict(desc="provenance for the mask/probseg sidecars")


class NnUNetPredict(SimpleInterface):
    """Segment PVS with an installed nnU-Net v2 model (the predictor is reused per process)."""

    input_spec = _NnUNetPredictInputSpec
    output_spec = _NnUNetPredictOutputSpec

    def _run_interface(self, runtime):
        opt = self.inputs
        out_mask = Path(runtime.cwd) / "pvs_mask.nii.gz"
        out_prob = Path(runtime.cwd) / "pvs_probseg.nii.gz"
        try:
            params = predict_pvs(
                opt.in_file,
                opt.model_name,
                opt.model_store if isdefined(opt.model_store) else None,
                profile=opt.profile,
                device=opt.device,
                folds=list(opt.folds) if isdefined(opt.folds) else None,
                mirroring=opt.mirroring if isdefined(opt.mirroring) else None,
                step_size=opt.step_size if isdefined(opt.step_size) else None,
                num_threads=opt.num_threads,
                label=opt.pvs_label if isdefined(opt.pvs_label) else None,
                out_mask=out_mask,
                out_probseg=out_prob,
            )
        except (ModelStoreError, NnUNetError) as err:
            raise RuntimeError(f"{opt.in_file}: {err}") from None
        planned = opt.model_checksum if isdefined(opt.model_checksum) else None
        if planned and params["Model"]["Checksum"] != planned:
            raise RuntimeError(
                f"{opt.in_file}: model {opt.model_name!r} changed since this run was planned "
                f"(checksum {params['Model']['Checksum']} instead of {planned}); rerun"
            )
        self._results.update(
            out_mask=str(out_mask), out_probseg=str(out_prob), out_parameters=params
        )
        return runtime
