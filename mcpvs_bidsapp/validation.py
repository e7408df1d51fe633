"""Input checks for T1w images: one clear line per problem, before any heavy step runs.

Used twice: by the preflight before the workflow is built (so a bad file fails in seconds and does
not stop the others) and by the first node of every T1w workflow (so a file that changed in
between still fails cleanly: :class:`mcpvs_bidsapp.interfaces.validation.ValidateT1w`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nb
import numpy as np

from mcpvs_bidsapp.errors import InputImageError
from mcpvs_bidsapp.outputs import spec

MIN_VOXELS_PER_AXIS = 32
MAX_VOXEL_MM = 4.0
#: a voxel edge above this gets a warning in the log (load_t1w) and the QC flag
#: ``coarse_voxels`` beside the numbers (measures.qc_flags). Both methods were validated on
#: 1 mm-class T1w; on a 2 mm copy of the demo phantom the built-in method found 16 % of the
#: PVS voxels (Dice 0.256; full size: recall 0.90 / 0.79, Dice 0.73 / 0.77;
#: docs/builtin-method.md), so such volumes are not comparable with 1 mm data
COARSE_VOXEL_MM = 1.5


def load_t1w(path: Path | str) -> tuple[nb.Nifti1Image, np.ndarray, list[str]]:
    """Load and check a T1w; return the image, its float32 data and warnings.

    Raises :class:`InputImageError` with ``"<file>: <problem>"``.
    """
    path = Path(path)
    name = path.name

    def fail(problem: str) -> InputImageError:
        return InputImageError(f"{name}: {problem}")

    if not path.exists():
        raise fail("file not found")
    if path.stat().st_size == 0:
        raise fail("file is empty (0 bytes)")
    try:
        img = nb.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise fail(f"not a readable NIfTI image ({type(err).__name__}: {err})") from None
    if not isinstance(img, (nb.Nifti1Image, nb.Nifti2Image)):
        raise fail(f"not a NIfTI image ({type(img).__name__})")

    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        dims = "x".join(str(s) for s in img.shape)
        raise fail(f"image is {len(img.shape)}D (shape {dims}); a 3D T1w is needed")
    if min(shape) < MIN_VOXELS_PER_AXIS:
        dims = "x".join(str(s) for s in shape)
        raise fail(f"image is too small (shape {dims}); a whole-brain 3D T1w is needed")

    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise fail(f"invalid voxel size {tuple(zooms)} in the header")
    if np.any(zooms > MAX_VOXEL_MM):
        raise fail(
            f"voxels of {format_mm(zooms)} are too coarse for PVS (at most {MAX_VOXEL_MM} mm)"
        )
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise fail("the header's affine (qform/sform) is singular or not finite")

    try:
        data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(shape)
        if path.name.endswith(".gz"):
            _read_to_end(path)  # nibabel stops after the voxels; the CRC check is at the end
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise fail(f"truncated or corrupt image data ({type(err).__name__}: {err})") from None

    n_bad = int(np.count_nonzero(~np.isfinite(data)))
    if n_bad:
        raise fail(f"contains {n_bad} NaN/Inf voxels")
    if not np.any(data):
        raise fail("image is all zeros")
    if float(data.max()) == float(data.min()):
        raise fail(f"image is constant (every voxel = {data.flat[0]:g})")

    _check_magnitude(img, data, fail)

    warnings = []
    if np.any(zooms > COARSE_VOXEL_MM):
        warnings.append(
            f"{name}: voxels of {format_mm(zooms)} are coarser than the 1 mm-class T1w the "
            "methods were validated on; small PVS will be missed"
        )
    if zooms.max() / zooms.min() > 2:
        warnings.append(f"{name}: strongly anisotropic voxels ({format_mm(zooms)})")
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    if qcode and scode and not np.allclose(qform, sform, atol=1e-3):
        warnings.append(
            f"{name}: qform and sform disagree; the sform is used (as nibabel and ANTs do)"
        )
    return img, data, warnings


#: more than this fraction of negative voxels is not a magnitude image's noise floor
MAX_NEGATIVE_FRACTION = 0.01
#: ... when the negative tail reaches this fraction of the bright tissue's intensity
NEGATIVE_TAIL_FRACTION = 0.05


def _check_magnitude(img, data: np.ndarray, fail) -> None:
    """A T1w is a magnitude image: its background is near 0 and almost nothing is negative.

    Two careless conversions break that and passed on main with wrong numbers written as
    right (issue #17, item 5): a float image cast to int16 wraps bright tissue round to
    large negative values (brain median -9,100; the WM region came out empty, PVS 0), and an
    intercept (``scl_inter``) of -500 moves the whole image below 0 (N4 ignores voxels <= 0;
    BG PVS 54 -> 0 mm³). Small negative values of a denoised or interpolated image (a few
    voxels, a few % of the tissue's intensity) are accepted.
    """
    negative = data < 0
    fraction = float(negative.mean())
    if fraction <= MAX_NEGATIVE_FRACTION:
        return
    p1, p99 = (float(v) for v in np.percentile(data, [1, 99]))
    if -p1 <= NEGATIVE_TAIL_FRACTION * max(abs(p99), 1e-6) and p99 > 0:
        return
    inter = float(getattr(img.dataobj, "inter", 0.0) or 0.0)
    stored = np.dtype(img.get_data_dtype())
    if inter < 0 and np.mean(data - inter < 0) <= MAX_NEGATIVE_FRACTION:
        cause = f"the header's intercept (scl_inter = {inter:g}) shifts the image below zero"
    elif stored.kind == "i":
        info = np.iinfo(stored)
        cause = (
            f"bright tissue looks wrapped round to negative values ({stored} range "
            f"{info.min}..{info.max}: a careless conversion to integers?)"
        )
    else:
        cause = "not a magnitude image (phase, a difference or a z-scored image?)"
    raise fail(
        f"{fraction:.0%} of the voxels are negative (1st percentile {p1:.4g}): {cause}; a "
        "T1w magnitude image is needed"
    )


def _read_to_end(path: Path) -> None:
    """Decompress the whole gzip stream so that a damaged file fails its CRC check here."""
    import gzip

    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 24):
            pass


def format_mm(zooms) -> str:
    """Voxel sizes as the messages write them, e.g. ``2x2x2 mm``."""
    return "x".join(f"{z:.2g}" for z in zooms) + " mm"


# --- after the brain mask: is it a plausible T1w head? -------------------------------------

#: no human intracranial volume reaches this (adult ICV is 1.1-2.0 L); a brain mask this large
#: means the extraction took the head for a brain (e.g. a T2w named T1w: 4.3 L on main)
MAX_ICV_MM3 = 2.6e6
#: below this PVSnm (per ICV) is not comparable with whole-head values: partial FOV or a child
SMALL_ICV_MM3 = 0.6e6
#: deep-over-superficial brain intensity of a T1w (WM brighter than cortex and CSF); a T2w or
#: an inverted image has the opposite. Measured on the raw image (2 mm copies of the heads in
#: ../shared/data, deepbet masks): T1w heads 2.0-2.8, the partial-FOV crop 1.29; the Philips
#: head inverted 0.80 (whole image) and 0.98 (head only, whose 3.9 L mask the ICV bound
#: refuses first). N4 (spline 100 mm) absorbs part of a centre-periphery difference (T1w
#: 1.56-2.42, inverted 1.00), so the raw image decides. FLAIR (CSF dark, 1.34) passes: it is
#: not told apart from a T1w by this check.
MIN_T1W_CONTRAST = 1.0
#: mm from the brain mask's edge: beyond CORE_MM is deep tissue, within SHELL_MM the surface
CORE_MM, SHELL_MM = 15.0, 4.0


def t1_contrast(t1w: np.ndarray, brain: np.ndarray, zooms) -> float:
    """Median intensity of deep brain tissue over that of its surface (cortex and CSF).

    T1w: white matter, the bulk of the deep tissue, is brighter than the cortex and the CSF
    of the surface (ratio > 1 on every real head we have, partial FOV included). On a T2w or
    an inverted image the surface is brighter (ratio < 1). The FOV's edge is not a brain
    edge: the mask is extended past it before measuring depth.
    """
    from scipy import ndimage as ndi

    brain = brain > 0
    pad = 2
    padded = np.pad(brain, pad, mode="edge")
    depth = ndi.distance_transform_edt(padded, sampling=zooms)[(slice(pad, -pad),) * 3]
    core = brain & (depth > CORE_MM)
    shell = brain & (depth <= SHELL_MM)
    if core.sum() < 100 or shell.sum() < 100:
        core = brain & (depth > np.percentile(depth[brain], 75))
        shell = brain & (depth <= np.percentile(depth[brain], 25))
    inner = float(np.median(t1w[core])) if core.any() else np.nan
    outer = float(np.median(t1w[shell])) if shell.any() else np.nan
    return inner / outer if outer > 0 else float("nan")


def check_head(
    name: str,
    t1w: np.ndarray,
    brain: np.ndarray,
    icv_mm3: float,
    zooms,
    dseg: np.ndarray | None = None,
) -> list[str]:
    """Refuse what cannot be a T1w head (one line, ``InputImageError``); warn about what
    makes its PVSnm incomparable. ``t1w`` is the validated image on the mask's grid."""

    def fail(problem: str) -> InputImageError:
        return InputImageError(f"{name}: {problem}")

    warnings = []
    if not np.isfinite(icv_mm3) or icv_mm3 > MAX_ICV_MM3:
        raise fail(
            f"the brain mask / intracranial volume is {icv_mm3 / 1e6:.2f} L, more than any "
            f"human's (at most {MAX_ICV_MM3 / 1e6:.1f} L): brain extraction failed; is it a "
            "T1w (not a T2w or an inverted image)?"
        )
    ratio = t1_contrast(t1w, brain, zooms)
    if np.isfinite(ratio) and ratio < MIN_T1W_CONTRAST:
        raise fail(
            f"deep brain tissue is darker than the brain's surface (ratio {ratio:.2f}): the "
            "contrast is not T1-weighted (a T2w or an inverted image named T1w?)"
        )
    for region in spec.PVS_REGIONS if dseg is not None else ():
        if not np.any(dseg == region):
            warnings.append(
                f"{name}: no {region.label} region was found; its measures are n/a (partial "
                "field of view, or the regions failed: see the report)"
            )
    if icv_mm3 < SMALL_ICV_MM3:
        warnings.append(
            f"{name}: intracranial volume {icv_mm3 / 1e6:.2f} L is small (partial field of view "
            "or a child's head?); PVSnm per ICV is not comparable with whole adult heads"
        )
    return warnings
