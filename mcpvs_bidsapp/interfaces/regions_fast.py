"""Nipype adaptors of the ``fast`` region scheme (:mod:`mcpvs_bidsapp.methods.regions.atlas`).

Two steps, so that the registration runs beside N4 and only the cheap WM refinement waits
for it: :class:`AtlasPriors` registers the atlas to the subject's brain and warps its priors;
:class:`AtlasRegions` turns them into the region map, refining the WM border with the
bias-corrected T1w's intensities.
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
    isdefined,
    traits,
)

from mcpvs_bidsapp.methods.regions.atlas import atlas_priors, priors_to_regions, register_atlas


def _load_mask(mask_file: str, shape: tuple) -> np.ndarray:
    mask = np.asanyarray(nb.load(mask_file).dataobj) > 0
    if mask.shape != tuple(shape[:3]):
        raise ValueError(
            f"{Path(mask_file).name}: mask shape {mask.shape} differs from the T1w's {shape[:3]}"
        )
    return mask


class _AtlasPriorsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w (RAS+ copy)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    cache_dir = traits.Directory(desc="where the rasterised Samseg priors are cached")


class _AtlasPriorsOutputSpec(TraitedSpec):
    out_priors = File(exists=True, desc="warped BG/WM/brain priors on the T1w grid (4D)")


class AtlasPriors(SimpleInterface):
    """Samseg's atlas priors registered to the subject's brain (ANTsPy affine + SyN)."""

    input_spec = _AtlasPriorsInputSpec
    output_spec = _AtlasPriorsOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        mask = _load_mask(self.inputs.in_mask, img.shape)
        priors = atlas_priors(self.inputs.cache_dir or None)
        warped = register_atlas(img, mask, priors)
        hdr = img.header.copy()
        hdr.set_data_dtype(np.float32)
        warped_img = nb.Nifti1Image(warped, img.affine, hdr)
        warped_img.header.set_slope_inter(1, 0)
        out = Path(runtime.cwd) / "atlas_priors.nii.gz"
        warped_img.to_filename(out)
        self._results["out_priors"] = str(out)
        return runtime


class _AtlasRegionsInputSpec(BaseInterfaceInputSpec):
    in_priors = File(exists=True, mandatory=True, desc="warped priors (AtlasPriors)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    in_file = File(
        exists=True,
        desc="bias-corrected T1w for the WM refinement (N4): raw intensities carry the bias "
        "field, which moved the WM border by up to 40 % of its volume",
    )
    refine_wm = traits.Bool(True, usedefault=True, desc="refine WM with subject intensities")


class _AtlasRegionsOutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="0 background, 1 BG, 2 WM, 3 other brain (uint8)")


class AtlasRegions(SimpleInterface):
    """BG/WM regions from the warped priors, WM refined on the bias-corrected T1w."""

    input_spec = _AtlasRegionsInputSpec
    output_spec = _AtlasRegionsOutputSpec

    def _run_interface(self, runtime):
        pri = nb.load(self.inputs.in_priors)
        warped = np.asanyarray(pri.dataobj, dtype=np.float32)
        mask = _load_mask(self.inputs.in_mask, warped.shape)
        t1w = None
        if self.inputs.refine_wm:
            if not isdefined(self.inputs.in_file):
                raise ValueError("the WM refinement needs the bias-corrected T1w (in_file)")
            img = nb.load(self.inputs.in_file)
            if img.shape[:3] != warped.shape[:3]:
                raise ValueError(
                    f"{Path(self.inputs.in_file).name}: shape {img.shape} differs from the "
                    f"priors' {warped.shape[:3]}"
                )
            t1w = np.asanyarray(img.dataobj, dtype=np.float32)
        dseg = priors_to_regions(warped, mask, t1w)
        hdr = pri.header.copy()
        hdr.set_data_dtype(np.uint8)
        out = nb.Nifti1Image(dseg, pri.affine, hdr)
        out.header.set_slope_inter(1, 0)
        out_file = Path(runtime.cwd) / "regions_dseg.nii.gz"
        out.to_filename(out_file)
        self._results["out_dseg"] = str(out_file)
        return runtime
