"""Validate the built-in vesselness method on known-truth phantoms built from real heads.

Tune on some heads, report on others (the split is fixed below). For every head and load a
phantom is made from the *raw* T1w (tubes inserted with the head's own bias field), degraded
(extra bias field, Rician noise, vendor-like gamma), then preprocessed like the app does
(N4 with shrink 2 / spline 100 mm inside the brain mask, WM scaled to 1) and segmented.

Prints Dice / precision / recall / cluster F1 per region, the correlation of predicted with
true PVS volume across loads, the PVS-volume change between two noise/bias realisations of
the same phantom, and the segmentation runtime with the image size.

    PYTHONPATH=. NIPYPE_NO_ET=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 OMP_NUM_THREADS=2 \
        python benchmarks/builtin_method_validation.py --split report

Head preparation (deepbet, N4, affine registration for the BG prior) is cached in
``--cache`` (default ``work/phantom_heads``); the first run takes a few minutes per head.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcpvs_bidsapp import metrics, vesselness  # noqa: E402
from mcpvs_bidsapp.synthetic import phantoms  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "t1w"
SPLITS = {
    "tune": ["philips_adni_sag3d_mprage_t1w", "niivue_otsu_t1w"],
    "report": ["arc2017_stroke_t1w", "mne_sample_brain_t1w"],
}
LOADS = ["few", "mild", "moderate", "many"]
#: (bias_strength, noise_sd, gamma) per realisation; noise SD relative to the 95th percentile.
#: 0 and 1: two noise/bias realisations with the same settings (different seeds);
#: 2: a stronger bias, more noise and a vendor-like gamma (robustness, reported apart)
REALISATIONS = [(0.2, 0.025, 1.0), (0.2, 0.025, 1.0), (0.25, 0.03, 0.9)]


def preprocess(image: np.ndarray, brain: np.ndarray, zooms, shrink: int = 2) -> np.ndarray:
    """N4 (shrink 2, spline 100 mm) inside the brain mask, then WM median scaled to 1."""
    import ants

    a = ants.from_numpy(np.clip(image, 0, None).astype(np.float32), spacing=tuple(zooms))
    m = ants.from_numpy(brain.astype(np.float32), spacing=tuple(zooms))
    corr = ants.n4_bias_field_correction(a, mask=m, shrink_factor=shrink, spline_param=100).numpy()
    corr = np.where(brain > 0, corr, 0.0)
    cls = phantoms._three_class(corr, brain > 0)
    return (corr / float(np.median(corr[cls == 3]))).astype(np.float32)


def run_one(head, load, seed, real, params=None, n4_shrink=2) -> dict:
    bias_s, noise, gamma = REALISATIONS[real]
    brain = head.brain_mask > 0
    ph = phantoms.insert_pvs(
        head.raw,
        head.affine,
        brain,
        head.regions == 2,
        head.regions == 1,
        load=load,
        seed=seed,
        csf_level=0.3 * head.wm_level_raw,
        bias=head.bias,
    )
    deg = phantoms.degrade(
        ph.image,
        seed=1000 + 17 * seed + real,
        bias_strength=bias_s,
        noise_sd=noise,
        contrast_gamma=gamma,
        mask=brain,
    )
    if n4_shrink > 0:
        pre = preprocess(deg, brain, head.zooms, n4_shrink)
    else:
        # the head's own N4 field divided out; the added bias field stays (harsher than N4)
        pre = np.where(brain, deg / head.bias, 0.0).astype(np.float32)
        cls = phantoms._three_class(pre, brain)
        pre = pre / float(np.median(pre[cls == 3]))
    t0 = time.perf_counter()
    _, mask, _ = vesselness.segment_pvs(
        pre, head.regions, head.zooms, affine=head.affine, params=params
    )
    dt = time.perf_counter() - t0
    m = metrics.compare_masks(mask, ph.truth_mask, head.regions, zooms=head.zooms)
    return {
        "head": head.name,
        "load": load,
        "realisation": real,
        "seconds": dt,
        "shape": list(pre.shape),
        "n_tubes": sum(t.in_truth for t in ph.tubes),
        "metrics": m,
    }


def summarise(rows: list[dict]) -> dict:
    def col(region, key, subset=None):
        return np.array([r["metrics"][region][key] for r in (subset or rows)], float)

    out = {}
    main = [r for r in rows if r["realisation"] == 0 and r["load"] != "none"]
    for region in ("all", "BG", "WM"):
        out[region] = {
            k: float(np.nanmean(col(region, k, main)))
            for k in ("dice", "precision", "recall", "cluster_f1", "rel_volume_diff")
        }
    pv, tv = col("all", "pred_volume_mm3", main), col("all", "true_volume_mm3", main)
    out["volume_r"] = float(np.corrcoef(pv, tv)[0, 1]) if len(main) > 2 else float("nan")
    for real, key in ((1, "realisation"), (2, "vendor")):
        changes = []
        for r0 in main:
            r1 = [
                r
                for r in rows
                if r["realisation"] == real and r["head"] == r0["head"] and r["load"] == r0["load"]
            ]
            if r1:
                v0 = r0["metrics"]["all"]["pred_volume_mm3"]
                v1 = r1[0]["metrics"]["all"]["pred_volume_mm3"]
                changes.append(abs(v1 - v0) / max(0.5 * (v0 + v1), 1e-9))
        out[f"{key}_volume_change_max"] = float(max(changes)) if changes else float("nan")
        out[f"{key}_volume_change_mean"] = float(np.mean(changes)) if changes else float("nan")
    zero = [r for r in rows if r["load"] == "none"]
    out["zero_load_fp_mm3"] = [r["metrics"]["all"]["pred_volume_mm3"] for r in zero]
    out["seconds_mean"] = float(np.mean([r["seconds"] for r in rows]))
    return out


def _print_row(r: dict) -> None:
    m = r["metrics"]
    print(
        f"{r['head']:32s} {r['load']:9s} real={r['realisation']} tubes={r['n_tubes']:3d} "
        f"true={m['all']['true_volume_mm3']:7.0f} pred={m['all']['pred_volume_mm3']:7.0f} "
        f"Dice all/BG/WM={m['all']['dice']:.3f}/{m['BG']['dice']:.3f}/{m['WM']['dice']:.3f} "
        f"P={m['all']['precision']:.3f} R={m['all']['recall']:.3f} "
        f"clF1={m['all']['cluster_f1']:.3f} t={r['seconds']:.1f}s shape={r['shape']}",
        flush=True,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=sorted(SPLITS), default="report")
    ap.add_argument("--heads", nargs="*", help="override the split's heads (file stems)")
    ap.add_argument("--loads", nargs="*", default=LOADS)
    ap.add_argument("--realisation-loads", nargs="*", default=["moderate", "many"])
    ap.add_argument("--vendor-loads", nargs="*", default=["moderate"])
    ap.add_argument("--params", type=json.loads, default=None, help="JSON parameter overrides")
    ap.add_argument("--cache", default=str(ROOT / "work" / "phantom_heads"))
    ap.add_argument(
        "--n4-shrink",
        type=int,
        default=0,
        help="re-run N4 on each phantom with this shrink factor (app: 2); 0 (default): divide "
        "by the head's own N4 field and leave the added bias field uncorrected",
    )
    ap.add_argument("--no-zero", action="store_true", help="skip the zero-load phantom")
    ap.add_argument("--json", help="write all rows and the summary here")
    ap.add_argument("--merge", nargs="*", help="only summarise rows of earlier --json files")
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
        for r in rows:
            _print_row(r)
        print(json.dumps(summarise(rows), indent=1))
        return 0
    heads = args.heads or SPLITS[args.split]
    rows = []
    for name in heads:
        # the MNE image is FreeSurfer's brain.mgz: already skull-stripped and bias-corrected
        head = phantoms.prepare_head(
            DATA / f"{name}.nii.gz", cache_dir=args.cache, n4=not name.startswith("mne")
        )
        jobs = ([] if args.no_zero else [("none", 0)]) + [(ld, 0) for ld in args.loads]
        jobs += [(ld, 1) for ld in args.realisation_loads]
        jobs += [(ld, 2) for ld in args.vendor_loads]
        for load, real in jobs:
            # seeds depend on the head's name and the load, not on the invocation
            seed = zlib.crc32(f"{name}:{load}".encode()) % 100_000
            r = run_one(head, load, seed, real, args.params, args.n4_shrink)
            rows.append(r)
            _print_row(r)
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
