"""Segmenter ``nnunet``: an installed nnU-Net model (mcPVS-Net), v1 or v2, in-process.

:class:`NnUNetSegmenter` (registered as ``nnunet``, docs/models.md) plans the run and builds
the Nipype node; the computation is :class:`PVSPredictor`, usable without Nipype.

:class:`PVSPredictor` follows nnU-Net's own ``nnUNetPredictor``: settings first, then
:meth:`~PVSPredictor.load_and_verify` (checksums of every file, then every pickle through the
allow-lists of :mod:`mcpvs_bidsapp.models.safe_load`, then the trainer's network), then
:meth:`~PVSPredictor.predict` per image. The loaded network and weights are kept per process
(keyed by the model's checksum and the inference settings), so a Nipype worker that runs many
participants loads them once.

The two backends are nnU-Net's own code, driven from here:

* **v2** (``nnunetv2``): ``nnUNetPredictor.manual_initialization`` with the network the trainer
  builds and the checkpoints' weights; results equal ``nnUNetv2_predict_from_modelfolder``
  (checked by the tests). Why not ``initialize_from_trained_model_folder``: it unpickles the
  checkpoints with ``weights_only=False`` and looks the trainer up by importing every trainer
  module (timm → torchvision, broken with CPU torch).
* **v1** (``nnunet`` 1.7.1): :mod:`mcpvs_bidsapp.methods.pvs.nnunet_v1`.

Which network a trainer runs is decided from the trainer's *code*, never guessed from the
weights: a trainer that only changes training (epochs, loss, augmentation) inherits
``build_network_architecture`` from ``nnUNetTrainer`` and gets the plans' network; one that
overrides it gets its own; one whose code is not installed is refused (a ReLU network and a
LeakyReLU one have identical weights, so "the weights fit" proves nothing).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mcpvs_bidsapp.errors import BIDSError, ModelNotFoundError, ModelStoreError, NnUNetError
from mcpvs_bidsapp.methods import register_segmenter
from mcpvs_bidsapp.methods.base import SEGMENTER_INPUTS, SEGMENTER_OUTPUTS, Cite, step_mem_gb
from mcpvs_bidsapp.models.store import ModelInfo, get_model
from mcpvs_bidsapp.outputs.provenance import N4Mask

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


@contextlib.contextmanager
def quiet(logger: logging.Logger = LOGGER):
    """nnU-Net prints progress and notices to stdout and warns about deprecated torch.cuda.amp
    calls on every prediction: noise in a cohort's logs. Kept at DEBUG instead."""
    import warnings

    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        with contextlib.redirect_stdout(buffer):
            yield
    if buffer.getvalue().strip():
        logger.debug("nnU-Net: %s", buffer.getvalue().strip())


# --------------------------------------------------------------------------- trainer code


def find_trainer_class(name: str, roots: Sequence[tuple[Path, str | None]], base_class):
    """The class ``name`` from the installed trainer code under ``roots``, or None.

    ``roots`` are (folder, package) pairs: nnU-Net's own trainer folder (imported as its
    package) or an external folder (``nnUNet_extTrainer``, imported by file). nnU-Net's own
    lookup imports every module until one defines the name — in nnunetv2 2.8.1 that reaches
    modules needing timm → torchvision, which fail with CPU torch — so the files are searched
    as text and only the one defining the class is imported.
    """
    if not name.isidentifier():
        return None
    pattern = re.compile(rf"^class\s+{re.escape(name)}\s*\(", re.MULTILINE)
    for folder, package in roots:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if not pattern.search(text):
                continue
            try:
                if package:
                    rel = path.relative_to(folder).with_suffix("")
                    module = importlib.import_module(".".join([package, *rel.parts]))
                else:
                    spec = importlib.util.spec_from_file_location(
                        f"mcpvs_ext_trainer_{abs(hash(str(path)))}", path
                    )
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[spec.name] = module
                    spec.loader.exec_module(module)
            except Exception as err:  # noqa: BLE001 - its import failing is one clear line
                raise NnUNetError(
                    f"trainer {name!r} is defined in {path}, which cannot be imported here: "
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                ) from None
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, base_class):
                return cls
    return None


