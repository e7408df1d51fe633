"""Agreement between a predicted and a reference PVS mask, overall and per region.

One module used by the tests, the phantom benchmark, the group level (``--manual-masks``)
and the docs, so that every figure the project reports is computed the same way.

Conventions (chosen so that group tables never need special cases):

* Dice of two empty masks is **1.0** (perfect agreement on "no PVS"); Dice of one empty and
  one non-empty mask is 0.0.
* Precision with no predicted voxel is **nan** (undefined: nothing was claimed), and recall
  with no true voxel is **nan**. Averages across participants should use ``np.nanmean``.
* Relative volume difference is ``(pred - truth) / truth``; nan when the truth is empty.
* Clusters are 26-connected components. A predicted cluster is a true detection when it
  overlaps any true cluster by at least one voxel; a true cluster is found when any predicted
  cluster overlaps it. Cluster precision = detected predicted / all predicted, cluster recall
  = found true / all true, F1 their harmonic mean (same empty-mask conventions as above).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from mcpvs_bidsapp.outputs import spec

#: region codes of the regions image, by name
REGION_LABELS: dict[str, int] = {r.label: int(r) for r in spec.PVS_REGIONS}

_STRUCT26 = spec.CONNECTIVITY_26


def _as_bool(a: np.ndarray) -> np.ndarray:
    return np.asarray(a) > 0


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Sørensen-Dice overlap; 1.0 when both masks are empty."""
    p, t = _as_bool(pred), _as_bool(truth)
    den = int(p.sum()) + int(t.sum())
    if den == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / den


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel precision TP / (TP + FP); nan when nothing is predicted."""
    p, t = _as_bool(pred), _as_bool(truth)
    return _safe_div(np.logical_and(p, t).sum(), p.sum())


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel recall (sensitivity) TP / (TP + FN); nan when the truth is empty."""
    p, t = _as_bool(pred), _as_bool(truth)
    return _safe_div(np.logical_and(p, t).sum(), t.sum())


