"""Check every T1w before building anything: bad files fail now, the rest go on."""

from __future__ import annotations

import nibabel as nb
import numpy as np

from mcpvs_bidsapp.bids import T1wInput
from mcpvs_bidsapp.config import RunPlan
from mcpvs_bidsapp.engine.resources import available_memory_gb, largest_step
from mcpvs_bidsapp.errors import InputImageError
from mcpvs_bidsapp.validation import load_t1w

#: key of a participant-level error (no T1w at all) in the errors mapping
PARTICIPANT_KEY = "sub-"


def preflight(
    t1w_inputs: dict[str, list[T1wInput]], plan: RunPlan
) -> tuple[dict[str, list[T1wInput]], dict[str, dict[str, str]]]:
    """({label: good T1w inputs}, {label: {path or 'sub-<label>': one-line error}}).

    Besides the image checks, the largest step's memory (scaled by image size) must fit the
    budget (``--mem-gb``, else this machine's memory): a T1w that cannot fit fails here with
    a clear line instead of stopping the whole Nipype run or meeting the OOM killer.
    """
    budget = plan.resources.mem_gb or available_memory_gb()
    good: dict[str, list[T1wInput]] = {}
    errors: dict[str, dict[str, str]] = {}
    for label, items in t1w_inputs.items():
        good[label] = []
        errors[label] = {}
        if not items:
            errors[label][PARTICIPANT_KEY + label] = (
                f"sub-{label}: no T1w image found (anat/*_T1w.nii[.gz])"
            )
        for item in items:
            try:  # size first, from the header alone: a huge image is never read
                shape = tuple(nb.load(str(item.path)).shape[:3])
            except Exception:
                shape = ()  # unreadable: load_t1w below says why
            if len(shape) == 3:
                need, step = largest_step(plan, int(np.prod(shape)))
                if need > budget:
                    errors[label][str(item.path)] = (
                        f"{item.path.name}: needs about {need:.1f} GB for its largest step "
                        f"({step}, {'x'.join(map(str, shape))} voxels) but the memory budget "
                        f"is {budget:.1f} GB (--mem-gb or this machine's memory)"
                    )
                    continue
            try:
                load_t1w(item.path)
            except InputImageError as err:
                errors[label][str(item.path)] = str(err)
                continue
            good[label].append(item)
    return good, errors
