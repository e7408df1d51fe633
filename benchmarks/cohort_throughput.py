"""Per-participant figures from finished runs, and what they mean for 1,000 participants.

Reads the Nipype results in one or more mcpvs work dirs (``<work>/mcpvs_wf/sub_*_wf``), prints
each participant's wall time, CPU time (sum of step durations x the step's threads) and its
largest step, then the time a cohort of ``--participants`` takes on ``--nodes`` nodes of
``--cores``/``--mem-gb`` each when every participant is one SLURM array task of
``--cpus-per-task``/``--task-mem-gb`` (docs/hpc.md explains the figures). Steps measured
elsewhere (Samseg, nnU-Net on CPU or GPU) can be added per participant with ``--add-min``.

    python benchmarks/cohort_throughput.py /tmp/run/work --nodes 10 --cores 32 --mem-gb 128 \\
        --cpus-per-task 2 --task-mem-gb 8 --add-min 10.2
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime
from pathlib import Path


def participant_figures(work_dir: Path) -> list[dict]:
    """Wall and CPU seconds per participant from the Nipype result files of a work dir."""
    from nipype.utils.filemanip import loadpkl

    rows = []
    for sub_wf in sorted(Path(work_dir).glob("**/mcpvs_wf/sub_*_wf")):
        starts, ends, cpu_s, steps = [], [], 0.0, {}
        for result_file in sub_wf.rglob("result_*.pklz"):
            result = loadpkl(result_file)
            runtime = getattr(result, "runtime", None)
            if runtime is None or not hasattr(runtime, "duration"):
                continue
            node_file = result_file.with_name("_node.pklz")
            n_procs = 1
            if node_file.exists():
                n_procs = max(1, int(getattr(loadpkl(node_file), "n_procs", 1) or 1))
            starts.append(datetime.fromisoformat(runtime.startTime))
            ends.append(datetime.fromisoformat(runtime.endTime))
            cpu_s += runtime.duration * n_procs
            steps[result_file.parent.name] = runtime.duration
        if not starts:
            continue
        slowest = max(steps, key=steps.get)
        rows.append(
            {
                "participant": sub_wf.name.removesuffix("_wf").replace("sub_", "sub-"),
                "wall_s": (max(ends) - min(starts)).total_seconds(),
                "cpu_s": cpu_s,
                "steps": len(steps),
                "slowest": f"{slowest} {steps[slowest]:.0f} s",
            }
        )
    return rows


def cohort_hours(
    wall_min: float,
    participants: int,
    nodes: int,
    cores: int,
    mem_gb: float,
    cpus_per_task: int,
    task_mem_gb: float,
    gpus: int = 0,
) -> tuple[int, float]:
    """(tasks running at once per node, hours for the cohort) for one task per participant."""
    per_node = min(cores // cpus_per_task, int(mem_gb // task_mem_gb))
    if gpus:
        per_node = min(per_node, gpus)
    if per_node < 1:
        raise ValueError("a task does not fit on one node")
    waves = math.ceil(participants / (per_node * nodes))
    return per_node, waves * wall_min / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dirs", nargs="+", type=Path)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--cores", type=int, default=32)
    parser.add_argument("--mem-gb", type=float, default=128)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node (one per task)")
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--task-mem-gb", type=float, default=8)
    parser.add_argument(
        "--add-min",
        type=float,
        default=0.0,
        help="minutes per participant for steps measured elsewhere (e.g. Samseg 10.2)",
    )
    opts = parser.parse_args()

    rows = [row for work in opts.work_dirs for row in participant_figures(work)]
    if not rows:
        raise SystemExit("no finished participant found in the work dirs given")
    print("participant  wall_s  cpu_s  steps  slowest step")
    for row in rows:
        print(
            f"{row['participant']:<12} {row['wall_s']:6.0f} {row['cpu_s']:6.0f} "
            f"{row['steps']:6d}  {row['slowest']}"
        )
    wall_min = max(r["wall_s"] for r in rows) / 60 + opts.add_min
    print(
        f"\nper participant (slowest measured + {opts.add_min:g} min added): {wall_min:.1f} min "
        f"with {opts.cpus_per_task} CPUs, {opts.task_mem_gb:g} GB"
    )
    for nodes in opts.nodes:
        per_node, hours = cohort_hours(
            wall_min,
            opts.participants,
            nodes,
            opts.cores,
            opts.mem_gb,
            opts.cpus_per_task,
            opts.task_mem_gb,
            opts.gpus,
        )
        print(
            f"{opts.participants} participants on {nodes} node(s) of {opts.cores} cores/"
            f"{opts.mem_gb:g} GB{f'/{opts.gpus} GPUs' if opts.gpus else ''}: "
            f"{per_node} tasks per node, {hours:.1f} h"
        )


if __name__ == "__main__":
    main()
