"""SLURM helpers of the engine: per-node resources for Nipype's SLURM plugins, waiting for
SLURMGraph's jobs. ``mcpvs slurm`` (array-job scripts) is :mod:`mcpvs_bidsapp.cli.slurm`."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path


def mem_mb(mem_gb: float) -> int:
    """SLURM's --mem in MiB, rounded up (mcpvs --mem-gb is GB as Nipype counts it)."""
    return int(math.ceil(mem_gb * 1024))


#: Nipype's plugins that submit every node as its own SLURM job
NIPYPE_SLURM_PLUGINS = ("SLURM", "SLURMGraph")


def prepare_nipype_slurm(workflow) -> int:
    """Let each node's SLURM job ask for what the node needs (Nipype's SLURM plugins do not).

    Nipype's ``SLURM``/``SLURMGraph`` plugins submit every node with the same ``sbatch_args``;
    mcpvs nodes declare ``n_procs`` and ``mem_gb`` (Samseg or nnU-Net need far more than a
    copy step), so this puts ``--cpus-per-task``/``--mem`` into each node's own
    ``plugin_args``, which the plugins append after the global ``sbatch_args``. A node's own
    ``sbatch_args`` (set in code) still come last and win. Also sets ``LOGNAME``, which
    the SLURM plugin reads to name jobs and which batch systems and containers often leave
    unset. Returns the number of nodes.
    """
    import getpass

    os.environ.setdefault("LOGNAME", getpass.getuser())
    nodes = workflow._get_all_nodes()
    for node in nodes:
        args = dict(node.plugin_args or {})
        # leading space: SLURMGraph glues node args to the global ones without a separator
        ask = f" --cpus-per-task={max(1, int(node.n_procs or 1))} --mem={mem_mb(node.mem_gb)}M"
        args["sbatch_args"] = f"{ask} {args['sbatch_args']}" if args.get("sbatch_args") else ask
        node.plugin_args = args
    return len(nodes)


def wait_for_graph_jobs(batch_dir: Path | str, poll_s: float = 5.0) -> list[str]:
    """Block until the jobs Nipype's ``SLURMGraph`` plugin submitted from ``batch_dir`` end.

    ``SLURMGraph`` submits the whole graph (with ``afterok`` dependencies) and returns at once,
    but mcpvs writes each participant's status and report only after its outputs exist, so
    the controller waits here. Jobs are told apart by their batch script path, which lies in
    this run's work dir. Jobs left pending because a step they depend on failed
    (``DependencyNeverSatisfied``) would wait forever: they are cancelled, and returned, so the
    failing step's crash file is what the status reports. Returns the cancelled job ids.
    """
    import time

    batch_dir = str(Path(batch_dir).absolute())
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    cancelled: list[str] = []
    while True:
        listing = subprocess.run(
            ["squeue", "-h", "-u", user, "-o", "%i|%T|%r|%o"] if user else ["squeue", "-h"],
            capture_output=True,
            text=True,
            check=False,
        )
        if listing.returncode != 0:
            raise RuntimeError(f"squeue failed: {listing.stderr.strip()}")
        ours = []
        for line in listing.stdout.splitlines():
            parts = line.split("|", 3)
            if len(parts) == 4 and parts[3].startswith(batch_dir + os.sep):
                ours.append(parts)
        if not ours:
            return cancelled
        stuck = [job for job, state, reason, _ in ours if reason == "DependencyNeverSatisfied"]
        if stuck and len(stuck) == len(ours):
            subprocess.run(["scancel", *stuck], check=False)
            cancelled += stuck
        time.sleep(poll_s)
