"""Nipype adaptor of :mod:`mcpvs_bidsapp.measures` (volumes, counts, PVSnm, cluster census)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mcpvs_bidsapp.measures import cluster_census, qc_flags, region_measures
from mcpvs_bidsapp.outputs.write import tsv_text


class _MeasuresInputSpec(BaseInterfaceInputSpec):
    in_mask = File(exists=True, mandatory=True, desc="binary PVS mask")
    in_dseg = File(exists=True, mandatory=True, desc="regions (1 BG, 2 WM, 3 other)")
    in_brain_mask = File(exists=True, mandatory=True, desc="brain mask")
    icv_mm3 = traits.Float(mandatory=True, desc="intracranial volume")
    in_wmh = File(exists=True, desc="WMH mask on the same grid (optional)")
    in_t1w = File(exists=True, desc="preprocessed T1w, for the fluid bodies of the QC flags")
    in_lesion = File(exists=True, desc="lesion mask on the same grid (optional)")
    caveats = traits.List(traits.Dict, desc="QC flags the run plan raises (measures.qc_flags)")


class _MeasuresOutputSpec(TraitedSpec):
    out_measures = File(exists=True, desc="the measures table (spec.MEASURES)")
    out_clusters = File(exists=True, desc="the cluster census (spec.CLUSTERS)")
    out_qc_flags = traits.Dict(desc="QCFlags and QCChecks for the measures sidecar")


class PVSMeasures(SimpleInterface):
    """Volumes, counts and PVSnm per region, and the cluster census."""

    input_spec = _MeasuresInputSpec
    output_spec = _MeasuresOutputSpec

    def _run_interface(self, runtime):
        mask_img = nb.load(self.inputs.in_mask)
        mask = np.asanyarray(mask_img.dataobj) > 0
        dseg = np.asanyarray(nb.load(self.inputs.in_dseg).dataobj).astype(np.int16)
        brain = np.asanyarray(nb.load(self.inputs.in_brain_mask).dataobj) > 0
        wmh = None
        if isdefined(self.inputs.in_wmh):
            wmh = np.asanyarray(nb.load(self.inputs.in_wmh).dataobj) > 0
        census = cluster_census(mask & brain, dseg, mask_img.affine)
        measures = region_measures(
            mask, dseg, brain, mask_img.affine, self.inputs.icv_mm3, census, wmh
        )
        t1w = lesion = None
        if isdefined(self.inputs.in_t1w):
            t1w = np.asanyarray(nb.load(self.inputs.in_t1w).dataobj, dtype=np.float32)
        if isdefined(self.inputs.in_lesion):
            lesion = np.asanyarray(nb.load(self.inputs.in_lesion).dataobj) > 0
        self._results["out_qc_flags"] = qc_flags(
            mask, dseg, brain, mask_img.affine, census, t1w=t1w, lesion=lesion,
            caveats=list(self.inputs.caveats) if isdefined(self.inputs.caveats) else None,
        )  # fmt: skip
        cwd = Path(runtime.cwd)
        (cwd / "measures.tsv").write_text(tsv_text(measures))
        (cwd / "clusters.tsv").write_text(tsv_text(census))
        self._results["out_measures"] = str(cwd / "measures.tsv")
        self._results["out_clusters"] = str(cwd / "clusters.tsv")
        return runtime
