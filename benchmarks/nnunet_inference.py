"""Seconds and peak memory of nnU-Net inference at mcPVS-Net's size, through our NnUNetPredict path.

No trained mcPVS-Net can be downloaded here, so the network is *untrained* but has exactly the
architecture nnU-Net's default planner (``ExperimentPlanner``, the nnU-Net v2 default when
mcPVS-Net was trained) picks for 1 mm whole-brain T1w: the planner is run on a synthetic raw
dataset whose images have the size of the brain-cropped input. Speed does not depend on the
weights. Input: the Philips MPRAGE from ../shared/data, brain-extracted with deepbet and cropped
to the brain's bounding box (as mcPVS-Net's preprocessing feeds a skull-stripped T1w).

Each setting runs in its own child process, so the peak RSS printed is that setting's alone.

    python benchmarks/nnunet_inference.py                      # CPU, 2 threads, fast profile
    python benchmarks/nnunet_inference.py --settings all       # + step 0.5 and mirroring (slow)
    python benchmarks/nnunet_inference.py --device cuda --settings all   # on a GPU machine

A GPU machine may lack deepbet or the network: ``--prepare DIR`` writes the brain crop and the
plans here, ``--prepared DIR`` there starts from them (the network is still built there, from the
plans, so no checkpoint has to travel). ``--image-reader NibabelIO`` swaps the plans' reader when
SimpleITK is missing; it reads the same voxels and costs well under a second either way.
``--repeats 2`` predicts the same image twice with one predictor, as a cohort run does: the
first includes CUDA/cuDNN start-up, the second is the steady per-participant cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_T1W = ROOT.parent / "shared" / "data" / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz"
SETTINGS = {  # name: (mirroring, step size)
    "fast": (False, 0.75),
    "step0.5": (False, 0.5),
    "mirror": (True, 0.75),
    "paper": (True, 0.5),
}


def crop_to_brain(t1w: Path, work: Path) -> Path:
    """deepbet brain mask → masked T1w cropped to the mask's bounding box (+3 voxels)."""
    import nibabel as nib
    from deepbet import run_bet

    mask_path = work / "mask.nii.gz"
    run_bet([str(t1w)], mask_paths=[str(mask_path)], no_gpu=True)
    img = nib.load(str(t1w))
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 3, 0)
    hi = np.minimum(idx.max(0) + 4, mask.shape)
    data = np.asarray(img.dataobj, dtype=np.float32) * mask
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cropped = img.__class__(data[sl], img.slicer[sl].affine)
    out = work / "brain_0000.nii.gz"
    cropped.to_filename(str(out))
    return out


def plan_like_nnunet(image: Path, work: Path) -> dict:
    """nnU-Net's default plans for a dataset of 1 mm brain crops of this size."""
    import nibabel as nib

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(work / var)
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
    )

    ds = work / "nnUNet_raw" / "Dataset990_BrainSize"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    img = nib.load(str(image))
    data = np.asarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    for i in range(4):  # same size, a few dummy label voxels: only sizes and spacing matter
        label = np.zeros(data.shape, np.uint8)
        label[tuple(rng.integers(10, s - 10, 40) for s in data.shape)] = 1
        nib.Nifti1Image(data, img.affine).to_filename(ds / "imagesTr" / f"b_{i:03d}_0000.nii.gz")
        nib.Nifti1Image(label, img.affine).to_filename(ds / "labelsTr" / f"b_{i:03d}.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1w"},
                "labels": {"background": 0, "PVS": 1},
                "numTraining": 4,
                "file_ending": ".nii.gz",
            }
        )
    )
    extract_fingerprints([990], num_processes=1, show_progress_bar=False, verbose=False)
    plan_experiments([990])
    plans_file = work / "nnUNet_preprocessed" / "Dataset990_BrainSize" / "nnUNetPlans.json"
    return json.loads(plans_file.read_text()), json.loads((ds / "dataset.json").read_text())


