"""Why the fluid-relative thresholds overshoot at a contrast x 0.8 (issue #15).

One head's realistic moderate phantom (the benchmark's seeds), every contrast to WM scaled by
0.8 / 1.0 / 1.2 (``phantoms.degrade(contrast_scale=)``), once with r0's noise and bias (0.02 /
0.2) and once with the linear realisations' (0.03 / 0.25), segmented with today's defaults,
with the exclusion relative and the fluid level absolute, and with both absolute. Prints the
volume, the measured fluid ratio, the fluid level and the background's exclusion per run.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/linear_contrast_fluid.py \\
        --head philips_adni_sag3d_mprage_t1w --derivatives /work/cache/out

About 12 min on one thread (2026-12-06, Philips; figures in docs/builtin-method.md,
"Thresholds that follow the image's fluid contrast").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import builtin_method_validation as bv

#: name -> (bias, noise, gamma, contrast scale), appended to the benchmark's realisations so
#: that its own keep their seeds
EXTRA = {f"{tag}{int(k * 100)}": (b, n, 1.0, k) for tag, b, n in (("lo", 0.2, 0.02),
         ("hi", 0.25, 0.03)) for k in (0.8, 1.0, 1.2)}  # fmt: skip
RULES = {
    "default": None,
    "level_absolute": {"fluid_level_relative": 0.0},
    "absolute": {"background_exclude_fluid": 0.0, "fluid_level_relative": 0.0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", default="philips_adni_sag3d_mprage_t1w")
    ap.add_argument("--derivatives", type=Path, default=Path("/work/cache-builtin/out"))
    args = ap.parse_args(argv)
    bv.REALISATIONS.update(EXTRA)
    head = bv.load_head(args.head, args.derivatives)
    jobs = [("realistic", "moderate", r) for r in EXTRA]
    for ph, found in bv.phantoms_of_head(head, args.head, jobs):
        for rule, params in RULES.items():
            r = bv.score(ph, params, found)
            m, me = r["metrics"]["all"], r["measured"]
            # the background's exclusion: measured when relative, else the fixed fraction
            excl = me.get("background_exclude", bv.vesselness.DEFAULT_PARAMS["background_exclude"])
            print(
                f"{ph['real']:6s} {rule:15s} pred {m['pred_volume_mm3']:6.0f} "
                f"true {m['true_volume_mm3']:6.0f} Dice {m['dice']:.3f} "
                f"ratio {me['fluid_ratio']:.3f} level {me['fluid_level']:.3f} "
                f"exclude {excl:.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
