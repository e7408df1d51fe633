"""Build a tiny, really trained nnU-Net v2 model on synthetic tubes (for the test session).

Run as a script in its own process (``python tests/nnunet_tiny.py WORKDIR``): nnU-Net reads
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` once, at import, and starts worker
processes by re-importing ``__main__``, so the test session must not import it with other paths.

What it makes, all under WORKDIR:

* ``nnUNet_raw/Dataset901_TinyTubes``: 6 cases of 40³ voxels at 1 mm, a bright "white matter"
  block with thin dark tubes (label 1 = "PVS"), fixed seeds;
* ``nnUNet_results/Dataset901_TinyTubes/nnUNetTrainer__nnUNetPlans__3d_fullres``: folds 0 and 1,
  trained with the stock ``nnUNetTrainer`` for a few short epochs on the CPU. The plans are the
  planner's own, shrunk to 3 stages of 4-16 features and a 32³ patch so that training takes
  about a minute on two cores (variant trainer names import timm → torchvision, which fails
  with CPU torch; see shared/deps/README.md);
* ``tiny_export.zip``: the same model exported with nnU-Net's own ``export_pretrained_model``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID}_TinyTubes"
SHAPE = (40, 40, 40)
N_CASES = 6
FOLDS = (0, 1)
TRAINED_FOLDER = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def synthetic_case(seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright block with 6-10 thin dark straight tubes; returns (image, label)."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 20.0, dtype=np.float32)
    img[4:-4, 4:-4, 4:-4] = 100.0  # "white matter"
    label = np.zeros(shape, dtype=np.uint8)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    for _ in range(rng.integers(6, 11)):
        point = rng.uniform(10, np.array(shape) - 10)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rel = grid - point
        dist = np.linalg.norm(rel - (rel @ direction)[..., None] * direction, axis=-1)
        length = np.abs(rel @ direction)
        tube = (dist <= rng.uniform(0.8, 1.3)) & (length <= rng.uniform(6, 12))
        label[tube] = 1
    img[label > 0] = 35.0
    img += rng.normal(0, 6, size=shape).astype(np.float32)
    return img, label


def write_raw(raw: Path) -> None:
    import nibabel as nib

    ds = raw / DATASET_NAME
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for i in range(N_CASES):
        img, label = synthetic_case(1000 + i)
        nib.Nifti1Image(img, affine).to_filename(ds / "imagesTr" / f"tube_{i:03d}_0000.nii.gz")
        nib.Nifti1Image(label, affine).to_filename(ds / "labelsTr" / f"tube_{i:03d}.nii.gz")
    dataset = {
        "channel_names": {"0": "T1w"},
        "labels": {"background": 0, "PVS": 1},
        "numTraining": N_CASES,
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
    }
    (ds / "dataset.json").write_text(json.dumps(dataset, indent=2))


def shrink_plans(plans_file: Path) -> None:
    """Make the 3d_fullres network tiny (3 stages, 4-16 features, 32³ patch, batch 2)."""
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["patch_size"] = [32, 32, 32]
    cfg["batch_size"] = 2
    kw = cfg["architecture"]["arch_kwargs"]
    kw["n_stages"] = 3
    kw["features_per_stage"] = [4, 8, 16]
    kw["kernel_sizes"] = [[3, 3, 3]] * 3
    kw["strides"] = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    kw["n_conv_per_stage"] = [1, 1, 1]
    kw["n_conv_per_stage_decoder"] = [1, 1]
    plans["configurations"] = {"3d_fullres": cfg}
    plans_file.write_text(json.dumps(plans, indent=2))


def main(workdir: Path) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    write_raw(workdir / "nnUNet_raw")
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner calls torch.set_num_threads(this)
    extract_fingerprints([DATASET_ID], num_processes=1, show_progress_bar=False)
    plan_experiments([DATASET_ID])
    shrink_plans(Path(nnUNet_preprocessed) / DATASET_NAME / "nnUNetPlans.json")
    preprocess([DATASET_ID], configurations=["3d_fullres"], num_processes=[1])
    os.environ["nnUNet_n_proc_DA"] = "0"  # augment in this process: no worker pool on 2 cores

    pre = Path(nnUNet_preprocessed) / DATASET_NAME
    dataset_json = json.loads((pre / "dataset.json").read_text())
    for fold in FOLDS:
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        plans["continue_training"] = False  # what nnUNetv2_train adds before building the trainer
        np.random.seed(fold)
        torch.manual_seed(fold)
        trainer = nnUNetTrainer(plans, "3d_fullres", fold, dataset_json, device=torch.device("cpu"))
        # fold 0 learns the tubes (validation Dice ~0.9); fold 1 only needs other weights
        trainer.num_epochs = 3 if fold == 0 else 1
        trainer.num_iterations_per_epoch = 12 if fold == 0 else 2
        trainer.num_val_iterations_per_epoch = 1
        trainer.initial_lr = 5e-2
        trainer.oversample_foreground_percent = 1.0
        trainer.run_training()
        # nnU-Net's export wants fold_*/validation/summary.json, written by the full validation
        # (trainer.perform_actual_validation), which spawns worker processes: ~1 min per fold
        # here. The fixture writes a plainly labelled placeholder instead.
        summary = Path(trainer.output_folder) / "validation" / "summary.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({"note": "validation skipped by the mcpvs test fixture"}))

    export_pretrained_model(
        DATASET_ID,
        str(workdir / "tiny_export.zip"),
        configurations=("3d_fullres",),
        folds=FOLDS,
    )


def build_env(workdir: Path) -> dict:
    """Environment for nnU-Net processes working inside ``workdir`` (two cores, no DA pool)."""
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(workdir / "nnUNet_raw"),
        nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
        nnUNet_results=str(workdir / "nnUNet_results"),
        nnUNet_def_n_proc="1",
        nnUNet_n_proc_DA="0",
        OMP_NUM_THREADS="2",
    )
    return env


def trained_model_folder(workdir: Path) -> Path:
    return workdir / "nnUNet_results" / DATASET_NAME / TRAINED_FOLDER


def build_in_child(script: Path, workdir: Path, env: dict, what: str) -> Path:
    """Run ``python SCRIPT WORKDIR`` once (a finished ``workdir`` is reused): nnU-Net reads its
    folders from the environment at import, so each builder runs in a process of its own."""
    import subprocess

    done = workdir / "done"
    if not done.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, str(Path(script).absolute()), str(workdir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,  # ~1-1.5 min on two free cores; far more on a busy machine
        )
        (workdir / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"building {what} failed:\n{proc.stderr[-3000:]}")
        done.write_text("ok")
    return workdir


def build_tiny_model(workdir: Path) -> Path:
    """Build the model in a child process (once: a finished ``workdir`` is reused)."""
    return build_in_child(Path(__file__), workdir, build_env(workdir), "the tiny nnU-Net model")


if __name__ == "__main__":
    work = Path(sys.argv[1]).absolute()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if Path(os.environ.get(var, "/nonexistent")).parent != work:
            sys.exit(f"set {var} to a folder inside {work} before running this script")
    main(work)
