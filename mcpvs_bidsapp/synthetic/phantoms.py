"""Known-truth PVS phantoms: synthetic perivascular spaces inserted into real T1w heads.

No public T1w dataset ships manual PVS masks, so the built-in method is tuned and validated on
phantoms whose truth is known by construction:

* each PVS is a tube around a smooth curved centre line (quadratic Bézier) with a radius of
  ~0.5–1.5 mm and a length of a few mm to ~2 cm; basal-ganglia (BG) tubes run mostly
  superior–inferior like the lenticulostriate arteries, white-matter (WM) tubes run radially
  towards the lateral ventricles like the medullary arteries;
* each voxel's **coverage** (fraction of its volume inside a tube) is computed by supersampling
  (5×5×5 points per voxel in the image's own world geometry); the voxel is blended towards a
  CSF-like intensity by its coverage (partial volume), and the **truth is coverage ≥ 0.5**;
* following the paper's annotation rules, tubes in the lowest part of the BG are inserted into
  the image but are *not* part of the truth (annotators skipped them), so the method is tested
  on that rule too;
* :func:`degrade` adds a smooth multiplicative bias field, Rician noise and a vendor-like
  contrast change (gamma and scale).

Region masks for raw heads come from :func:`prepare_head` *without* Samseg (10 min per head):
deepbet brain mask → N4 → 3-class multi-Otsu tissue classes → basal ganglia from an MNI-space
deep-grey prior (ellipsoids around caudate, putamen and pallidum, intersected with nilearn's
MNI152 grey-matter mask) brought to the head by an ANTs affine registration and intersected
with the head's own grey-matter class. They are approximations good enough to place tubes in
anatomically sensible places; the app itself uses the proper regions of its preprocessing.

Everything is seeded; the same call gives the same phantom bit for bit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.registration import RegistrationJob, Warp, run_registration

#: number of tubes (BG + WM, before the inferior-BG distractors) for the named loads
LOADS: dict[str, int] = {"none": 0, "few": 20, "mild": 60, "moderate": 150, "many": 300}
#: fraction of tubes placed in the BG (the rest go to the WM)
BG_FRACTION = 0.35
#: inferior fraction of the BG (along the superior axis) that annotators left out
INFERIOR_BG_FRACTION = 0.25
_SUPERSAMPLE = 5


@dataclass
class Tube:
    """One synthetic PVS: control points of its Bézier centre line (world mm) and its radius."""

    region: str  # "BG" or "WM"
    control_points: np.ndarray  # (3, 3) world mm
    radius_mm: float
    in_truth: bool = True  # False for inferior-BG tubes (inserted but not annotated)
    n_truth_voxels: int = 0


@dataclass
class Phantom:
    image: np.ndarray  # float32, same grid as the input
    truth_mask: np.ndarray  # uint8
    coverage: np.ndarray  # float32 fraction of each voxel inside any tube
    tubes: list[Tube] = field(default_factory=list)


@dataclass
class Head:
    """A real head prepared for phantoms: N4-corrected image, masks and regions."""

    name: str
    image: np.ndarray  # float32, N4-corrected, WM median = 1 inside the brain, 0 outside
    raw: np.ndarray  # float32, the raw intensities (cropped like ``image``)
    bias: np.ndarray  # float32 N4 bias field (raw ≈ bias * corrected), 1 outside the brain
    affine: np.ndarray
    brain_mask: np.ndarray  # uint8
    regions: np.ndarray  # uint8: 0 background, 1 BG, 2 WM, 3 other brain
    wm_level_raw: float  # WM median of the N4-corrected image before scaling

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(0)))


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------


def _bezier(cp: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * cp[0] + 2 * (1 - t) * t * cp[1] + t**2 * cp[2]


def _dist_to_polyline(pts: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point (P, 3) to a polyline (S+1, 3)."""
    best = np.full(len(pts), np.inf)
    for a, b in zip(line[:-1], line[1:], strict=True):
        ab = b - a
        ap = pts - a
        t = np.clip(ap @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        d = ap - t[:, None] * ab
        np.minimum(best, np.einsum("ij,ij->i", d, d), out=best)
    return np.sqrt(best)


def _world_axes(shape: tuple[int, ...], affine: np.ndarray) -> list[np.ndarray]:
    """World x, y, z of every voxel as broadcastable float32 arrays (cheap for big grids)."""
    i, j, k = (g.astype(np.float32) for g in np.ogrid[: shape[0], : shape[1], : shape[2]])
    a = affine.astype(np.float32)
    return [a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3)]