def _v2_trainer_roots() -> list[tuple[Path, str | None]]:
    import nnunetv2

    roots: list[tuple[Path, str | None]] = [
        (
            Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer",
            "nnunetv2.training.nnUNetTrainer",
        )
    ]
    for ext in filter(None, os.environ.get("nnUNet_extTrainer", "").split(os.pathsep)):
        roots.append((Path(ext), None))
    return roots


def _v2_network(trainer_name, plans_manager, configuration_manager, dataset_json, weights):
    """The network the checkpoints were trained with, from the trainer's code (see module doc)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    trainer_class = nnUNetTrainer
    if trainer_name != "nnUNetTrainer":
        trainer_class = find_trainer_class(trainer_name, _v2_trainer_roots(), nnUNetTrainer)
        if trainer_class is None:
            raise NnUNetError(
                f"trainer {trainer_name!r} is not installed here (searched nnunetv2's trainers "
                "and $nnUNet_extTrainer): its network cannot be known from the weights alone; "
                "add the trainer's .py file to $nnUNet_extTrainer as nnU-Net requires"
            )
    owner = next(k for k in trainer_class.__mro__ if "build_network_architecture" in vars(k))
    if owner is nnUNetTrainer:
        network = get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            n_in,
            n_out,
            allow_init=True,
            deep_supervision=False,
        )
        how = "plans"
    else:
        LOGGER.info("trainer %s builds its own network (%s)", trainer_name, owner.__name__)
        build = trainer_class.build_network_architecture
        try:
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
        except Exception as err:  # noqa: BLE001 - any build failure becomes one clear line
            raise NnUNetError(
                f"trainer {trainer_name!r} could not build its network here: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from None
        how = f"trainer:{owner.__name__}"
    try:
        network.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise NnUNetError(
            f"weights do not fit trainer {trainer_name!r}'s network: {first}"
        ) from None
    return network, how


# --------------------------------------------------------------------------- backends


@dataclass
class Prediction:
    """A mask and a probability map on the input file's voxel grid, and their provenance."""

    mask: np.ndarray  #: uint8, 1 = PVS
    probability: np.ndarray  #: float32 in [0, 1], softmax of the PVS label
    record: dict = field(default_factory=dict)


def _to_native(arr: np.ndarray, properties: dict, reader: str, ref: nib.Nifti1Image) -> np.ndarray:
    """nnU-Net v2 array (z, y, x as its readers order voxels) → the input file's voxel order."""
    data = np.asarray(arr).transpose(2, 1, 0)
    if reader == "NibabelIOWithReorient":
        # nibabel images cannot hold bool arrays: a mask comes here as bool
        if data.dtype == bool:
            data = data.astype(np.uint8)
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


