"""Top-level workflow: one sub-workflow per participant, one per T1w inside it.

``init_mcpvs_wf(plan, t1w_inputs)`` is the whole input: the resolved :class:`RunPlan` says
what runs (segmenter, region scheme, N4 variant, resources), the T1w inputs say on what
(with their auxiliary files: a WMH mask, a lesion mask).
"""

from __future__ import annotations

from copy import deepcopy

import nibabel as nb
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mcpvs_bidsapp.bids import T1wInput
from mcpvs_bidsapp.config import RunPlan
from mcpvs_bidsapp.engine.resources import shared_step_gb
from mcpvs_bidsapp.interfaces.derivatives import WriteDerivatives
from mcpvs_bidsapp.interfaces.measures import PVSMeasures
from mcpvs_bidsapp.interfaces.validation import ToCanonical
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.workflows.preproc import init_preproc_wf
from mcpvs_bidsapp.workflows.segment import init_segment_wf


def init_mcpvs_wf(
    plan: RunPlan, t1w_inputs: dict[str, list[T1wInput]], *, name: str = "mcpvs_wf"
) -> pe.Workflow:
    """All selected participants; the name is stable so that a rerun resumes from work_dir."""
    workflow = pe.Workflow(name=name)
    workflow.base_dir = str(plan.work_dir)
    for label, inputs in t1w_inputs.items():
        if not inputs:
            continue
        subject_wf = init_single_subject_wf(plan, label, inputs)
        crash_dir = spec.log_dir(plan.output_dir, label, plan.run_id)
        subject_wf.config["execution"]["crashdump_dir"] = str(crash_dir)
        for node in subject_wf._get_all_nodes():
            node.config = deepcopy(subject_wf.config)
        workflow.add_nodes([subject_wf])
    return workflow


def init_single_subject_wf(
    plan: RunPlan, participant_label: str, t1w_inputs: list[T1wInput], *, name: str | None = None
) -> pe.Workflow:
    """Every T1w of one participant, each in its own independent sub-workflow."""
    workflow = pe.Workflow(name=name or f"sub_{_safe(participant_label)}_wf")
    workflow.add_nodes([init_t1w_wf(plan, t1w) for t1w in t1w_inputs])
    return workflow


def init_t1w_wf(plan: RunPlan, t1w: T1wInput, *, name: str | None = None) -> pe.Workflow:
    """One T1w: preprocessing -> PVS segmentation -> measures -> derivatives (committed last)."""
    workflow = pe.Workflow(name=name or t1w.node_name)
    n_voxels = int(np.prod(nb.load(str(t1w.path)).shape[:3]))  # header only
    omp = plan.resources.omp_nthreads
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    inputnode.inputs.t1w = str(t1w.path)

    preproc_wf = init_preproc_wf(
        regions=plan.regions, n4_mask=plan.n4_mask, omp_nthreads=omp, n_voxels=n_voxels
    )
    segment_wf = init_segment_wf(
        method=plan.method, options=plan.method_options, omp_nthreads=omp, n_voxels=n_voxels
    )
    measures = pe.Node(PVSMeasures(), name="measures", mem_gb=shared_step_gb("measures", n_voxels))
    caveats = getattr(plan.segmenter, "qc_caveats", lambda plan: [])(plan)
    if caveats:
        measures.inputs.caveats = caveats
    if t1w.wmh_file:  # on the input grid; the steps run on the RAS+ copy (orientation.py)
        wmh = pe.Node(
            ToCanonical(in_file=str(t1w.wmh_file)),
            name="wmh_canonical",
            mem_gb=shared_step_gb("validate", n_voxels),
        )
        workflow.connect(wmh, "out_file", measures, "in_wmh")
    if t1w.lesion_file:  # the same: brought to the RAS+ copy's voxel order first
        lesion = pe.Node(
            ToCanonical(in_file=str(t1w.lesion_file)),
            name="lesion_canonical",
            mem_gb=shared_step_gb("validate", n_voxels),
        )
        workflow.connect(lesion, "out_file", measures, "in_lesion")
        if getattr(plan.segmenter, "accepts_lesion_mask", False):
            workflow.connect(lesion, "out_file", segment_wf, "inputnode.lesion_mask")
    write = pe.Node(
        WriteDerivatives(
            base_directory=str(plan.output_dir),
            bids_dir=str(plan.bids_dir),
            source_file=str(t1w.path),
        ),
        name="write_derivatives",
        overwrite=True,  # outputs deleted by hand come back on a resumed run
        mem_gb=shared_step_gb("write_derivatives", n_voxels),
    )
    if t1w.wmh_file:
        write.inputs.wmh_file = str(t1w.wmh_file)
    if t1w.lesion_file:
        write.inputs.lesion_file = str(t1w.lesion_file)

    workflow.connect([
        (inputnode, preproc_wf, [("t1w", "inputnode.t1w")]),
        (preproc_wf, segment_wf, [("outputnode.preproc_t1w", "inputnode.preproc_t1w"),
                                  ("outputnode.regions_dseg", "inputnode.regions_dseg"),
                                  ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (segment_wf, measures, [("outputnode.pvs_mask", "in_mask")]),
        (preproc_wf, measures, [("outputnode.preproc_t1w", "in_t1w"),
                                ("outputnode.regions_dseg", "in_dseg"),
                                ("outputnode.brain_mask", "in_brain_mask"),
                                ("outputnode.icv_mm3", "icv_mm3")]),
        (preproc_wf, write, [("outputnode.brain_mask", "brain_mask"),
                             ("outputnode.preproc_t1w", "preproc_t1w"),
                             ("outputnode.regions_dseg", "regions_dseg"),
                             ("outputnode.regions_method", "regions_method"),
                             ("outputnode.icv_source", "icv_source"),
                             ("outputnode.warnings", "warnings"),
                             ("outputnode.n4_parameters", "n4_parameters"),
                             ("outputnode.fcm_parameters", "fcm_parameters")]),
        (segment_wf, write, [("outputnode.pvs_mask", "pvs_mask"),
                             ("outputnode.pvs_probseg", "pvs_probseg"),
                             ("outputnode.parameters", "segment_parameters")]),
        (measures, write, [("out_measures", "measures"), ("out_clusters", "clusters"),
                           ("out_qc_flags", "qc_flags")]),
    ])  # fmt: skip
    return workflow


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)
