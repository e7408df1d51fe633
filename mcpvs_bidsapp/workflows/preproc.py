"""Preprocessing as the mcPVS-Net authors ran it: brain mask -> N4 (masked) -> FCM."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS, shared_step_gb
from mcpvs_bidsapp.interfaces.fcm import FCMNormalize
from mcpvs_bidsapp.interfaces.n4 import N4BiasCorrection
from mcpvs_bidsapp.interfaces.validation import ValidateT1w
from mcpvs_bidsapp.outputs.provenance import N4Mask
from mcpvs_bidsapp.workflows.regions import init_regions_wf


def init_preproc_wf(
    *,
    regions: str,
    n4_mask: N4Mask | str,
    omp_nthreads: int = 1,
    n_voxels: int = REFERENCE_VOXELS,
    name: str = "preproc_wf",
) -> pe.Workflow:
    """Validated T1w -> brain mask, regions, ICV, and the N4 + FCM image the models expect.

    Outputs: ``t1w_valid``, ``warnings``, ``brain_mask``, ``preproc_t1w``, ``regions_dseg``,
    ``icv_mm3``, ``icv_source``, ``regions_method``, ``n4_parameters``, ``fcm_parameters``.
    """
    try:
        n4_mask = N4Mask(n4_mask)
    except ValueError:
        raise ValueError(f"n4_mask must be 'whole-image' or 'brain', not {n4_mask!r}") from None
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "t1w_valid",
                "warnings",
                "brain_mask",
                "preproc_t1w",
                "regions_dseg",
                "icv_mm3",
                "icv_source",
                "regions_method",
                "n4_parameters",
                "fcm_parameters",
            ]
        ),
        name="outputnode",
    )
    validate = pe.Node(ValidateT1w(), name="validate", mem_gb=shared_step_gb("validate", n_voxels))
    regions_wf = init_regions_wf(scheme=regions, omp_nthreads=omp_nthreads, n_voxels=n_voxels)
    n4 = pe.Node(
        N4BiasCorrection(num_threads=omp_nthreads, n4_mask=n4_mask.value),
        name="n4",
        n_procs=omp_nthreads,
        mem_gb=shared_step_gb("n4", n_voxels),
    )
    fcm = pe.Node(FCMNormalize(), name="fcm", mem_gb=shared_step_gb("fcm", n_voxels))
    workflow.connect([
        (inputnode, validate, [("t1w", "in_file")]),
        (validate, regions_wf, [("out_file", "inputnode.t1w")]),
        (validate, n4, [("out_file", "in_file")]),
        (regions_wf, n4, [("outputnode.brain_mask", "in_mask")]),
        (n4, fcm, [("out_file", "in_file")]),
        (regions_wf, fcm, [("outputnode.brain_mask", "in_mask")]),
        (validate, outputnode, [("out_file", "t1w_valid"), ("warnings", "warnings")]),
        (regions_wf, outputnode, [("outputnode.brain_mask", "brain_mask"),
                                  ("outputnode.dseg", "regions_dseg"),
                                  ("outputnode.icv_mm3", "icv_mm3"),
                                  ("outputnode.icv_source", "icv_source"),
                                  ("outputnode.regions_method", "regions_method")]),
        (n4, outputnode, [("parameters", "n4_parameters")]),
        (fcm, outputnode, [("out_file", "preproc_t1w"), ("parameters", "fcm_parameters")]),
    ])  # fmt: skip
    return workflow
