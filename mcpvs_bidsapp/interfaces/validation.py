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

from mcpvs_bidsapp.validation import load_t1w

LOGGER = logging.getLogger("mcpvs")


class _ValidateT1wInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="input T1w")


class _ValidateT1wOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the T1w as float32 3D NIfTI on the same grid")
    warnings = traits.List(traits.Str, desc="non-fatal problems to show in the report")


class ValidateT1w(SimpleInterface):
    """Check a T1w and write it as a clean float32 3D image on its own grid."""

    input_spec = _ValidateT1wInputSpec
    output_spec = _ValidateT1wOutputSpec

    def _run_interface(self, runtime):
        img, data, warnings = load_t1w(self.inputs.in_file)
        for warning in warnings:
            LOGGER.warning(warning)
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        out = nb.Nifti1Image(data, img.affine, header)
        out_file = Path(runtime.cwd) / "t1w_valid.nii.gz"
        out.to_filename(out_file)
        self._results["out_file"] = str(out_file)
        self._results["warnings"] = warnings
        return runtime
