"""PVS segmentation: the segmenter the plan names (an nnU-Net model or the built-in method)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nipype.pipeline import engine as pe

from mcpvs_bidsapp import methods
from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS


def init_segment_wf(
    *,
    method: str,
    options: Mapping[str, Any] | None = None,
    omp_nthreads: int = 1,
    n_voxels: int = REFERENCE_VOXELS,
    name: str = "segment_wf",
) -> pe.Workflow:
    """Segment PVS on the preprocessed T1w; ``method`` is already resolved (never "auto").

    Inputs: ``methods.base.SEGMENTER_INPUTS``; outputs: ``methods.base.SEGMENTER_OUTPUTS``
    (``parameters`` has ``Method`` set, so every output says which method made it).
    """
    return methods.segmenter(method).init_workflow(
        options=dict(options or {}), omp_nthreads=omp_nthreads, n_voxels=n_voxels, name=name
    )
