"""Synthetic cohorts of participant-level outputs, exactly as docs/outputs.md describes them.

Used by the tests (planted effects with known truth) and by benchmarks/group_level.py
(1,000 participants). Nothing here runs the participant pipeline: only its outputs are faked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mcpvs_bidsapp.outputs import spec

VENDORS = (
    ("SIEMENS", "Prisma_fit"),
    ("GE MEDICAL SYSTEMS", "DISCOVERY MR750"),
    ("Philips Medical Systems", "Ingenia"),
)
CHECKSUM = "sha256:" + "ab12cd34" * 8


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _measures_tsv(path: Path, values: dict, icv: float) -> None:
    lines = [
        "region\tpvs_volume_mm3\tpvs_count\tmean_cluster_volume_mm3\tregion_volume_mm3"
        "\ticv_mm3\tpvsnm\twmh_overlap_pct"
    ]
    for region, (volume, count, region_volume) in values.items():
        mean = f"{volume / count:.4f}" if count else "n/a"
        lines.append(
            f"{region}\t{volume:.4f}\t{count}\t{mean}\t{region_volume:.1f}\t{icv:.1f}"
            f"\t{1e6 * volume / icv:.6f}\tn/a"
        )
    path.write_text("\n".join(lines) + "\n")


def write_cohort(
    output_dir: Path,
    bids_dir: Path,
    n: int = 100,
    seed: int = 0,
    age_effect: float = 0.0,
    sessions: int = 1,
    session_noise: float = 0.05,
    method: str = "nnunet",
    checksum: str = CHECKSUM,
    n_failed: int = 0,
    n_manual: int = 0,
    subject_offset: int = 0,
    write_bids: bool = True,
    n4_mask: str | None = None,
) -> pd.DataFrame:
    """Write ``n`` participants' outputs; return the truth (one row per T1w).

    PVSnm (ppm of ICV) is ``base + age_effect * (age - 70)`` plus hypertension / WMH terms
    and noise, in BG and WM alike; ``age_effect = 0`` is the null cohort. With
    ``sessions > 1`` every participant has that many sessions whose PVS volumes differ by a
    relative ``session_noise`` (for the ICC). ``n_failed`` participants have a failed run
    (status file only); ``n_manual`` get tiny NIfTI PVS masks plus manual masks in
    ``bids_dir/derivatives/manual`` with a known overlap. ``n4_mask`` records an N4 variant in
    the measures sidecars (none by default, as in outputs older than that record).
    """
    rng = np.random.default_rng(seed)
    output_dir = Path(output_dir)
    bids_dir = Path(bids_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        output_dir / "dataset_description.json",
        {
            "Name": "mcpvs synthetic",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "mcpvs", "Version": "0.1.0"}],
        },
    )
    labels = [f"{i + 1 + subject_offset:05d}" for i in range(n)]
    age = rng.uniform(55, 90, n)
    hypertension = rng.random(n) < 0.4
    wmh_norm = rng.lognormal(np.log(3000), 0.6, n)
    vendor_idx = rng.integers(0, len(VENDORS), n)
    icv = rng.normal(1.45e6, 1.2e5, n)
    wmh_z = (np.log(wmh_norm) - np.log(3000)) / 0.6
    bg_true = 200 + age_effect * (age - 70) + 0.0 * hypertension + rng.normal(0, 40, n)
    wm_true = 1300 + 6 * age_effect * (age - 70) + 0.0 * wmh_z + rng.normal(0, 250, n)
    bg_true = np.clip(bg_true, 5, None)
    wm_true = np.clip(wm_true, 20, None)
    # visual scores: noisy, monotone in the PVS volume, 1..4
    bg_score = np.digitize(bg_true + rng.normal(0, 25, n), np.percentile(bg_true, [30, 60, 85])) + 1
    wm_score = (
        np.digitize(wm_true + rng.normal(0, 150, n), np.percentile(wm_true, [30, 60, 85])) + 1
    )
    failed = set(rng.choice(n, size=n_failed, replace=False).tolist()) if n_failed else set()
    manual = [i for i in range(n) if i not in failed][:n_manual]

    if write_bids:
        bids_dir.mkdir(parents=True, exist_ok=True)
        _write_json(
            bids_dir / "dataset_description.json", {"Name": "synthetic", "BIDSVersion": "1.9.0"}
        )
        # inheritance: field strength only at the top level, the vendor per participant
        _write_json(bids_dir / "T1w.json", {"MagneticFieldStrength": 3, "Manufacturer": "n/a"})
        pd.DataFrame(
            {
                "participant_id": [f"sub-{lab}" for lab in labels],
                "age": age.round(1),
                "sex": rng.choice(["F", "M"], n),
                "hypertension": np.where(hypertension, "yes", "no"),
                "wmh_norm": wmh_norm.round(1),
                "bg_score": bg_score,
                "wm_score": wm_score,
            }
        ).to_csv(bids_dir / "participants.tsv", sep="\t", index=False, na_rep="n/a")

    truth = []
    for i, lab in enumerate(labels):
        sub = f"sub-{lab}"
        manufacturer, model = VENDORS[vendor_idx[i]]
        runs = []
        for s in range(sessions):
            ses = f"ses-{s + 1}" if sessions > 1 else None
            prefix = "_".join(p for p in (sub, ses) if p)
            folder = output_dir / sub / (ses or "") / "anat"
            source = f"{sub}/{ses + '/' if ses else ''}anat/{prefix}_T1w.nii.gz"
            entities = {"subject": lab} | ({"session": str(s + 1)} if ses else {})
            if write_bids:
                _write_json(
                    bids_dir / sub / (ses or "") / "anat" / f"{prefix}_T1w.json",
                    {"Manufacturer": manufacturer, "ManufacturersModelName": model},
                )
            if i in failed:
                runs.append(
                    {
                        "source": source,
                        "entities": entities,
                        "status": "failed",
                        "error": f"{prefix}_T1w.nii.gz: image is 4D; a 3D T1w is needed",
                    }
                )
                continue
            jitter = rng.normal(1, session_noise, 2) if sessions > 1 else np.ones(2)
            bg_vol = bg_true[i] * icv[i] / 1e6 * jitter[0]
            wm_vol = wm_true[i] * icv[i] / 1e6 * jitter[1]
            other = rng.uniform(20, 60)
            bg_n = max(1, int(bg_vol / 8))
            wm_n = max(1, int(wm_vol / 10))
            values = {
                "BG": (bg_vol, bg_n, 2.0e4),
                "WM": (wm_vol, wm_n, 4.5e5),
                "whole_brain": (bg_vol + wm_vol + other, bg_n + wm_n + 2, 1.1e6),
            }
            folder.mkdir(parents=True, exist_ok=True)
            _measures_tsv(folder / spec.MEASURES.name(prefix), values, icv[i])
            provenance = {
                "Method": method,
                "ModelName": "mcpvsnet" if method == "nnunet" else "n/a",
                "ModelChecksum": checksum if method == "nnunet" else "n/a",
                "RegionsMethod": "samseg",
                "IcvSource": "samseg sbTIV",
                "Sources": [f"bids:raw:{source}"],
            }
            if n4_mask:
                provenance["N4Mask"] = n4_mask
            _write_json(spec.sidecar_path(folder / spec.MEASURES.name(prefix)), provenance)
            mask_meta = {
                "Sources": [f"bids:raw:{source}"],
                "Method": method,
                "RegionsMethod": "samseg",
                "SoftwareVersions": {"mcpvs": "0.1.0"},
            }
            if method == "nnunet":
                mask_meta["Model"] = {"Name": "mcpvsnet", "Checksum": checksum}
            _write_json(spec.sidecar_path(folder / spec.PVS_MASK.name(prefix)), mask_meta)
            row = {
                "participant_id": sub,
                "session": str(s + 1) if ses else "n/a",
                "prefix": prefix,
                "bg_pvs_volume_mm3": bg_vol,
                "wm_pvs_volume_mm3": wm_vol,
                "manufacturer": manufacturer,
            }
            if i in manual and s == 0:
                row.update(_write_masks(rng, output_dir, bids_dir, folder, sub, ses, prefix))
            truth.append(row)
            runs.append(
                {"source": source, "entities": entities, "status": "success", "error": None}
            )
        if i not in failed:
            (output_dir / f"{sub}.html").write_text(f"<html><body>{sub}</body></html>\n")
        run_id = f"20261125-1200{i % 60:02d}_{rng.integers(0, 16**6):06x}"
        _write_json(
            spec.log_dir(output_dir, lab, run_id) / spec.STATUS_FILE,
            {
                "run_id": run_id,
                "participant_label": lab,
                "started": "2026-11-25T12:00:00",
                "finished": "2026-11-25T12:10:00",
                "mcpvs_version": "0.1.0",
                "runs": runs,
            },
        )
    return pd.DataFrame(truth)


def _write_masks(rng, output_dir, bids_dir, folder, sub, ses, prefix) -> dict:
    """A 12^3 PVS mask and a manual mask sharing a known number of voxels."""
    import nibabel as nb

    shape = (12, 12, 12)
    truth = np.zeros(shape, np.uint8)
    flat = rng.choice(truth.size, size=int(rng.integers(20, 60)), replace=False)
    truth.flat[flat] = 1
    pred = truth.copy()
    on = np.flatnonzero(truth)
    off = np.flatnonzero(truth == 0)
    missed = rng.choice(on, size=len(on) // 5, replace=False)
    extra = rng.choice(off, size=len(on) // 6, replace=False)
    pred.flat[missed] = 0
    pred.flat[extra] = 1
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    nb.Nifti1Image(pred, affine).to_filename(folder / spec.PVS_MASK.name(prefix))
    mdir = bids_dir / "derivatives" / "manual" / sub / (ses or "") / "anat"
    mdir.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(truth, affine).to_filename(mdir / f"{prefix}_desc-manual_mask.nii.gz")
    tp = len(on) - len(missed)
    return {
        "dice_true": 2 * tp / (2 * tp + len(extra) + len(missed)),
        "precision_true": tp / (tp + len(extra)),
        "recall_true": tp / len(on),
    }
