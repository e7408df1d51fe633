"""PVS measures per region (the paper's volumes and PVSnm) and a per-cluster census."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

from mcpvs_bidsapp.outputs import spec


def label_clusters(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected PVS clusters (as a rater would count a tube crossing slices diagonally)."""
    return ndimage.label(mask > 0, structure=spec.CONNECTIVITY_26)


def cluster_census(mask: np.ndarray, dseg: np.ndarray, affine: np.ndarray) -> pd.DataFrame:
    """One row per cluster: world centroid, region of the centroid, size and shape.

    Length is the extent along the cluster's first principal axis plus one voxel's extent
    along that axis (in mm);
    mean width = 2 * sqrt(volume / (pi * length)), the diameter of a cylinder of that
    volume and length; orientation is the unit principal axis in world (RAS) coordinates.
    """
    labels, n_clusters = label_clusters(mask)
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    rows = []
    if n_clusters:
        objects = ndimage.find_objects(labels)
        for idx, slc in enumerate(objects, start=1):
            local = labels[slc] == idx
            ijk = np.argwhere(local) + np.array([s.start for s in slc])
            xyz = nb.affines.apply_affine(affine, ijk)
            centroid_ijk = np.rint(ijk.mean(0)).astype(int)
            region = spec.region_of_label(dseg[tuple(centroid_ijk)])
            centroid = xyz.mean(0)
            if len(xyz) > 1:
                _, _, vt = np.linalg.svd(xyz - centroid, full_matrices=False)
                axis = vt[0]
                proj = (xyz - centroid) @ axis
                voxel_axes = affine[:3, :3] / zooms  # unit vectors of the voxel axes
                length = float(proj.max() - proj.min()) + float(np.abs(axis @ voxel_axes) @ zooms)
            else:
                axis = np.array([np.nan, np.nan, np.nan])
                length = float(zooms.max())
            if np.isfinite(axis).all() and axis[np.argmax(np.abs(axis))] < 0:
                axis = -axis  # one sign convention, so orientations can be averaged
            volume = len(ijk) * voxel_volume
            rows.append(
                {
                    "cluster_id": idx,
                    "region": region,
                    "volume_mm3": volume,
                    "n_voxels": len(ijk),
                    "centroid_x_mm": centroid[0],
                    "centroid_y_mm": centroid[1],
                    "centroid_z_mm": centroid[2],
                    "length_mm": length,
                    "mean_width_mm": 2 * np.sqrt(volume / (np.pi * length)),
                    "orientation_x": axis[0],
                    "orientation_y": axis[1],
                    "orientation_z": axis[2],
                }
            )
    return pd.DataFrame(rows, columns=list(spec.CLUSTER_COLUMNS))


def region_measures(
    mask: np.ndarray,
    dseg: np.ndarray,
    brain_mask: np.ndarray,
    affine: np.ndarray,
    icv_mm3: float,
    census: pd.DataFrame,
    wmh: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per region (``spec.MEASURE_REGIONS``) with ``spec.MEASURE_COLUMNS``."""
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    pvs = (mask > 0) & (brain_mask > 0)
    regions = {r.label: dseg == r for r in spec.PVS_REGIONS}
    regions[spec.WHOLE_BRAIN] = brain_mask > 0
    rows = []
    for name, region in regions.items():
        in_region = pvs & region
        volume = float(in_region.sum() * voxel_volume)
        count = int(len(census)) if name == spec.WHOLE_BRAIN else int((census.region == name).sum())
        wmh_pct = np.nan
        if wmh is not None and in_region.any():
            wmh_pct = 100.0 * float((in_region & (wmh > 0)).sum()) / float(in_region.sum())
        rows.append(
            {
                "region": name,
                "pvs_volume_mm3": volume,
                "pvs_count": count,
                "mean_cluster_volume_mm3": volume / count if count else np.nan,
                "region_volume_mm3": float(region.sum() * voxel_volume),
                "icv_mm3": icv_mm3,
                "pvsnm": 1e6 * volume / icv_mm3 if icv_mm3 > 0 else np.nan,
                "wmh_overlap_pct": wmh_pct,
            }
        )
    return pd.DataFrame(rows, columns=list(spec.MEASURE_COLUMNS))
