"""``mcpvs models {install,list,verify,remove,check-demo}``: manage installed nnU-Net models
(v1 and v2), and check one against the authors' demo."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from mcpvs_bidsapp.config import DEFAULT_MODEL_NAME, ENV_MODEL_STORE, default_model_store
from mcpvs_bidsapp.models.store import (
    ModelStoreError,
    install_model,
    list_models,
    remove_model,
    resolve_store,
    verify_model,
)

EPILOG = f"""\
examples:
  mcpvs models install ~/Downloads/mcPVS-Net.zip --name mcpvsnet
  mcpvs models install ./nnUNet_results/Dataset001_PVS/nnUNetTrainer__nnUNetPlans__3d_fullres \\
        --name mcpvsnet
  mcpvs models install ~/Downloads/nnUNet.zip --name mcpvsnet        # v1: nnUNet/3d_fullres/...
  mcpvs models list
  mcpvs models verify mcpvsnet
  mcpvs models check-demo RawT1w.nii PVS_predicted.nii.gz --model mcpvsnet

The store is --model-store, else ${ENV_MODEL_STORE}, else {default_model_store()}.
It is only written by install/remove: a read-only store (container image) works for the rest.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcpvs models",
        description="Install, list, verify and remove nnU-Net v1 and v2 models (e.g. mcPVS-Net).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--model-store",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"model store folder (default: ${ENV_MODEL_STORE} or {default_model_store()})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_inst = sub.add_parser(
        "install",
        parents=[store],
        help="install from an export zip, a results folder or a trained-model folder (v1 or v2)",
    )
    p_inst.add_argument(
        "source", type=Path, help="export or cloud-drive .zip, results or trained-model folder"
    )
    p_inst.add_argument("--name", default=None, help="name to install under (e.g. mcpvsnet)")
    p_inst.add_argument(
        "--configuration",
        default=None,
        help="which configuration, when the source holds several (e.g. 3d_fullres)",
    )
    p_inst.add_argument(
        "--trainer", default=None, help="which trainer, when the source holds several"
    )
    p_inst.add_argument("--force", action="store_true", help="replace a model of the same name")

    p_list = sub.add_parser("list", parents=[store], help="list installed models")
    p_list.add_argument("--json", action="store_true", help="print JSON")

    p_ver = sub.add_parser(
        "verify",
        parents=[store],
        help="re-check the sha256 of every file and read every pickle through the allow-lists",
    )
    p_ver.add_argument("names", nargs="*", help="models to verify (default: all)")

    p_rm = sub.add_parser("remove", parents=[store], help="remove an installed model")
    p_rm.add_argument("name", help="the installed model to remove")

    p_demo = sub.add_parser(
        "check-demo",
        parents=[store],
        help="run the participant pipeline on a demo T1w and compare with its expected mask",
        description=(
            "Run the whole participant pipeline (preprocessing, the installed model) on a raw "
            "demo T1w, e.g. the authors' RawT1w.nii, and compare the PVS mask with the expected "
            "one (their PVS_predicted.nii.gz): Dice, precision, recall, element F1 (VALDO: "
            "26-connected elements matched one-to-one at IoU > 0.1) and volume difference, "
            "then a verdict. Exit 0 when Dice >= --min-dice."
        ),
    )
    p_demo.add_argument("raw_t1w", type=Path, help="the demo's raw T1w (NIfTI)")
    p_demo.add_argument("expected_mask", type=Path, help="the mask the demo should give")
    p_demo.add_argument("--model", default=DEFAULT_MODEL_NAME, help="installed model name")
    p_demo.add_argument(
        "--profile",
        default="full-gpu",
        choices=["auto", "fast-cpu", "full-gpu"],
        help="inference profile (default full-gpu: every fold, mirroring, step 0.5, as the "
        "authors ran it; slow on a CPU)",
    )
    p_demo.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="where the model runs (auto: CUDA when torch sees a GPU)",
    )
    p_demo.add_argument(
        "--regions", default="fast", choices=["fast", "samseg"], help="region method (default fast)"
    )
    p_demo.add_argument(
        "--n4-mask",
        default="auto",
        choices=["auto", "whole-image", "brain"],
        help="N4 mask (default auto: the whole image with an nnU-Net model, as the authors ran)",
    )
    p_demo.add_argument("--omp-nthreads", type=int, default=None, help="threads per step")
    p_demo.add_argument(
        "-w", "--work-dir", type=Path, default=None, help="keep the work folder here (reusable)"
    )
    p_demo.add_argument(
        "--keep", type=Path, default=None, metavar="DIR", help="keep the run's outputs in DIR"
    )
    p_demo.add_argument(
        "--min-dice", type=float, default=0.9, help="Dice needed for exit code 0 (default 0.9)"
    )
    p_demo.add_argument("--json", action="store_true", help="print the figures as JSON too")
    return parser