def volume_difference(
    pred: np.ndarray, truth: np.ndarray, zooms: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[float, float]:
    """(pred - truth) volume in mm³ and relative to the true volume (nan if truth empty)."""
    vox = float(np.prod(zooms[:3]))
    vp = float(_as_bool(pred).sum()) * vox
    vt = float(_as_bool(truth).sum()) * vox
    return vp - vt, _safe_div(vp - vt, vt)


def cluster_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """Per-PVS detection with 26-connected clusters: precision, recall and F1.

    A cluster counts as matched when it shares at least one voxel with a cluster of the other
    mask (the usual "any overlap" rule of lesion-wise detection).
    """
    p, t = _as_bool(pred), _as_bool(truth)
    lp, n_p = ndi.label(p, structure=_STRUCT26)
    lt, n_t = ndi.label(t, structure=_STRUCT26)
    both = np.logical_and(p, t)
    matched_p = np.unique(lp[both]).size if n_p else 0
    matched_t = np.unique(lt[both]).size if n_t else 0
    if n_p == 0 and n_t == 0:
        prec = rec = f1 = 1.0
    else:
        prec = _safe_div(matched_p, n_p)
        rec = _safe_div(matched_t, n_t)
        if np.isnan(prec) or np.isnan(rec):
            f1 = 0.0
        else:
            f1 = _safe_div(2 * prec * rec, prec + rec) if (prec + rec) > 0 else 0.0
    return {
        "n_pred_clusters": int(n_p),
        "n_true_clusters": int(n_t),
        "cluster_precision": prec,
        "cluster_recall": rec,
        "cluster_f1": f1,
    }


def element_metrics(
    pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.1
) -> dict[str, float | int]:
    """Element-wise (per-PVS) detection as in the VALDO challenge: precision, recall, F1.

    Elements are 26-connected components. A predicted and a true element *match* when their
    intersection over union exceeds ``iou_threshold`` (0.1 in VALDO); matching is one-to-one,
    chosen to maximise the summed IoU (``scipy.optimize.linear_sum_assignment``), so one large
    prediction covering several true PVS counts once. Stricter than :func:`cluster_detection`
    (any overlap, many-to-many). Empty-mask conventions as the rest of this module: both empty
    gives 1.0 everywhere; one empty gives F1 0.0 and nan for the undefined ratio.
    """
    from scipy.optimize import linear_sum_assignment

    p, t = _as_bool(pred), _as_bool(truth)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: prediction {p.shape} vs truth {t.shape}")
    lp, n_p = ndi.label(p, structure=_STRUCT26)
    lt, n_t = ndi.label(t, structure=_STRUCT26)
    tp = 0
    if n_p and n_t:
        both = np.logical_and(p, t)
        size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
        size_t = np.bincount(lt.ravel(), minlength=n_t + 1)
        # overlapping pairs only: a cohort mask has thousands of elements, few touch each other
        pairs, inter = np.unique(np.stack([lp[both], lt[both]]), axis=1, return_counts=True)
        iou = inter / (size_p[pairs[0]] + size_t[pairs[1]] - inter)
        keep = iou > iou_threshold
        pairs, iou = pairs[:, keep], iou[keep]
        if iou.size:
            rows, row_idx = np.unique(pairs[0], return_inverse=True)
            cols, col_idx = np.unique(pairs[1], return_inverse=True)
            matrix = np.zeros((rows.size, cols.size))
            matrix[row_idx, col_idx] = iou
            r, c = linear_sum_assignment(matrix, maximize=True)
            tp = int(np.count_nonzero(matrix[r, c] > iou_threshold))
    if n_p == 0 and n_t == 0:
        prec = rec = f1 = 1.0
    else:
        prec, rec = _safe_div(tp, n_p), _safe_div(tp, n_t)
        f1 = 2.0 * tp / (n_p + n_t)
    return {
        "n_pred_elements": int(n_p),
        "n_true_elements": int(n_t),
        "element_tp": tp,
        "element_fp": int(n_p - tp),
        "element_fn": int(n_t - tp),
        "element_precision": prec,
        "element_recall": rec,
        "element_f1": f1,
    }


def _all_metrics(p: np.ndarray, t: np.ndarray, zooms: Sequence[float]) -> dict[str, float | int]:
    vox = float(np.prod(zooms[:3]))
    abs_vd, rel_vd = volume_difference(p, t, zooms)
    out: dict[str, float | int] = {
        "dice": dice(p, t),
        "precision": precision(p, t),
        "recall": recall(p, t),
        "pred_volume_mm3": float(p.sum()) * vox,
        "true_volume_mm3": float(t.sum()) * vox,
        "volume_diff_mm3": abs_vd,
        "abs_volume_diff_mm3": abs(abs_vd),
        "rel_volume_diff": rel_vd,
    }
    out.update(cluster_detection(p, t))
    return out


def compare_masks(
    pred: np.ndarray,
    truth: np.ndarray,
    regions: np.ndarray | None = None,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    region_labels: Mapping[str, int] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Every metric overall (key ``"all"``) and, given ``regions``, per region (``BG``, ``WM``).

    Per-region metrics restrict *both* masks to the region's voxels, so a cluster that crosses
    a region border is split there (the same rule as the per-region volumes in the measures
    table).
    """
    p, t = _as_bool(pred), _as_bool(truth)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: prediction {p.shape} vs truth {t.shape}")
    result = {"all": _all_metrics(p, t, zooms)}
    if regions is not None:
        regions = np.asarray(regions)
        if regions.shape != p.shape:
            raise ValueError(f"regions shape {regions.shape} differs from mask shape {p.shape}")
        for name, label in (region_labels or REGION_LABELS).items():
            r = regions == label
            result[name] = _all_metrics(p & r, t & r, zooms)
    return result
