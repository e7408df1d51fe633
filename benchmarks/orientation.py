"""Do the measures depend on how the voxels are stored? (issue #17, items 1 and 2)

One real head is written as several participants of one BIDS dataset: ``RAS`` (as it is),
``LPI`` and ``LIA`` (the same voxels in another order; LIA is FreeSurfer's), ``oblique`` (the
RAS voxels with the affine turned 20° about left-right and 10° about superior) and ``bias``
(times a smooth 0.64-1.57 field, item 2). ``mcpvs participant`` runs once per region path;
every copy is then compared with ``RAS``: per region the relative difference of the region
volume, the PVS volume and the PVS count, the ICV, and the Dice of the brain mask, the BG and
WM regions and the PVS mask (after bringing each output to the RAS voxel order; for ``bias``
the voxels are the RAS ones too).

    python benchmarks/orientation.py OUT [--zoom 2] [--regions fast samseg]
        [--copies RAS LPI LIA oblique bias] [--nprocs 2] [--python PY] [--pythonpath DIR]

``--pythonpath DIR`` runs another checkout's code (e.g. ``git archive main``) for a before /
after comparison. Writes ``OUT/<regions>/comparison.tsv`` and prints it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.synthetic.datasets import (
    make_small_bids,
    resample_head,
    shared_data_dir,
    storage_orders,
    with_bias_field,
)

REPO = Path(__file__).resolve().parents[1]


def build(bids: Path, head: Path, zoom: float | None, copies: list[str]) -> None:
    make_small_bids(bids, shared_data_dir(), n_participants=0)
    src = resample_head(head, bids.parent / "head.nii.gz", zoom)
    img = nb.load(src)
    made = {**storage_orders(img), "bias": with_bias_field(nb.as_closest_canonical(img))}
    for label in copies:
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        made[label].to_filename(anat / f"sub-{label}_T1w.nii.gz")


def run(bids: Path, out: Path, work: Path, regions: str, args) -> float:
    env = dict(os.environ, NIPYPE_NO_ET="1")
    if args.pythonpath:
        env["PYTHONPATH"] = str(args.pythonpath)
    cmd = [args.python, "-m", "mcpvs_bidsapp.cli.run", str(bids), str(out), "participant",
           "--regions", regions, "--method", "vesselness", "--nprocs", str(args.nprocs),
           "--omp-nthreads", "1", "-w", str(work)]  # fmt: skip
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return time.time() - start


def _image(out: Path, label: str, derivative: spec.Derivative) -> np.ndarray:
    img = nb.load(out / f"sub-{label}" / "anat" / derivative.name(f"sub-{label}"))
    return np.asanyarray(nb.as_closest_canonical(img).dataobj)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def compare(out: Path, copies: list[str]) -> pd.DataFrame:
    def measures(label):
        path = out / f"sub-{label}" / "anat" / spec.MEASURES.name(f"sub-{label}")
        return pd.read_csv(path, sep="\t", na_values="n/a").set_index("region")

    ref = measures("RAS")
    ref_img = {d.key: _image(out, "RAS", d) for d in (spec.BRAIN_MASK, spec.REGIONS_DSEG,
                                                      spec.PVS_MASK)}  # fmt: skip
    rows = []
    for label in copies:
        if label == "RAS":
            continue
        try:
            m = measures(label)
            img = {d.key: _image(out, label, d) for d in (spec.BRAIN_MASK, spec.REGIONS_DSEG,
                                                          spec.PVS_MASK)}  # fmt: skip
        except FileNotFoundError as err:
            rows.append({"copy": label, "error": str(err)})
            continue
        dice = {
            "brain": _dice(img["brain_mask"] > 0, ref_img["brain_mask"] > 0),
            "BG": _dice(img["regions_dseg"] == 1, ref_img["regions_dseg"] == 1),
            "WM": _dice(img["regions_dseg"] == 2, ref_img["regions_dseg"] == 2),
            "whole_brain": _dice(img["pvs_mask"] > 0, ref_img["pvs_mask"] > 0),
        }
        for region in ref.index:

            def rel(col, region=region, m=m):
                a, b = m.loc[region, col], ref.loc[region, col]
                return float((a - b) / b * 100) if b else float(a - b)

            rows.append({
                "copy": label,
                "region": region,
                "region_volume_mm3": m.loc[region, "region_volume_mm3"],
                "region_volume_ras": ref.loc[region, "region_volume_mm3"],
                "region_volume_diff_pct": rel("region_volume_mm3"),
                "region_dice": dice.get(region, dice["brain"]),
                "pvs_volume_mm3": m.loc[region, "pvs_volume_mm3"],
                "pvs_volume_ras": ref.loc[region, "pvs_volume_mm3"],
                "pvs_volume_diff_pct": rel("pvs_volume_mm3"),
                "pvs_count": m.loc[region, "pvs_count"],
                "pvs_count_ras": ref.loc[region, "pvs_count"],
                "icv_diff_pct": rel("icv_mm3"),
                "pvs_mask_dice": dice["whole_brain"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--head",
        type=Path,
        default=shared_data_dir() / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz",
    )
    parser.add_argument("--zoom", type=float, default=2.0, help="mm; 0: native")
    parser.add_argument("--regions", nargs="+", default=["fast", "samseg"])
    parser.add_argument("--copies", nargs="+", default=["RAS", "LPI", "LIA", "oblique", "bias"])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pythonpath", type=Path, default=None)
    args = parser.parse_args(argv)  # fmt: skip
    bids = args.out / "bids"
    if not bids.exists():
        build(bids, args.head, args.zoom or None, args.copies)
    for regions in args.regions:
        dest = args.out / regions
        seconds = run(bids, dest / "out", dest / "work", regions, args)
        table = compare(dest / "out", args.copies)
        table.to_csv(dest / "comparison.tsv", sep="\t", index=False, float_format="%.4g")
        print(f"--regions {regions}: {seconds:.0f} s")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
