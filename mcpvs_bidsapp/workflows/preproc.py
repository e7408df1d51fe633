"""Preprocessing as the mcPVS-Net authors ran it: brain mask -> N4 (masked) -> FCM."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS, shared_step_gb
from mcpvs_bidsapp.interfaces.fcm import FCMNormalize
from mcpvs_bidsapp.interfaces.n4 import N4BiasCorrection
from mcpvs_bidsapp.interfaces.validation import CheckHead, ValidateT1w
from mcpvs_bidsapp.outputs.provenance import N4Mask
from mcpvs_bidsapp.workflows.regions import N4_IN_REGIONS, has_n4, init_regions_wf


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
    regions_wf = init_regions_wf(
        scheme=regions, omp_nthreads=omp_nthreads, n_voxels=n_voxels, n4_mask=n4_mask
    )
    if has_n4(regions_wf):  # the scheme's intensity steps read the N4 image (item 2)
        n4, n4_out = regions_wf, f"{N4_IN_REGIONS}."
    else:
        n4, n4_out = init_n4_node(n4_mask, omp_nthreads, n_voxels), ""
        workflow.connect([
            (validate, n4, [("out_file", "in_file")]),
            (regions_wf, n4, [("outputnode.brain_mask", "in_mask")]),
        ])  # fmt: skip
    fcm = pe.Node(FCMNormalize(), name="fcm", mem_gb=shared_step_gb("fcm", n_voxels))
    # the writer waits for it (its warnings): an implausible head writes no number at all
    check = pe.Node(CheckHead(), name="check_head", mem_gb=shared_step_gb("validate", n_voxels))
    workflow.connect([
        (inputnode, validate, [("t1w", "in_file")]),
        (validate, regions_wf, [("out_file", "inputnode.t1w")]),
        (n4, fcm, [(n4_out + "out_file", "in_file")]),
        (regions_wf, fcm, [("outputnode.brain_mask", "in_mask")]),
        (inputnode, check, [("t1w", "source_file")]),
        (validate, check, [("warnings", "in_warnings")]),
        (validate, check, [("out_file", "in_file")]),
        (regions_wf, check, [("outputnode.brain_mask", "in_mask"),
                             ("outputnode.dseg", "in_dseg"),
                             ("outputnode.icv_mm3", "icv_mm3")]),
        (validate, outputnode, [("out_file", "t1w_valid")]),
        (check, outputnode, [("warnings", "warnings")]),
        (regions_wf, outputnode, [("outputnode.brain_mask", "brain_mask"),
                                  ("outputnode.dseg", "regions_dseg"),
                                  ("outputnode.icv_mm3", "icv_mm3"),
                                  ("outputnode.icv_source", "icv_source"),
                                  ("outputnode.regions_method", "regions_method")]),
        (n4, outputnode, [(n4_out + "parameters", "n4_parameters")]),
        (fcm, outputnode, [("out_file", "preproc_t1w"), ("parameters", "fcm_parameters")]),
    ])  # fmt: skip
    return workflow


def init_n4_node(n4_mask: N4Mask | str, omp_nthreads: int, n_voxels: int) -> pe.Node:
    """The run's N4 node (inputs ``in_file``, ``in_mask``; outputs ``out_file``,
    ``parameters``)."""
    return pe.Node(
        N4BiasCorrection(num_threads=omp_nthreads, n4_mask=N4Mask(n4_mask).value),
        name=N4_IN_REGIONS,
        n_procs=omp_nthreads,
        mem_gb=shared_step_gb("n4", n_voxels),
    )
