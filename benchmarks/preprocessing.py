"""Wall time, CPU time and peak RSS of every preprocessing step, for both regions paths.

    python benchmarks/preprocessing.py [T1W] [--omp-nthreads 2] [--samseg-profile fast]
                                       [--samseg-dir DIR] [--skip-samseg] [--work DIR]
    python benchmarks/preprocessing.py --compare-segs SEG_A SEG_B   # e.g. fast vs paper profile
    python benchmarks/preprocessing.py [T1W] --compare-profiles     # Samseg fast vs paper, timed

Each step runs in its own child process (so its peak RSS is its own, and Samseg's own child
is counted), in the order the workflow runs them.  Default input: the raw Philips MPRAGE of
../shared/data.  Prints a table, the load average around each step (the machine is shared:
wall times inflate with load, CPU times much less), and the Dice agreement between the fast
path's and Samseg's BG / WM / brain mask.  ``--samseg-dir`` reuses a finished run_samseg
folder (its seg.mgz) instead of running Samseg again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_T1W = ROOT.parent / "shared" / "data" / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz"


# ------------------------------------------------------------------ steps (run in a child)


def _step_dir(a, name: str) -> str:
    """Each step writes into its own folder: interfaces reuse file names (brain_mask.nii.gz)."""
    wd = Path(a["work"]) / name
    wd.mkdir(exist_ok=True)
    return str(wd)


def step_validate(a):
    from mcpvs_bidsapp.interfaces.validation import ValidateT1w

    res = ValidateT1w(in_file=a["t1w"]).run(cwd=_step_dir(a, "validate"))
    return {"t1w_valid": res.outputs.out_file}


def step_deepbet(a):
    from mcpvs_bidsapp.interfaces.brain import DeepBetBrainMask

    res = DeepBetBrainMask(in_file=a["t1w_valid"], num_threads=a["threads"]).run(
        cwd=_step_dir(a, "deepbet")
    )
    return {"mask_fast": res.outputs.out_mask, "icv_fast": res.outputs.brain_volume_mm3}


def step_atlas_priors(a):
    from mcpvs_bidsapp.methods.regions.atlas import atlas_priors

    t0 = time.time()
    path = atlas_priors(Path(a["work"]) / "cache")
    return {"priors": str(path), "priors_built_s": time.time() - t0}


def step_atlas_regions(a):
    from mcpvs_bidsapp.interfaces.regions_fast import AtlasRegions

    res = AtlasRegions(
        in_file=a["t1w_valid"],
        in_mask=a["mask_fast"],
        cache_dir=str(Path(a["work"]) / "cache"),
    ).run(cwd=_step_dir(a, "atlas_regions"))
    return {"dseg_fast": res.outputs.out_dseg}


def step_samseg(a):
    from mcpvs_bidsapp.interfaces.samseg import Samseg

    wd = _step_dir(a, "samseg_run")
    res = Samseg(in_file=a["t1w_valid"], num_threads=a["threads"], profile=a["profile"]).run(cwd=wd)
    return {"seg": res.outputs.out_seg, "sbtiv": res.outputs.sbtiv_mm3}


def step_samseg_cached(a):
    from mcpvs_bidsapp.methods.regions.samseg import read_sbtiv, seg_to_native

    d = Path(a["samseg_dir"])
    out = seg_to_native(d / "seg.mgz", a["t1w_valid"], Path(a["work"]) / "samseg_seg.nii.gz")
    return {"seg": str(out), "sbtiv": read_sbtiv(d / "sbtiv.stats")}


def step_samseg_regions(a):
    from mcpvs_bidsapp.interfaces.samseg import SamsegRegions

    res = SamsegRegions(in_seg=a["seg"]).run(cwd=_step_dir(a, "samseg_regions"))
    return {"mask_samseg": res.outputs.out_mask, "dseg_samseg": res.outputs.out_dseg}


def _n4(a, mask_key, out_key, whole_image=True):
    from mcpvs_bidsapp.interfaces.n4 import N4BiasCorrection

    res = N4BiasCorrection(
        in_file=a["t1w_valid"],
        in_mask=a[mask_key],
        num_threads=a["threads"],
        n4_mask="whole-image" if whole_image else "brain",
    ).run(cwd=_step_dir(a, out_key))
    return {out_key: res.outputs.out_file}


def _fcm(a, in_key, mask_key, out_key):
    from mcpvs_bidsapp.interfaces.fcm import FCMNormalize

    res = FCMNormalize(in_file=a[in_key], in_mask=a[mask_key]).run(cwd=_step_dir(a, out_key))
    return {out_key: res.outputs.out_file}


STEPS = {
    "validate": step_validate,
    "deepbet": step_deepbet,
    "atlas_priors": step_atlas_priors,
    "atlas_regions": step_atlas_regions,
    "samseg": step_samseg,
    "samseg_cached": step_samseg_cached,
    "samseg_regions": step_samseg_regions,
    "n4_fast": lambda a: _n4(a, "mask_fast", "n4_fast"),
    "fcm_fast": lambda a: _fcm(a, "n4_fast", "mask_fast", "fcm_fast"),
    # the --n4-mask brain variant, to measure what it changes in the preprocessed T1w
    "n4_fast_brain": lambda a: _n4(a, "mask_fast", "n4_fast_brain", whole_image=False),
    "fcm_fast_brain": lambda a: _fcm(a, "n4_fast_brain", "mask_fast", "fcm_fast_brain"),
    "n4_samseg": lambda a: _n4(a, "mask_samseg", "n4_samseg"),
    "fcm_samseg": lambda a: _fcm(a, "n4_samseg", "mask_samseg", "fcm_samseg"),
}


def _child(step: str, state_file: str) -> None:
    state = json.loads(Path(state_file).read_text())
    t0, c0 = time.time(), time.process_time()
    out = STEPS[step](state)
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["_stats"] = {
        "wall_s": time.time() - t0,
        "cpu_s": time.process_time() - c0 + kids.ru_utime + kids.ru_stime,
        "peak_rss_mib": max(self_ru.ru_maxrss, kids.ru_maxrss) / 1024,
    }
    print("@@RESULT@@" + json.dumps(out))


# ------------------------------------------------------------------ driver


def run_step(step: str, state: dict, env: dict) -> dict:
    state_file = Path(state["work"]) / "state.json"
    state_file.write_text(json.dumps(state))
    load0 = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, str(state_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@"))
    out = json.loads(line[len("@@RESULT@@") :])
    stats = out.pop("_stats")
    stats["wall_total_s"] = wall  # includes Python/library start-up of the child
    stats["load"] = (load0 + os.getloadavg()[0]) / 2
    state.update(out)
    return stats


def dice(a, b) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else float("nan")


def compare_segs(seg_a: str, seg_b: str) -> None:
    """Dice of BG / WM / brain between two Samseg label images (e.g. fast vs paper profile)."""
    import nibabel as nb
    import numpy as np

    from mcpvs_bidsapp.methods.regions.samseg import labels_to_regions

    (ma, da), (mb, db) = (
        labels_to_regions(np.asanyarray(nb.load(p).dataobj).astype(np.int32))
        for p in (seg_a, seg_b)
    )
    for name, a, b in (("BG", da == 1, db == 1), ("WM", da == 2, db == 2), ("brain", ma, mb)):
        print(f"{name:<6} Dice {dice(a, b):.3f}  voxels {a.sum()} / {b.sum()}")


def compare_profiles(state: dict, env: dict) -> None:
    """Samseg's ``fast`` and ``paper`` profiles on the same image: time, memory, label agreement."""
    run_step("validate", state, env)
    segs, sbtiv = {}, {}
    print(f"input: {state['t1w']}, threads: {state['threads']}")
    for profile in ("fast", "paper"):
        sub = dict(state, profile=profile, work=str(Path(state["work"]) / f"profile_{profile}"))
        Path(sub["work"]).mkdir(parents=True, exist_ok=True)
        stats = run_step("samseg", sub, env)
        segs[profile], sbtiv[profile] = sub["seg"], sub["sbtiv"]
        print(
            f"samseg {profile:<5} wall {stats['wall_total_s']:7.1f} s  CPU {stats['cpu_s']:7.1f} s"
            f"  peak {stats['peak_rss_mib']:6.0f} MiB  load {stats['load']:.1f}",
            flush=True,
        )
    print("fast vs paper (Dice; voxels fast / paper)")
    compare_segs(segs["fast"], segs["paper"])
    print(
        f"sbTIV  fast {sbtiv['fast'] / 1000:.1f} ml, paper {sbtiv['paper'] / 1000:.1f} ml "
        f"({100 * (sbtiv['fast'] / sbtiv['paper'] - 1):+.2f} %)"
    )