def make_untrained_model(plans: dict, dataset: dict, folder: Path, n_folds: int) -> int:
    """An nnU-Net trained-model folder whose checkpoints hold freshly initialised weights."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    cfg = plans["configurations"]["3d_fullres"]["architecture"]
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    for fold in range(n_folds):
        torch.manual_seed(fold)
        net = get_network_from_plans(
            cfg["network_class_name"], cfg["arch_kwargs"], cfg["_kw_requires_import"], 1, 2,
            allow_init=True, deep_supervision=False,
        )  # fmt: skip
        (folder / f"fold_{fold}").mkdir()
        torch.save(
            {
                "network_weights": net.state_dict(),
                "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"},
                "inference_allowed_mirroring_axes": (0, 1, 2),
            },
            folder / f"fold_{fold}" / "checkpoint_final.pth",
        )
    return sum(p.numel() for p in net.parameters())


def run_one(args) -> None:
    """Child process: one setting; prints one JSON line (predict_s is a list, one per repeat)."""
    import torch

    from mcpvs_bidsapp.methods.pvs.nnunet import PVSPredictor
    from mcpvs_bidsapp.models.store import get_model

    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    get_model("bench", args.store)
    t_verify = time.monotonic() - t0
    folds = list(range(args.folds))
    t0 = time.monotonic()
    predictor = PVSPredictor(
        model_name="bench", model_store=args.store, device=args.device, folds=folds,
        mirroring=args.mirroring, step_size=args.step, num_threads=args.threads,
    ).load_and_verify()  # fmt: skip
    t_load = time.monotonic() - t0
    t_pred, c_pred = [], []
    for _ in range(args.repeats):
        t0, c0 = time.monotonic(), time.process_time()
        params = predictor.predict_to_files(
            args.image, Path(args.out) / "mask.nii.gz", Path(args.out) / "prob.nii.gz"
        )
        t_pred.append(round(time.monotonic() - t0, 1))
        c_pred.append(round(time.process_time() - c0, 1))
    out = {
        "verify_s": round(t_verify, 1),
        "load_s": round(t_load, 1),
        "predict_s": t_pred,
        "predict_cpu_s": c_pred,  # all threads; ≈ threads × wall on an idle machine
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "device": params["Model"]["Device"],
    }
    if args.device == "cuda":
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1w", type=Path, default=DEFAULT_T1W)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default="fast", help="comma list of " + ",".join(SETTINGS))
    parser.add_argument("--folds", type=int, default=1, help="folds per run (timing is per run)")
    parser.add_argument("--repeats", type=int, default=1, help="predictions per predictor")
    parser.add_argument("--prepare", type=Path, help="write brain crop + plans here, then stop")
    parser.add_argument("--prepared", type=Path, help="start from a --prepare folder")
    parser.add_argument("--image-reader", help="override the plans' image reader (NibabelIO)")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mirroring", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--step", type=float, default=0.75, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        args.mirroring = bool(args.mirroring)
        run_one(args)
        return

    import nibabel as nib
    import torch

    from mcpvs_bidsapp.models.store import install_model

    names = list(SETTINGS) if args.settings == "all" else args.settings.split(",")
    with tempfile.TemporaryDirectory(prefix="mcpvs-bench-") as tmp:
        work = Path(tmp)
        if args.prepared:
            image = args.prepared / "brain_0000.nii.gz"
            plans = json.loads((args.prepared / "plans.json").read_text())
            dataset = json.loads((args.prepared / "dataset.json").read_text())
            print(f"input: prepared {image} {nib.load(str(image)).shape}")
        else:
            t0 = time.monotonic()
            image = crop_to_brain(args.t1w, work)
            print(f"input: {args.t1w.name} → brain crop {nib.load(str(image)).shape} "
                  f"(deepbet + bbox, {time.monotonic() - t0:.0f} s)")  # fmt: skip
            plans, dataset = plan_like_nnunet(image, work / "plan")
        if args.prepare:
            args.prepare.mkdir(parents=True, exist_ok=True)
            nib.load(str(image)).to_filename(str(args.prepare / "brain_0000.nii.gz"))
            (args.prepare / "plans.json").write_text(json.dumps(plans, indent=1))
            (args.prepare / "dataset.json").write_text(json.dumps(dataset, indent=1))
            print(f"prepared in {args.prepare}")
            return
        if args.image_reader:
            plans["image_reader_writer"] = args.image_reader
        cfg = plans["configurations"]["3d_fullres"]
        kw = cfg["architecture"]["arch_kwargs"]
        folder = work / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        n_params = make_untrained_model(plans, dataset, folder, args.folds)
        t0 = time.monotonic()
        install_model(folder, "bench", work / "store")
        print(
            f"plans (nnU-Net {plans.get('experiment_planner_used')}): 3d_fullres patch "
            f"{cfg['patch_size']}, {kw['n_stages']} stages, features {kw['features_per_stage']}, "
            f"{n_params / 1e6:.1f} M parameters; install+hash {time.monotonic() - t0:.1f} s"
        )
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, device {args.device}, {args.threads} threads, "
            f"{args.folds} fold(s) per run"
            + (f", GPU {torch.cuda.get_device_name(0)}" if args.device == "cuda" else "")
        )
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"{'setting':<9} {'mirror':>6} {'step':>5} {'verify_s':>8} {'load_s':>7} "
              f"{'predict_s':>9} {'cpu_s':>7} {'peak_RSS_GiB':>12}")  # fmt: skip
        for name in names:
            mirroring, step = SETTINGS[name]
            cmd = [
                sys.executable, __file__, "--run-one", "--store", str(work / "store"),
                "--image", str(image), "--out", str(work), "--device", args.device,
                "--threads", str(args.threads), "--folds", str(args.folds),
                "--mirroring", str(int(mirroring)), "--step", str(step),
                "--repeats", str(args.repeats),
            ]  # fmt: skip
            pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=pythonpath)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{name}: failed\n{proc.stderr[-2000:]}")
                continue
            res = json.loads(lines[-1][7:])
            extra = f"  peak GPU {res['peak_gpu_gib']} GiB" if "peak_gpu_gib" in res else ""
            row = (
                f"{name:<9} {mirroring!s:>6} {step:>5} {res['verify_s']:>8} {res['load_s']:>7} "
                f"{'/'.join(map(str, res['predict_s'])):>9} "
                f"{'/'.join(map(str, res['predict_cpu_s'])):>7} {res['peak_rss_gib']:>12}"
            )
            print(row + extra, flush=True)


if __name__ == "__main__":
    main()
