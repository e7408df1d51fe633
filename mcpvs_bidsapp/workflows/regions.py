"""Brain mask, BG/WM regions and ICV of one T1w (``--regions samseg|fast``).

* ``samseg`` (default, as in the paper): FreeSurfer Samseg on the whole head; brain mask, BG
  (caudate, putamen, pallidum), cerebral WM and sbTIV all come from its labels.
* ``fast``: deepbet brain mask + Samseg's atlas priors registered with ANTsPy (no Samseg
  fit); ICV is the brain-mask volume.  About 10x faster; agreement with Samseg is in
  docs/preprocessing.md.

Both give the same ``dseg`` coding (0 background, 1 BG, 2 WM, 3 other brain) on the input's
native grid.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mcpvs_bidsapp.interfaces.brain import DeepBetBrainMask
from mcpvs_bidsapp.interfaces.regions_fast import AtlasRegions
from mcpvs_bidsapp.interfaces.samseg import Samseg, SamsegRegions

REGIONS_METHODS = ("samseg", "fast")


def init_regions_wf(
    *, method: str, omp_nthreads: int = 1, samseg_profile: str = "fast", name: str = "regions_wf"
) -> pe.Workflow:
    """Regions of one T1w.

    Outputs: ``brain_mask``, ``dseg`` (0 bg, 1 BG, 2 WM, 3 other), ``icv_mm3``, ``icv_source``,
    ``regions_method``.
    """
    if method not in REGIONS_METHODS:
        raise ValueError(f"unknown regions method {method!r}; choose from {REGIONS_METHODS}")
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["brain_mask", "dseg", "icv_mm3", "icv_source", "regions_method"]
        ),
        name="outputnode",
    )
    outputnode.inputs.regions_method = method

    if method == "samseg":
        samseg = pe.Node(
            Samseg(num_threads=omp_nthreads, profile=samseg_profile),
            name="samseg",
            n_procs=omp_nthreads,
        )
        labels = pe.Node(SamsegRegions(), name="regions")
        workflow.connect([
            (inputnode, samseg, [("t1w", "in_file")]),
            (samseg, labels, [("out_seg", "in_seg")]),
            (samseg, outputnode, [("sbtiv_mm3", "icv_mm3"), ("icv_source", "icv_source")]),
            (labels, outputnode, [("out_mask", "brain_mask"), ("out_dseg", "dseg")]),
        ])  # fmt: skip
        return workflow

    brain = pe.Node(
        DeepBetBrainMask(num_threads=omp_nthreads),
        name="brain_extraction",
        n_procs=omp_nthreads,
    )
    # node names match mcpvs_bidsapp.resources.STEP_MEM_GB, which sets their mem_gb.
    # One thread: the registration is only reproducible single-threaded (see
    # mcpvs_bidsapp.registration); N4 uses the other cores meanwhile.
    atlas = pe.Node(AtlasRegions(), name="regions_fast", n_procs=1)
    outputnode.inputs.icv_source = "brain-mask volume (deepbet; --regions fast)"
    workflow.connect([
        (inputnode, brain, [("t1w", "in_file")]),
        (inputnode, atlas, [("t1w", "in_file")]),
        (brain, atlas, [("out_mask", "in_mask")]),
        (brain, outputnode, [("out_mask", "brain_mask"), ("brain_volume_mm3", "icv_mm3")]),
        (atlas, outputnode, [("out_dseg", "dseg")]),
    ])  # fmt: skip
    return workflow
