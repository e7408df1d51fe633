"""``mcpvs models {install,list,verify,remove}``: manage installed nnU-Net v2 models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mcpvs_bidsapp.config import ENV_MODEL_STORE, default_model_store
from mcpvs_bidsapp.models.store import (
    ChecksumMismatchError,
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
  mcpvs models list
  mcpvs models verify mcpvsnet

The store is --model-store, else ${ENV_MODEL_STORE}, else {default_model_store()}.
It is only written by install/remove: a read-only store (container image) works for the rest.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcpvs models",
        description="Install, list, verify and remove nnU-Net v2 models (e.g. mcPVS-Net).",
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
        help="install from an nnUNetv2_export_model_to_zip archive or a trained-model folder",
    )
    p_inst.add_argument("source", type=Path, help="export .zip, trained-model or results folder")
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
        "verify", parents=[store], help="re-check the sha256 of every file of installed models"
    )
    p_ver.add_argument("names", nargs="*", help="models to verify (default: all)")

    p_rm = sub.add_parser("remove", parents=[store], help="remove an installed model")
    p_rm.add_argument("name", help="the installed model to remove")
    return parser


def _print_model(info) -> None:
    print(f"{info.name}")
    print(f"  configuration: {info.configuration}   trainer: {info.trainer}   plans: {info.plans}")
    folds = ", ".join(f"{f} ({info.checkpoints[str(f)]})" for f in info.folds)
    print(f"  folds: {folds}")
    print(f"  labels: {', '.join(f'{k}={v}' for k, v in info.labels.items())}")
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
                    info = verify_model(name, store)
                    print(f"{name}: OK ({len(info.files)} files, {info.checksum})")
                except ChecksumMismatchError as err:
                    print(f"{name}: FAILED: {err}", file=sys.stderr)
                    failed += 1
            return 1 if failed else 0
        elif opts.command == "remove":
            path = remove_model(opts.name, store)
            print(f"removed {path}")
    except ModelStoreError as err:
        print(f"mcpvs models: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
