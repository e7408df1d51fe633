"""PVS segmentation: an installed nnU-Net v2 model or the built-in vesselness method."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe


def init_segment_wf(
    *,
    method: str,
    omp_nthreads: int = 1,
    nnunet_options: dict | None = None,
    name: str = "segment_wf",
) -> pe.Workflow:
    """Segment PVS on the preprocessed T1w; ``method`` is already resolved (never "auto").

    Inputs: ``preproc_t1w``, ``regions_dseg``, ``brain_mask``.
    Outputs: ``pvs_mask``, ``pvs_probseg``, ``parameters`` (dict for the sidecars, with
    ``Method`` always set so every output says which method made it).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["preproc_t1w", "regions_dseg", "brain_mask"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["pvs_mask", "pvs_probseg", "parameters"]),
        name="outputnode",
    )
    if method == "vesselness":
        from mcpvs_bidsapp.interfaces.vesselness import VesselnessPVS

        segment = pe.Node(VesselnessPVS(), name="vesselness")
        workflow.connect([
            (inputnode, segment, [("preproc_t1w", "in_file"), ("regions_dseg", "in_regions"),
                                  ("brain_mask", "in_mask")]),
        ])  # fmt: skip
    elif method == "nnunet":
        from mcpvs_bidsapp.interfaces.nnunet import NnUNetPredict

        options = dict(nnunet_options or {})
        segment = pe.Node(
            NnUNetPredict(num_threads=omp_nthreads, **options),
            name="nnunet",
            n_procs=omp_nthreads,
        )
        workflow.connect([(inputnode, segment, [("preproc_t1w", "in_file")])])
    else:
        raise ValueError(f"unknown PVS method {method!r} (vesselness or nnunet)")

    workflow.connect([
        (segment, outputnode, [("out_mask", "pvs_mask"), ("out_probseg", "pvs_probseg"),
                               ("out_parameters", "parameters")]),
    ])  # fmt: skip
    return workflow
