"""Nipype adaptor of :func:`mcpvs_bidsapp.validation.load_t1w`: the first node of every T1w."""

from __future__ import annotations

import logging
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

from mcpvs_bidsapp.orientation import to_canonical
from mcpvs_bidsapp.validation import check_head, load_t1w

LOGGER = logging.getLogger("mcpvs")


class _ValidateT1wInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="input T1w")


class _ValidateT1wOutputSpec(TraitedSpec):
    out_file = File(
        exists=True,
        desc="the T1w as float32 3D NIfTI in RAS+ voxel order (mcpvs_bidsapp.orientation): "
        "every later step runs on it, the writer maps each output back to the input's order",
    )
    warnings = traits.List(traits.Str, desc="non-fatal problems to show in the report")


class ValidateT1w(SimpleInterface):
    """Check a T1w and write it as a clean float32 3D image, reoriented to RAS+ (exact)."""

    input_spec = _ValidateT1wInputSpec
    output_spec = _ValidateT1wOutputSpec

    def _run_interface(self, runtime):
        img, data, warnings = load_t1w(self.inputs.in_file)
        for warning in warnings:
            LOGGER.warning(warning)
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        out = to_canonical(nb.Nifti1Image(data, img.affine, header))
        out_file = Path(runtime.cwd) / "t1w_valid.nii.gz"
        out.to_filename(out_file)
        self._results["out_file"] = str(out_file)
        self._results["warnings"] = warnings
        return runtime


class _ToCanonicalInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="an image on the input T1w's grid")


class _ToCanonicalOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the same image in RAS+ voxel order")


class ToCanonical(SimpleInterface):
    """An auxiliary image on the T1w grid (e.g. a WMH mask) in the RAS+ order the steps use."""

    input_spec = _ToCanonicalInputSpec
    output_spec = _ToCanonicalOutputSpec

    def _run_interface(self, runtime):
        img = to_canonical(nb.load(self.inputs.in_file))
        out_file = Path(runtime.cwd) / ("canonical_" + Path(self.inputs.in_file).name)
        if not out_file.name.endswith((".nii", ".nii.gz")):
            out_file = out_file.with_suffix(".nii.gz")
        img.to_filename(out_file)
        self._results["out_file"] = str(out_file)
        return runtime


class _CheckHeadInputSpec(BaseInterfaceInputSpec):
    source_file = traits.Str(mandatory=True, desc="the input T1w (its name starts the message)")
    in_file = File(exists=True, mandatory=True, desc="the validated T1w (ValidateT1w)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask of the region scheme")
    icv_mm3 = traits.Float(mandatory=True, desc="intracranial volume of the region scheme")
    in_dseg = File(exists=True, desc="region map of the region scheme")
    in_warnings = traits.List(traits.Str, [], usedefault=True, desc="warnings so far")


class _CheckHeadOutputSpec(TraitedSpec):
    warnings = traits.List(traits.Str, desc="in_warnings plus this check's")


class CheckHead(SimpleInterface):
    """Refuse a head no T1w can be (ICV beyond any human's, inverted contrast) before any
    number is written (:func:`mcpvs_bidsapp.validation.check_head`)."""

    input_spec = _CheckHeadInputSpec
    output_spec = _CheckHeadOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        brain = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        found = check_head(
            Path(self.inputs.source_file).name,
            np.asanyarray(img.dataobj, dtype=np.float32),
            brain,
            self.inputs.icv_mm3,
            img.header.get_zooms()[:3],
            np.asanyarray(nb.load(self.inputs.in_dseg).dataobj) if self.inputs.in_dseg else None,
        )
        for warning in found:
            LOGGER.warning(warning)
        self._results["warnings"] = list(self.inputs.in_warnings) + found
        return runtime
