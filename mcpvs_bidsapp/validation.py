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

MIN_VOXELS_PER_AXIS = 32
MAX_VOXEL_MM = 4.0
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
        raise fail(f"voxels of {_fmt_mm(zooms)} are too coarse for PVS (at most {MAX_VOXEL_MM} mm)")
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

    warnings = []
    if np.any(zooms > COARSE_VOXEL_MM):
        warnings.append(
            f"{name}: voxels of {_fmt_mm(zooms)} are coarser than the 1 mm-class T1w the "
            "methods were validated on; small PVS will be missed"
        )
    if zooms.max() / zooms.min() > 2:
        warnings.append(f"{name}: strongly anisotropic voxels ({_fmt_mm(zooms)})")
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    if qcode and scode and not np.allclose(qform, sform, atol=1e-3):
        warnings.append(
            f"{name}: qform and sform disagree; the sform is used (as nibabel and ANTs do)"
        )
    return img, data, warnings


def _read_to_end(path: Path) -> None:
    """Decompress the whole gzip stream so that a damaged file fails its CRC check here."""
    import gzip

    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 24):
            pass


def _fmt_mm(zooms: np.ndarray) -> str:
    return "x".join(f"{z:.2g}" for z in zooms) + " mm"
