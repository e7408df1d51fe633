"""FreeSurfer Samseg (``samseg`` wheel from PyPI) and the labels mcpvs takes from it.

The paper (Huang et al. 2024) ran Samseg from FreeSurfer 7.2 on every T1w and took its basal
ganglia and cerebral white matter labels as PVS regions, and an intracranial volume for PVSnm.
The PyPI ``samseg`` package is the same Python/GEMS code with the same atlas
(``20Subjects_smoothing2_down2_smoothingForAffine2``) inside the wheel, so it runs offline.

Two interfaces:

* :class:`Samseg` runs ``run_samseg`` in a child process (its GEMS/ITK threads and its ~3 GiB
  are released when it exits) and converts ``seg.mgz`` to NIfTI on the input's exact grid.
* :class:`SamsegRegions` turns the Samseg labels into the brain mask, the region map
  (``desc-regions_dseg``) and reads sbTIV.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
from scipy import ndimage as ndi

#: FreeSurfer LUT labels (as written by Samseg in seg.mgz; checked against the atlas'
#: compressionLookupTable.txt).  BG = caudate, putamen, pallidum: the striatum and pallidum
#: where basal-ganglia PVS are rated (Potter et al. 2015 scale the paper's radiologist used).
#: Nucleus accumbens (26/58) is left out on purpose: the ventral striatum / anterior perforated
#: substance is where PVS are seen in nearly every healthy adult and the paper's annotators did
#: not label them; thalamus (10/49) is not basal ganglia.
BG_LABELS = (11, 12, 13, 50, 51, 52)
#: cerebral white matter (2/41) plus Samseg's WM-hypointensities (77), which lie inside the
#: cerebral WM: T1-dark PVS and WMH can be labelled 77, and dropping them would cut the very
#: voxels we measure out of the WM region.  Cerebellar WM (7/46) is not cerebral WM.
WM_LABELS = (2, 41, 77)
#: labels that are not brain: unknown, skull, soft non-brain tissue, fluid inside the eyes.
NONBRAIN_LABELS = (0, 165, 258, 259)

#: run_samseg ``--options`` for each speed profile (see docs/preprocessing.md, "Samseg speed").
#: ``paper``: FreeSurfer's defaults, i.e. what the authors ran (2 mm level-1 mesh, then 1 mm
#: level-2 mesh, up to 100 iterations each).  ``fast``: the level-2 mesh is fitted at 2 mm
#: voxel spacing as well; the final segmentation is still computed on every native voxel with
#: the full level-2 atlas, so all labels we need are there.
SAMSEG_PROFILES: dict[str, dict] = {
    "paper": {},
    "fast": {
        "optimizationOptions": {
            "multiResolutionSpecification": [
                {"targetDownsampledVoxelSpacing": 2.0, "maximumNumberOfIterations": 100},
                {"targetDownsampledVoxelSpacing": 2.0, "maximumNumberOfIterations": 100},
            ]
        }
    },
}


class SamsegError(RuntimeError):
    """Samseg failed; the message names the input and the last lines of Samseg's log."""


def looks_skull_stripped(data: np.ndarray, zooms) -> bool:
    """True when the non-zero part of the image is brain-sized (already skull-stripped).

    A raw head keeps scalp, skull and noise around the brain: its non-background volume is
    3-6 L.  A stripped image has exact zeros outside a 0.8-2.3 L blob.  Cheap and
    deliberately conservative: it flags, never changes the processing.
    """
    finite = np.nan_to_num(data, nan=0.0)
    nonzero = finite != 0
    if nonzero.mean() > 0.7:  # no zero background at all: not stripped
        return False
    volume_l = nonzero.sum() * float(np.prod(zooms)) / 1e6
    return bool(0.8 < volume_l < 2.3)


