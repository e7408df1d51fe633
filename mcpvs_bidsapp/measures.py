"""PVS measures per region (the paper's volumes and PVSnm) and a per-cluster census."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pandas as pd
from scipy import ndimage

from mcpvs_bidsapp.orientation import voxel_sizes
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.spec import Region


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
    """One row per region (``spec.MEASURE_REGIONS``) with ``spec.MEASURE_COLUMNS``.

    The BG and WM rows carry the estimated visual score of the paper's rating rules
    (:mod:`mcpvs_bidsapp.visual_scores`), the WM total being that row's cluster count.
    """
    from mcpvs_bidsapp.visual_scores import estimate

    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    pvs = (mask > 0) & (brain_mask > 0)
    regions = {r.label: dseg == r for r in spec.PVS_REGIONS}
    regions[spec.WHOLE_BRAIN] = brain_mask > 0
    visual = estimate(pvs, dseg, affine, wm_total=int((census.region == Region.WM.label).sum()))
    rows = []
    for name, region in regions.items():
        in_region = pvs & region
        volume = float(in_region.sum() * voxel_volume)
        count = int(len(census)) if name == spec.WHOLE_BRAIN else int((census.region == name).sum())
        wmh_pct = np.nan
        if wmh is not None and in_region.any():
            wmh_pct = 100.0 * float((in_region & (wmh > 0)).sum()) / float(in_region.sum())
        if not region.any():  # no region, no measure: n/a, never a 0 that reads as "no PVS"
            volume, count = np.nan, 0
        rows.append(
            {
                "region": name,
                "pvs_volume_mm3": volume,
                "pvs_count": count if region.any() else np.nan,
                "mean_cluster_volume_mm3": volume / count if count else np.nan,
                "region_volume_mm3": float(region.sum() * voxel_volume),
                "icv_mm3": icv_mm3,
                "pvsnm": 1e6 * volume / icv_mm3 if icv_mm3 > 0 else np.nan,
                "wmh_overlap_pct": wmh_pct,
                "est_visual_score": visual[name].score if name in visual else np.nan,
                "est_visual_count": visual[name].count if name in visual else np.nan,
                "est_visual_section": visual[name].section if name in visual else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(spec.MEASURE_COLUMNS))


# --- QC flags --------------------------------------------------------------------------------

#: fewer whole-brain PVS clusters than this is an implausibly low load for an adult 1 mm T1w:
#: the healthy 41-year-old Philips head shows 90 visually confirmed PVS-like dots among its
#: 154 darkest candidates, the mcPVS-Net authors' own output on their demo T1w has 427
#: clusters, and the first built-in method's 3 clusters on the Philips head were a failure
#: nobody was told about (issue #15)
QC_MIN_CLUSTERS = 20
#: |L - R| / (L + R) of the PVS volume above this (one side holds 3x the other) is flagged
#: when the head has at least QC_MIN_CLUSTERS clusters (fewer make the index noise)
QC_MAX_ASYMMETRY = 0.5
#: PVS volume within QC_NEAR_MM of a lesion (the lesion mask) or of a fluid body (ventricles,
#: cavities, lacunes >= 3 mm) above this fraction is flagged: none of the 113 visually
#: confirmed real PVS on the shared heads lies in that band, while a cavity wall or a
#: ventricle edge taken for PVS does (the first built-in method: 68 % of the stroke head's
#: PVS volume was the infarct's wall)
QC_NEAR_MM = 3.0
QC_MAX_NEAR_FRACTION = 0.25


def _hemisphere_volumes(pvs: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> tuple:
    """PVS volume left and right of the brain's mid-sagittal plane (world x = the brain
    mask's median world x; a head rotated about its vertical axis blurs the split)."""
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    mid = float(np.median(nb.affines.apply_affine(affine, np.argwhere(brain))[:, 0]))
    x = nb.affines.apply_affine(affine, np.argwhere(pvs))[:, 0]
    return float((x < mid).sum() * voxel_volume), float((x >= mid).sum() * voxel_volume)


