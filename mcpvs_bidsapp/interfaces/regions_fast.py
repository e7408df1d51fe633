"""Nipype adaptor of the ``fast`` region scheme (:mod:`mcpvs_bidsapp.methods.regions.atlas`)."""

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

from mcpvs_bidsapp.methods.regions.atlas import atlas_priors, priors_to_regions, register_atlas


class _AtlasRegionsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w on its native grid")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    cache_dir = traits.Directory(desc="where the rasterised Samseg priors are cached")
    refine_wm = traits.Bool(True, usedefault=True, desc="refine WM with subject intensities")


class _AtlasRegionsOutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="0 background, 1 BG, 2 WM, 3 other brain (uint8)")
    out_priors = File(exists=True, desc="warped BG/WM/brain priors on the native grid")


class AtlasRegions(SimpleInterface):
    """BG/WM regions from Samseg's atlas priors registered to the subject (ANTsPy SyN)."""

    input_spec = _AtlasRegionsInputSpec
    output_spec = _AtlasRegionsOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        mask_img = nb.load(self.inputs.in_mask)
        mask = np.asanyarray(mask_img.dataobj) > 0
        if mask.shape != img.shape[:3]:
            raise ValueError(
                f"{Path(self.inputs.in_mask).name}: mask shape {mask.shape} differs from "
                f"the T1w's {img.shape[:3]}"
            )
        priors = atlas_priors(self.inputs.cache_dir or None)
        warped = register_atlas(img, mask, priors)
        t1w = np.asanyarray(img.dataobj, dtype=np.float32) if self.inputs.refine_wm else None
        dseg = priors_to_regions(warped, mask, t1w)
        cwd = Path(runtime.cwd)
        hdr = img.header.copy()
        hdr.set_data_dtype(np.uint8)
        out = nb.Nifti1Image(dseg, img.affine, hdr)
        out.header.set_slope_inter(1, 0)
        out.to_filename(cwd / "regions_dseg.nii.gz")
        hdr = img.header.copy()
        hdr.set_data_dtype(np.float32)
        warped_img = nb.Nifti1Image(warped, img.affine, hdr)
        warped_img.header.set_slope_inter(1, 0)
        warped_img.to_filename(cwd / "atlas_priors.nii.gz")
        self._results["out_dseg"] = str(cwd / "regions_dseg.nii.gz")
        self._results["out_priors"] = str(cwd / "atlas_priors.nii.gz")
        return runtime