def _print_model(info) -> None:
    print(f"{info.name}   (nnU-Net v{info.nnunet_version})")
    print(f"  configuration: {info.configuration}   trainer: {info.trainer}   plans: {info.plans}")
    folds = ", ".join(f"{f} ({info.checkpoints[str(f)]})" for f in info.folds)
    print(f"  folds: {folds}")
    print(f"  labels: {', '.join(f'{k}={v}' for k, v in info.labels.items())}")
    if info.nnunet_version == 1:
        print(f"  postprocessing: {info.postprocessing or 'none (no postprocessing.json)'}")
    print(f"  dataset: {info.dataset_name}   installed: {info.installed_at}")
    print(f"  checksum: {info.checksum}")
    print(f"  path: {info.path}")


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    store = resolve_store(opts.model_store)
    try:
        if opts.command == "install":
            info = install_model(
                opts.source,
                opts.name,
                store,
                configuration=opts.configuration,
                trainer=opts.trainer,
                force=opts.force,
            )
            print(f"installed {info.name!r} in {store}")
            _print_model(info)
        elif opts.command == "list":
            models = list_models(store)
            if opts.json:
                print(json.dumps([m.summary() for m in models], indent=2))
            elif not models:
                print(f"no models installed in {store}")
            for info in [] if opts.json else models:
                _print_model(info)
        elif opts.command == "verify":
            names = opts.names or [m.name for m in list_models(store)]
            if not names:
                print(f"no models installed in {store}")
            failed = 0
            for name in names:
                try:
                    info = verify_model(name, store, deep=True)
                    print(f"{name}: OK ({len(info.files)} files, {info.checksum})")
                except ModelStoreError as err:
                    print(f"{name}: FAILED: {err}", file=sys.stderr)
                    failed += 1
            return 1 if failed else 0
        elif opts.command == "remove":
            path = remove_model(opts.name, store)
            print(f"removed {path}")
        elif opts.command == "check-demo":
            return check_demo(
                opts.raw_t1w,
                opts.expected_mask,
                model=opts.model,
                model_store=store,
                profile=opts.profile,
                device=opts.device,
                regions=opts.regions,
                n4_mask=opts.n4_mask,
                omp_nthreads=opts.omp_nthreads,
                work_dir=opts.work_dir,
                keep=opts.keep,
                min_dice=opts.min_dice,
                as_json=opts.json,
            )
    except ModelStoreError as err:
        print(f"mcpvs models: error: {err}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- check-demo

#: Dice at which the demo counts as reproduced (the same model, inputs and settings give
#: identical masks here; 0.99 leaves room for GPU non-determinism, measured < 1e-3 in Dice)
REPRODUCED_DICE = 0.99


def _load_mask_pair(raw: Path, expected: Path):
    import nibabel as nib
    import numpy as np

    images = {}
    for label, path in (("raw T1w", raw), ("expected mask", expected)):
        try:
            images[label] = nib.load(str(path))
        except Exception as err:  # noqa: BLE001 - any unreadable file: one line
            raise ModelStoreError(f"{path}: the {label} cannot be read as NIfTI ({err})") from None
        if len(images[label].shape) != 3:
            raise ModelStoreError(f"{path}: the {label} must be 3D, got {images[label].shape}")
    t1, mask = images["raw T1w"], images["expected mask"]
    if t1.shape != mask.shape or not np.allclose(t1.affine, mask.affine, atol=1e-3):
        raise ModelStoreError(
            f"{expected}: not on the raw T1w's grid (shape {mask.shape} vs {t1.shape}, or a "
            "different affine); check-demo compares masks on the raw T1w's grid"
        )
    return t1, np.asarray(mask.dataobj) > 0


def _verdict(dice: float, min_dice: float, profile: str) -> tuple[str, str]:
    if dice >= REPRODUCED_DICE:
        return "REPRODUCED", "this installation gives the expected mask"
    if dice >= min_dice:
        return "CLOSE", (
            "near the expected mask but not identical: other inference settings "
            f"(profile {profile}; the authors' are full-gpu), preprocessing or hardware"
        )
    return "DIFFERENT", (
        "not the expected mask: a different model or folds, different preprocessing, or an "
        "input that is not the demo's (see docs/models.md, 'check-demo')"
    )


def check_demo(
    raw: Path,
    expected: Path,
    *,
    model: str,
    model_store: Path,
    profile: str = "full-gpu",
    device: str = "auto",
    regions: str = "fast",
    n4_mask: str = "auto",
    omp_nthreads: int | None = None,
    work_dir: Path | None = None,
    keep: Path | None = None,
    min_dice: float = 0.9,
    as_json: bool = False,
) -> int:
    """Run the participant pipeline on ``raw`` and compare its PVS mask with ``expected``."""
    from mcpvs_bidsapp import metrics
    from mcpvs_bidsapp.cli import run as run_cli
    from mcpvs_bidsapp.models.store import get_model
    from mcpvs_bidsapp.outputs import spec

    raw, expected = Path(raw).absolute(), Path(expected).absolute()
    t1, truth = _load_mask_pair(raw, expected)
    info = get_model(model, model_store)  # verified before anything runs
    own_tmp = None
    if work_dir is None:
        own_tmp = Path(tempfile.mkdtemp(prefix="mcpvs-check-demo-"))
        work_dir = own_tmp
    work_dir = Path(work_dir).absolute()
    try:
        # a fixed layout inside work_dir: a second check with the same files reuses its cache
        bids = work_dir / "demo_bids"
        anat = bids / "sub-demo" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        (bids / "dataset_description.json").write_text(
            json.dumps({"Name": "mcpvs check-demo", "BIDSVersion": "1.9.0"}) + "\n"
        )
        suffix = ".nii.gz" if raw.name.endswith(".gz") else ".nii"
        target = anat / f"sub-demo_T1w{suffix}"
        if not target.exists() or target.stat().st_size != raw.stat().st_size:
            shutil.copy2(raw, target)  # keeps the mtime: Nipype's cache key
        out = Path(keep).absolute() if keep else work_dir / "out"
        argv = [str(bids), str(out), "participant", "--method", "nnunet", "--model", model,
                "--model-store", str(model_store), "--profile", profile, "--device", device,
                "--regions", regions, "--n4-mask", n4_mask,
                "-w", str(work_dir / "work")]  # fmt: skip
        if omp_nthreads:  # --nprocs as large: the run refuses steps wider than the pool
            argv += ["--omp-nthreads", str(omp_nthreads), "--nprocs", str(omp_nthreads)]
        print(
            f"check-demo: running the participant pipeline with model {model!r} "
            f"(nnU-Net v{info.nnunet_version}, profile {profile}) on {raw}",
            flush=True,
        )
        code = run_cli.main(argv)
        found = sorted((out / "sub-demo").rglob(f"*{spec.PVS_MASK.suffix}"))
        if code != 0 or not found:
            print(
                f"mcpvs models: error: the participant run failed (exit {code}); see "
                f"{out / 'sub-demo'} and {work_dir / 'work'}",
                file=sys.stderr,
            )
            return 1
        import nibabel as nib
        import numpy as np

        pred = np.asarray(nib.load(str(found[0])).dataobj) > 0
        zooms = t1.header.get_zooms()[:3]
        vol_diff, rel_diff = metrics.volume_difference(pred, truth, zooms)
        figures = {
            "dice": metrics.dice(pred, truth),
            "precision": metrics.precision(pred, truth),
            "recall": metrics.recall(pred, truth),
            **{  # the counts and ratios; the per-element arrays are for the benchmarks
                k: v
                for k, v in metrics.element_metrics(pred, truth).items()
                if not isinstance(v, np.ndarray)
            },
            "pred_volume_mm3": float(pred.sum() * np.prod(zooms)),
            "expected_volume_mm3": float(truth.sum() * np.prod(zooms)),
            "volume_diff_mm3": vol_diff,
            "rel_volume_diff": rel_diff,
            "identical_voxels": bool(np.array_equal(pred, truth)),
        }
        verdict, why = _verdict(figures["dice"], min_dice, profile)
        figures.update(
            verdict=verdict,
            model=model,
            model_checksum=info.checksum,
            nnunet_version=info.nnunet_version,
            profile=profile,
            mask=str(found[0]),
        )
        print(f"model        {model} (nnU-Net v{info.nnunet_version}, {info.checksum})")
        print(f"Dice         {figures['dice']:.4f}")
        print(f"precision    {figures['precision']:.4f}")
        print(f"recall       {figures['recall']:.4f}")
        print(
            f"element F1   {figures['element_f1']:.4f}  ({figures['element_tp']} matched of "
            f"{figures['n_pred_elements']} predicted / {figures['n_true_elements']} expected; "
            "26-connected, IoU > 0.1)"
        )
        print(
            f"volume       {figures['pred_volume_mm3']:.1f} mm³ vs expected "
            f"{figures['expected_volume_mm3']:.1f} mm³ (difference {vol_diff:+.1f} mm³, "
            f"{100 * rel_diff:+.2f} %)"
        )
        if as_json:
            print(json.dumps(figures, indent=2))
        print(f"verdict: {verdict}: {why} (Dice {figures['dice']:.4f}; pass at >= {min_dice})")
        return 0 if figures["dice"] >= min_dice else 1
    finally:
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
