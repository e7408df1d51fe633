"""Fit the built-in method's cluster model (``mcpvs_bidsapp/vesselness_clusters.py``).

Data: the benchmark's known-truth phantoms (``builtin_method_validation.build``: realistic PVS
few / moderate / many, a second noise realisation, the two vendor-like degradations, the
mimics and the fluid-dark preset) on the **tune heads only** (``SPLITS["tune"]``), with the
benchmark's own seeds (crc32 of head, preset and load), so that the report heads stay held out.
Each phantom is segmented with today's candidate parameters and the model switched off; every
candidate cluster the hand-set rules keep is one row: features from
``vesselness_clusters.cluster_features``, label 1 when it touches a truth voxel, 0 when it does
not, and left out when most of it lies on the head's own findings (real PVS and texture that
nobody annotated: the benchmark's ignore set).

Model: scikit-learn ``LogisticRegression`` (L2, C = 1) on standardised features. Threshold:
the probability at which the tune phantoms' mean cluster recall equals their mean cluster
precision (the issue's two targets are both 0.75), read on the tune heads only.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/train_cluster_model.py \\
        --derivatives /work/cache/out --out mcpvs_bidsapp/data/models/clusters-logistic-v3.json

About 12 min on 2 cores (18 phantoms; 2026-12-04; v2 took 9 min on 2026-12-03). Writes the JSON
the package ships: numbers only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import builtin_method_validation as bv  # noqa: E402
from builtin_method_real_pvs import load_head  # noqa: E402

from mcpvs_bidsapp import vesselness, vesselness_clusters  # noqa: E402
from mcpvs_bidsapp.vesselness_frangi import _resample  # noqa: E402

S26 = np.ones((3, 3, 3), bool)
#: (preset, load, realisation) per tune head
JOBS = (
    [("realistic", ld, "r0") for ld in ("none", "few", "moderate", "many")]
    + [("realistic", "moderate", r) for r in ("r1", "vendor085", "vendor115")]
    + [("mimics", "moderate", "r0"), ("fluid", "moderate", "r0")]
)
C_REG = 1.0


def candidate_rows(ph: dict, findings: np.ndarray, params: dict | None = None) -> dict:
    """Features, labels and touched truth clusters of one phantom's candidate clusters
    (``params``: overrides of the candidate parameters; the model is always off here)."""
    head = ph["head"]
    dbg: dict = {}
    params = {**(params or {}), "cluster_model": ""}
    vesselness.segment_pvs(
        ph["pre"], ph["regions"], head.zooms, affine=head.affine, params=params, debug=dbg
    )
    crop = dbg["crop"]
    zo = np.asarray(head.zooms[:3], float)
    fac = zo / zo.min()
    truth = ph["truth"] > 0
    ign = findings if ph["ignore"] is None else (ph["ignore"] | findings)
    ign &= ~truth
    lt, nt = ndi.label(truth, structure=S26)
    lt_c = _resample(lt[crop].astype(np.float32), fac, order=0).astype(int)
    i_c = _resample(ign[crop].astype(np.float32), fac, order=0) > 0.5
    lab, ids = dbg["clusters"], dbg.get("cluster_ids", np.zeros(0, int))
    x = dbg.get("cluster_features", np.zeros((0, len(vesselness_clusters.FEATURES))))
    if len(ids):
        pos = np.asarray(ndi.maximum((lt_c > 0).astype(float), lab, ids)) > 0
        on_ign = np.asarray(ndi.mean(i_c.astype(float), lab, ids)) > 0.5
        touched = [set(np.unique(lt_c[(lab == i) & (lt_c > 0)]).tolist()) for i in ids]
    else:
        pos = on_ign = np.zeros(0, bool)
        touched = []
    return {"x": x, "pos": pos, "ignore": on_ign & ~pos, "touched": touched, "n_truth": nt,
            "preset": ph["preset"]}  # fmt: skip


def recall_precision(rows: list[dict], prob: list[np.ndarray], t: float) -> tuple[float, float]:
    """Mean cluster recall / precision over the realistic phantoms with PVS at threshold t."""
    rec, pre = [], []
    for r, pr in zip(rows, prob, strict=True):
        if r["preset"] != "realistic" or not r["n_truth"]:
            continue
        keep = pr >= t
        hit = set().union(*[tt for k, tt in zip(keep, r["touched"], strict=True) if k])
        rec.append(len(hit) / r["n_truth"])
        scored = keep & ~r["ignore"]
        pre.append(float(r["pos"][scored].sum() / max(scored.sum(), 1)))
    return float(np.mean(rec)), float(np.mean(pre))


def main(argv=None) -> int:
    from sklearn import __version__ as sklearn_version
    from sklearn.linear_model import LogisticRegression

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--derivatives", type=Path, default=Path("/work/cache-builtin/out"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default=vesselness_clusters.DEFAULT_MODEL)
    args = ap.parse_args(argv)

    rows = []
    heads = bv.SPLITS["tune"]
    for name in heads:
        head = load_head(name, args.derivatives)
        for (preset, load, real), (ph, found) in zip(
            JOBS, bv.phantoms_of_head(head, name, JOBS), strict=True
        ):
            r = candidate_rows(ph, found)
            rows.append(r)
            n_pos, n_ign = int(r["pos"].sum()), int(r["ignore"].sum())
            print(f"{name} {preset} {load} {real}: {len(r['pos'])} candidates, "
                  f"{n_pos} on truth, {n_ign} ignored", flush=True)  # fmt: skip

    x = np.concatenate([r["x"][~r["ignore"]] for r in rows])
    y = np.concatenate([r["pos"][~r["ignore"]] for r in rows])
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    lr = LogisticRegression(C=C_REG, max_iter=5000).fit((x - mean) / scale, y)
    model = vesselness_clusters.ClusterModel(
        name=args.name, features=vesselness_clusters.FEATURES, mean=mean, scale=scale,
        coef=lr.coef_[0], intercept=float(lr.intercept_[0]), threshold=0.5,
    )  # fmt: skip
    prob = [model.probability(r["x"]) if len(r["x"]) else np.zeros(0) for r in rows]
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    curve = [(t, *recall_precision(rows, prob, t)) for t in grid]
    t_eq = min(curve, key=lambda c: abs(c[1] - c[2]))
    base = recall_precision(rows, [np.ones(len(r["x"])) for r in rows], 0.5)
    print(f"{len(y)} rows, {int(y.sum())} positive")
    print(f"without the model: tune cluster R/P {base[0]:.3f}/{base[1]:.3f}")
    print(f"threshold {t_eq[0]:.2f}: tune cluster R/P {t_eq[1]:.3f}/{t_eq[2]:.3f}")
    coefs = {f: round(float(c), 3) for f, c in zip(model.features, model.coef, strict=True)}
    print("coefficients (standardised):", coefs)
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "mcpvs_bidsapp", "benchmarks",
                                ":(exclude)mcpvs_bidsapp/data/models"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        if dirty:  # the model is fitted on code that is not (yet) in a commit: say so
            commit += " + uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cand = {k: v for k, v in vesselness.DEFAULT_PARAMS.items() if k not in ("cluster_model",
            "cluster_threshold")}  # fmt: skip
    out = vesselness_clusters.ClusterModel(
        name=args.name, features=model.features, mean=mean, scale=scale, coef=model.coef,
        intercept=model.intercept, threshold=float(t_eq[0]), candidate_params=cand,
        provenance={
            "script": "benchmarks/train_cluster_model.py",
            "git_commit": commit,
            "trained": dt.date.today().isoformat(),
            "sklearn": sklearn_version,
            "estimator": f"LogisticRegression(C={C_REG}), standardised features",
            "heads": heads,
            "jobs": [list(j) for j in JOBS],
            "seeds": "zlib.crc32(f'{head}:{preset}:{load}') % 100000, as the benchmark",
            "rows": int(len(y)),
            "positive": int(y.sum()),
            "threshold_rule": "tune cluster recall = tune cluster precision",
            "tune_cluster_recall_precision": [round(t_eq[1], 4), round(t_eq[2], 4)],
            "tune_without_model_recall_precision": [round(base[0], 4), round(base[1], 4)],
        },
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out.to_json(), indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