def read_sbtiv(stats_file: str | Path) -> float:
    """sbTIV in mm³ from Samseg's ``sbtiv.stats`` (``# Measure Intra-Cranial, <v>, mm^3``)."""
    text = Path(stats_file).read_text()
    match = re.search(r"Intra-Cranial,\s*([0-9.eE+-]+)\s*,\s*mm\^3", text)
    if not match:
        raise SamsegError(f"{stats_file}: no 'Intra-Cranial' measure in Samseg's sbtiv.stats")
    return float(match.group(1))


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
        in_file = Path(self.inputs.in_file)
        out_dir = Path(runtime.cwd) / "samseg"
        out_dir.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "samseg.cli.run_samseg",
            "-i",
            str(in_file),
            "-o",
            str(out_dir),
            "--threads",
            str(self.inputs.num_threads),
        ]
        options = SAMSEG_PROFILES[self.inputs.profile]
        if options:
            opt_file = out_dir / "samseg_options.json"
            opt_file.write_text(json.dumps(options, indent=2))
            cmd += ["--options", str(opt_file)]
        env = dict(os.environ)
        nthreads = str(self.inputs.num_threads)
        env.update(OMP_NUM_THREADS=nthreads, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=nthreads)
        log = out_dir / "samseg.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
        seg_mgz = out_dir / "seg.mgz"
        if proc.returncode != 0 or not seg_mgz.exists():
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise SamsegError(
                f"{in_file.name}: Samseg failed (exit {proc.returncode}): {tail} (log: {log})"
            )
        self._results["out_seg"] = str(
            seg_to_native(seg_mgz, in_file, Path(runtime.cwd) / "samseg_seg.nii.gz")
        )
        self._results["sbtiv_mm3"] = read_sbtiv(out_dir / "sbtiv.stats")
        self._results["out_stats"] = str(out_dir / "samseg.stats")
        self._results["out_dir"] = str(out_dir)
        img = nb.load(str(in_file))
        stripped = looks_skull_stripped(np.asanyarray(img.dataobj), img.header.get_zooms()[:3])
        self._results["skull_stripped"] = stripped
        source = f"Samseg sbTIV (samseg {_samseg_version()}, profile {self.inputs.profile})"
        if stripped:
            source += "; input looks skull-stripped, so sbTIV misses extra-cerebral CSF"
        self._results["icv_source"] = source
        return runtime


def _samseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("samseg")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def seg_to_native(seg_file: str | Path, ref_file: str | Path, out_file: str | Path) -> Path:
    """Write Samseg's labels as NIfTI with the reference's exact shape, affine and header.

    Samseg writes ``seg.mgz`` on the input's own voxel grid (it un-crops into a copy of the
    input geometry), so no resampling is needed; we check that the grids agree to 1e-3 mm and
    then reuse the reference header so that the affine is bit-identical to the input's.
    """
    seg = nb.load(str(seg_file))
    ref = nb.load(str(ref_file))
    if seg.shape[:3] != ref.shape[:3] or not np.allclose(seg.affine, ref.affine, atol=1e-3):
        raise SamsegError(
            f"{Path(ref_file).name}: Samseg output grid {seg.shape[:3]} does not match the "
            f"input grid {ref.shape[:3]}"
        )
    data = np.asanyarray(seg.dataobj).astype(np.int16).reshape(ref.shape[:3])
    hdr = ref.header.copy()
    hdr.set_data_dtype(np.int16)
    out = nb.Nifti1Image(data, ref.affine, hdr)
    out.header.set_slope_inter(1, 0)
    out.to_filename(str(out_file))
    return Path(out_file)


def labels_to_regions(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samseg labels → (brain mask, region map 0 bg / 1 BG / 2 WM / 3 other brain).

    Brain = every Samseg label but unknown, skull, soft tissue and eye fluid (so it includes the
    ventricles and sulcal/extra-cerebral CSF, like an SPM/deepbet brain mask), with enclosed
    holes filled.  Small enclosed islands of another label inside BG or WM (a T1-dark PVS
    labelled CSF/vessel/hypointensity) are given to the region that surrounds them, because a
    PVS must not cut itself out of the region it is counted in.
    """
    brain = ~np.isin(labels, NONBRAIN_LABELS)
    brain = ndi.binary_fill_holes(brain)
    bg = np.isin(labels, BG_LABELS)
    wm = np.isin(labels, WM_LABELS)
    bg = _fill_small_holes(bg, max_voxels=50)
    wm = _fill_small_holes(wm, max_voxels=50) & ~bg
    dseg = np.zeros(labels.shape, dtype=np.uint8)
    dseg[brain] = 3
    dseg[wm & brain] = 2
    dseg[bg & brain] = 1
    return brain.astype(np.uint8), dseg


def _fill_small_holes(mask: np.ndarray, max_voxels: int) -> np.ndarray:
    """Fill holes (components of ~mask not touching the outside) of at most ``max_voxels``."""
    filled = ndi.binary_fill_holes(mask)
    holes = filled & ~mask
    if not holes.any():
        return mask
    lab, n = ndi.label(holes)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    small = sizes <= max_voxels
    small[0] = False
    return mask | small[lab]


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
