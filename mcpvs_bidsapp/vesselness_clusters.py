"""The built-in method's learned cluster rule: a logistic model that keeps or drops candidates.

Why (measured, docs/builtin-method.md): the hand-set thresholds of :mod:`.vesselness` sat on a
trade-off that could not reach the issue's targets: lowering the seed thresholds found more of
the faint PVS (pre-rule cluster recall 0.72 → 0.89 on the tune heads' realistic phantoms) but
let in two noise blobs for every PVS (precision 0.78 → 0.36). The candidates' size, contrast and
dot/tube response, taken together and in units of each image's own noise, separate the two far
better than any one threshold: this model, fitted on the tune heads only, kept the report
heads' recall at 0.76 for a precision of 0.87 (thresholds alone: 0.66 / 0.88).

A logistic model and not boosted trees: it had the same held-out figures (trees overfitted the
tune heads: higher there, not on the report heads), its 14 coefficients can be read and
checked, and it is stored as plain JSON numbers that are read, never run (no pickle).
The training script is ``benchmarks/train_cluster_model.py``; the file records its seeds,
heads, presets and the candidate parameters it was fitted for.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

#: shipped models (package data), by name
MODEL_DIR = Path(__file__).parent / "data" / "models"
DEFAULT_MODEL = "clusters-logistic-v3"

#: the features of one candidate cluster, in this order (all but ``back_mean`` and the
#: distances in units of the image's own noise or thresholds, so that they transfer between
#: scanners)
FEATURES = (
    "log_size",  # log of the number of voxels (isotropic grid)
    "csm_max_z",  # deepest smoothed contrast / contrast noise SD
    "csm_mean_z",  # mean smoothed contrast / contrast noise SD
    "csm_int_z",  # summed smoothed contrast / noise SD / sqrt(voxels): a matched-filter SNR
    "resp_max",  # strongest dot/tube response (noise units)
    "resp_mean",  # mean dot/tube response (noise units)
    "cv_max_t",  # deepest coverage dip / this image's coverage threshold
    "back_mean",  # mean local background (WM ≈ 1; low in T1-hypointense WM)
    "depth_max",  # mm from the BG ∪ WM border at the cluster's deepest voxel
    "fluid_dist",  # mm from the nearest fluid body (capped at 30)
    "bg_frac",  # fraction of the cluster in the basal ganglia
    "seed",  # 1 when the cluster holds a dot/tube seed
    "extent",  # SD of the voxel positions along the cluster's long axis (mm)
    "extent2",  # ... along its second axis (mm): thin tubes and dots are small here
)
FLUID_DIST_CAP_MM = 30.0


@dataclass(frozen=True)
class ClusterModel:
    """A logistic model over :data:`FEATURES`, read from JSON (numbers only)."""

    name: str
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    candidate_params: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    #: sha256 of the file it was read from (recorded in each run's sidecar)
    sha256: str = ""

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(PVS) of each row of ``x`` (features in :attr:`features` order)."""
        z = ((np.asarray(x, float) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": "logistic",
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
            "candidate_params": self.candidate_params,
            "provenance": self.provenance,
        }


def _numbers(d: dict, key: str, n: int, path: Path) -> np.ndarray:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, int | float) for x in v):
        raise ValueError(f"{path}: {key!r} must be a list of {n} numbers")
    a = np.asarray(v, float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: {key!r} holds a non-finite number")
    return a


def read_model(path: Path) -> ClusterModel:
    """Read and check a cluster model file: JSON numbers only, features known, sizes agree."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        d = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(d, dict) or d.get("kind") != "logistic":
        raise ValueError(f"{path}: not a logistic cluster model (kind {d.get('kind')!r})")
    feats = d.get("features")
    if not isinstance(feats, list) or not feats or any(f not in FEATURES for f in feats):
        raise ValueError(f"{path}: features must be a non-empty list from {FEATURES}")
    n = len(feats)
    scale = _numbers(d, "scale", n, path)
    if np.any(scale <= 0):
        raise ValueError(f"{path}: 'scale' must be positive")
    intercept, threshold = d.get("intercept"), d.get("threshold")
    if not isinstance(intercept, int | float) or not math.isfinite(intercept):
        raise ValueError(f"{path}: 'intercept' must be a number")
    if not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
        raise ValueError(f"{path}: 'threshold' must be a number in (0, 1)")
    return ClusterModel(
        name=str(d.get("name", path.stem)),
        features=tuple(feats),
        mean=_numbers(d, "mean", n, path),
        scale=scale,
        coef=_numbers(d, "coef", n, path),
        intercept=float(intercept),
        threshold=float(threshold),
        candidate_params=dict(d.get("candidate_params") or {}),
        provenance=dict(d.get("provenance") or {}),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


@lru_cache(maxsize=8)
def load_model(name: str) -> ClusterModel:
    """A shipped model by name (``data/models/<name>.json``)."""
    path = MODEL_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in MODEL_DIR.glob("*.json"))
        raise ValueError(f"unknown cluster model {name!r} (shipped: {known})")
    return read_model(path)


def cluster_features(
    lab: np.ndarray,
    ids: np.ndarray,
    *,
    csm: np.ndarray,
    resp: np.ndarray,
    cv: np.ndarray,
    back: np.ndarray,
    depth: np.ndarray,
    bg: np.ndarray,
    fluid_dist: np.ndarray | None,
    seeds: np.ndarray,
    sd_c: float,
    t_abs: float,
    iso: float,
) -> np.ndarray:
    """Features (:data:`FEATURES` order) of the clusters ``ids`` of the label image ``lab``.

    All maps are on the method's cropped isotropic grid: ``depth`` mm from the BG ∪ WM border,
    ``fluid_dist`` mm from the nearest fluid body (None: the image has none), ``seeds`` the
    dilated seed mask (the same maps the hand-set rules use, computed once by the caller).
    """
    ids = np.asarray(ids, int)
    n = len(ids)
    out = np.zeros((n, len(FEATURES)), float)
    if not n:
        return out
    size = np.asarray(ndi.sum_labels(np.ones(lab.shape, np.float32), lab, ids))
    sd_c, t_abs = max(float(sd_c), 1e-9), max(float(t_abs), 1e-9)
    cols = {
        "log_size": np.log(size),
        "csm_max_z": np.asarray(ndi.maximum(csm, lab, ids)) / sd_c,
        "csm_mean_z": np.asarray(ndi.mean(csm, lab, ids)) / sd_c,
        "csm_int_z": np.asarray(ndi.sum_labels(csm, lab, ids)) / sd_c / np.sqrt(size),
        "resp_max": np.asarray(ndi.maximum(resp, lab, ids)),
        "resp_mean": np.asarray(ndi.mean(resp, lab, ids)),
        "cv_max_t": np.asarray(ndi.maximum(cv, lab, ids)) / t_abs,
        "back_mean": np.asarray(ndi.mean(back, lab, ids)),
        "depth_max": np.asarray(ndi.maximum(depth, lab, ids)),
        "fluid_dist": (
            np.minimum(np.asarray(ndi.minimum(fluid_dist, lab, ids)), FLUID_DIST_CAP_MM)
            if fluid_dist is not None
            else np.full(n, FLUID_DIST_CAP_MM)
        ),
        "bg_frac": np.asarray(ndi.mean(bg.astype(np.float32), lab, ids)),
        "seed": np.asarray(ndi.maximum(seeds.astype(np.float32), lab, ids)),
    }
    ext = np.zeros((n, 2))
    objs = ndi.find_objects(lab)
    for k, i in enumerate(ids):
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            continue
        c = np.argwhere(lab[sl] == i).astype(float)
        if len(c) > 1:
            ev = np.sort(np.linalg.eigvalsh(np.cov(c.T) + 1e-6 * np.eye(3)))[::-1]
            ext[k] = np.sqrt(np.maximum(ev[:2], 0.0)) * iso
    cols["extent"], cols["extent2"] = ext[:, 0], ext[:, 1]
    for j, f in enumerate(FEATURES):
        out[:, j] = cols[f]
    return out
