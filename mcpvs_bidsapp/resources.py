"""Memory each step needs, scaled by image size: one table for the scheduler and the checks.

Nipype's MultiProc only starts a node when its ``mem_gb`` fits in ``--mem-gb``; a node that
can never fit makes Nipype stop the whole run. So the CLI compares every T1w's largest step
with the budget before the workflow is built, and fails only that T1w, with a clear line,
rather than letting the run (or the kernel's OOM killer) take everyone down.
"""

from __future__ import annotations

import os

#: voxels of a 1 mm whole-head T1w (e.g. 170x256x256); the figures below are for that size
REFERENCE_VOXELS = 11_000_000

#: peak resident memory (GB) per step at REFERENCE_VOXELS, with margin
STEP_MEM_GB = {
    "validate": 0.5,
    "brain_extraction": 2.5,  # deepbet resamples to 256^3 whatever the input: barely scales
    "regions": 1.5,
    "samseg": 6.0,
    "regions_fast": 3.0,
    "n4": 1.5,
    "fcm": 2.0,
    "vesselness": 3.0,
    "nnunet": 8.0,
    "measures": 1.0,
    "write_derivatives": 1.0,
}
_FIXED = {"brain_extraction"}


def step_mem_gb(step: str, n_voxels: int) -> float:
    """Memory to reserve for ``step`` on an image of ``n_voxels``."""
    base = STEP_MEM_GB.get(step, 1.0)
    if step in _FIXED:
        return base
    return round(base * max(0.25, n_voxels / REFERENCE_VOXELS), 2)


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


def apply_mem_estimates(workflow, n_voxels: int) -> float:
    """Set every known node's ``mem_gb`` for this image size; return the largest."""
    peak = 0.0
    for node in workflow._get_all_nodes():
        if node.name in STEP_MEM_GB:
            node._mem_gb = step_mem_gb(node.name, n_voxels)
        peak = max(peak, node.mem_gb)
    return peak
