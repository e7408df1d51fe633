"""Realistic PVS phantoms: faint, blurred, mostly sub-millimetre PVS and the mimics of a cohort.

The ``fluid`` preset of :mod:`.phantoms` (today's phantoms, kept as one preset) inserts
fluid-dark tubes with sharp edges: a fully covered voxel sits at 0.3 × WM. Real 1 mm T1w PVS
are nothing like that. Measured on the shared real heads (visually confirmed dark dots and
tubes, ``benchmarks/builtin_method_real_pvs.py``; docs/builtin-method.md):

====================  ======  =================  ==================  ===============
head                  n PVS   darkest voxel /    half-dip core /     apparent width
                              local tissue       local tissue        (FWHM, mm)
====================  ======  =================  ==================  ===============
Philips ADNI (41 y)   90      0.80 (0.70-0.84)   0.86                1.2 (1.1-1.5)
niivue otsu           10      0.77 (0.64-0.80)   0.81                1.1
arc2017 (elderly)     13      0.57 (0.51-0.71)   0.76                1.4
====================  ======  =================  ==================  ===============

(median, 10th-90th percentile). A PVS 1.2 mm wide at half depth with only a 20 % dip is a
sub-millimetre channel seen through the acquisition's point-spread function (PSF). This module
models exactly that:

* each PVS replaces tissue by fluid (0.25-0.35 × WM, drawn per PVS) over its exact
  partial-volume coverage (5×5×5 supersampling, :func:`.phantoms.tube_coverage`); the signal
  change ``coverage × (fluid − local tissue)`` then passes through a Gaussian PSF
  (FWHM 1.2-1.6 mm, drawn per phantom) before it is added to the real head, whose own noise
  and texture stay untouched;
* radii are log-normal (median 0.6 mm in WM, 0.7 mm in BG, clipped to 0.3-1.5 mm; about
  80 % below 0.8 mm); WM PVS are long medullary tubes (5-20 mm, radial towards the
  ventricles) or short ones seen through-plane as dots (1.5-4 mm, any direction); BG PVS are
  lenticulostriate tubes (3-10 mm, superior with a lateral fan) or dots;
* the truth stays **coverage ≥ 0.5** (unblurred), so a PVS thinner than ~0.45 mm radius may
  have no truth voxel at all: it is in the image but "sub-resolution", reported as such in
  the per-PVS table and given to :func:`mcpvs_bidsapp.metrics.element_metrics` as an
  ``ignore`` mask (finding it is neither a hit nor a false alarm);
* mimics (:func:`insert_mimics`): infarct cavities with a gliotic rim, lacunes (3-15 mm, with
  rim), T1-hypointense WMH patches, sulcal fundi and ventricle-edge notches, each with its
  own mask so that false positives can be counted per mimic.

Every PVS gets a row in :meth:`RealisticPhantom.table` (kind, region, diameter, length,
fluid level, truth voxels, darkest and median truth-voxel intensity over its local tissue),
so detection can be reported per size and contrast. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..outputs.spec import Region
from .phantoms import (
    LOADS,
    _bezier,
    _jitter,
    _unit,
    _voxel_world,
    tube_coverage,
    tube_layout,
)

#: default PSF FWHM range (mm) of a 1 mm 3D T1w; one value is drawn per phantom
PSF_FWHM_MM = (1.2, 1.6)
#: fluid level of a PVS relative to the local WM, drawn per PVS
FLUID_RANGE = (0.25, 0.35)
#: log-normal radius distribution (median mm, sigma of log) per region, clipped to RADIUS_CLIP
RADIUS_MEDIAN_MM = {"WM": 0.4, "BG": 0.5}
RADIUS_LOG_SD = 0.4
RADIUS_CLIP = (0.3, 1.5)
#: fraction of "dots" (short PVS seen through-plane) per region
DOT_FRACTION = {"WM": 0.35, "BG": 0.5}
BG_FRACTION = 0.35


@dataclass
class PVS:
    """One realistic PVS and what it looks like in the phantom."""

    id: int
    kind: str  # "tube" or "dot"
    region: str  # "BG" or "WM"
    control_points: np.ndarray  # (3, 3) world mm, quadratic Bézier
    radius_mm: float
    length_mm: float
    fluid_ratio: float  # fluid level / WM
    in_truth: bool = True  # False for inferior-BG PVS (in the image, not annotated)
    n_truth_voxels: int = 0
    peak_ratio: float = float("nan")  # darkest truth voxel / local tissue (noise-free)
    median_ratio: float = float("nan")  # median truth voxel / local tissue (noise-free)

    @property
    def diameter_mm(self) -> float:
        return 2.0 * self.radius_mm

    @property
    def sub_resolution(self) -> bool:
        """In the image but no voxel reaches the 50 % coverage of the truth rule."""
        return self.in_truth and self.n_truth_voxels == 0


@dataclass
class RealisticPhantom:
    image: np.ndarray  # float32 on the input grid (the input's own intensity scale)
    truth_mask: np.ndarray  # uint8: coverage >= 0.5 of the annotated PVS
    pvs_id: np.ndarray  # int32: id of the PVS each truth voxel belongs to (0 elsewhere)
    ignore_mask: np.ndarray  # bool: sub-resolution PVS (coverage > 0.1), see module docs
    local_tissue: np.ndarray  # float32 local tissue level of the normalised image
    psf_fwhm_mm: float
    pvs: list[PVS] = field(default_factory=list)
    mimics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool mask
    mimic_rims: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool rim mask
    #: the regions image with an infarct cavity relabelled "other" (3), as Samseg labels a
    #: cavity CSF; None when no regions were given
    regions: np.ndarray | None = None

    def table(self) -> list[dict]:
        """One row per PVS (plain types), for per-size and per-contrast detection."""
        rows = []
        for p in self.pvs:
            d = asdict(p)
            d.pop("control_points")
            d["diameter_mm"] = p.diameter_mm
            d["sub_resolution"] = p.sub_resolution
            rows.append(d)
        return rows

    def truth_median_ratio(self) -> float:
        """Median over all truth voxels of (noise-free phantom / local tissue)."""
        vals = [p.median_ratio for p in self.pvs if p.n_truth_voxels]
        return float(np.median(vals)) if vals else float("nan")


def _zooms(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))


def local_tissue(normalised: np.ndarray, regions_masks, sigma_mm: float, zooms) -> np.ndarray:
    """Smooth tissue level per region (normalised convolution), the level a PVS replaces."""
    out = np.zeros(normalised.shape, np.float32)
    sig = sigma_mm / np.asarray(zooms, float)
    for m in regions_masks:
        m = np.asarray(m) > 0
        if not m.any():
            continue
        w = m & (normalised > 0.5 * np.median(normalised[m]))
        num = ndi.gaussian_filter(np.where(w, normalised, 0).astype(np.float32), sig)
        den = ndi.gaussian_filter(w.astype(np.float32), sig)
        out[m] = (num / np.maximum(den, 1e-3))[m]
    return out


def _draw_radius(rng: np.random.Generator, region: str) -> float:
    r = RADIUS_MEDIAN_MM[region] * np.exp(rng.normal(0.0, RADIUS_LOG_SD))
    return float(np.clip(r, *RADIUS_CLIP))


def ventricles(normalised: np.ndarray, regions: np.ndarray, fluid_level: float = 0.5) -> np.ndarray:
    """Lateral ventricles: fluid-dark components of "other brain" that touch the BG.

    The caudate lines the lateral ventricles, while sulcal CSF and cisterns touch cortex; an
    infarct cavity that reaches the striatum would be taken for a ventricle, which is why a
    lesion mask (``--lesion-mask``) is the reliable route for such heads.
    """
    csf = (regions == Region.OTHER) & (normalised < fluid_level) & (normalised > 0)
    lab, n = ndi.label(csf)
    if not n:
        return np.zeros(regions.shape, bool)
    near_bg = ndi.binary_dilation(regions == Region.BG, iterations=2)
    touch = np.bincount(lab[near_bg & csf], minlength=n + 1)
    keep = touch >= 20
    keep[0] = False
    return keep[lab]


def insert_realistic_pvs(
    image: np.ndarray,
    affine: np.ndarray,
    brain_mask: np.ndarray,
    wm_mask: np.ndarray,
    bg_mask: np.ndarray,
    *,
    load: int | str,
    seed: int,
    normalised: np.ndarray | None = None,
    scale: np.ndarray | float = 1.0,
    psf_fwhm_mm: float | tuple[float, float] = PSF_FWHM_MM,
    fluid_range: tuple[float, float] = FLUID_RANGE,
    bg_fraction: float = BG_FRACTION,
    inferior_distractors: bool = True,
    occupied: np.ndarray | None = None,
    mimics: dict[str, int] | None = None,
    regions: np.ndarray | None = None,
) -> RealisticPhantom:
    """Insert ``load`` realistic PVS (see the module docstring) into ``image``.

    ``normalised`` is the bias-free, WM ≈ 1 version of ``image`` (default: ``image`` itself),
    used for the local tissue level; ``scale`` converts WM units to ``image`` units (a raw
    head: N4 bias field × WM level), so the same PVS can be put into a raw, biased head.
    ``occupied`` marks voxels PVS must keep away from. ``mimics`` (e.g. :data:`MIMICS`) inserts
    that many of each mimic first (:func:`mimic_delta`; needs ``regions``, the 0/1/2/3 image)
    and keeps PVS 3 mm away from them; their masks come back in ``mimics``/``mimic_rims``.
    """
    rng = np.random.default_rng(seed)
    n_total = LOADS[load] if isinstance(load, str) else int(load)
    if n_total < 0:
        raise ValueError(f"load must be >= 0, got {load!r}")
    img = np.asarray(image, np.float32)
    norm = img if normalised is None else np.asarray(normalised, np.float32)
    wm, bg, brain = (np.asarray(a) > 0 for a in (wm_mask, bg_mask, brain_mask))
    shape = img.shape
    zooms = _zooms(affine)
    if isinstance(psf_fwhm_mm, tuple | list):
        fwhm = float(rng.uniform(*psf_fwhm_mm))
    else:
        fwhm = float(psf_fwhm_mm)
    tissue = local_tissue(norm, (wm, bg), 1.5, zooms)
    coverage = np.zeros(shape, np.float32)
    delta = np.zeros(shape, np.float32)
    truth_cov = np.zeros(shape, np.float32)
    pvs_id = np.zeros(shape, np.int32)
    ignore = np.zeros(shape, bool)
    pvs: list[PVS] = []
    occ = np.zeros(shape, bool) if occupied is None else np.asarray(occupied, bool).copy()
    mimic_masks: dict[str, np.ndarray] = {}
    mimic_rims: dict[str, np.ndarray] = {}
    if mimics:
        if regions is None:
            raise ValueError("mimics need the regions image (0 bg, 1 BG, 2 WM, 3 other)")
        md, mimic_masks, mimic_rims = mimic_delta(
            norm, tissue, affine, brain, np.asarray(regions), mimics, seed=seed + 104_729
        )
        delta += md
        for m in mimic_masks.values():
            occ |= ndi.binary_dilation(m, iterations=max(1, int(round(3.0 / zooms.min()))))
    if n_total:
        layout = tube_layout(affine, brain, wm, bg, n_total, bg_fraction, inferior_distractors)
        mid_x, centres, plan, pools = layout.mid_x, layout.centres, layout.plan, layout.pools

        for region, in_truth in plan:
            pool = pools[(region, in_truth)]
            if len(pool) == 0:
                continue
            dot = rng.uniform() < DOT_FRACTION[region]
            radius = _draw_radius(rng, region)
            fluid = float(rng.uniform(*fluid_range))
            for _attempt in range(60):
                p0 = _voxel_world(affine, pool[rng.integers(len(pool))].astype(float)[None])[0]
                if dot:
                    length = rng.uniform(1.5, 4.0)
                    d = _unit(rng.normal(0.0, 1.0, 3))
                elif region == "BG":
                    length = rng.uniform(3.0, 10.0)
                    d = _jitter(rng, np.array([0.0, 0.0, 1.0]), 15.0)
                    d = _unit(d + np.array([0.25 * np.sign(p0[0] - mid_x), 0.0, 0.0]))
                else:
                    length = rng.uniform(5.0, 20.0)
                    c = centres["L"] if p0[0] < mid_x else centres["R"]
                    d = _jitter(rng, _unit(p0 - c), 12.0)
                bend = rng.normal(0.0, 0.12 * length, 3)
                bend -= d * float(bend @ d)
                mid = p0 + 0.5 * length * d + (0 if dot else 1) * bend
                cp = np.stack([p0 - 0.5 * length * d, mid, p0 + 0.5 * length * d])
                cp[1] = 2 * mid - 0.5 * (cp[0] + cp[2])
                rmask = layout.masks[(region, in_truth)]
                if not layout.fits(rmask, occ, _bezier(cp, 24)):
                    continue
                sl, cov = tube_coverage(shape, affine, cp, radius)
                cov = cov * (bg if region == "BG" else wm)[sl]
                if not (cov > 0).any():
                    continue
                pid = len(pvs) + 1
                p = PVS(pid, "dot" if dot else "tube", region, cp, radius, float(length), fluid)
                p.in_truth = in_truth
                coverage[sl] = np.maximum(coverage[sl], cov)
                delta[sl] += cov * (fluid - tissue[sl])
                if in_truth:
                    t = cov >= 0.5
                    truth_cov[sl] = np.maximum(truth_cov[sl], cov)
                    pvs_id[sl][t] = pid
                    p.n_truth_voxels = int(t.sum())
                    if not t.any():
                        ignore[sl] |= cov > 0.1
                occ[sl] |= ndi.binary_dilation(cov > 0, iterations=2)
                pvs.append(p)
                break
    # the acquisition's point-spread function acts on the signal change
    sig_vox = fwhm / 2.3548 / zooms
    blurred = ndi.gaussian_filter(delta, sig_vox, mode="constant") if delta.any() else delta
    blurred[~brain] = 0.0
    out = img + np.asarray(scale, np.float32) * blurred
    # per-PVS contrast without the head's own noise: (tissue + change) / tissue
    ratio = np.where(tissue > 0, (tissue + blurred) / np.maximum(tissue, 1e-6), 1.0)
    for p in pvs:
        if p.n_truth_voxels:
            v = ratio[pvs_id == p.id]
            p.peak_ratio = float(v.min())
            p.median_ratio = float(np.median(v))
    truth = (truth_cov >= 0.5).astype(np.uint8)
    regions_out = None
    if regions is not None:
        regions_out = np.asarray(regions).astype(np.uint8).copy()
        if "infarct" in mimic_masks:
            regions_out[mimic_masks["infarct"] & (regions_out > 0)] = Region.OTHER
    return RealisticPhantom(
        out.astype(np.float32),
        truth,
        pvs_id,
        ignore & ~(truth > 0),
        tissue,
        fwhm,
        pvs,
        mimic_masks,
        mimic_rims,
        regions_out,
    )


# --------------------------------------------------------------------------------------------
# mimics
# --------------------------------------------------------------------------------------------

#: the mimic set of a "lesion" phantom: how many of each
MIMICS: dict[str, int] = {
    "infarct": 1,
    "lacune": 3,
    "wmh": 3,
    "sulcal_fundus": 8,
    "ventricle_notch": 8,
}
#: band around a cavity (infarct, lacune) in which PVS-like output counts as "on the rim"
RIM_MM = 3.0


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _blob_distance(
    shape, affine, centre, radii, rot, rng, roughness: float, box_mm: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Normalised radial distance (1 on the surface) of a rough ellipsoid, on its box.

    The surface is perturbed by a few random low-order angular harmonics (``roughness`` =
    relative amplitude), so cavities and WMH are irregular, not perfect ellipsoids.
    """
    zooms = _zooms(affine)
    inv = np.linalg.inv(affine)
    c_ijk = inv[:3, :3] @ centre + inv[:3, 3]
    pad = np.ceil(box_mm / zooms).astype(int) + 2
    lo = np.maximum(np.floor(c_ijk).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(c_ijk).astype(int) + pad + 1, np.array(shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij"), -1)
    world = grid.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    local = (world - centre) @ rot
    d = np.linalg.norm(local / np.asarray(radii), axis=1)
    if roughness > 0:
        u = local / np.maximum(np.linalg.norm(local, axis=1, keepdims=True), 1e-6)
        pert = np.zeros(len(u))
        for _ in range(4):
            k = _unit(rng.normal(size=3))
            pert += rng.normal() * np.cos(rng.integers(1, 4) * np.arccos(np.clip(u @ k, -1, 1)))
        d = d / (1.0 + roughness * pert / 2.0)
    return sl, d.reshape(grid.shape[:3])


def _soft(d: np.ndarray, scale_mm: float, ramp_mm: float) -> np.ndarray:
    """Occupancy from a normalised distance: 1 inside, linear ramp of ``ramp_mm`` at d = 1."""
    return np.clip(0.5 - (d - 1.0) * scale_mm / max(ramp_mm, 1e-3), 0.0, 1.0)


def _pick(rng, mask: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(mask)
    return idx[rng.integers(len(idx))] if len(idx) else None


def _cone_coverage(shape, affine, tip, base, r_base, r_tip, sub=3):
    """Coverage of a truncated cone from ``base`` (radius r_base) to ``tip`` (r_tip)."""
    zooms = _zooms(affine)
    inv = np.linalg.inv(affine)
    pts = np.stack([base, tip])
    ijk = pts @ inv[:3, :3].T + inv[:3, 3]
    pad = np.ceil(r_base / zooms).astype(int) + 2
    lo = np.maximum(np.floor(ijk.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + pad + 1, np.array(shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij"), -1)
    off = (np.arange(sub) + 0.5) / sub - 0.5
    so = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
    p = (grid.reshape(-1, 1, 3) + so[None]).reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    axis = tip - base
    length = float(np.linalg.norm(axis))
    t = np.clip((p - base) @ axis / max(length**2, 1e-9), 0.0, 1.0)
    radial = np.linalg.norm(p - base - t[:, None] * axis, axis=1)
    inside = (radial <= r_base + (r_tip - r_base) * t) & ((p - base) @ axis >= 0)
    inside &= (p - base) @ axis <= length**2
    return sl, inside.reshape(grid.shape[:3] + (-1,)).mean(-1).astype(np.float32)


def mimic_delta(
    normalised: np.ndarray,
    tissue: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    regions: np.ndarray,
    counts: dict[str, int],
    *,
    seed: int,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Signal change (WM units, before the PSF) of the PVS mimics a real cohort has.

    * ``infarct`` - a cavity 14-28 mm across (rough ellipsoid) in the WM near the cortex, fluid
      0.25-0.30 × WM, inside a gliotic rim 2-3 mm thick at 0.70-0.80 × WM (T1-hypointense);
    * ``lacune`` - 3-15 mm across, in the BG or deep WM, fluid 0.3 × WM with a 1 mm rim at
      0.8 × WM;
    * ``wmh`` - T1-hypointense WMH patches 6-18 mm across at 0.80-0.90 × WM with a 2 mm soft
      edge, periventricular or deep;
    * ``sulcal_fundus`` - a sulcus reaching into the WM: a cone 3-6 mm deep, 1.0-1.5 mm radius
      at the cortex tapering to 0.3 mm, at grey/CSF level 0.55-0.65 × WM;
    * ``ventricle_notch`` - a fluid bump 1.5-3 mm in radius on the lateral ventricle wall.

    Returns (delta, masks, rims): masks are the mimic voxels (occupancy ≥ 0.5); rims (for
    cavities only) are the BG ∪ WM voxels within :data:`RIM_MM` of the cavity, the band in
    which the issue's "< 5 % of the lesion rim as PVS" is counted.
    """
    rng = np.random.default_rng(seed)
    shape = normalised.shape
    zooms = _zooms(affine)
    vox = float(zooms.min())
    # a mimic replaces whatever tissue is there (cortex included): its smooth local level
    inb = np.asarray(brain) > 0
    num = ndi.gaussian_filter(np.where(inb, normalised, 0).astype(np.float32), 1.0 / zooms)
    den = ndi.gaussian_filter(inb.astype(np.float32), 1.0 / zooms)
    tissue = np.where(tissue > 0, tissue, num / np.maximum(den, 1e-3)).astype(np.float32)
    wm, bg = regions == Region.WM, regions == Region.BG
    roi = wm | bg
    delta = np.zeros(shape, np.float32)
    masks: dict[str, np.ndarray] = {}
    rims: dict[str, np.ndarray] = {}
    taken = np.zeros(shape, bool)
    dist_out = ndi.distance_transform_edt(roi, sampling=zooms)  # mm to the BG ∪ WM border
    vent = ventricles(normalised, regions)
    near_vent = ndi.binary_dilation(vent, iterations=max(1, int(round(2 / vox)))) & wm
    # WM next to cortical grey, far from the ventricles and the BG (a fundus, not the septum)
    cortex = (regions == Region.OTHER) & (normalised > 0.45) & (normalised < 0.85)
    deep = ndi.distance_transform_edt(~(vent | bg), sampling=zooms) < 15
    cortex_edge = wm & ndi.binary_dilation(cortex) & ~deep
    grad = np.stack(np.gradient(ndi.gaussian_filter(roi.astype(np.float32), 2.0 / vox)), -1)

    def apply(sl, occ, level, name, rim_sl=None, rim_occ=None, rim_level=None):
        cur = delta[sl]
        if rim_occ is not None:
            ring = np.clip(rim_occ - occ, 0, 1)
            cur += ring * (rim_level - tissue[sl] - cur) * (ring > 0)
        cur += occ * (level - tissue[sl] - cur) * (occ > 0)
        delta[sl] = cur
        m = masks.setdefault(name, np.zeros(shape, bool))
        m[sl] |= occ >= 0.5
        taken[sl] |= (occ > 0) | ((rim_occ > 0) if rim_occ is not None else False)

    for name, count in counts.items():
        for _ in range(int(count)):
            for _attempt in range(40):
                if name == "infarct":
                    c = _pick(rng, wm & (dist_out > 4) & (dist_out < 9) & ~taken)
                    if c is None:
                        break
                    radii = rng.uniform(7, 14, 3)
                    rim_t = rng.uniform(2, 3)
                    cw = _voxel_world(affine, c.astype(float)[None])[0]
                    rot = _rotation(rng)
                    sl, d = _blob_distance(
                        shape, affine, cw, radii, rot, rng, 0.25, radii.max() + rim_t + 4
                    )
                    if taken[sl][d < 1.3].any():
                        continue
                    scale = float(radii.min())
                    occ = _soft(d, scale, vox) * (brain[sl] > 0)
                    rim = np.clip(0.5 - (d - 1.0) * scale / vox + rim_t / vox, 0, 1) * (
                        brain[sl] > 0
                    )
                    apply(sl, occ, rng.uniform(0.25, 0.30), name, sl, rim, rng.uniform(0.70, 0.80))
                elif name == "lacune":
                    region = bg if rng.uniform() < 0.5 else (wm & (dist_out > 6))
                    c = _pick(rng, region & ~taken & (dist_out > 3))
                    if c is None:
                        break
                    r = rng.uniform(1.5, 7.5)
                    radii = r * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)])
                    cw = _voxel_world(affine, c.astype(float)[None])[0]
                    sl, d = _blob_distance(
                        shape, affine, cw, radii, _rotation(rng), rng, 0.1, r + 4
                    )
                    if taken[sl][d < 1.5].any():
                        continue
                    scale = float(radii.min())
                    occ = _soft(d, scale, vox) * roi[sl]
                    rim = np.clip(0.5 - (d - 1.0) * scale / vox + 1.0 / vox, 0, 1) * roi[sl]
                    apply(sl, occ, 0.3, name, sl, rim, 0.8)
                elif name == "wmh":
                    pv = rng.uniform() < 0.6
                    pool = (near_vent if pv else wm & (dist_out > 5)) & ~taken
                    c = _pick(rng, pool)
                    if c is None:
                        break
                    radii = rng.uniform(3, 9, 3)
                    cw = _voxel_world(affine, c.astype(float)[None])[0]
                    sl, d = _blob_distance(
                        shape, affine, cw, radii, _rotation(rng), rng, 0.3, radii.max() + 4
                    )
                    if taken[sl][d < 1.2].any():
                        continue
                    occ = _soft(d, float(radii.min()), 2.0) * wm[sl]
                    apply(sl, occ, rng.uniform(0.80, 0.90), name)
                elif name == "sulcal_fundus":
                    c = _pick(rng, cortex_edge & ~taken)
                    if c is None:
                        break
                    g = grad[tuple(c)]
                    if np.linalg.norm(g) < 1e-6:
                        continue
                    # inward direction in world space (the ROI indicator grows inwards)
                    inward = _unit(affine[:3, :3] @ (g / zooms**2))
                    base = _voxel_world(affine, c.astype(float)[None])[0] - 1.0 * inward
                    depth = rng.uniform(3.0, 6.0)
                    tip = base + depth * _jitter(rng, inward, 15.0)
                    sl, cov = _cone_coverage(shape, affine, tip, base, rng.uniform(1.0, 1.5), 0.3)
                    if taken[sl][cov > 0].any():
                        continue
                    occ = cov * (brain[sl] > 0)
                    apply(sl, occ, rng.uniform(0.55, 0.65), name)
                elif name == "ventricle_notch":
                    wall = wm & ndi.binary_dilation(vent) & ~taken
                    c = _pick(rng, wall)
                    if c is None:
                        break
                    r = rng.uniform(1.5, 3.0)
                    cw = _voxel_world(affine, c.astype(float)[None])[0]
                    sl, d = _blob_distance(shape, affine, cw, (r, r, r), np.eye(3), rng, 0.0, r + 3)
                    if taken[sl][d < 1.2].any():
                        continue
                    occ = _soft(d, r, vox) * (brain[sl] > 0)
                    apply(sl, occ, 0.3, name)
                else:
                    raise ValueError(f"unknown mimic {name!r} (one of {sorted(MIMICS)})")
                break
    for name in ("infarct", "lacune"):
        if name in masks:
            band = ndi.binary_dilation(masks[name], iterations=max(1, int(round(RIM_MM / vox))))
            rims[name] = band & roi & ~masks[name]
    return delta, masks, rims
