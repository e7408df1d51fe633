"""PVS measures per region (the paper's volumes and PVSnm) and a per-cluster census."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from scipy import ndimage

REGION_LABELS = {"BG": 1, "WM": 2}
MEASURE_COLUMNS = [
    "region",
    "pvs_volume_mm3",
    "pvs_count",
    "mean_cluster_volume_mm3",
    "region_volume_mm3",
    "icv_mm3",
    "pvsnm",
    "wmh_overlap_pct",
]
CLUSTER_COLUMNS = [
    "cluster_id",
    "region",
    "volume_mm3",
    "n_voxels",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "length_mm",
    "mean_width_mm",
    "orientation_x",
    "orientation_y",
    "orientation_z",
]
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def label_clusters(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected PVS clusters (as a rater would count a tube crossing slices diagonally)."""
    return ndimage.label(mask > 0, structure=_STRUCTURE_26)


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
            region_label = int(dseg[tuple(centroid_ijk)])
            region = {1: "BG", 2: "WM"}.get(region_label, "other")
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
    return pd.DataFrame(rows, columns=CLUSTER_COLUMNS)


def region_measures(
    mask: np.ndarray,
    dseg: np.ndarray,
    brain_mask: np.ndarray,
    affine: np.ndarray,
    icv_mm3: float,
    census: pd.DataFrame,
    wmh: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per region (BG, WM, whole_brain) with the columns of docs/outputs.md."""
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    pvs = (mask > 0) & (brain_mask > 0)
    regions = {name: dseg == label for name, label in REGION_LABELS.items()}
    regions["whole_brain"] = brain_mask > 0
    rows = []
    for name, region in regions.items():
        in_region = pvs & region
        volume = float(in_region.sum() * voxel_volume)
        count = int(len(census)) if name == "whole_brain" else int((census.region == name).sum())
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
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


class _MeasuresInputSpec(BaseInterfaceInputSpec):
    in_mask = File(exists=True, mandatory=True, desc="binary PVS mask")
    in_dseg = File(exists=True, mandatory=True, desc="regions (1 BG, 2 WM, 3 other)")
    in_brain_mask = File(exists=True, mandatory=True, desc="brain mask")
    icv_mm3 = traits.Float(mandatory=True, desc="intracranial volume")
    in_wmh = File(exists=True, desc="WMH mask on the same grid (optional)")


class _MeasuresOutputSpec(TraitedSpec):
    out_measures = File(exists=True, desc="desc-pvs_measures.tsv")
    out_clusters = File(exists=True, desc="desc-pvs_clusters.tsv")


class PVSMeasures(SimpleInterface):
    """Volumes, counts and PVSnm per region, and the cluster census."""

    input_spec = _MeasuresInputSpec
    output_spec = _MeasuresOutputSpec

    def _run_interface(self, runtime):
        mask_img = nb.load(self.inputs.in_mask)
        mask = np.asanyarray(mask_img.dataobj) > 0
        dseg = np.asanyarray(nb.load(self.inputs.in_dseg).dataobj).astype(np.int16)
        brain = np.asanyarray(nb.load(self.inputs.in_brain_mask).dataobj) > 0
        wmh = None
        if isdefined(self.inputs.in_wmh):
            wmh = np.asanyarray(nb.load(self.inputs.in_wmh).dataobj) > 0
        census = cluster_census(mask & brain, dseg, mask_img.affine)
        measures = region_measures(
            mask, dseg, brain, mask_img.affine, self.inputs.icv_mm3, census, wmh
        )
        cwd = Path(runtime.cwd)
        measures.to_csv(
            cwd / "measures.tsv", sep="\t", index=False, na_rep="n/a", float_format="%.6g"
        )
        census.to_csv(
            cwd / "clusters.tsv", sep="\t", index=False, na_rep="n/a", float_format="%.6g"
        )
        self._results["out_measures"] = str(cwd / "measures.tsv")
        self._results["out_clusters"] = str(cwd / "clusters.tsv")
        return runtime
