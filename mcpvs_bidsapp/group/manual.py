"""Agreement of the PVS masks with manual masks (the paper's Table 2 and Fig. 1).

Manual masks come as BIDS-Derivatives: ``sub-<label>/[ses-<label>/]anat/<prefix>[_space-T1w]
_desc-manual_mask.nii[.gz]`` (``label-PVS`` is accepted too), on the T1w's grid.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from mcpvs_bidsapp import metrics
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.read import prefix_entities


def overlap(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Dice, Precision, Recall of two binary masks (paper section 2.6), with voxel counts.

    The definitions (and empty-mask conventions) are those of :mod:`mcpvs_bidsapp.metrics`,
    shared with the phantom validation of the built-in method.
    """
    pred = np.asarray(pred) > 0
    truth = np.asarray(truth) > 0
    return {
        "dice": metrics.dice(pred, truth),
        "precision": metrics.precision(pred, truth),
        "recall": metrics.recall(pred, truth),
        "tp_voxels": int(np.count_nonzero(pred & truth)),
        "fp_voxels": int(np.count_nonzero(pred & ~truth)),
        "fn_voxels": int(np.count_nonzero(~pred & truth)),
    }


def find_manual_masks(manual_dir: Path) -> dict[str, Path]:
    """``{<prefix>: path}`` of every manual PVS mask under ``manual_dir``."""
    found: dict[str, Path] = {}
    for root, _dirs, files in os.walk(manual_dir):
        for name in files:
            if not name.endswith(("_mask.nii.gz", "_mask.nii")):
                continue
            stem = name.split("_mask.nii")[0]
            ents = prefix_entities(stem)
            if ents.get("desc") != "manual" and ents.get("label", "").upper() != "PVS":
                continue
            keep = [p for p in stem.split("_") if p.split("-")[0] not in ("space", "desc", "label")]
            found["_".join(keep)] = Path(root) / name
    return found


def manual_metrics(table: pd.DataFrame, output_dir: Path, manual_dir: Path) -> pd.DataFrame:
    """One row per T1w with a manual mask: overlap metrics and both volumes (mm^3)."""
    masks = find_manual_masks(manual_dir)
    rows = []
    for rec in table.itertuples(index=False):
        manual = masks.get(rec.prefix)
        if manual is None:
            continue
        pred_path = (
            output_dir / Path(rec.measures_file).parent / (rec.prefix + spec.PVS_MASK.suffix)
        )
        row = {
            "participant_id": rec.participant_id,
            "session": rec.session,
            "prefix": rec.prefix,
            "vendor": rec.vendor,
            "manual_mask": str(manual),
            "error": "n/a",
        }
        try:
            pred_img = nb.load(pred_path)
            man_img = nb.load(manual)
            if pred_img.shape[:3] != man_img.shape[:3]:
                raise ValueError(
                    f"shape {man_img.shape[:3]} differs from the PVS mask's {pred_img.shape[:3]}"
                )
            if not np.allclose(pred_img.affine, man_img.affine, atol=1e-3):
                raise ValueError("affine differs from the PVS mask's (not on the T1w grid)")
            pred = np.asanyarray(pred_img.dataobj)
            man = np.asanyarray(man_img.dataobj)
            voxel = float(np.prod(pred_img.header.get_zooms()[:3]))
            row.update(overlap(pred, man))
            row["pvs_volume_mm3"] = float(np.count_nonzero(pred)) * voxel
            row["manual_volume_mm3"] = float(np.count_nonzero(man)) * voxel
        except (OSError, ValueError, nb.filebasedimages.ImageFileError) as err:
            row["error"] = f"{manual.name}: {err}"
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean +- SD of Dice/Precision/Recall and the volume correlation, overall and per vendor."""
    from mcpvs_bidsapp.group.stats import pearson

    ok = per_run[per_run["error"] == "n/a"] if not per_run.empty else per_run
    if ok.empty:
        return pd.DataFrame()
    rows = []
    groups = [("all", ok)] + [(v, sub) for v, sub in ok.groupby("vendor", sort=True)]
    for vendor, sub in groups:
        row = {"vendor": vendor, "n": len(sub)}
        for metric in ("dice", "precision", "recall"):
            row[f"{metric}_mean"] = sub[metric].mean()
            row[f"{metric}_sd"] = sub[metric].std(ddof=1) if len(sub) > 1 else math.nan
        corr = pearson(sub["manual_volume_mm3"], sub["pvs_volume_mm3"])
        row.update(
            {
                "volume_r": corr["r"],
                "volume_r_ci_low": corr["ci_low"],
                "volume_r_ci_high": corr["ci_high"],
                "volume_r_p": corr["p"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)