class V2Backend:
    """nnU-Net v2: ``nnUNetPredictor`` with the trainer's network and safely loaded weights."""

    version = 2

    def __init__(self, model: ModelInfo, settings: dict) -> None:
        import torch
        from batchgenerators.utilities.file_and_folder_operations import load_json
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from mcpvs_bidsapp.models.safe_load import load_checkpoint

        self.model = model
        dataset_json = load_json(str(model.path / "dataset.json"))
        plans_manager = PlansManager(load_json(str(model.path / "plans.json")))
        parameters, trainer_name, configuration, mirror_axes = [], None, None, None
        for i, fold in enumerate(settings["folds"]):
            checkpoint = load_checkpoint(model.checkpoint_path(fold))  # allow-listed unpickling
            if "network_weights" not in checkpoint:
                raise NnUNetError(
                    f"{model.checkpoint_path(fold)}: no 'network_weights' (not an nnU-Net v2 "
                    "checkpoint)"
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
        network, self.network_source = _v2_network(
            trainer_name, plans_manager, configuration_manager, dataset_json, parameters[0]
        )
        device = settings["device"]
        # nnU-Net prints "perform_everything_on_device=True is only supported for cuda devices!"
        # for every CPU predictor, whatever it is given
        with quiet():
            predictor = nnUNetPredictor(
                tile_step_size=settings["step_size"],
                use_gaussian=True,
                use_mirroring=settings["mirroring"],
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
        if predictor.label_manager.has_regions:
            raise NnUNetError(f"model {model.name!r} is region-based; not supported")
        self.predictor = predictor
        self.trainer = trainer_name
        self.mirror_axes = list(mirror_axes) if mirror_axes is not None else None
        self.checkpoints = {str(f): model.checkpoints[str(f)] for f in settings["folds"]}

    def predict(self, in_file: Path, ref: nib.Nifti1Image, label_value: int, postprocessing: bool):
        predictor = self.predictor
        reader_cls = predictor.plans_manager.image_reader_writer_class
        image, properties = reader_cls().read_images([str(in_file)])
        seg, probs = predictor.predict_single_npy_array(image, properties, None, None, True)
        index = list(predictor.label_manager.all_labels).index(label_value)  # softmax channel
        reader = reader_cls.__name__
        mask = _to_native(seg == label_value, properties, reader, ref).astype(np.uint8)
        prob = _to_native(probs[index], properties, reader, ref).astype(np.float32)
        return mask, prob, {"File": None, "Applied": False}

    def describe(self) -> dict:
        return {
            "Trainer": self.trainer,
            "Network": self.network_source,
            "Checkpoints": self.checkpoints,
            "MirrorAxes": self.mirror_axes,
            "ImageReader": self.predictor.plans_manager.image_reader_writer_class.__name__,
        }


# --------------------------------------------------------------------------- the predictor

#: one loaded backend per (model checksum, folds, device, mirroring, step) in this process
_PREDICTORS: dict[tuple, object] = {}

_METHOD_DESCRIPTION = {
    2: (
        "nnU-Net v2 prediction (nnUNetPredictor, Gaussian-weighted sliding window, "
        "softmax averaged over folds); mask = argmax label, probseg = softmax of the PVS label"
    ),
    1: (
        "nnU-Net v1 prediction (nnunet 1.7.1: the trainer's preprocessing and network, "
        "Gaussian-weighted sliding window, softmax averaged over folds, resampled back; "
        "postprocessing.json applied to the mask when present and enabled); mask = argmax "
        "label, probseg = softmax of the PVS label"
    ),
}


def software_versions(device: str, version: int = 2) -> dict:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    import torch

    out = {}
    packages = ("nnunetv2", "torch", "dynamic-network-architectures")
    if version == 1:
        packages = ("nnunet", "torch", "batchgenerators")
    for pkg in packages:
        try:
            out[pkg] = pkg_version(pkg)
        except PackageNotFoundError:
            pass
    if device == "cuda":
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def read_image(in_file: str | os.PathLike) -> nib.Nifti1Image:
    """The input T1w (3D NIfTI), or one line saying why not."""
    in_file = Path(in_file)
    try:
        ref = nib.load(str(in_file))
    except Exception as err:  # noqa: BLE001
        raise NnUNetError(f"{in_file}: cannot be read as NIfTI ({err})") from None
    if len(ref.shape) != 3:
        raise NnUNetError(f"{in_file}: a 3D image is needed, got shape {ref.shape}")
    return ref


class PVSPredictor:
    """An installed nnU-Net model (v1 or v2), verified and loaded, that segments PVS.

    >>> predictor = PVSPredictor(model_name="mcpvsnet", profile="fast-cpu").load_and_verify()
    >>> prediction = predictor.predict("t1w.nii.gz")  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        model_name: str = "mcpvsnet",
        model_store: str | os.PathLike | None = None,
        profile: str = "auto",
        device: str = "auto",
        folds: Sequence | None = None,
        mirroring: bool | None = None,
        step_size: float | None = None,
        num_threads: int = 1,
        pvs_label: str | None = None,
        postprocessing: bool = True,
        expected_checksum: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_store = model_store
        self.profile = profile
        self.device = device
        self.folds = list(folds) if folds is not None else None
        self.mirroring = mirroring
        self.step_size = step_size
        self.num_threads = max(1, int(num_threads))
        self.pvs_label = pvs_label
        self.postprocessing = bool(postprocessing)
        #: the checksum the run was planned with (a reinstall under the same name must not pass)
        self.expected_checksum = expected_checksum
        self.model: ModelInfo | None = None
        self.settings: dict | None = None
        self.backend = None
        self.label: tuple[str, int] | None = None

    def load_and_verify(self) -> PVSPredictor:
        """Verify every file's checksum, then load the pickles through the allow-lists and
        build the trainer's network (once per process for the same model and settings)."""
        import torch

        model = get_model(self.model_name, self.model_store)  # checksums verified
        if self.expected_checksum and model.checksum != self.expected_checksum:
            raise ModelStoreError(
                f"model {model.name!r} changed since this run was planned (installed "
                f"{model.checksum}, planned {self.expected_checksum}); rerun to use it"
            )
        if len(model.channel_names) != 1:
            raise NnUNetError(
                f"model {model.name!r} needs {len(model.channel_names)} input channels"
            )
        settings = resolve_profile(
            self.profile, self.device, self.folds, self.mirroring, self.step_size, model.folds
        )
        self.label = pvs_label(model.labels, self.pvs_label)
        torch.set_num_threads(self.num_threads)
        key = (
            model.checksum,
            tuple(settings["folds"]),
            settings["device"],
            settings["mirroring"],
            settings["step_size"],
        )
        backend = _PREDICTORS.get(key)
        if backend is None:
            if model.nnunet_version == 1:
                from mcpvs_bidsapp.methods.pvs.nnunet_v1 import V1Backend

                backend = V1Backend(model, settings)
            else:
                backend = V2Backend(model, settings)
            _PREDICTORS[key] = backend
        self.model, self.settings, self.backend = model, settings, backend
        return self

    def predict(self, image: str | os.PathLike) -> Prediction:
        """Segment PVS in the NIfTI file ``image``; arrays on its own voxel grid."""
        if self.backend is None:
            self.load_and_verify()
        in_file = Path(image)
        ref = read_image(in_file)
        t0 = time.monotonic()
        mask, prob, post = self.backend.predict(in_file, ref, self.label[1], self.postprocessing)
        return Prediction(mask, prob, self._record(time.monotonic() - t0, post))

    def _record(self, elapsed: float, postprocessing: dict) -> dict:
        model, settings = self.model, self.settings
        return {
            "Method": "nnunet",
            "MethodDescription": _METHOD_DESCRIPTION[model.nnunet_version],
            "Model": {
                "Name": model.name,
                "Checksum": model.checksum,
                "NnUNetVersion": model.nnunet_version,
                "Configuration": model.configuration,
                "Plans": model.plans,
                **self.backend.describe(),
                "Folds": settings["folds"],
                "Mirroring": settings["mirroring"],
                "StepSize": settings["step_size"],
                "Device": settings["device"],
                "Postprocessing": postprocessing,
            },
            "Parameters": {
                "Profile": settings["profile"],
                "Threads": self.num_threads,
                "PVSLabel": {"Name": self.label[0], "Value": self.label[1]},
                "ElapsedSeconds": round(elapsed, 2),
            },
            "SoftwareVersions": software_versions(settings["device"], model.nnunet_version),
        }

    def predict_to_files(
        self,
        image: str | os.PathLike,
        out_mask: str | os.PathLike,
        out_probseg: str | os.PathLike,
    ) -> dict:
        """Segment ``image``; write mask (uint8) and probability (float32) on its exact grid
        (shape, affine, qform/sform codes); return the provenance record."""
        ref = read_image(image)
        prediction = self.predict(image)
        for data, path, dtype in (
            (prediction.mask, out_mask, np.uint8),
            (prediction.probability, out_probseg, np.float32),
        ):
            hdr = ref.header.copy()
            hdr.set_data_dtype(dtype)
            img = nib.Nifti1Image(data.astype(dtype), ref.affine, hdr)
            img.header.set_slope_inter(1, 0)
            img.set_qform(ref.get_qform(), int(ref.header["qform_code"]))
            img.set_sform(ref.get_sform(), int(ref.header["sform_code"]))
            img.to_filename(str(path))
        return prediction.record


def predict_pvs(
    in_file: str | os.PathLike,
    model_name: str,
    model_store=None,
    *,
    out_mask: str | os.PathLike = "pvs_mask.nii.gz",
    out_probseg: str | os.PathLike = "pvs_probseg.nii.gz",
    label: str | None = None,
    **settings,
) -> dict:
    """Segment PVS in ``in_file`` with model ``model_name``; write mask and probability map on
    its grid; return the record. ``settings`` are :class:`PVSPredictor`'s keywords."""
    read_image(in_file)  # a bad input is reported before the model is touched
    predictor = PVSPredictor(
        model_name=model_name, model_store=model_store, pvs_label=label, **settings
    )
    return predictor.load_and_verify().predict_to_files(in_file, out_mask, out_probseg)


# --------------------------------------------------------------------------- the segmenter


class NnUNetSegmenter:
    name = "nnunet"
    summary = "an installed nnU-Net model (mcPVS-Net when installed; see mcpvs models)"
    #: the authors' whole-image N4: the image the model was trained on
    default_n4_mask = N4Mask.WHOLE_IMAGE
    auto_priority = 10  #: before the built-in method whenever a model is installed
    node_gb = 8.0  #: peak memory on a 1 mm whole head (CPU, fast profile)

    def available(self, settings) -> bool:
        """A model of the requested name is installed (whether it verifies is decided in
        :meth:`resolve`: an installed model that fails its checks stops the run rather than
        silently giving way to another method)."""
        from mcpvs_bidsapp.models.store import find_model

        try:
            find_model(settings.model.name, settings.model.store)
        except ModelStoreError:
            return False
        return True

    def resolve(self, settings) -> Mapping[str, Any]:
        from mcpvs_bidsapp.models.store import get_model

        model = settings.model
        try:
            info = get_model(model.name, model.store)  # every file re-hashed
        except ModelNotFoundError as err:
            raise BIDSError(f"model {model.name!r}: {err}") from err
        except ModelStoreError as err:  # installed but unusable: never another method instead
            raise BIDSError(
                f"model {model.name!r}: installed but failed verification: {err}"
            ) from err
        options: dict[str, Any] = {
            "model_name": model.name,
            "model_store": str(model.store),
            "model_checksum": info.checksum,
            "device": model.device,
            "profile": model.profile,
        }
        if model.folds is not None:
            options["folds"] = list(model.folds)
        if model.mirroring is not None:
            options["mirroring"] = model.mirroring
        if model.step_size is not None:
            options["step_size"] = model.step_size
        return options

    def mem_gb(self, n_voxels: int) -> float:
        return step_mem_gb(self.node_gb, n_voxels)

    def init_workflow(
        self, *, options: Mapping[str, Any], omp_nthreads: int, n_voxels: int, name: str
    ):
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe

        from mcpvs_bidsapp.interfaces.nnunet import NnUNetPredict

        workflow = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=list(SEGMENTER_INPUTS)), name="inputnode")
        outputnode = pe.Node(
            niu.IdentityInterface(fields=list(SEGMENTER_OUTPUTS)), name="outputnode"
        )
        segment = pe.Node(
            NnUNetPredict(num_threads=omp_nthreads, **dict(options)),
            name="nnunet",
            n_procs=omp_nthreads,
            mem_gb=self.mem_gb(n_voxels),
        )
        workflow.connect([
            (inputnode, segment, [("preproc_t1w", "in_file")]),
            (segment, outputnode, [("out_mask", "pvs_mask"), ("out_probseg", "pvs_probseg"),
                                   ("out_parameters", "parameters")]),
        ])  # fmt: skip
        return workflow

    def methods_text(self, provenance: Mapping[str, Any], cite: Cite) -> str:
        model = provenance.get("Model name", "mcPVS-Net")
        version = provenance.get("Model nnunetversion")
        text = (
            f"PVS were segmented with the nnU-Net {cite('isensee2021nnunet')} "
            f"{f'v{version} ' if version else ''}model {model} "
            f"(checksum {provenance.get('Model checksum', 'n/a')}; configuration "
            f"{provenance.get('Model configuration', 'n/a')}; trainer "
            f"{provenance.get('Model trainer', 'n/a')}; folds "
            f"{provenance.get('Model folds', 'n/a')})."
        )
        if '"Applied": true' in str(provenance.get("Model postprocessing", "")):
            text += (
                " The model's nnU-Net postprocessing (postprocessing.json: only the largest "
                "connected component kept for the listed labels) was applied."
            )
        return text


register_segmenter(NnUNetSegmenter())
