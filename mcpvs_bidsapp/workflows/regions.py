"""Brain mask, BG/WM regions and ICV (interim: deepbet + intensity WM, no BG yet)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mcpvs_bidsapp.interfaces.brain import DeepBetBrainMask
from mcpvs_bidsapp.interfaces.regions_interim import IntensityRegions


def init_regions_wf(*, method: str, omp_nthreads: int = 1, name: str = "regions_wf") -> pe.Workflow:
    """Regions of one T1w.

    Outputs: ``brain_mask``, ``dseg`` (0 bg, 1 BG, 2 WM, 3 other), ``icv_mm3``, ``icv_source``,
    ``regions_method``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["brain_mask", "dseg", "icv_mm3", "icv_source", "regions_method"]
        ),
        name="outputnode",
    )
    outputnode.inputs.regions_method = "interim"
    brain = pe.Node(
        DeepBetBrainMask(num_threads=omp_nthreads),
        name="brain_extraction",
        n_procs=omp_nthreads,
    )
    regions = pe.Node(IntensityRegions(), name="regions")
    workflow.connect([
        (inputnode, brain, [("t1w", "in_file")]),
        (inputnode, regions, [("t1w", "in_file")]),
        (brain, regions, [("out_mask", "in_mask")]),
        (brain, outputnode, [("out_mask", "brain_mask")]),
        (regions, outputnode, [("out_dseg", "dseg"), ("icv_mm3", "icv_mm3"),
                               ("icv_source", "icv_source")]),
    ])  # fmt: skip
    return workflow
