"""Storage order: every step runs on a RAS+ copy, every output goes back to the input grid.

The same head stored RAS, LPI or LIA (FreeSurfer's conformed order) holds the same voxels in
another order. Several steps are not indifferent to that order: the fast regions' registration
resamples the subject onto a 2 mm grid that starts at the first stored voxel, ITK's N4 fits its
B-spline mesh from the first voxel, FCM's seeded random start is laid over the voxels in storage
order, and the built-in method's inferior-BG rule looks for the superior axis. On main the
1 mm Philips head gave 401 mm³ of PVS stored RAS and 421 mm³ stored LPI (issue #17, item 1).

So, as fMRIPrep does, the validated T1w is reoriented to RAS+ with nibabel's orientation tools
(:func:`nibabel.as_closest_canonical`): a permutation and flips of the voxel axes, which moves
no voxel value and needs no interpolation, so the copy is exact; every output is mapped back
with the inverse permutation (:func:`to_grid`), also exact, and written with the input's own
header. Two storage orders of one head therefore give the same array to every step, and the
same numbers (tests/integration/test_invariance.py).

An oblique affine (voxel axes rotated against the scanner's) cannot be undone by permuting:
the copy gets the closest RAS+ voxel order and keeps the residual rotation (at most 45°) in its
affine. We do not resample it onto an axis-aligned grid, because the interpolation would blur
PVS that are one to three voxels wide. The voxel-wise steps (deepbet, which works on
``as_closest_canonical`` itself, N4, FCM, the built-in method, whose superior axis is the voxel
axis closest to world superior) see the same array either way. The two steps that work in
world space, the atlas registration and Samseg, are given the copy with its residual rotation
taken out (:func:`deobliqued_copy`: same voxels and voxel sizes, axes on the world axes),
i.e. they take the voxel grid as the head's frame, as FSL's tools do. An oblique slab is
planned on the anatomy (AC-PC, the hippocampus), so the grid is the better start for the
registration anyway, and the result no longer depends on the rotation: on main, 20° of
obliquity moved the BG region of a partial-FOV crop from 7,748 to 1,931 mm³. Their outputs are
voxel maps, which get the true affine back. The measures use the true affine (the census's
world coordinates stay the scanner's).
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

#: two affines that describe the same grid agree to this (mm); permutations are exact, so
#: anything larger is another grid, not a reordering
GRID_ATOL_MM = 1e-4


def axcodes(affine: np.ndarray) -> str:
    """``"LPI"``, ``"RAS"``...: the storage order of an affine (closest axes when oblique)."""
    return "".join(nb.aff2axcodes(affine))


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and the world axis closest to it."""
    rzs = np.asarray(affine)[:3, :3]
    unit = rzs / np.linalg.norm(rzs, axis=0)
    return float(np.degrees(np.arccos(np.clip(np.abs(unit).max(axis=0), 0, 1))).max())


def to_canonical(img: nb.spatialimages.SpatialImage) -> nb.Nifti1Image:
    """The image in RAS+ voxel order (closest canonical; exact, no interpolation)."""
    return nb.as_closest_canonical(img)


def to_grid(img: nb.spatialimages.SpatialImage, ref: nb.spatialimages.SpatialImage) -> np.ndarray:
    """``img``'s voxels in the voxel order of ``ref`` (an image of the same grid stored in
    another order, e.g. an output of the RAS+ copy and the input T1w).

    Raises ValueError when the two are not one grid in two orders: nothing is resampled.
    """
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"a 3D image is needed, got shape {data.shape}")
    transform = ornt_transform(io_orientation(img.affine), io_orientation(ref.affine))
    moved = apply_orientation(data, transform)
    affine = img.affine @ inv_ornt_aff(transform, data.shape)
    if moved.shape != tuple(ref.shape[:3]) or not np.allclose(
        affine, ref.affine, atol=GRID_ATOL_MM
    ):
        raise ValueError(
            f"grid {data.shape} ({axcodes(img.affine)}) is not the input's grid "
            f"{tuple(ref.shape[:3])} ({axcodes(ref.affine)}) in another voxel order"
        )
    return np.ascontiguousarray(moved)


def residual_rotation(affine: np.ndarray) -> np.ndarray:
    """The rotation (3x3) that turns the closest world axes onto the voxel axes: the part of
    the affine no permutation of the voxels can undo (the identity for a non-oblique one)."""
    affine = np.asarray(affine, dtype=float)
    rzs = affine[:3, :3]
    directions = rzs / np.linalg.norm(rzs, axis=0)
    closest = np.zeros((3, 3))
    for voxel_axis, (world_axis, sign) in enumerate(io_orientation(affine).astype(int)):
        closest[world_axis, voxel_axis] = sign
    u, _, vt = np.linalg.svd(directions @ closest.T)  # nearest rotation (polar decomposition)
    return u @ vt


def is_oblique(affine: np.ndarray) -> bool:
    """Whether the voxel axes are turned against the world axes (beyond rounding)."""
    return not np.allclose(residual_rotation(affine), np.eye(3), atol=1e-9)


#: the world-space steps' frame is quantised to this (mm): two storage orders of one image
#: have affines that differ in float32's last digits once permuted (up to 4e-6 mm measured),
#: which would give them different numbers; 1 µm is far below any voxel
FRAME_QUANTUM_MM = 1e-3
#: voxel sizes and axes are quantised to this (mm): an oblique copy's column norms differ from
#: the straight one's by float32 rounding (~1e-7 mm), enough to change N4's B-spline mesh
#: and so ~0.001 % of its output, and to flip 2 voxels of the WM region on a 2 mm head
VOXEL_QUANTUM_MM = 1e-4


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) from the affine's columns, quantised (:data:`VOXEL_QUANTUM_MM`):
    what the voxel-wise steps that work in mm (N4, the built-in method) use, so that every
    storage order of an image gives them the same numbers."""
    norms = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return tuple(float(v) for v in np.round(norms / VOXEL_QUANTUM_MM) * VOXEL_QUANTUM_MM)


def deobliqued_copy(img: nb.spatialimages.SpatialImage) -> nb.Nifti1Image:
    """``img`` in its voxel frame, for the steps that work in world space: its residual
    rotation undone about the scanner's isocentre (the world origin), so the same voxels and
    voxel sizes with the axes on the world axes, and the affine quantised
    (:data:`FRAME_QUANTUM_MM`)."""
    affine = np.asarray(img.affine, dtype=float)
    if is_oblique(affine):
        turn = np.eye(4)
        turn[:3, :3] = residual_rotation(affine).T
        affine = turn @ affine
    affine = affine.copy()
    rzs = affine[:3, :3]
    rzs[np.abs(rzs) < 1e-6 * np.abs(rzs).max()] = 0.0  # rounding left by the rotation
    affine[:3, :3] = np.round(rzs / VOXEL_QUANTUM_MM) * VOXEL_QUANTUM_MM
    affine[:3, 3] = np.round(affine[:3, 3] / FRAME_QUANTUM_MM) * FRAME_QUANTUM_MM
    header = img.header.copy() if isinstance(img, nb.Nifti1Image) else None
    out = nb.Nifti1Image(np.asanyarray(img.dataobj), affine, header)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out