def qc_flags(
    mask: np.ndarray,
    dseg: np.ndarray,
    brain_mask: np.ndarray,
    affine: np.ndarray,
    census: pd.DataFrame,
    *,
    t1w: np.ndarray | None = None,
    lesion: np.ndarray | None = None,
    caveats: list[dict] | None = None,
) -> dict:
    """Checks a reader should see before trusting the numbers; every check's value.

    Returns ``{"QCFlags": [raised flag, ...], "QCChecks": {name: {...}}}``: a raised flag is
    ``{"flag", "message", "value", "threshold"}``; ``QCChecks`` holds every check's ``value``,
    ``threshold`` and ``raised`` (null value: not assessable, e.g. no preprocessed T1w).
    ``caveats`` are flags the run plan raises whatever the image (a method on regions it
    is known to misread, e.g. the built-in method on ``--regions fast``), each
    ``{"flag", "message"}``; they are raised as given. Checks: ``low_load`` (fewer than
    :data:`QC_MIN_CLUSTERS` clusters), ``no_bg_pvs`` (no
    cluster in the BG), ``asymmetry`` (left/right volume index above
    :data:`QC_MAX_ASYMMETRY`), ``near_lesion_or_csf`` (fraction of the PVS volume within
    :data:`QC_NEAR_MM` mm of the lesion mask or of a fluid body above
    :data:`QC_MAX_NEAR_FRACTION`), ``coarse_voxels`` (a voxel edge of ``affine`` above
    :data:`mcpvs_bidsapp.validation.COARSE_VOXEL_MM`).
    """
    from mcpvs_bidsapp import validation, vesselness

    brain = brain_mask > 0
    pvs = (mask > 0) & brain
    n = int(len(census))
    n_bg = int((census.region == spec.Region.BG.label).sum()) if n else 0
    checks: dict[str, dict] = {}
    checks["low_load"] = {"value": n, "threshold": QC_MIN_CLUSTERS, "raised": n < QC_MIN_CLUSTERS}
    has_bg = bool((dseg == spec.Region.BG).any())
    checks["no_bg_pvs"] = {"value": n_bg, "threshold": 1, "raised": has_bg and n_bg == 0}
    left, right = _hemisphere_volumes(pvs, brain, affine) if pvs.any() else (0.0, 0.0)
    index = abs(left - right) / (left + right) if left + right > 0 else None
    checks["asymmetry"] = {
        "value": None if index is None else round(index, 3),
        "threshold": QC_MAX_ASYMMETRY,
        "raised": bool(index is not None and n >= QC_MIN_CLUSTERS and index > QC_MAX_ASYMMETRY),
        "left_mm3": left,
        "right_mm3": right,
    }
    # quantised, as the voxel-wise steps read them: a 1.5 mm voxel stored in float32 is not
    # "coarser than 1.5 mm"
    zooms = np.asarray(voxel_sizes(affine))
    near = None
    if t1w is not None or lesion is not None:
        body = np.zeros(pvs.shape, bool)
        if t1w is not None:
            regions = np.where(brain, dseg, 0)
            body |= vesselness.read_fluid(
                np.asarray(t1w, np.float32), regions, float(zooms.min()), vesselness.DEFAULT_PARAMS
            ).bodies
        if lesion is not None:
            body |= lesion > 0
        if pvs.any() and body.any():
            dist = ndimage.distance_transform_edt(~body, sampling=zooms)
            near = float((pvs & (dist <= QC_NEAR_MM)).sum() / pvs.sum())
        elif pvs.any():
            near = 0.0
    checks["near_lesion_or_csf"] = {
        "value": None if near is None else round(near, 3),
        "threshold": QC_MAX_NEAR_FRACTION,
        "raised": bool(near is not None and near > QC_MAX_NEAR_FRACTION),
        "distance_mm": QC_NEAR_MM,
        "lesion_mask": lesion is not None,
    }
    checks["coarse_voxels"] = {
        "value": round(float(zooms.max()), 3),
        "threshold": validation.COARSE_VOXEL_MM,
        "raised": bool(zooms.max() > validation.COARSE_VOXEL_MM),
    }
    messages = {
        "low_load": f"only {n} PVS clusters (fewer than {QC_MIN_CLUSTERS}): implausibly low for "
        "an adult brain; check the image quality and the method before reading 'few PVS'",
        "no_bg_pvs": "no PVS cluster in the basal ganglia, where adults nearly always have "
        "some; check the BG region and the image contrast",
        "asymmetry": f"left/right PVS volume {left:.0f} / {right:.0f} mm^3 (asymmetry index "
        f"{index if index is not None else float('nan'):.2f} > {QC_MAX_ASYMMETRY}): a lesion, "
        "an artefact or a region error on one side?",
        "near_lesion_or_csf": f"{100 * (near or 0):.0f} % of the PVS volume lies within "
        f"{QC_NEAR_MM:g} mm of a lesion or a fluid body (ventricle, cavity): cavity walls and "
        "ventricle edges mimic PVS",
        "coarse_voxels": f"voxels of {validation.format_mm(zooms)} are coarser than "
        f"{validation.COARSE_VOXEL_MM:g} mm; the methods were validated on 1 mm-class T1w: "
        "PVS narrower than a voxel are missed and these volumes are not comparable with 1 mm "
        "data",
    }
    raised = [
        {"flag": k, "message": messages[k], "value": c["value"], "threshold": c["threshold"]}
        for k, c in checks.items()
        if c["raised"]
    ]
    for caveat in caveats or []:
        checks[caveat["flag"]] = {"value": None, "threshold": None, "raised": True}
        raised.append({"value": None, "threshold": None, **caveat})
    return {"QCFlags": raised, "QCChecks": checks}
