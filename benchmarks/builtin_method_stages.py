"""Where the built-in method loses the phantoms' PVS: cluster recall by stage.

For each phantom (the validation benchmark's builds and seeds): the fraction of truth
clusters (26-connected) touched by the candidate clusters the hand-set rules keep, by those
the learned cluster rule keeps, and by the final mask (after the volume rule, step 8), with
the medians of the features of the candidates the rule drops on and off truth. Why: on the
report heads the candidates touch 0.84-0.97 of the truth clusters and the final mask
0.58-0.88 (docs/builtin-method.md, "Where the report heads' cluster recall is lost"), so a
change meant to raise recall must say at which stage it acts.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/builtin_method_stages.py \\
        --derivatives /work/cache/out --heads arc2017_stroke_t1w --loads mild moderate many

About 1 min per phantom on one core. Prints one line per phantom; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import builtin_method_validation as bv  # noqa: E402
from builtin_method_real_pvs import load_head  # noqa: E402
from train_cluster_model import candidate_rows  # noqa: E402

from mcpvs_bidsapp import vesselness, vesselness_clusters  # noqa: E402

#: features whose medians are printed for the dropped candidates
SHOWN = ("log_size", "csm_max_z", "resp_max", "cv_max_t", "extent2")


def stages(ph: dict, found: np.ndarray, params: dict | None = None) -> dict:
    """Recall at each stage of one phantom, and the dropped candidates' feature medians."""
    p = vesselness._sanitize(params)
    rows = candidate_rows(ph, found, params)
    model = vesselness_clusters.load_model(str(p["cluster_model"]))
    cols = [vesselness_clusters.FEATURES.index(f) for f in model.features]
    x, pos, touched, n = rows["x"], rows["pos"], rows["touched"], max(rows["n_truth"], 1)
    prob = model.probability(x[:, cols]) if len(x) else np.zeros(0)
    keep = prob >= (p["cluster_threshold"] or model.threshold)

    def hit(sel) -> float:
        return len(set().union(*[t for t, s in zip(touched, sel, strict=True) if s])) / n

    final = bv.score(ph, params, found)["metrics"]["all"]["cluster_recall"]
    out = {
        "head": ph["head"].name, "preset": ph["preset"], "load": ph["load"],
        "realisation": ph["real"], "n_truth_clusters": rows["n_truth"],
        "candidates": hit(np.ones(len(keep), bool)), "after_rule": hit(keep), "final": final,
    }  # fmt: skip
    off = ~pos & ~rows["ignore"]
    idx = {f: vesselness_clusters.FEATURES.index(f) for f in SHOWN}
    for name, sel in (("dropped_on_truth", pos & ~keep), ("dropped_off_truth", off & ~keep)):
        out[name] = {"n": int(sel.sum())} | {
            f: float(np.median(x[sel, i])) if sel.any() else None for f, i in idx.items()
        }
    return out


def _z(d: dict) -> str:
    return "-" if d["csm_max_z"] is None else f"{d['csm_max_z']:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--derivatives", type=Path, default=Path("/work/cache-builtin/out"))
    ap.add_argument("--heads", nargs="*", default=bv.SPLITS["report"])
    ap.add_argument("--presets", nargs="*", default=["realistic"])
    ap.add_argument("--loads", nargs="*", default=["mild", "moderate", "many"])
    ap.add_argument("--params", type=json.loads, default=None, help="JSON parameter overrides")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    jobs = [(pr, ld, "r0") for pr in args.presets for ld in args.loads]
    rows = []
    for name in args.heads:
        head = load_head(name, args.derivatives)
        for ph, found in bv.phantoms_of_head(head, name, jobs):
            r = stages(ph, found, args.params)
            rows.append(r)
            d, o = r["dropped_on_truth"], r["dropped_off_truth"]
            print(f"{name} {r['preset']} {r['load']}: truth clusters {r['n_truth_clusters']}, "
                  f"recall candidates {r['candidates']:.3f} / after rule {r['after_rule']:.3f} / "
                  f"final {r['final']:.3f}; dropped on truth {d['n']} (median contrast "
                  f"{_z(d)} noise SDs), off truth {o['n']} ({_z(o)})", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
