"""Interim regions (brain mask + intensity white matter), until the Samseg/atlas paths land.

Honest about what it is: no basal-ganglia label (BG stays empty) and ICV = brain-mask volume.
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
from scipy import ndimage


class _InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w")
    in_mask = File(exists=True, mandatory=True, desc="brain mask")


class _OutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="0 background, 1 BG (empty here), 2 WM, 3 other brain")
    icv_mm3 = traits.Float()
    icv_source = traits.Str()


class IntensityRegions(SimpleInterface):
    """WM = brightest of three intensity classes inside the brain, smoothed and hole-filled."""

    input_spec = _InputSpec
    output_spec = _OutputSpec

    def _run_interface(self, runtime):
        from skimage.filters import threshold_multiotsu

        img = nb.load(self.inputs.in_file)
        data = ndimage.gaussian_filter(np.asanyarray(img.dataobj, dtype=np.float32), 1.0)
        mask = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        thresholds = threshold_multiotsu(data[mask], classes=3)
        wm = mask & (data > thresholds[-1])
        wm = ndimage.binary_closing(wm, iterations=2) & mask  # PVS are dark holes in WM
        dseg = np.where(mask, 3, 0).astype(np.uint8)
        dseg[wm] = 2
        out = nb.Nifti1Image(dseg, img.affine, img.header)
        out.set_data_dtype(np.uint8)
        out_file = Path(runtime.cwd) / "regions_dseg.nii.gz"
        out.to_filename(out_file)
        self._results["out_dseg"] = str(out_file)
        self._results["icv_mm3"] = float(mask.sum() * np.prod(img.header.get_zooms()[:3]))
        self._results["icv_source"] = "brain-mask volume (interim regions; no Samseg sbTIV)"
        return runtime
