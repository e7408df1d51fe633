"""Nipype adaptors of the Samseg region scheme (:mod:`mcpvs_bidsapp.methods.regions.samseg`).

* :class:`Samseg` runs Samseg on one T1w and returns its labels on the input's native grid.
* :class:`SamsegRegions` turns them into the brain mask and the region map.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mcpvs_bidsapp.methods.regions.samseg import labels_to_regions, run_samseg


class _SamsegInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3D T1w image (full head, native grid)")
    num_threads = traits.Int(1, usedefault=True, desc="GEMS/ITK threads (--omp-nthreads)")
    profile = traits.Enum("fast", "paper", usedefault=True, desc="speed profile")


class _SamsegOutputSpec(TraitedSpec):
    out_seg = File(exists=True, desc="Samseg labels (FreeSurfer LUT) on the input grid, NIfTI")
    sbtiv_mm3 = traits.Float(desc="Samseg's sbTIV (intracranial volume), mm³")
    out_stats = File(exists=True, desc="samseg.stats: volume of every Samseg structure")
    out_dir = traits.Directory(exists=True, desc="Samseg's own output folder")
    skull_stripped = traits.Bool(desc="the input looked skull-stripped")
    icv_source = traits.Str(desc="where icv_mm3 comes from, with caveats")


class Samseg(SimpleInterface):
    """Run ``run_samseg`` on one T1w and return its labels on the input's native grid."""

    input_spec = _SamsegInputSpec
    output_spec = _SamsegOutputSpec

    def _run_interface(self, runtime):
        result = run_samseg(
            self.inputs.in_file,
            runtime.cwd,
            num_threads=self.inputs.num_threads,
            profile=self.inputs.profile,
        )
        self._results.update(
            out_seg=result["seg"],
            sbtiv_mm3=result["sbtiv_mm3"],
            out_stats=result["stats"],
            out_dir=result["out_dir"],
            skull_stripped=result["skull_stripped"],
            icv_source=result["icv_source"],
        )
        return runtime


class _SamsegRegionsInputSpec(BaseInterfaceInputSpec):
    in_seg = File(exists=True, mandatory=True, desc="Samseg labels on the native grid")


class _SamsegRegionsOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask (uint8 0/1)")
    out_dseg = File(exists=True, desc="0 background, 1 BG, 2 WM, 3 other brain (uint8)")


class SamsegRegions(SimpleInterface):
    """Brain mask and BG/WM region map from Samseg's labels (same grid and header)."""

    input_spec = _SamsegRegionsInputSpec
    output_spec = _SamsegRegionsOutputSpec

    def _run_interface(self, runtime):
        seg = nb.load(self.inputs.in_seg)
        labels = np.asanyarray(seg.dataobj).astype(np.int32)
        brain, dseg = labels_to_regions(labels)
        for key, data, fname in (
            ("out_mask", brain, "brain_mask.nii.gz"),
            ("out_dseg", dseg, "regions_dseg.nii.gz"),
        ):
            hdr = seg.header.copy()
            hdr.set_data_dtype(np.uint8)
            img = nb.Nifti1Image(data, seg.affine, hdr)
            img.header.set_slope_inter(1, 0)
            out = Path(runtime.cwd) / fname
            img.to_filename(str(out))
            self._results[key] = str(out)
        return runtime
