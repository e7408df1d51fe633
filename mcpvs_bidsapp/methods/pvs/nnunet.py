"""Segmenter ``nnunet``: an installed nnU-Net model, e.g. mcPVS-Net (docs/models.md).

The prediction is :func:`mcpvs_bidsapp.interfaces.nnunet.predict_pvs` (nnU-Net's own
``nnUNetPredictor``); models live in the checksummed store of :mod:`mcpvs_bidsapp.models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcpvs_bidsapp.errors import BIDSError, ModelStoreError
from mcpvs_bidsapp.methods import register_segmenter
from mcpvs_bidsapp.methods.base import SEGMENTER_INPUTS, SEGMENTER_OUTPUTS, Cite, step_mem_gb
from mcpvs_bidsapp.outputs.provenance import N4Mask


class NnUNetSegmenter:
    name = "nnunet"
    summary = "an installed nnU-Net model (mcPVS-Net when installed; see mcpvs models)"
    #: the authors' whole-image N4: the image the model was trained on
    default_n4_mask = N4Mask.WHOLE_IMAGE
    auto_priority = 10  #: before the built-in method whenever a model is installed
    node_gb = 8.0  #: peak memory on a 1 mm whole head (CPU, fast profile)

    def available(self, settings) -> bool:
        """A model of the requested name is installed (whether it verifies is decided in
        :meth:`resolve`: an installed model that fails its checks stops the run rather than
        silently giving way to another method)."""
        from mcpvs_bidsapp.models.store import find_model

        try:
            find_model(settings.model.name, settings.model.store)
        except ModelStoreError:
            return False
        return True

    def resolve(self, settings) -> Mapping[str, Any]:
        from mcpvs_bidsapp.models.store import get_model

        model = settings.model
        try:
            info = get_model(model.name, model.store)  # every file re-hashed
        except ModelStoreError as err:
            raise BIDSError(f"model {model.name!r}: {err}") from err
        options: dict[str, Any] = {
            "model_name": model.name,
            "model_store": str(model.store),
            "model_checksum": info.checksum,
            "device": model.device,
            "profile": model.profile,
        }
        if model.folds is not None:
            options["folds"] = list(model.folds)
        if model.mirroring is not None:
            options["mirroring"] = model.mirroring
        if model.step_size is not None:
            options["step_size"] = model.step_size
        return options

    def mem_gb(self, n_voxels: int) -> float:
        return step_mem_gb(self.node_gb, n_voxels)

    def init_workflow(
        self, *, options: Mapping[str, Any], omp_nthreads: int, n_voxels: int, name: str
    ):
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe

        from mcpvs_bidsapp.interfaces.nnunet import NnUNetPredict

        workflow = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=list(SEGMENTER_INPUTS)), name="inputnode")
        outputnode = pe.Node(
            niu.IdentityInterface(fields=list(SEGMENTER_OUTPUTS)), name="outputnode"
        )
        segment = pe.Node(
            NnUNetPredict(num_threads=omp_nthreads, **dict(options)),
            name="nnunet",
            n_procs=omp_nthreads,
            mem_gb=self.mem_gb(n_voxels),
        )
        workflow.connect([
            (inputnode, segment, [("preproc_t1w", "in_file")]),
            (segment, outputnode, [("out_mask", "pvs_mask"), ("out_probseg", "pvs_probseg"),
                                   ("out_parameters", "parameters")]),
        ])  # fmt: skip
        return workflow

    def methods_text(self, provenance: Mapping[str, Any], cite: Cite) -> str:
        model = provenance.get("Model name", "mcPVS-Net")
        return (
            f"PVS were segmented with the nnU-Net {cite('isensee2021nnunet')} model {model} "
            f"(checksum {provenance.get('Model checksum', 'n/a')}; configuration "
            f"{provenance.get('Model configuration', 'n/a')}; folds "
            f"{provenance.get('Model folds', 'n/a')})."
        )


register_segmenter(NnUNetSegmenter())
