"""Brain mask, BG/WM regions and ICV of one T1w: the region scheme the plan names.

The schemes themselves (``samseg``, the paper's; ``fast``, an atlas registration) live in
:mod:`mcpvs_bidsapp.methods.regions`; every scheme gives the same outputs, with the
``outputs.spec.Region`` coding on the input's native grid.
"""

from __future__ import annotations

from nipype.pipeline import engine as pe

from mcpvs_bidsapp import methods
from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS
from mcpvs_bidsapp.outputs.provenance import N4Mask

#: the name of the N4 node when a region scheme holds it
N4_IN_REGIONS = "n4"


def init_regions_wf(
    *,
    scheme: str,
    omp_nthreads: int = 1,
    n_voxels: int = REFERENCE_VOXELS,
    n4_mask: N4Mask | str = N4Mask.BRAIN,
    name: str = "regions_wf",
) -> pe.Workflow:
    """Regions of one T1w.

    Outputs (``outputnode``): ``methods.base.REGION_OUTPUTS`` (brain_mask, dseg, icv_mm3,
    icv_source, regions_method).

    A scheme that ``uses_bias_corrected`` intensities gets the run's N4 node (``n4_mask``),
    which then lives inside this workflow as ``n4`` (:data:`N4_IN_REGIONS`): N4 needs the
    scheme's brain mask and the scheme's later steps need N4, and Nipype checks the order of
    whole sub-workflows, so N4 cannot sit outside and serve both (issue #17, item 2).
    """
    region_scheme = methods.region_scheme(scheme)
    kwargs = {}
    if getattr(region_scheme, "uses_bias_corrected", False):
        from mcpvs_bidsapp.workflows.preproc import init_n4_node

        kwargs["bias_correction"] = init_n4_node(n4_mask, omp_nthreads, n_voxels)
    return region_scheme.init_workflow(
        omp_nthreads=omp_nthreads, n_voxels=n_voxels, name=name, **kwargs
    )


def has_n4(regions_wf: pe.Workflow) -> bool:
    """Whether the scheme's workflow holds the run's N4 node (see :func:`init_regions_wf`)."""
    return regions_wf.get_node(N4_IN_REGIONS) is not None
