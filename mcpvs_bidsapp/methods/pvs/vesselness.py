"""Segmenter ``vesselness``: the built-in, weight-free method (docs/builtin-method.md).

The algorithm is :func:`mcpvs_bidsapp.vesselness.segment_pvs`; the Nipype adaptor is
:class:`mcpvs_bidsapp.interfaces.vesselness.VesselnessPVS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mcpvs_bidsapp.methods import register_segmenter
from mcpvs_bidsapp.methods.base import (
    SEGMENTER_INPUTS,
    SEGMENTER_OPTIONAL_INPUTS,
    SEGMENTER_OUTPUTS,
    Cite,
    step_mem_gb,
)
from mcpvs_bidsapp.outputs.provenance import N4Mask


class VesselnessSegmenter:
    name = "vesselness"
    summary = "the built-in weight-free method (no model needed)"
    #: validated with the brain-mask N4; on a 1 mm head it also takes 109 s instead of 594 s
    #: on 2 cores (docs/preprocessing.md)
    default_n4_mask = N4Mask.BRAIN
    auto_priority = 0  #: the fallback when no model is installed
    #: a lesion mask excludes the lesion and its rim from the search (docs/builtin-method.md)
    accepts_lesion_mask = True
    node_gb = 3.0  #: peak memory on a 1 mm whole head

    def available(self, settings) -> bool:
        return True

    #: parameter overrides on ``--regions fast``: its WM border is the atlas prior refined by
    #: intensity, not a fitted segmentation, and a cluster held wholly in the region's outer
    #: 2.5 mm is GM partial volume there (demo: 800 of 820 clusters were such, Dice 0.26).
    #: Samseg regions use 2 mm (``vesselness.DEFAULT_PARAMS``, chosen on the real-head visual
    #: review); 2.5 mm there cost cluster recall 0.68 -> 0.61 on the tune heads' realistic
    #: phantoms (docs/builtin-method.md)
    fast_regions_parameters = MappingProxyType({"edge_cluster_mm": 2.5})

    def resolve(self, settings) -> Mapping[str, Any]:
        if settings.workflow.regions == "fast":
            return {"parameters": dict(self.fast_regions_parameters)}
        return {}

    def mem_gb(self, n_voxels: int) -> float:
        return step_mem_gb(self.node_gb, n_voxels)

    def init_workflow(
        self, *, options: Mapping[str, Any], omp_nthreads: int, n_voxels: int, name: str
    ):
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe

        from mcpvs_bidsapp.interfaces.vesselness import VesselnessPVS

        workflow = pe.Workflow(name=name)
        inputnode = pe.Node(
            niu.IdentityInterface(fields=[*SEGMENTER_INPUTS, *SEGMENTER_OPTIONAL_INPUTS]),
            name="inputnode",
        )
        outputnode = pe.Node(
            niu.IdentityInterface(fields=list(SEGMENTER_OUTPUTS)), name="outputnode"
        )
        segment = pe.Node(
            VesselnessPVS(**dict(options)), name="vesselness", mem_gb=self.mem_gb(n_voxels)
        )
        workflow.connect([
            (inputnode, segment, [("preproc_t1w", "in_file"), ("regions_dseg", "in_regions"),
                                  ("brain_mask", "in_mask"), ("lesion_mask", "in_lesion")]),
            (segment, outputnode, [("out_mask", "pvs_mask"), ("out_probseg", "pvs_probseg"),
                                   ("out_parameters", "parameters")]),
        ])  # fmt: skip
        return workflow

    def qc_caveats(self, plan) -> list[dict]:
        """Flags every T1w of this plan carries: the method on regions it misreads."""
        if plan.regions != "fast":
            return []
        return [
            {
                "flag": "coarse_regions",
                "message": "the built-in method on --regions fast still finds grey matter "
                "that the coarse WM region folds in (Philips test head: 124 clusters / 921 "
                "mm^3, 70 % of that volume in clusters outside Samseg's BG and WM, against "
                "127 / 331 mm^3 with Samseg regions; docs/builtin-method.md): use the default "
                "Samseg regions for numbers to report",
            }
        ]

    def methods_text(self, provenance: Mapping[str, Any], cite: Cite) -> str:
        return (
            "PVS were segmented with mcpvs's built-in weight-free method: contrast to a "
            "robust local background, multiscale Hessian dot and tube responses "
            f"{cite('frangi1998vesselness')} with thresholds in units of the image's own noise, "
            "and connected-component rules after the mcPVS-Net annotation protocol; candidate "
            "clusters were kept by a logistic model fitted on known-truth phantoms of two "
            "tune heads (parameters and the model's checksum in the mask's JSON sidecar). "
            "Each cluster's volume is its fluid-equivalent volume (its intensity dip "
            "integrated over the image's fluid contrast), smaller than the blurred extent "
            "a reader outlines (2.6-3.2 times on two real test heads), so one PVS is often "
            "one or two voxels. "
            "The trained mcPVS-Net model (an nnU-Net "
            f"{cite('isensee2021nnunet')}) was not used, so these masks are not comparable to the "
            "paper's."
        )


register_segmenter(VesselnessSegmenter())
