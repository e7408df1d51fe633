"""Nipype interface for the built-in (weight-free) vesselness PVS segmentation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from .. import vesselness
from ..orientation import voxel_sizes


class _VesselnessPVSInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="preprocessed T1w (N4 + WM-normalised)")
    in_regions = File(exists=True, mandatory=True, desc="regions image (outputs.spec.Region codes)")
    in_mask = File(exists=True, desc="brain mask (PVS are kept inside it)")
    in_lesion = File(exists=True, desc="lesion mask on the same grid (optional)")
    parameters = traits.Dict(desc="overrides of vesselness.DEFAULT_PARAMS")


class _VesselnessPVSOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="binary PVS mask (uint8) on the in_file grid")
    out_probseg = File(exists=True, desc="PVS score in [0, 1] (float32) on the in_file grid")
    out_parameters = traits.Dict(desc="method name, version and every parameter used")


class VesselnessPVS(SimpleInterface):
    """Segment PVS with the built-in method (variant and parameters: docs/builtin-method.md)."""

    input_spec = _VesselnessPVSInputSpec
    output_spec = _VesselnessPVSOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        reg = nib.load(self.inputs.in_regions)
        name = Path(self.inputs.in_file).name
        if len(img.shape) != 3:
            raise ValueError(f"{name}: a 3D image is needed, got shape {img.shape}")
        if reg.shape != img.shape or not np.allclose(reg.affine, img.affine, atol=1e-3):
            raise ValueError(
                f"{Path(self.inputs.in_regions).name}: grid {reg.shape} differs from {name} "
                f"{img.shape} (regions must be on the T1w grid)"
            )
        data = np.asarray(img.dataobj, dtype=np.float32)
        regions = np.asarray(reg.dataobj).astype(np.uint8)
        if self.inputs.in_mask:
            brain = np.asarray(nib.load(self.inputs.in_mask).dataobj) > 0
            if brain.shape != data.shape:
                raise ValueError(
                    f"{Path(self.inputs.in_mask).name}: shape {brain.shape} differs from "
                    f"{name} {data.shape}"
                )
            regions = np.where(brain, regions, 0).astype(np.uint8)
        params = dict(self.inputs.parameters) if self.inputs.parameters else None
        lesion = None
        if isdefined(self.inputs.in_lesion) and self.inputs.in_lesion:
            lesion = np.asarray(nib.load(self.inputs.in_lesion).dataobj) > 0
            if lesion.shape != data.shape:
                raise ValueError(
                    f"{Path(self.inputs.in_lesion).name}: shape {lesion.shape} differs from "
                    f"{name} {data.shape}"
                )
        prob, mask, used = vesselness.segment_pvs(
            data,
            regions,
            voxel_sizes(img.affine),
            affine=img.affine,
            params=params,
            lesion_mask=lesion,
        )
        used = json.loads(json.dumps(used))  # plain JSON types for sidecars
        stem = name.split(".nii")[0]
        out = {}
        for key, arr, dtype in (
            ("out_mask", mask, np.uint8),
            ("out_probseg", prob, np.float32),
        ):
            hdr = img.header.copy()
            hdr.set_data_dtype(dtype)
            hdr.set_slope_inter(1.0, 0.0)
            fname = Path(runtime.cwd) / f"{stem}_{key[4:]}.nii.gz"
            nib.Nifti1Image(arr.astype(dtype), img.affine, hdr).to_filename(fname)
            out[key] = str(fname)
        self._results.update(out)
        # the sidecar contract (docs/outputs.md): Method at the top, parameters below it
        self._results["out_parameters"] = {
            "Method": used.pop("method"),
            "MethodVersion": used.pop("version"),
            "MethodDescription": vesselness.description(used.get("variant")),
            "Parameters": used,
        }
        return runtime
