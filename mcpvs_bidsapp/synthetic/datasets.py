"""Small real BIDS datasets for tests, container smoke tests and cluster tests.

Built from the real heads in ``../shared/data/t1w`` (never copied into the repository); the
``zoom_mm`` option resamples them to coarser voxels so that an end-to-end run takes well
under a minute per participant where only the plumbing is under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np

#: real whole-head T1w images of ../shared/data/t1w, with their scanner vendor
REAL_HEADS = {
    "philips_adni_sag3d_mprage_t1w.nii.gz": "Philips",
    "niivue_otsu_t1w.nii.gz": "Unknown",
    "arc2017_stroke_t1w.nii.gz": "Unknown",
}


def shared_data_dir(start: Path | None = None) -> Path:
    """``../shared/data`` beside the project checkout."""
    root = Path(start or __file__).resolve()
    for parent in root.parents:
        candidate = parent.parent / "shared" / "data"
        if (parent / "setup.cfg").exists() and candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def resample_head(src: Path, dest: Path, zoom_mm: float | None) -> Path:
    """Copy a head, optionally resampled to isotropic ``zoom_mm`` voxels (same orientation)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not zoom_mm:
        shutil.copyfile(src, dest)
        return dest
    from scipy import ndimage

    img = nb.load(str(src))
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    factor = zooms / zoom_mm
    small = ndimage.zoom(data, factor, order=1)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / zooms * zoom_mm
    # keep the corner voxel's centre where it was (half-voxel shift of the new grid)
    affine[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ ((zoom_mm / zooms - 1) / 2)
    out = nb.Nifti1Image(small.astype(np.float32), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.to_filename(dest)
    return dest


def make_small_bids(
    dest: Path,
    shared_data: Path | None = None,
    n_participants: int = 3,
    zoom_mm: float | None = 2.0,
    sessions: bool = False,
) -> Path:
    """A BIDS dataset of real heads (cycled if more participants than heads are asked).

    Writes dataset_description.json, participants.tsv (age, vendor) and T1w sidecars with
    Manufacturer, so the group level has something to read.
    """
    shared_data = Path(shared_data or shared_data_dir())
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dataset_description.json").write_text(
        json.dumps({"Name": "mcpvs small real test set", "BIDSVersion": "1.9.0"}, indent=2)
    )
    heads = list(REAL_HEADS.items())
    rows = ["participant_id\tage\tvendor"]
    for i in range(n_participants):
        name, vendor = heads[i % len(heads)]
        label = f"{i + 1:02d}"
        parts = [f"sub-{label}"] + (["ses-1"] if sessions else [])
        anat = dest.joinpath(*parts, "anat")
        stem = "_".join(parts) + "_T1w"
        resample_head(shared_data / "t1w" / name, anat / f"{stem}.nii.gz", zoom_mm)
        (anat / f"{stem}.json").write_text(
            json.dumps({"Manufacturer": vendor, "MagneticFieldStrength": 3}, indent=2)
        )
        rows.append(f"sub-{label}\t{60 + 5 * i}\t{vendor}")
    (dest / "participants.tsv").write_text("\n".join(rows) + "\n")
    return dest


def storage_orders(img: nb.Nifti1Image, oblique_deg: tuple[float, float] = (20.0, 10.0)) -> dict:
    """One head stored four ways: ``{"RAS", "LPI", "LIA", "oblique"}`` -> image.

    RAS, LPI and LIA hold the same voxels in another order with the affine that keeps every
    voxel at the same world position (LIA is FreeSurfer's conformed order). ``oblique`` holds
    the RAS voxels with the affine turned ``oblique_deg`` = (pitch about the left-right axis,
    yaw about the superior axis) degrees about the world origin: the voxel grid at an angle
    to the scanner, as an oblique acquisition's header says. Measures must not depend on which
    (tests/integration/test_invariance.py, benchmarks/orientation.py).
    """
    ras = nb.as_closest_canonical(img)
    data = np.asanyarray(ras.dataobj)
    out = {"RAS": nb.Nifti1Image(data, ras.affine, ras.header)}
    for codes in ("LPI", "LIA"):
        out[codes] = reorder(ras, codes)
    pitch, yaw = np.deg2rad(oblique_deg)
    rot_x = np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
    )
    rot_z = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    turn = np.eye(4)
    turn[:3, :3] = rot_z @ rot_x
    out["oblique"] = nb.Nifti1Image(data, turn @ ras.affine, ras.header)
    for image in out.values():
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
    return out


def reorder(img: nb.Nifti1Image, axcodes: str) -> nb.Nifti1Image:
    """The same voxels stored in another order (``"LIA"``...), at the same world positions."""
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    data = np.asanyarray(img.dataobj)
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(axcodes))
    affine = img.affine @ inv_ornt_aff(transform, data.shape)
    out = nb.Nifti1Image(apply_orientation(data, transform), affine, img.header)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def with_bias_field(img: nb.Nifti1Image, log_range: float = 0.45) -> nb.Nifti1Image:
    """The head times a smooth multiplicative field, ``exp(log_range * u)`` with ``u`` from -1
    to 1 along the world's left-posterior-inferior to right-anterior-superior diagonal
    (0.64 to 1.57 for the default): a strong receive-coil bias, as at 3 T with a small coil."""
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    ijk = np.indices(data.shape).reshape(3, -1).T
    xyz = nb.affines.apply_affine(img.affine, ijk)
    u = xyz @ (np.ones(3) / np.sqrt(3))
    u = 2 * (u - u.min()) / (u.max() - u.min()) - 1
    field = np.exp(log_range * u).reshape(data.shape).astype(np.float32)
    return nb.Nifti1Image(data * field, img.affine)
