"""Build a tiny, really trained nnU-Net **v1** (``nnunet`` 1.7.1) model on synthetic tubes.

Run as a script in its own process (``python tests/nnunet_v1_tiny.py WORKDIR``): nnU-Net v1 reads
``nnUNet_raw_data_base``/``nnUNet_preprocessed``/``RESULTS_FOLDER`` once, at import, and its
data augmentation starts worker processes.

Everything is v1's own code: its cropping, ``DatasetAnalyzer``, ``ExperimentPlanner3D_v21``
(plans ``nnUNetPlansv2.1``), preprocessing, ``nnUNetTrainerV2`` training and validation, and
the ``postprocessing.json`` its validation writes. Three things differ from a real run, all to
fit a test session on two cores:

* the planner's network is shrunk after planning (2 pooling steps, 8 base features, 32³ patch);
  preprocessing depends only on the plans' spacing and normalisation, which stay the planner's;
* the trainer is the stock ``nnUNetTrainerV2`` with ``max_num_epochs`` and the batches per epoch
  set on the object (v1's fixed 1000 × 250; the stock ``_2epochs`` variants save no checkpoint),
  so the folder is exactly what ``nnUNet_train 3d_fullres nnUNetTrainerV2 901 FOLD`` writes;
* two folds, so the model's top-level ``postprocessing.json`` is fold 0's (v1's
  ``consolidate_folds`` refuses to run on fewer than five).

The images are zero outside the bright block (as a brain-extracted T1w is), so the planner sets
``use_mask_for_norm`` (the nonzero-mask rule) and cropping removes the background. The voxels
are anisotropic (2.4 × 2 × 2 mm in x, y, z): the planner then transposes the axes
(``transpose_forward`` ≠ identity), so tests exercise v1's transpose and its inverse.

What it makes, all under WORKDIR:

* ``nnUNet_raw_data_base/nnUNet_raw_data/Task901_TinyTubesV1``: 6 cases of 40³ voxels;
* ``RESULTS_FOLDER/nnUNet/3d_fullres/Task901_TinyTubesV1/nnUNetTrainerV2__nnUNetPlansv2.1``:
  ``plans.pkl``, ``postprocessing.json``, ``fold_0`` and ``fold_1`` with
  ``model_final_checkpoint.model(.pkl)`` (and v1's ``model_best``);
* ``tiny_v1_clouddrive.zip``: that results tree zipped from ``nnUNet/`` down (what a copied
  results folder on a cloud drive gives), and ``tiny_v1_export.zip`` made by v1's own
  ``nnUNet_export_model_to_zip`` (which starts at ``3d_fullres/``).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

TASK_ID = 901
TASK_NAME = f"Task{TASK_ID}_TinyTubesV1"
TRAINER = "nnUNetTrainerV2"
PLANS_ID = "nnUNetPlansv2.1"
TRAINED_FOLDER = f"{TRAINER}__{PLANS_ID}"
N_CASES = 6
FOLDS = (0, 1)
#: x, y, z voxel size in mm (anisotropic on purpose: see the module docstring)
ZOOMS = (2.4, 2.0, 2.0)


def affine(zooms=ZOOMS) -> np.ndarray:
    return np.diag([*zooms, 1.0])


def _outside(shape=(40, 40, 40), margin: int = 4) -> np.ndarray:
    """Everything but the bright block of ``synthetic_case``."""
    inside = np.zeros(shape, dtype=bool)
    inside[margin:-margin, margin:-margin, margin:-margin] = True
    return ~inside


def write_raw(raw_base: Path) -> Path:
    import nibabel as nib
    from nnunet_tiny import synthetic_case

    task = raw_base / "nnUNet_raw_data" / TASK_NAME
    (task / "imagesTr").mkdir(parents=True, exist_ok=True)
    (task / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(N_CASES):
        img, label = synthetic_case(3000 + i)
        img[_outside()] = 0  # "skull-stripped": v1 then normalises within the nonzero mask
        nib.Nifti1Image(img, affine()).to_filename(task / "imagesTr" / f"tube_{i:03d}_0000.nii.gz")
        nib.Nifti1Image(label, affine()).to_filename(task / "labelsTr" / f"tube_{i:03d}.nii.gz")
        training.append(
            {"image": f"./imagesTr/tube_{i:03d}.nii.gz", "label": f"./labelsTr/tube_{i:03d}.nii.gz"}
        )
    dataset = {
        "name": TASK_NAME,
        "tensorImageSize": "3D",
        "modality": {"0": "T1w"},
        "labels": {"0": "background", "1": "PVS"},
        "numTraining": N_CASES,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (task / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return task


def shrink_plans(plans_file: Path) -> None:
    """A tiny Generic_UNet: 2 poolings, 8 base features, one conv per stage, 32³ patch."""
    import pickle

    with open(plans_file, "rb") as fobj:
        plans = pickle.load(fobj)  # noqa: S301 - v1's own file, written a moment ago
    plans["base_num_features"] = 8
    plans["conv_per_stage"] = 1
    for stage in plans["plans_per_stage"].values():
        stage["patch_size"] = np.array([32, 32, 32])
        stage["batch_size"] = 2
        stage["num_pool_per_axis"] = [2, 2, 2]
        stage["pool_op_kernel_sizes"] = [[2, 2, 2], [2, 2, 2]]
        stage["conv_kernel_sizes"] = [[3, 3, 3]] * 3
    with open(plans_file, "wb") as fobj:
        pickle.dump(plans, fobj)


class _SeededPythonRandom:
    """A worker's transforms, with Python's ``random`` seeded from the worker's numpy stream
    before the first batch.

    batchgenerators' noise and blur transforms draw from Python's ``random``, which CPython
    reseeds from the OS in every forked child (``os.register_at_fork``), so seeding it in the
    parent does nothing for the workers. Measured: two builds with only numpy seeded had equal
    first two batches and a different third (the first noisy one).
    """

    def __init__(self, transform) -> None:
        self.transform = transform
        self.seeded = False

    def __call__(self, **data):
        if not self.seeded:  # first call in this worker: numpy is seeded by then (producer)
            import random

            random.seed(int(np.random.randint(2**31)))
            self.seeded = True
        return self.transform(**data)


def main(workdir: Path) -> None:
    import shutil

    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    from nnunet.experiment_planning.DatasetAnalyzer import DatasetAnalyzer
    from nnunet.experiment_planning.experiment_planner_baseline_3DUNet_v21 import (
        ExperimentPlanner3D_v21,
    )
    from nnunet.experiment_planning.utils import crop
    from nnunet.paths import nnUNet_cropped_data, preprocessing_output_dir
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    write_raw(workdir / "nnUNet_raw_data_base")
    crop(TASK_NAME, False, 1)
    cropped = Path(nnUNet_cropped_data) / TASK_NAME
    pre = Path(preprocessing_output_dir) / TASK_NAME
    DatasetAnalyzer(str(cropped), overwrite=False, num_processes=1).analyze_dataset(False)
    pre.mkdir(parents=True, exist_ok=True)
    shutil.copy(cropped / "dataset_properties.pkl", pre)
    shutil.copy(
        workdir / "nnUNet_raw_data_base" / "nnUNet_raw_data" / TASK_NAME / "dataset.json", pre
    )
    planner = ExperimentPlanner3D_v21(str(cropped), str(pre))
    planner.plan_experiment()
    planner.run_preprocessing((1, 1))
    plans_file = pre / f"{PLANS_ID}_plans_3D.pkl"
    shrink_plans(plans_file)

    out = Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / "3d_fullres" / TASK_NAME / TRAINED_FOLDER
    for fold in FOLDS:
        np.random.seed(fold)
        torch.manual_seed(fold)
        # what nnUNet_train 3d_fullres nnUNetTrainerV2 901 FOLD builds (get_default_configuration)
        trainer = nnUNetTrainerV2(
            str(plans_file), fold, output_folder=str(out), dataset_directory=str(pre),
            batch_dice=True, stage=0, unpack_data=True, deterministic=False, fp16=True,
        )  # fmt: skip
        # fold 0 learns the tubes; fold 1 only needs other weights
        trainer.max_num_epochs = 4 if fold == 0 else 1
        trainer.num_batches_per_epoch = 12 if fold == 0 else 2
        trainer.num_val_batches_per_epoch = 1
        trainer.initial_lr = 3e-2
        trainer.oversample_foreground_percent = 1.0
        trainer.initialize(True)
        # v1 builds its augmenters with seeds=None, so each worker seeded numpy from the OS and
        # every session trained another model (a CI run's Dice 0.798 failed a bound other
        # sessions passed): one numpy seed per worker, set before the workers start, and
        # Python's random seeded in the worker (see _SeededPythonRandom) make it repeatable
        for gen in (trainer.tr_gen, trainer.val_gen):
            gen.seeds = [1000 * fold + i for i in range(len(gen.seeds))]
            gen.transform = _SeededPythonRandom(gen.transform)
        trainer.run_training()
        trainer.network.eval()
        trainer.validate(save_softmax=False, validation_folder_name="validation_raw")
    # v1's consolidate_folds (nnUNet_determine_postprocessing) needs all five folds' validation
    # cases; the file it writes has the format of the one each fold's validation wrote, so the
    # model gets fold 0's (v1 decided against the largest-component rule: for_which_classes [])
    shutil.copy(out / "fold_0" / "postprocessing.json", out / "postprocessing.json")

    results = Path(os.environ["RESULTS_FOLDER"])
    with zipfile.ZipFile(workdir / "tiny_v1_clouddrive.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            rel = path.relative_to(results)
            if path.is_file() and "validation_raw" not in rel.parts and "cv_niftis" not in str(rel):
                zf.write(path, rel.as_posix())
    from nnunet.inference.pretrained_models.collect_pretrained_models import export_pretrained_model

    export_pretrained_model(
        TASK_NAME,
        str(workdir / "tiny_v1_export.zip"),
        models=("3d_fullres",),
        nnunet_trainer=TRAINER,
        folds=FOLDS,
    )


def build_env(workdir: Path) -> dict:
    """Environment for nnU-Net v1 processes working inside ``workdir`` (two cores)."""
    env = dict(os.environ)
    env.update(
        nnUNet_raw_data_base=str(workdir / "nnUNet_raw_data_base"),
        nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
        RESULTS_FOLDER=str(workdir / "RESULTS_FOLDER"),
        nnUNet_def_n_proc="1",
        nnUNet_n_proc_DA="1",
        OMP_NUM_THREADS="2",
        # v1's own loader calls torch.load() without weights_only, which torch >= 2.6 refuses for
        # its checkpoints; the reference runs of v1 need the old behaviour (mcpvs never does this)
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]),
    )
    return env


def trained_model_folder(workdir: Path) -> Path:
    return workdir / "RESULTS_FOLDER" / "nnUNet" / "3d_fullres" / TASK_NAME / TRAINED_FOLDER


def build_tiny_v1_model(workdir: Path) -> Path:
    """Build the model in a child process (once: a finished ``workdir`` is reused)."""
    from nnunet_tiny import build_in_child  # tests/ is on sys.path (conftest, PYTHONPATH)

    return build_in_child(Path(__file__), workdir, build_env(workdir), "the tiny nnU-Net v1 model")


def v1_predict(model_folder: Path, in_dir: Path, out_dir: Path, *, folds, tta: bool, step: float,
               workdir: Path, postprocessing: bool = True) -> None:  # fmt: skip
    """v1's own ``predict_from_folder`` (what ``nnUNet_predict`` calls), in its own process."""
    import subprocess

    code = (
        "import sys; from nnunet.inference.predict import predict_from_folder; "
        f"predict_from_folder({str(model_folder)!r}, {str(in_dir)!r}, {str(out_dir)!r}, "
        f"{list(folds)!r}, True, 1, 1, None, 0, 1, {tta!r}, overwrite_existing=True, "
        f"mode='normal', overwrite_all_in_gpu=None, mixed_precision=True, step_size={step!r}, "
        f"checkpoint_name='model_final_checkpoint', disable_postprocessing={not postprocessing!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=build_env(workdir), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(
            f"nnU-Net v1 prediction failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )


if __name__ == "__main__":
    work = Path(sys.argv[1]).absolute()
    for var in ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER"):
        if Path(os.environ.get(var, "/nonexistent")).parent != work:
            sys.exit(f"set {var} to a folder inside {work} before running this script")
    sys.path.insert(0, str(Path(__file__).parent))
    main(work)
