"""Nipype adaptor for :class:`mcpvs_bidsapp.methods.pvs.nnunet.PVSPredictor` (nnU-Net v1 or v2).

The node only maps inputs to the predictor and the predictor's one-line errors to the node's
failure. Its inputs include the checksum of the model the run was planned with
(``model_checksum``): Nipype caches a node by its inputs, so a model reinstalled under the same
name changes that input and is run again instead of reusing the old prediction from the work
directory (and a model swapped during the run is refused).
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mcpvs_bidsapp.errors import ModelStoreError, NnUNetError
from mcpvs_bidsapp.methods.pvs.nnunet import (  # noqa: F401 - re-exported for callers
    PROFILES,
    PVSPredictor,
    predict_pvs,
    pvs_label,
    resolve_device,
    resolve_profile,
)

# --------------------------------------------------------------------------- Nipype interface


class _NnUNetPredictInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="preprocessed T1w (native grid)")
    model_name = traits.Str("mcpvsnet", usedefault=True, desc="installed model name")
    model_store = traits.Str(desc="model store folder (default: $MCPVS_MODEL_STORE or ~/.local)")
    profile = traits.Enum(*PROFILES, usedefault=True, desc="auto | fast-cpu | full-gpu")
    device = traits.Enum("auto", "cuda", "cpu", usedefault=True, desc="where to run")
    folds = traits.List(traits.Int, desc="folds to average (default: from the profile)")
    mirroring = traits.Bool(desc="test-time mirroring (default: from the profile)")
    step_size = traits.Range(0.0, 1.0, desc="sliding-window step (default: from the profile)")
    num_threads = traits.Int(1, usedefault=True, desc="torch CPU threads (--omp-nthreads)")
    pvs_label = traits.Str(desc="name of the model's PVS label (default: found from dataset.json)")
    model_checksum = traits.Str(
        desc="checksum verified when the run was planned: part of the node's inputs, so a model "
        "reinstalled under the same name never reuses a cached prediction, and a model that "
        "changed since is refused (before it is loaded)"
    )
    postprocessing = traits.Bool(
        True, usedefault=True, desc="apply a v1 model's postprocessing.json when it has one"
    )


class _NnUNetPredictOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="binary PVS mask (uint8), same grid as in_file")
    out_probseg = File(exists=True, desc="PVS probability (float32 in [0, 1]), same grid")
    out_parameters = traits.Dict(desc="provenance for the mask/probseg sidecars")


class NnUNetPredict(SimpleInterface):
    """Segment PVS with an installed nnU-Net model, v1 or v2 (loaded once per process)."""

    input_spec = _NnUNetPredictInputSpec
    output_spec = _NnUNetPredictOutputSpec

    def _run_interface(self, runtime):
        opt = self.inputs
        out_mask = Path(runtime.cwd) / "pvs_mask.nii.gz"
        out_prob = Path(runtime.cwd) / "pvs_probseg.nii.gz"

        def given(value):
            return value if isdefined(value) else None

        try:
            params = predict_pvs(
                opt.in_file,
                opt.model_name,
                given(opt.model_store),
                profile=opt.profile,
                device=opt.device,
                folds=list(opt.folds) if isdefined(opt.folds) else None,
                mirroring=given(opt.mirroring),
                step_size=given(opt.step_size),
                num_threads=opt.num_threads,
                label=given(opt.pvs_label),
                postprocessing=opt.postprocessing,
                expected_checksum=given(opt.model_checksum),
                out_mask=out_mask,
                out_probseg=out_prob,
            )
        except (ModelStoreError, NnUNetError) as err:
            raise RuntimeError(f"{opt.in_file}: {err}") from None
        self._results.update(
            out_mask=str(out_mask), out_probseg=str(out_prob), out_parameters=params
        )
        return runtime