def fast_vs_samseg(state: dict) -> None:
    """Dice of the fast path's BG / WM / brain mask against Samseg's, and ICV of both."""
    import nibabel as nb
    import numpy as np

    f = np.asanyarray(nb.load(state["dseg_fast"]).dataobj)
    s = np.asanyarray(nb.load(state["dseg_samseg"]).dataobj)
    mf = np.asanyarray(nb.load(state["mask_fast"]).dataobj) > 0
    ms = np.asanyarray(nb.load(state["mask_samseg"]).dataobj) > 0
    zooms = nb.load(state["dseg_fast"]).header.get_zooms()[:3]
    ml = float(np.prod(zooms)) / 1000
    print("\nfast vs Samseg agreement (Dice; volumes in ml, fast / Samseg)")
    for name, a, b in (("BG", f == 1, s == 1), ("WM", f == 2, s == 2), ("brain", mf, ms)):
        print(f"  {name:<6} Dice {dice(a, b):.3f}   {a.sum() * ml:7.1f} / {b.sum() * ml:7.1f}")
    print(
        f"  ICV    fast (brain mask) {state['icv_fast'] / 1000:.0f} ml, "
        f"Samseg sbTIV {state['sbtiv'] / 1000:.0f} ml"
    )
    if "fcm_fast" in state and "fcm_samseg" in state:
        a = np.asanyarray(nb.load(state["fcm_fast"]).dataobj)
        b = np.asanyarray(nb.load(state["fcm_samseg"]).dataobj)
        both = mf & ms
        r = np.corrcoef(a[both], b[both])[0, 1]
        print(
            f"  preproc T1w (N4+FCM) inside both masks: r = {r:.4f}, "
            f"median ratio {np.median(a[both] / np.maximum(b[both], 1e-6)):.3f}"
        )


