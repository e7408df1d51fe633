"""nnU-Net **v1** inference (mcPVS-Net as its authors ship it), with nnU-Net 1.7.1's own code.

Why import ``nnunet`` 1.7.1 rather than port it: what v1 computes depends on the *trainer
class* named in the model's ``.model.pkl`` — its network (``initialize_network``: e.g.
``nnUNetTrainerV2_ReLU`` differs from ``nnUNetTrainerV2`` only there, with identical weights),
its test-time mirroring axes (``setup_DA_params``) and the preprocessor class named in the plans
(crop to non-zero, transpose, resampling to the plan's spacing, per-channel normalisation with
the nonzero-mask rule). A port would hard-code ``nnUNetTrainerV2`` and silently diverge for any
other stock trainer; the library gives v1's arithmetic for all of them. The weight is small:
nnunetv2 already brings batchgenerators, SimpleITK, scikit-image and scikit-learn; ``nnunet``
adds MedPy, dicom2nifti, pydicom and python-gdcm (about 30 MB), and needs no CUDA build of
torch. It prints a citation banner and path warnings to stdout when imported, and creates the
folders its environment variables name: :func:`import_nnunet_v1` hides both.

What is *not* v1's code here, and why:

* loading: v1's ``restore_model`` unpickles ``.model.pkl`` and ``torch.load``s the checkpoints
  without restriction (and fails on torch ≥ 2.6). Here both go through
  :mod:`mcpvs_bidsapp.models.safe_load` after the checksums verified; the trainer class is
  looked up by name only inside ``nnunet.training.network_training`` (as v1 does), importing
  only the module that defines it;
* orchestration: ``predict_cases`` writes files from worker pools. Its steps are repeated here
  in one process in the same order with v1's functions (per-fold ``load_checkpoint_ram`` and
  ``predict_preprocessed_data_return_seg_and_softmax``, in-place fold sum then division,
  ``transpose_backward``, ``resample_data_or_seg`` as ``save_segmentation_nifti_from_softmax``
  calls it, the crop box, and ``remove_all_but_the_largest_connected_component`` as
  ``load_remove_save`` calls it). The tests compare the labels with v1's own
  ``predict_from_folder`` on the same image: identical voxels;
* the trainer's output folder points to a private temporary folder: v1 writes log files there,
  and the model store stays read-only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from mcpvs_bidsapp.errors import ModelStoreError, NnUNetError
from mcpvs_bidsapp.methods.pvs.nnunet import LOGGER, find_trainer_class, quiet
from mcpvs_bidsapp.models.store import ModelInfo

#: environment variables whose folders ``nnunet.paths`` creates at import
_V1_PATH_VARS = ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER")


def import_nnunet_v1():
    """``import nnunet`` without its stdout banner and without creating folders."""
    saved = {k: os.environ.pop(k) for k in _V1_PATH_VARS if k in os.environ}
    try:
        with quiet(), warnings.catch_warnings():
            # its modules import scipy.ndimage.filters/interpolation (deprecated in SciPy 1.x)
            warnings.simplefilter("ignore", DeprecationWarning)
            import nnunet
            import nnunet.paths  # noqa: F401 - the import that prints and creates folders
            import nnunet.training.network_training.nnUNetTrainer  # noqa: F401
    except ImportError as err:
        raise NnUNetError(
            f"this is an nnU-Net v1 model, and nnU-Net v1 is not installed ({err}); "
            "pip install nnunet==1.7.1 (with the project's constraints)"
        ) from None
    finally:
        os.environ.update(saved)
    return nnunet


@contextlib.contextmanager
def device_context(device: str):
    """v1 moves everything to the GPU whenever ``torch.cuda.is_available()``; for
    ``--device cpu`` on a GPU machine that check is answered "no" while v1 code runs."""
    import torch

    if device == "cpu" and torch.cuda.is_available():
        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: False
        try:
            yield
        finally:
            torch.cuda.is_available = real
    else:
        yield


def find_v1_trainer(name: str):
    """The v1 trainer class ``name`` from ``nnunet.training.network_training``, or one line."""
    nnunet = import_nnunet_v1()
    from nnunet.training.network_training.nnUNetTrainer import nnUNetTrainer

    root = Path(nnunet.__path__[0]) / "training" / "network_training"
    with quiet():
        cls = find_trainer_class(name, [(root, "nnunet.training.network_training")], nnUNetTrainer)
    if cls is None:
        raise NnUNetError(
            f"trainer {name!r} is not part of nnunet {_v1_version()} (v1 looks trainers up in "
            "nnunet.training.network_training): its network and mirroring cannot be known, so "
            "the model is refused"
        )
    cascade = [
        c
        for c in cls.__mro__
        if c.__name__ in ("nnUNetTrainerCascadeFullRes", "nnUNetTrainerV2CascadeFullRes")
    ]
    if cascade:
        raise NnUNetError(
            f"trainer {name!r} is a cascade stage: it needs the 3d_lowres segmentation as input"
        )
    return cls


def _v1_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnunet")
    except PackageNotFoundError:
        return "(not installed)"


def read_postprocessing(path: Path) -> tuple[list, dict | None]:
    """``for_which_classes`` and ``min_valid_object_sizes`` of a v1 ``postprocessing.json``
    (v1's ``load_postprocessing``: JSON, and a Python literal read with ``ast.literal_eval``)."""
    import_nnunet_v1()
    from nnunet.postprocessing.connected_components import load_postprocessing

    try:
        classes, sizes = load_postprocessing(str(path))
    except Exception as err:  # noqa: BLE001 - any malformed file: one line
        raise NnUNetError(
            f"{path}: not a v1 postprocessing.json ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(classes, list) or (sizes is not None and not isinstance(sizes, dict)):
        raise NnUNetError(f"{path}: not a v1 postprocessing.json (unexpected types)")
    return classes, sizes


class V1Backend:
    """A v1 trainer restored as ``load_model_and_checkpoint_files`` does, but safely."""

    version = 1

    def __init__(self, model: ModelInfo, settings: dict) -> None:
        from mcpvs_bidsapp.models.safe_load import load_checkpoint, load_pickle

        self.model = model
        self.settings = settings
        folds = settings["folds"]
        # every pickle through the allow-list; v1 restores the trainer from the first fold's
        restored = [load_pickle(f"{model.checkpoint_path(f)}.pkl") for f in folds]
        load_pickle(model.path / "plans.pkl")  # not read by v1's inference, but checked
        for path, info in zip(folds, restored, strict=True):
            if not isinstance(info, dict) or not {"init", "name", "plans"} <= set(info):
                raise ModelStoreError(f"{model.checkpoint_path(path)}.pkl: not a v1 .model.pkl")
        names = {str(info["name"]) for info in restored}
        if len(names) > 1:
            raise NnUNetError(
                f"model {model.name!r}: folds name different trainers ({', '.join(sorted(names))})"
            )
        self.params = [load_checkpoint(model.checkpoint_path(f)) for f in folds]
        for fold, params in zip(folds, self.params, strict=True):
            if "state_dict" not in params:
                raise NnUNetError(
                    f"{model.checkpoint_path(fold)}: no 'state_dict' (not a v1 checkpoint)"
                )
        trainer_class = find_v1_trainer(str(restored[0]["name"]))
        init = restored[0]["init"]
        if not isinstance(init, tuple | list) or not all(
            isinstance(a, str | int | float | bool | type(None)) for a in init
        ):
            raise ModelStoreError(
                f"{model.checkpoint_path(folds[0])}.pkl: unexpected trainer init arguments"
            )

        self._tmp = tempfile.mkdtemp(prefix="mcpvs-nnunet-v1-")
        atexit.register(shutil.rmtree, self._tmp, True)
        device = settings["device"]
        with quiet(), device_context(device):
            # restore_model + load_model_and_checkpoint_files, in the same order
            trainer = trainer_class(*init)
            trainer.fp16 = device == "cuda"  # v1's predict: mixed precision (a no-op on the CPU)
            trainer.process_plans(restored[0]["plans"])
            trainer.output_folder = self._tmp
            trainer.output_folder_base = self._tmp
            trainer.update_fold(0)
            try:
                trainer.initialize(False)
                trainer.load_checkpoint_ram(self.params[0], False)
            except RuntimeError as err:  # weights that do not fit the trainer's network
                raise NnUNetError(
                    f"weights do not fit trainer {trainer_class.__name__!r}'s network: "
                    f"{str(err).splitlines()[0]}"
                ) from None
            if device == "cpu":
                trainer.network.cpu()
        if getattr(trainer, "regions_class_order", None) is not None:
            raise NnUNetError(f"model {model.name!r} is region-based; not supported")
        self.trainer = trainer
        self.mirror_axes = list(trainer.data_aug_params["mirror_axes"])
        if settings["mirroring"] and not trainer.data_aug_params.get("do_mirror", True):
            raise NnUNetError(
                f"trainer {trainer_class.__name__!r} was trained without mirroring; "
                "use --no-mirroring"
            )
        self.postprocessing = None
        if model.postprocessing:
            self.postprocessing = read_postprocessing(model.path / model.postprocessing)

    def predict(self, in_file: Path, ref: nib.Nifti1Image, label_value: int, postprocessing: bool):
        from nnunet.postprocessing.connected_components import (
            remove_all_but_the_largest_connected_component,
        )
        from nnunet.preprocessing.preprocessing import (
            get_do_separate_z,
            get_lowres_axis,
            resample_data_or_seg,
        )

        trainer, settings = self.trainer, self.settings
        device = settings["device"]
        with quiet(), device_context(device):
            data, _, props = trainer.preprocess_patient([str(in_file)])
            softmax = None
            for params in self.params:  # predict_cases: same calls, same order
                trainer.load_checkpoint_ram(params, False)
                out = trainer.predict_preprocessed_data_return_seg_and_softmax(
                    data,
                    do_mirroring=settings["mirroring"],
                    mirror_axes=trainer.data_aug_params["mirror_axes"],
                    use_sliding_window=True,
                    step_size=settings["step_size"],
                    use_gaussian=True,
                    all_in_gpu=False,
                    mixed_precision=device == "cuda",
                )[1]
                if softmax is None:
                    softmax = out
                else:
                    softmax += out
            if len(self.params) > 1:
                softmax /= len(self.params)
        transpose_backward = trainer.plans.get("transpose_backward")
        if trainer.plans.get("transpose_forward") is not None:
            softmax = softmax.transpose([0] + [i + 1 for i in transpose_backward])

        # save_segmentation_nifti_from_softmax, with the plans' segmentation_export_params
        export = trainer.plans.get("segmentation_export_params") or {}
        force_separate_z = export.get("force_separate_z")
        order = export.get("interpolation_order", 1)
        order_z = export.get("interpolation_order_z", 0)
        shape_after_crop = props.get("size_after_cropping")
        shape_before_crop = props.get("original_size_of_raw_data")
        if np.any(np.array(softmax.shape[1:]) != np.array(shape_after_crop)):
            if force_separate_z is None:
                if get_do_separate_z(props.get("original_spacing")):
                    separate_z, lowres_axis = True, get_lowres_axis(props.get("original_spacing"))
                elif get_do_separate_z(props.get("spacing_after_resampling")):
                    separate_z = True
                    lowres_axis = get_lowres_axis(props.get("spacing_after_resampling"))
                else:
                    separate_z, lowres_axis = False, None
            else:
                separate_z = force_separate_z
                lowres_axis = get_lowres_axis(props.get("original_spacing")) if separate_z else None
            if lowres_axis is not None and len(lowres_axis) != 1:
                separate_z = False
            with quiet():
                softmax = resample_data_or_seg(
                    softmax, shape_after_crop, is_seg=False, axis=lowres_axis, order=order,
                    do_separate_z=separate_z, order_z=order_z,
                )  # fmt: skip
        seg = softmax.argmax(0)
        index = label_value  # v1's softmax channels are the labels 0..n
        seg_full = np.zeros(shape_before_crop, dtype=np.uint8)
        prob_full = np.zeros(shape_before_crop, dtype=np.float32)
        bbox = [list(b) for b in props.get("crop_bbox")]
        for c in range(3):
            bbox[c][1] = np.min((bbox[c][0] + seg.shape[c], shape_before_crop[c]))
        box = tuple(slice(b[0], b[1]) for b in bbox)
        seg_full[box] = seg
        prob_full[box] = softmax[index]

        post = {"File": self.model.postprocessing, "Applied": False}
        if self.postprocessing is not None:
            classes, min_sizes = self.postprocessing
            post.update(ForWhichClasses=classes, MinValidObjectSizes=min_sizes)
            if postprocessing and classes:
                # load_remove_save reads the written segmentation back: its voxel volume is
                # that of the NIfTI header (float32 pixdim)
                spacing = np.asarray(props["itk_spacing"], dtype=np.float32)
                volume = float(np.prod(spacing.astype(np.float64), dtype=np.float64))
                seg_full, _, _ = remove_all_but_the_largest_connected_component(
                    seg_full, classes, volume, min_sizes
                )
            post["Applied"] = bool(postprocessing and classes)
            post["Enabled"] = bool(postprocessing)
        # SimpleITK's array order (z, y, x) → the file's voxel order, as v1's reader saw it
        mask = (seg_full == label_value).astype(np.uint8).transpose(2, 1, 0)
        prob = prob_full.transpose(2, 1, 0)
        if mask.shape != ref.shape[:3]:
            raise NnUNetError(f"prediction shape {mask.shape} differs from input {ref.shape[:3]}")
        LOGGER.debug("v1 prediction of %s done", in_file)
        return mask, prob, post

    def describe(self) -> dict:
        return {
            "Trainer": type(self.trainer).__name__,
            "Network": f"trainer:{type(self.trainer).__name__}",
            "Checkpoints": {str(f): self.model.checkpoints[str(f)] for f in self.settings["folds"]},
            "MirrorAxes": self.mirror_axes,
            "ImageReader": "SimpleITK",
        }