def tube_coverage(
    shape: tuple[int, ...], affine: np.ndarray, control_points: np.ndarray, radius_mm: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Fraction of each voxel inside one tube, on the bounding box of the tube.

    Supersampled with 5×5×5 points per voxel placed through the image affine, so the result is
    right for any voxel size and orientation. Returns the bounding-box slices and coverage.
    """
    line = _bezier(control_points, 13)
    inv = np.linalg.inv(affine)
    ijk = line @ inv[:3, :3].T + inv[:3, 3]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    pad = np.ceil(radius_mm / zooms).astype(int) + 2
    lo = np.maximum(np.floor(ijk.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + pad + 1, np.array(shape[:3]))
    if np.any(hi <= lo):
        return tuple(slice(0, 0) for _ in range(3)), np.zeros((0, 0, 0), np.float32)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij"), -1)
    centres = grid.reshape(-1, 3).astype(float)
    world = centres @ affine[:3, :3].T + affine[:3, 3]
    d = _dist_to_polyline(world, line)
    half_diag = 0.5 * float(np.linalg.norm(zooms))
    cov = np.zeros(len(centres), np.float32)
    cand = np.nonzero(d < radius_mm + half_diag)[0]
    if cand.size:
        off = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
        sub = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
        for chunk in np.array_split(cand, max(1, cand.size // 400)):
            pts = (centres[chunk][:, None, :] + sub[None]).reshape(-1, 3)
            wpts = pts @ affine[:3, :3].T + affine[:3, 3]
            inside = _dist_to_polyline(wpts, line) <= radius_mm
            cov[chunk] = inside.reshape(len(chunk), -1).mean(1)
    return sl, cov.reshape(grid.shape[:3])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _jitter(rng: np.random.Generator, d: np.ndarray, sd_deg: float) -> np.ndarray:
    return _unit(d + rng.normal(0.0, np.tan(np.deg2rad(sd_deg)), 3))


def _voxel_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# --------------------------------------------------------------------------------------------
# insertion
# --------------------------------------------------------------------------------------------


def _inferior_bg_cut(bg: np.ndarray, affine: np.ndarray) -> float:
    """World z (superior) below which BG PVS are not annotated (lowest 25 % of BG height)."""
    ijk = np.argwhere(bg)
    z = _voxel_world(affine, ijk.astype(float))[:, 2]
    lo, hi = np.percentile(z, [1, 99])
    return float(lo + INFERIOR_BG_FRACTION * (hi - lo))


@dataclass
class TubeLayout:
    """Where the tubes of a phantom may go (shared by :func:`insert_pvs` and
    :func:`mcpvs_bidsapp.synthetic.realistic.insert_realistic_pvs`): the draw plan (region,
    in the truth or an inferior BG distractor), the voxel pool each draw starts from, the mask
    a tube must stay inside, and the WM tubes' radial centres (one per hemisphere, medial to
    the BG: the lateral ventricles)."""

    inv: np.ndarray
    mid_x: float
    centres: dict[str, np.ndarray]
    plan: list[tuple[str, bool]]
    pools: dict[tuple[str, bool], np.ndarray]
    masks: dict[tuple[str, bool], np.ndarray]

    def fits(self, mask: np.ndarray, occupied: np.ndarray, pts: np.ndarray) -> bool:
        """All world points ``pts`` fall in ``mask`` and none on an ``occupied`` voxel."""
        ijk = np.rint(pts @ self.inv[:3, :3].T + self.inv[:3, 3]).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(mask.shape)):
            return False
        return bool(mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]].all()) and not bool(
            occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]].any()
        )


def tube_layout(
    affine: np.ndarray,
    brain: np.ndarray,
    wm: np.ndarray,
    bg: np.ndarray,
    n_total: int,
    bg_fraction: float,
    inferior_distractors: bool,
) -> TubeLayout:
    """The :class:`TubeLayout` of ``n_total`` tubes (no random draw: seeds are unaffected)."""
    shape = brain.shape
    # tubes must lie inside their region, eroded so that partial volume stays inside
    wm_in = ndi.binary_erosion(wm, iterations=1)
    bg_in = ndi.binary_erosion(bg, iterations=1)
    z_cut = _inferior_bg_cut(bg, affine) if bg.any() else -np.inf
    bg_world = _voxel_world(affine, np.argwhere(bg).astype(float)) if bg.any() else None
    if bg_world is not None and len(bg_world):
        mid_x = float(np.median(bg_world[:, 0]))
        left = bg_world[bg_world[:, 0] < mid_x].mean(0)
        right = bg_world[bg_world[:, 0] >= mid_x].mean(0)
        centres = {
            "L": np.array([0.5 * (left[0] + mid_x), left[1], left[2] + 8]),
            "R": np.array([0.5 * (right[0] + mid_x), right[1], right[2] + 8]),
        }
    else:
        c = _voxel_world(affine, np.argwhere(brain).mean(0)[None])[0]
        mid_x = float(c[0])
        centres = {"L": c, "R": c}
    n_bg = int(round(bg_fraction * n_total)) if bg.any() else 0
    n_wm = n_total - n_bg
    n_dis = max(1, n_bg // 8) if (inferior_distractors and n_bg) else 0
    bg_up = bg_in & (_world_axes(shape, affine)[2] >= z_cut) if n_bg else bg_in
    bg_low = bg_in & ~bg_up
    return TubeLayout(
        inv=np.linalg.inv(affine),
        mid_x=mid_x,
        centres=centres,
        plan=[("BG", True)] * n_bg + [("WM", True)] * n_wm + [("BG", False)] * n_dis,
        pools={
            ("BG", True): np.argwhere(bg_up),
            ("WM", True): np.argwhere(wm_in),
            ("BG", False): np.argwhere(bg_low),
        },
        masks={("BG", True): bg_in, ("WM", True): wm_in, ("BG", False): bg_low},
    )


def insert_pvs(
    t1w: np.ndarray,
    affine: np.ndarray,
    brain_mask: np.ndarray,
    wm_mask: np.ndarray,
    bg_mask: np.ndarray,
    *,
    load: int | str,
    seed: int,
    csf_level: float | None = None,
    bias: np.ndarray | None = None,
    bg_fraction: float = BG_FRACTION,
    radius_range_mm: tuple[float, float] = (0.5, 1.5),
    inferior_distractors: bool = True,
) -> Phantom:
    """Insert ``load`` synthetic PVS tubes into ``t1w`` (any intensity scale).

    ``csf_level`` is the fluid intensity on the bias-free scale (default: 0.3 × WM median, a
    typical CSF/WM ratio on MPRAGE); ``bias`` is a multiplicative field applied to that level so
    tubes inserted into a raw, biased image have the local fluid intensity.
    """
    rng = np.random.default_rng(seed)
    n_total = LOADS[load] if isinstance(load, str) else int(load)
    if n_total < 0:
        raise ValueError(f"load must be >= 0, got {load!r}")
    img = np.asarray(t1w, dtype=np.float32)
    wm = np.asarray(wm_mask) > 0
    bg = np.asarray(bg_mask) > 0
    brain = np.asarray(brain_mask) > 0
    if csf_level is None:
        ref = img / bias if bias is not None else img
        csf_level = 0.3 * float(np.median(ref[wm]))
    shape = img.shape
    coverage = np.zeros(shape, np.float32)
    truth_cov = np.zeros(shape, np.float32)
    tubes: list[Tube] = []
    if n_total == 0:
        return Phantom(img.copy(), np.zeros(shape, np.uint8), coverage, tubes)

    layout = tube_layout(affine, brain, wm, bg, n_total, bg_fraction, inferior_distractors)
    mid_x, centres, plan, pools = layout.mid_x, layout.centres, layout.plan, layout.pools
    occupied = np.zeros(shape, bool)
    for region, in_truth in plan:
        pool = pools[(region, in_truth)]
        if len(pool) == 0:
            continue
        for _attempt in range(60):
            p0 = _voxel_world(affine, pool[rng.integers(len(pool))].astype(float)[None])[0]
            if region == "BG":
                length = rng.uniform(4.0, 12.0)
                radius = rng.uniform(max(0.6, radius_range_mm[0]), radius_range_mm[1])
                d = _jitter(rng, np.array([0.0, 0.0, 1.0]), 15.0)
                # lenticulostriate arteries fan laterally as they rise
                d = _unit(d + np.array([0.25 * np.sign(p0[0] - mid_x), 0.0, 0.0]))
            else:
                length = rng.uniform(5.0, 20.0)
                radius = rng.uniform(radius_range_mm[0], min(1.2, radius_range_mm[1]))
                c = centres["L"] if p0[0] < mid_x else centres["R"]
                d = _jitter(rng, _unit(p0 - c), 12.0)
            bend = rng.normal(0.0, 0.12 * length, 3)
            bend -= d * float(bend @ d)  # curvature perpendicular to the axis
            mid = p0 + 0.5 * length * d + bend
            cp = np.stack([p0 - 0.5 * length * d, mid, p0 + 0.5 * length * d])
            cp[1] = 2 * mid - 0.5 * (cp[0] + cp[2])  # Bézier passes through ``mid``
            line = _bezier(cp, 24)
            rmask = layout.masks[(region, in_truth)]
            if not layout.fits(rmask, occupied, line):
                continue
            sl, cov = tube_coverage(shape, affine, cp, radius)
            region_sl = (bg if region == "BG" else wm)[sl]
            cov = cov * region_sl  # keep partial volume inside the region
            coverage[sl] = np.maximum(coverage[sl], cov)
            tube = Tube(region, cp, float(radius), in_truth)
            if in_truth:
                truth_cov[sl] = np.maximum(truth_cov[sl], cov)
                tube.n_truth_voxels = int((cov >= 0.5).sum())
            occupied[sl] |= ndi.binary_dilation(cov > 0, iterations=2)
            tubes.append(tube)
            break
    fluid = np.full(shape, csf_level, np.float32)
    if bias is not None:
        fluid = fluid * bias.astype(np.float32)
    out = img * (1.0 - coverage) + fluid * coverage
    out[~brain] = img[~brain]
    truth = (truth_cov >= 0.5).astype(np.uint8)
    return Phantom(out.astype(np.float32), truth, coverage, tubes)


# --------------------------------------------------------------------------------------------
# degradation
# --------------------------------------------------------------------------------------------


def random_bias_field(
    shape: tuple[int, ...], *, seed: int, strength: float, zooms=(1.0, 1.0, 1.0)
) -> np.ndarray:
    """Smooth multiplicative field exp(strength * f), f a random low-order field in ~[-1, 1]."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.0, (3, 3, 3))
    w[0, 0, 0] = 0.0  # no global scaling: only spatial variation
    # separable low-order cosine basis (what coil sensitivity looks like at this scale)
    basis = [
        np.stack([np.cos(np.pi * o * (np.arange(n) + 0.5) / n + ph) for o in range(3)])
        for n, ph in zip(shape[:3], rng.uniform(0, np.pi, 3), strict=True)
    ]
    f = np.einsum("abc,ai,bj,ck->ijk", w, *basis, optimize=True)
    f = f / max(float(np.abs(f).max()), 1e-9)
    return np.exp(strength * f).astype(np.float32)


