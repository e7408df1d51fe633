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
* Element metrics (:func:`element_metrics`) follow the VALDO challenge (Sudre et al. 2024):
  26-connected elements, a predicted element matches a true one when their IoU exceeds 0.1,
  matches are one-to-one (optimal assignment on IoU). They are stricter than the "any
  overlap" cluster rule: one long predicted band that touches ten true PVS counts once, and a
  one-voxel graze of a large true element does not count. Report them beside voxel Dice so
  figures compare with the challenges.
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


def _element_labels(a: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    lab, n = ndi.label(_as_bool(a), structure=_STRUCT26)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    return lab, n, sizes


def element_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    iou_threshold: float = 0.1,
    ignore: np.ndarray | None = None,
) -> dict[str, object]:
    """VALDO-style element-wise detection: 26-connected elements, IoU > ``iou_threshold``,
    one-to-one matching.

    Every pair of overlapping (true, predicted) elements gets its IoU (voxels in common over
    voxels in either); pairs above the threshold are matched one-to-one by an optimal
    assignment that maximises the summed IoU (``scipy.optimize.linear_sum_assignment``), so
    a predicted element can be credited to one true element only.

    ``ignore`` (optional boolean mask): predicted elements lying mostly (> 50 % of their
    voxels) inside it and matching no true element are neither true nor false positives. The
    phantoms use it for sub-resolution PVS: tubes inserted into the image whose coverage never
    reaches the 50 % truth rule, so that finding a faint structure that is really there is not
    scored as a false alarm.

    Returns counts, ``element_precision`` / ``element_recall`` / ``element_f1`` (same empty
    conventions as :func:`cluster_detection`), and per-element arrays ``true_matched``
    (bool, true elements in label order), ``true_sizes`` (voxels), ``true_iou`` (IoU of each
    true element's match, 0 when unmatched), ``pred_matched`` and ``pred_sizes``, so callers
    can break recall down by size or contrast.
    """
    from scipy.optimize import linear_sum_assignment

    p, t = _as_bool(pred), _as_bool(truth)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: prediction {p.shape} vs truth {t.shape}")
    lt, n_t, size_t = _element_labels(t)
    lp, n_p, size_p = _element_labels(p)
    true_matched = np.zeros(n_t, bool)
    true_iou = np.zeros(n_t, float)
    pred_matched = np.zeros(n_p, bool)
    both = p & t
    if n_t and n_p and both.any():
        pair = lt[both].astype(np.int64) * (n_p + 1) + lp[both]
        keys, inter = np.unique(pair, return_counts=True)
        it, ip = keys // (n_p + 1), keys % (n_p + 1)
        iou = inter / (size_t[it] + size_p[ip] - inter)
        ok = iou > iou_threshold
        it, ip, iou = it[ok], ip[ok], iou[ok]
        if len(iou):
            # compact the candidate pairs to a small dense cost matrix
            ut, rt = np.unique(it, return_inverse=True)
            up, rp = np.unique(ip, return_inverse=True)
            cost = np.zeros((len(ut), len(up)))
            cost[rt, rp] = -iou
            rows, cols = linear_sum_assignment(cost)
            good = cost[rows, cols] < 0
            true_matched[ut[rows[good]] - 1] = True
            true_iou[ut[rows[good]] - 1] = -cost[rows[good], cols[good]]
            pred_matched[up[cols[good]] - 1] = True
    n_ignored = 0
    if ignore is not None and n_p:
        ig = _as_bool(ignore)
        frac = ndi.mean(ig.astype(float), lp, np.arange(1, n_p + 1))
        ignored = (np.asarray(frac) > 0.5) & ~pred_matched
        n_ignored = int(ignored.sum())
    tp = int(true_matched.sum())
    fp = int(n_p - pred_matched.sum() - n_ignored)
    fn = int(n_t - tp)
    n_scored = n_p - n_ignored
    if n_scored == 0 and n_t == 0:
        prec = rec = f1 = 1.0
    else:
        prec = _safe_div(int(pred_matched.sum()), n_scored)
        rec = _safe_div(tp, n_t)
        if np.isnan(prec) or np.isnan(rec):
            f1 = 0.0
        else:
            f1 = _safe_div(2 * prec * rec, prec + rec) if (prec + rec) > 0 else 0.0
    return {
        "n_pred_elements": int(n_p),
        "n_true_elements": int(n_t),
        "n_ignored_elements": n_ignored,
        "element_tp": tp,
        "element_fp": fp,
        "element_fn": fn,
        "element_precision": prec,
        "element_recall": rec,
        "element_f1": f1,
        "true_matched": true_matched,
        "true_sizes": size_t[1:].copy(),
        "true_iou": true_iou,
        "pred_matched": pred_matched,
        "pred_sizes": size_p[1:].copy(),
    }


_ELEMENT_SCALARS = (
    "n_pred_elements",
    "n_true_elements",
    "element_precision",
    "element_recall",
    "element_f1",
)


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
    em = element_metrics(p, t)
    out.update({k: em[k] for k in _ELEMENT_SCALARS})
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