def n4_mask_effect(state: dict) -> None:
    """What ``--n4-mask brain`` changes in the preprocessed (N4 + FCM) T1w, same brain mask."""
    import nibabel as nb
    import numpy as np

    whole = np.asanyarray(nb.load(state["fcm_fast"]).dataobj, dtype=np.float64)
    brain = np.asanyarray(nb.load(state["fcm_fast_brain"]).dataobj, dtype=np.float64)
    mask = np.asanyarray(nb.load(state["mask_fast"]).dataobj) > 0
    dseg = np.asanyarray(nb.load(state["dseg_fast"]).dataobj)
    rel = (brain[mask] - whole[mask]) / np.maximum(np.abs(whole[mask]), 1e-6)
    p1, p50, p99 = np.percentile(rel, [1, 50, 99])
    print("\n--n4-mask brain vs whole image (authors'), preprocessed T1w inside the brain mask")
    print(f"  r = {np.corrcoef(whole[mask], brain[mask])[0, 1]:.5f}")
    print(f"  relative difference: median {p50:+.4f}, 1st-99th percentile {p1:+.4f} .. {p99:+.4f}")
    for name, code in (("BG", 1), ("WM", 2)):
        sel = dseg == code
        w, b = whole[sel], brain[sel]
        print(
            f"  {name}: median {np.median(w):.3f} -> {np.median(b):.3f}, "
            f"CV {w.std() / w.mean():.4f} -> {b.std() / b.mean():.4f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--compare-segs":
        compare_segs(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("t1w", nargs="?", default=str(DEFAULT_T1W))
    ap.add_argument("--omp-nthreads", type=int, default=2)
    ap.add_argument("--samseg-profile", default="fast", choices=["fast", "paper"])
    ap.add_argument("--samseg-dir", help="reuse this finished run_samseg output folder")
    ap.add_argument("--skip-samseg", action="store_true", help="fast path only")
    ap.add_argument("--work", default="/tmp/mcpvs_bench_preproc")
    ap.add_argument(
        "--compare-profiles", action="store_true", help="time Samseg fast and paper; compare labels"
    )
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NIPYPE_NO_ET="1", PYTHONPATH=str(ROOT))
    n = str(args.omp_nthreads)
    env.update(OMP_NUM_THREADS=n, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=n, MKL_NUM_THREADS=n)
    state = {
        "t1w": str(Path(args.t1w).resolve()),
        "work": str(work),
        "threads": args.omp_nthreads,
        "profile": args.samseg_profile,
        "samseg_dir": args.samseg_dir,
    }
    if args.compare_profiles:
        compare_profiles(state, env)
        return
    rows = []
    fast = ["validate", "deepbet", "atlas_priors", "atlas_regions", "n4_fast", "fcm_fast"]
    for step in fast:
        rows.append(("fast", step, run_step(step, state, env)))
    for step in ("n4_fast_brain", "fcm_fast_brain"):
        rows.append(("n4-mask", step, run_step(step, state, env)))
    if not args.skip_samseg:
        samseg_step = "samseg_cached" if args.samseg_dir else "samseg"
        rows.append(("samseg", "validate", rows[0][2]))
        for step in (samseg_step, "samseg_regions", "n4_samseg", "fcm_samseg"):
            rows.append(("samseg", step, run_step(step, state, env)))

    cached = f" (cached run: {args.samseg_dir})" if args.samseg_dir else ""
    print(
        f"\ninput: {state['t1w']}\nthreads: {args.omp_nthreads}, "
        f"samseg profile: {args.samseg_profile}{cached}"
    )
    print(
        f"{'path':<7} {'step':<15} {'wall s':>8} {'+start s':>8} {'CPU s':>8} {'peak MiB':>9} "
        f"{'load':>5}"
    )
    for path in ("fast", "n4-mask", "samseg"):
        sel = [r for r in rows if r[0] == path]
        if not sel:
            continue
        for _, step, s in sel:
            print(
                f"{path:<7} {step:<15} {s['wall_s']:8.1f} {s['wall_total_s']:8.1f} "
                f"{s['cpu_s']:8.1f} {s['peak_rss_mib']:9.0f} {s['load']:5.1f}"
            )
        tot_wall = sum(s["wall_total_s"] for _, _, s in sel)
        tot_cpu = sum(s["cpu_s"] for _, _, s in sel)
        peak = max(s["peak_rss_mib"] for _, _, s in sel)
        print(f"{path:<7} {'TOTAL':<15} {'':>8} {tot_wall:8.1f} {tot_cpu:8.1f} {peak:9.0f}")
    if "priors_built_s" in state:
        print(f"atlas priors: {state['priors_built_s']:.1f} s on first use (cached afterwards)")

    n4_mask_effect(state)
    if "dseg_samseg" in state:
        fast_vs_samseg(state)


if __name__ == "__main__":
    main()