def degrade(
    image: np.ndarray,
    *,
    seed: int,
    bias_strength: float = 0.2,
    noise_sd: float = 0.03,
    contrast_gamma: float = 1.0,
    contrast_scale: float = 1.0,
    scale: float = 1.0,
    reference: float | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Bias field, Rician noise and a vendor-like contrast change, all seeded.

    ``noise_sd`` and the contrast changes are relative to ``reference`` (default: the 95th
    percentile inside ``mask`` or of the non-zero voxels), so the same settings mean the same
    SNR on any intensity scale. Two contrast changes: ``contrast_gamma``, a power curve (the
    issue #15 vendor-like degradation; it bends partial-volume mixtures, which the scanner's
    signal never does), and ``contrast_scale`` k, every contrast to the reference scaled by
    k (x -> 1 - k (1 - x)): what another inversion time or flip angle does to a mixture of
    two tissues, whose signal stays linear in the mixing fraction. Outside ``mask`` the image
    is left at 0 where it was 0.
    """
    rng = np.random.default_rng(seed)
    img = np.asarray(image, dtype=np.float32)
    m = (img > 0) if mask is None else (np.asarray(mask) > 0)
    ref = float(np.percentile(img[m], 95)) if reference is None else float(reference)
    x = img / ref
    if contrast_gamma != 1.0:
        x = np.power(np.clip(x, 0, None), contrast_gamma)
    if contrast_scale != 1.0:
        x = np.clip(1.0 - contrast_scale * (1.0 - x), 0, None)
    x = x * random_bias_field(img.shape, seed=seed + 7919, strength=bias_strength)
    if noise_sd > 0:
        n1 = rng.normal(0.0, noise_sd, img.shape).astype(np.float32)
        n2 = rng.normal(0.0, noise_sd, img.shape).astype(np.float32)
        x = np.sqrt((x + n1) ** 2 + n2**2)
    out = (x * ref * scale).astype(np.float32)
    if mask is not None:
        out[~m] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# heads: masks and regions without Samseg
# --------------------------------------------------------------------------------------------

# Deep-grey prior in MNI152 2009 mm (x, y, z centre; semi-axes): caudate head/body, putamen,
# pallidum, from standard atlas extents. Intersected with nilearn's MNI GM mask.
_BG_ELLIPSOIDS_MNI = [
    ((13.0, 12.0, 10.0), (5.5, 12.0, 9.0)),  # caudate head
    ((16.0, -8.0, 19.0), (4.0, 10.0, 5.0)),  # caudate body
    ((25.0, 2.0, 1.0), (6.5, 17.0, 10.0)),  # putamen
    ((19.0, -3.0, -1.0), (4.5, 8.0, 5.0)),  # pallidum
]


def mni_bg_prior() -> nib.Nifti1Image:
    """Binary BG mask on nilearn's 1 mm MNI152 grid (both hemispheres)."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_mask(resolution=1)
    aff = gm.affine
    x, y, z = _world_axes(gm.shape, aff)
    prior = np.zeros(gm.shape, bool)
    for (cx, cy, cz), (ax, ay, az) in _BG_ELLIPSOIDS_MNI:
        for sx in (-1.0, 1.0):
            prior |= ((x - sx * cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1
    return nib.Nifti1Image(prior.astype(np.uint8), aff)


def mni_cerebrum_mask() -> np.ndarray:
    """MNI brain minus cerebellum and brainstem (coarse planes), on nilearn's 1 mm grid."""
    from nilearn import datasets

    brain = datasets.load_mni152_brain_mask(resolution=1)
    x, y, z = _world_axes(brain.shape, brain.affine)
    out = (y < -40) & (z < 0)  # cerebellum
    out = out | ((np.abs(x) < 16) & (z < -8) & (y < 0))  # brainstem
    out = out | (z < -45)
    return (np.asarray(brain.dataobj) > 0) & ~out


def _three_class(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CSF=1, GM=2, WM=3 by multi-Otsu on the brain voxels (deterministic, no sklearn)."""
    from skimage.filters import threshold_multiotsu

    vals = image[mask]
    t1, t2 = threshold_multiotsu(vals, classes=3)
    cls = np.zeros(image.shape, np.uint8)
    cls[mask & (image < t1)] = 1
    cls[mask & (image >= t1) & (image < t2)] = 2
    cls[mask & (image >= t2)] = 3
    return cls


def regions_from_classes(
    image: np.ndarray, cls: np.ndarray, bg_prior: np.ndarray, cerebrum: np.ndarray
) -> np.ndarray:
    """0 bg, 1 BG, 2 WM (cerebral WM class outside the BG prior), 3 other brain.

    BG = deep-grey prior ∩ tissue darker than half-way between the GM/WM boundary and the
    WM median: deep grey is brighter than cortex on T1w (the pallidum almost WM-bright), so the
    plain GM class misses much of it, while the internal capsule stays out.
    """
    regions = np.zeros(cls.shape, np.uint8)
    regions[cls > 0] = 3
    t2 = float(image[cls == 3].min())
    wm_med = float(np.median(image[cls == 3]))
    bg = bg_prior & (cls >= 2) & (image < 0.5 * (t2 + wm_med))
    bg = ndi.binary_opening(bg, iterations=1)
    bg = ndi.binary_closing(bg, iterations=2) & bg_prior & (cls >= 2)
    wm = (cls == 3) & cerebrum & ~bg
    regions[wm] = 2
    regions[bg] = 1
    return regions


def _brain_mask_deepbet(img: nib.Nifti1Image) -> np.ndarray:
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    _, mask, _ = BrainExtraction(no_gpu=True).run(img)
    return np.asarray(mask.dataobj).astype(bool)


def prepare_head(path: str | Path, *, cache_dir: str | Path | None = None, n4: bool = True) -> Head:
    """Brain mask, N4, WM scaling and BG/WM regions for a raw T1w (≈1 min, cached).

    Cropped to the brain's bounding box (+4 voxels) to keep later steps fast. ``n4=False``
    for images that are already bias-corrected (e.g. FreeSurfer's brain.mgz).
    """
    import ants

    path = Path(path)
    name = path.name.split(".nii")[0]
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{name}_head.npz"
        if cache.exists():
            z = np.load(cache)
            return Head(
                name,
                z["image"],
                z["raw"],
                z["bias"],
                z["affine"],
                z["brain_mask"],
                z["regions"],
                float(z["wm_level_raw"]),
            )
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise ValueError(f"{path.name}: a 3D image is needed, got shape {img.shape}")
    raw_full = np.asarray(img.dataobj, dtype=np.float32)
    mask_full = _brain_mask_deepbet(img)
    idx = np.argwhere(mask_full)
    lo = np.maximum(idx.min(0) - 4, 0)
    hi = np.minimum(idx.max(0) + 5, np.array(raw_full.shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    raw = raw_full[sl].copy()
    mask = mask_full[sl].copy()
    affine = img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(0)))

    def to_ants(a: np.ndarray) -> ants.ANTsImage:
        # ANTs images carry LPS direction; identical geometry is all we need here
        return ants.from_numpy(a.astype(np.float32), spacing=zooms)

    raw_pos = np.clip(raw, 0, None)
    a_img, a_mask = to_ants(raw_pos), to_ants(mask.astype(np.float32))
    if n4:
        bias = ants.n4_bias_field_correction(
            a_img, mask=a_mask, shrink_factor=2, spline_param=100, return_bias_field=True
        ).numpy()
    else:
        bias = np.ones(raw.shape, np.float32)
    bias = np.where(mask, np.maximum(bias, 1e-3), 1.0).astype(np.float32)
    corr = np.where(mask, raw_pos / bias, 0.0).astype(np.float32)
    cls = _three_class(corr, mask)
    wm_level = float(np.median(corr[cls == 3]))
    image = corr / wm_level

    # MNI priors via an affine registration of nilearn's template, both in world (RAS) space
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=1)
    prior_img = mni_bg_prior()
    prior_dil = ndi.binary_dilation(np.asarray(prior_img.dataobj) > 0, iterations=2)
    with tempfile.TemporaryDirectory(prefix="mcpvs_head_") as tmp:
        tmp = Path(tmp)
        inputs = {
            "fixed": (image, affine),
            "moving": (np.asarray(tpl.dataobj, np.float32), tpl.affine),
            "bg": (prior_dil.astype(np.float32), prior_img.affine),
            "cerebrum": (mni_cerebrum_mask().astype(np.float32), tpl.affine),
        }
        for key, (data, aff) in inputs.items():
            nib.Nifti1Image(np.asarray(data, np.float32), aff).to_filename(tmp / f"{key}.nii.gz")
        warps = [
            Warp(str(tmp / f"{key}.nii.gz"), str(tmp / f"{key}_w.nii.gz"), "nearestNeighbor")
            for key in ("bg", "cerebrum")
        ]
        run_registration(
            RegistrationJob(
                fixed_file=str(tmp / "fixed.nii.gz"),
                moving_file=str(tmp / "moving.nii.gz"),
                warps=warps,
                reg_spacing_mm=2.0,
                registration_kwargs={"type_of_transform": "Affine"},
            )
        )
        warped, cereb = (np.asanyarray(nib.load(w.out_file).dataobj) for w in warps)
    regions = regions_from_classes(image, cls, warped > 0.5, (cereb > 0.5) & mask)
    head = Head(
        name, image.astype(np.float32), raw, bias, affine, mask.astype(np.uint8), regions, wm_level
    )
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            cache,
            image=head.image,
            raw=head.raw,
            bias=head.bias,
            affine=head.affine,
            brain_mask=head.brain_mask,
            regions=head.regions,
            wm_level_raw=wm_level,
        )
    return head


def head_from_derivatives(
    raw_t1w: str | Path, anat_dir: str | Path, name: str | None = None
) -> Head:
    """A :class:`Head` from one participant's mcpvs outputs (what users get: Samseg regions).

    ``anat_dir`` holds the preprocessed T1w, brain mask and regions image
    (``outputs.spec.PREPROC_T1W``, ``BRAIN_MASK``, ``REGIONS_DSEG``) of ``raw_t1w`` (run
    ``mcpvs BIDS OUT participant`` once per head and reuse the outputs). The "bias" is
    raw / preproc inside the brain (N4 field × the FCM scale), so ``raw ≈ bias × image``
    exactly and ``wm_level_raw`` is 1. Cropped to the brain box (+4 voxels).
    """
    raw_img = nib.load(str(raw_t1w))
    anat = Path(anat_dir)

    def one(pattern: str) -> np.ndarray:
        hits = sorted(anat.glob(pattern))
        if len(hits) != 1:
            raise FileNotFoundError(f"{anat}: expected one {pattern}, found {len(hits)}")
        img = nib.load(str(hits[0]))
        if img.shape != raw_img.shape or not np.allclose(img.affine, raw_img.affine, atol=1e-3):
            raise ValueError(f"{hits[0].name} is not on the grid of {Path(raw_t1w).name}")
        return np.asarray(img.dataobj)

    pre = one(f"*_{spec.PREPROC_T1W.entities}.nii*").astype(np.float32)
    mask = one(f"*_{spec.BRAIN_MASK.entities}.nii*") > 0
    regions = one(f"*_{spec.REGIONS_DSEG.entities}.nii*").astype(np.uint8)
    raw_full = np.clip(np.asarray(raw_img.dataobj, dtype=np.float32), 0, None)
    mask &= pre > 0
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 4, 0)
    hi = np.minimum(idx.max(0) + 5, np.array(raw_full.shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    affine = raw_img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    raw, pre, mask, regions = raw_full[sl], pre[sl], mask[sl], regions[sl]
    ratio = np.where(mask, raw / np.maximum(pre, 1e-6), 0.0)
    # the N4 field is smooth: take raw / preproc smoothed over the brain (exact division
    # would put noise into it where preproc is near zero, e.g. in CSF)
    w = mask & (pre > 0.3)
    num = ndi.gaussian_filter(np.where(w, ratio, 0.0), 3.0)
    den = ndi.gaussian_filter(w.astype(np.float32), 3.0)
    bias = np.where(mask, num / np.maximum(den, 1e-3), 1.0).astype(np.float32)
    bias = np.where(mask & (bias <= 0), float(np.median(bias[w])), bias)
    image = np.where(mask, raw / bias, 0.0).astype(np.float32)
    stem = name or Path(raw_t1w).name.split(".nii")[0]
    regions = np.where(mask, regions, 0).astype(np.uint8)
    return Head(stem, image, raw, bias, affine, mask.astype(np.uint8), regions, 1.0)


# --------------------------------------------------------------------------------------------
# the offline MNI phantom (demo dataset)
# --------------------------------------------------------------------------------------------


def mni_regions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(template float32 with WM median 1, affine, brain mask, regions) on nilearn's MNI grid."""
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=1)
    t = np.asarray(tpl.dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    cls = _three_class(t, brain & (t > 0))
    wm_level = float(np.median(t[cls == 3]))
    t = t / wm_level
    regions = regions_from_classes(
        t, cls, np.asarray(mni_bg_prior().dataobj) > 0, mni_cerebrum_mask() & brain
    )
    return t, tpl.affine, brain.astype(np.uint8), regions


def phantom_from_mni(
    load: int | str = "moderate",
    seed: int = 0,
    *,
    bias_strength: float = 0.15,
    noise_sd: float = 0.02,
    contrast_gamma: float = 1.0,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image]:
    """Phantom T1w, truth mask, brain mask and regions on nilearn's MNI152 (offline, seconds).

    The template is a smooth population average, so it looks cleaner than a single head; the
    added bias field and noise make it look more like one acquisition.
    """
    t, aff, brain, regions = mni_regions()
    ph = insert_pvs(t, aff, brain, regions == 2, regions == 1, load=load, seed=seed, csf_level=0.3)
    img = degrade(
        ph.image,
        seed=seed + 1,
        bias_strength=bias_strength,
        noise_sd=noise_sd,
        contrast_gamma=contrast_gamma,
        reference=1.0,
        mask=brain,
    )
    hdr = nib.Nifti1Header()
    hdr.set_xyzt_units("mm")

    def mk(a, dtype):
        return nib.Nifti1Image(np.asarray(a).astype(dtype), aff, header=hdr.copy())

    return (
        mk(img, np.float32),
        mk(ph.truth_mask, np.uint8),
        mk(brain, np.uint8),
        mk(regions, np.uint8),
    )
