"""What a PVS segmenter and a region scheme must provide (one file each, see the registries).

A segmenter or a region scheme owns everything about itself that the rest of mcpvs needs: its
name (the CLI value and the sidecars' ``Method``/``RegionsMethod``), the N4 variant it was
validated with, how much memory its nodes take, the Nipype sub-workflow that runs it and the
sentences of the methods paragraph. The workflows only wire the sub-workflow in; the CLI takes
its choices from the registries; the report asks the registry for the methods text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mcpvs_bidsapp.outputs.provenance import N4Mask

if TYPE_CHECKING:
    from nipype.pipeline import engine as pe

    from mcpvs_bidsapp.config import Settings

#: ``cite("key")`` -> "(Author et al., 2021)" and records the reference (reports/boilerplate)
Cite = Callable[..., str]

#: the sub-workflow contract of a segmenter
SEGMENTER_INPUTS = ("preproc_t1w", "regions_dseg", "brain_mask")
#: inputs a segmenter may take besides: its ``inputnode`` has them when its optional class
#: attribute ``accepts_lesion_mask`` is True (a lesion mask on the T1w grid, set only when the
#: T1w has one: ``--lesion-mask`` or a BIDS lesion mask beside it)
SEGMENTER_OPTIONAL_INPUTS = ("lesion_mask",)
#: a segmenter may also define ``qc_caveats(plan) -> [{"flag", "message"}]``: QC flags every
#: T1w of that plan carries (the method on regions it is known to misread), raised in the
#: measures sidecar, the report's banner and the group table like the image-based flags
SEGMENTER_OUTPUTS = ("pvs_mask", "pvs_probseg", "parameters")
#: the sub-workflow contract of a region scheme
REGION_OUTPUTS = ("brain_mask", "dseg", "icv_mm3", "icv_source", "regions_method")


@runtime_checkable
class PVSSegmenter(Protocol):
    """A PVS segmentation method.

    ``init_workflow`` returns a workflow with an ``inputnode`` holding
    :data:`SEGMENTER_INPUTS` and an ``outputnode`` holding :data:`SEGMENTER_OUTPUTS`:
    a binary mask and a 0-1 score on the preprocessed T1w's grid, and the sidecar record
    (a dict with ``Method`` set to :attr:`name`).
    """

    name: str
    #: one line for ``--help``
    summary: str
    #: the N4 variant ``--n4-mask auto`` gives it
    default_n4_mask: N4Mask
    #: ``--method auto`` tries segmenters by descending priority; None: never chosen by auto
    auto_priority: int | None

    def available(self, settings: Settings) -> bool:
        """Whether ``--method auto`` may pick it (e.g. its model is installed)."""
        ...

    def resolve(self, settings: Settings) -> Mapping[str, Any]:
        """The options its nodes need, checked now (raise McpvsError with one line)."""
        ...

    def mem_gb(self, n_voxels: int) -> float:
        """Peak memory of its largest node on an image of ``n_voxels``."""
        ...

    def init_workflow(
        self, *, options: Mapping[str, Any], omp_nthreads: int, n_voxels: int, name: str
    ) -> pe.Workflow: ...

    def methods_text(self, provenance: Mapping[str, Any], cite: Cite) -> str:
        """The methods paragraph's sentences about this segmentation."""
        ...


@runtime_checkable
class RegionScheme(Protocol):
    """Brain mask, BG/WM regions (``outputs.spec.Region`` codes) and ICV of one T1w.

    ``init_workflow`` returns a workflow with ``inputnode.t1w`` (the validated T1w, RAS+
    voxel order) and an ``outputnode`` holding :data:`REGION_OUTPUTS`, every image on that
    grid. A scheme whose steps read intensities after the brain mask sets
    ``uses_bias_corrected = True``; ``init_workflow`` then also gets ``bias_correction``, the
    run's N4 node, to add to its workflow: it must feed its ``in_file`` (the T1w) and
    ``in_mask`` (its brain mask) and may read its ``out_file`` (a missing attribute means
    False; see ``workflows.regions.init_regions_wf``).
    """

    name: str
    summary: str

    def mem_gb(self, n_voxels: int) -> float: ...

    def init_workflow(self, *, omp_nthreads: int, n_voxels: int, name: str) -> pe.Workflow: ...

    def extraction_text(self, cite: Cite) -> str:
        """How the brain mask was made, e.g. "brain-extracted with Samseg (Puonti ...)"."""
        ...

    def regions_text(self, cite: Cite) -> str:
        """Where the BG/WM regions and the ICV came from."""
        ...


def step_mem_gb(base_gb: float, n_voxels: int, *, fixed: bool = False) -> float:
    """Memory to reserve for a step measured at ``base_gb`` on a 1 mm whole head.

    Scales with the image size (never below a quarter); ``fixed`` steps (deepbet resamples
    every input to 256^3) do not scale. See :mod:`mcpvs_bidsapp.engine.resources`.
    """
    from mcpvs_bidsapp.engine.resources import REFERENCE_VOXELS

    if fixed:
        return base_gb
    return round(base_gb * max(0.25, n_voxels / REFERENCE_VOXELS), 2)
