"""Brain mask, BG/WM regions and ICV of one T1w: the region scheme the plan names.

The schemes themselves (``samseg``, the paper's; ``fast``, an atlas registration) live in
:mod:`mcpvs_bidsapp.methods.regions`; every scheme gives the same outputs, with the
``outputs.spec.Region`` coding on the input's native grid.
"""

from __future__ import annotations

from nipype.pipeline import engine as pe

from mcpvs_bidsapp import methods
from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS


def init_regions_wf(
    *,
    scheme: str,
    omp_nthreads: int = 1,
    n_voxels: int = REFERENCE_VOXELS,
    name: str = "regions_wf",
) -> pe.Workflow:
    """Regions of one T1w.

    Outputs (``outputnode``): ``methods.base.REGION_OUTPUTS`` (brain_mask, dseg, icv_mm3,
    icv_source, regions_method).
    """
    return methods.region_scheme(scheme).init_workflow(
        omp_nthreads=omp_nthreads, n_voxels=n_voxels, name=name
    )
