"""Memory each step needs, scaled by image size, set on every node when it is built.

Nipype's MultiProc only starts a node when its ``mem_gb`` fits in ``--mem-gb``; a node that
can never fit makes Nipype stop the whole run. So the preflight compares every T1w's largest
step with the budget before the workflow is built (:func:`largest_step`), and fails only that
T1w, with a clear line, rather than letting the run (or the kernel's OOM killer) take everyone
down. The segmenters and region schemes declare their own steps' memory
(:mod:`mcpvs_bidsapp.methods`); this table holds the steps every run shares.
"""

from __future__ import annotations

import os

from mcpvs_bidsapp.methods.base import step_mem_gb

#: voxels of a 1 mm whole-head T1w (e.g. 170x256x256); the figures below are for that size
REFERENCE_VOXELS = 11_000_000

#: peak resident memory (GB) per shared step at REFERENCE_VOXELS, with margin
SHARED_STEP_GB = {
    "validate": 0.5,
    "n4": 1.5,
    "fcm": 2.0,
    "measures": 1.0,
    "write_derivatives": 1.0,
}


def shared_step_gb(step: str, n_voxels: int) -> float:
    """Memory to reserve for one of the shared steps on an image of ``n_voxels``."""
    return step_mem_gb(SHARED_STEP_GB[step], n_voxels)


def largest_step(plan, n_voxels: int) -> tuple[float, str]:
    """(GB, step) of the largest step a T1w of ``n_voxels`` needs under ``plan``."""
    steps = [(shared_step_gb(s, n_voxels), s) for s in SHARED_STEP_GB]
    steps.append((plan.region_scheme.mem_gb(n_voxels), plan.regions))
    steps.append((plan.segmenter.mem_gb(n_voxels), plan.method))
    return max(steps)


def available_memory_gb() -> float:
    """Physical memory of this machine (or cgroup limit when lower), in GB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = open(path).read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value) / 1e9)
    return total
