"""The first built-in method (variant ``frangi``): Frangi vesselness for dark tubes.

Kept for comparison and for old outputs' provenance; :mod:`mcpvs_bidsapp.vesselness` runs
it with ``{"variant": "frangi"}``. Its fixed darkness thresholds were set on fluid-dark
phantoms and find almost nothing on real 1 mm T1w (issue #15, docs/builtin-method.md).

The vesselness family (Frangi et al. 1998) is what the published T1w PVS pipelines that
mcPVS-Net cites use (Sepehrband et al. 2019; Ballerini et al. 2018; Frangi-guided Lan et al.
2023). The method works on the preprocessed T1w (N4 + WM-normalised so WM ≈ 1) inside the
basal-ganglia (BG) and white-matter (WM) regions, and follows the mcPVS-Net annotators' rules
(Huang et al. 2024, §2.4):

1. *Only clearly visible PVS* – a structure is kept only if it is tubular at some scale
   (Frangi response, hysteresis between two thresholds) **and** clearly darker than its own
   tissue (relative contrast to the local region-specific background); its voxels are those
   that are at least half as dark as fluid would be (the same ≥ 50 % partial-volume rule the
   phantoms' truth uses).
2. *None in the lowest part of the BG* – clusters whose centroid lies in the inferior 25 % of
   the BG's superior–inferior extent are dropped.
3. *Not WMH or lacunes* – clusters containing a dark core wider than a PVS (inscribed radius
   > ``max_radius_mm``), larger than ``max_cluster_mm3``, or lying in WM whose own background
   is hypointense (WMH-like tissue) are dropped.
4. *Not cortex or ventricle edges* – voxels within ``edge_mm`` of the border of BG ∪ WM are
   excluded (partial volume with cortex or CSF mimics a dark line there).
5. *Not the comb-like striatal bridges* – in the WM between caudate and putamen (the BG's
   closing minus the BG), where the grey bridges cross the internal capsule, a cluster must be
   fluid-dark (``bridge_contrast``), not merely grey-dark.

Everything is deterministic (no random numbers, no image-dependent filter constants) and
expressed in mm, so the same parameters apply to any voxel size; anisotropic images are
filtered on an isotropic grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

from . import __version__
from .outputs.spec import Region

METHOD_NAME = "vesselness"
VARIANT = "frangi"
METHOD_DESCRIPTION = (
    "Multi-scale Frangi vesselness for dark tubes on the N4 + WM-normalised T1w inside BG and "
    "WM, hysteresis thresholding, a relative-contrast rule and connected-component rules after "
    "the mcPVS-Net annotation protocol (no lowest BG, no lacune/WMH-like blobs, no region-edge "
    "or striatal-bridge mimics)."
)
#: inferior fraction of the BG extent where PVS are normal and were not annotated
INFERIOR_BG_FRACTION = 0.25

DEFAULT_PARAMS: dict[str, object] = {
    "sigmas_mm": [0.6, 0.9, 1.3],  # Frangi scales (Gaussian sigma) in mm
    "alpha": 0.5,  # plate vs line sensitivity
    "beta": 0.5,  # blob sensitivity
    "gamma": 0.08,  # structure ("second-order contrast") scale, WM-normalised units
    "v_low": 0.05,  # hysteresis thresholds on the vesselness
    "v_high": 0.2,
    "background_sigma_mm": 3.0,  # local, region-specific background (normalised convolution)
    "seed_contrast": 0.4,  # a structure must reach this relative darkness somewhere
    "voxel_contrast": 0.33,  # voxels at least this dark relative to the background
    "min_cluster_mm3": 2.0,
    "max_cluster_mm3": 400.0,
    "max_radius_mm": 2.0,  # wider dark cores are lacunes / large lesions
    "edge_mm": 1.0,  # exclusion band along the BG ∪ WM border
    "wmh_background": 0.82,  # WM whose own background is darker than this is WMH-like
    "bridge_closing_mm": 4.0,
    "bridge_contrast": 0.5,
    "exclude_inferior_bg": True,
}


def _sanitize(params: Mapping | None) -> dict:
    p = dict(DEFAULT_PARAMS)
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise ValueError(f"unknown vesselness parameter(s): {sorted(unknown)}")
        p.update(params)
    p["sigmas_mm"] = [float(s) for s in p["sigmas_mm"]]
    return p


def frangi_dark(
    image: np.ndarray, mask: np.ndarray, sigmas_vox, *, alpha: float, beta: float, gamma: float
) -> np.ndarray:
    """Scale-normalised 3D Frangi vesselness for dark tubes, evaluated only inside ``mask``.

    Written on scipy's Gaussian derivatives rather than calling ``skimage.filters.frangi`` for
    two reasons: (1) the eigen-decomposition is the costly part and here runs on the mask's
    voxels only (BG ∪ WM is ~1/8 of a head's bounding box), and (2) the Hessian is multiplied
    by σ² (Lindeberg scale normalisation) so that one fixed ``gamma`` means the same contrast
    at every scale and voxel size; skimage's default gamma is image-dependent (half the
    maximum Hessian norm), which would make the result depend on unrelated bright structures.
    """
    img = np.asarray(image, dtype=np.float32)
    idx = np.nonzero(mask)
    out = np.zeros(len(idx[0]), np.float32)
    if not len(out):
        return np.zeros(img.shape, np.float32)
    for sigma in sigmas_vox:
        # Gaussian smoothing once, then central differences: 1 separable filter per scale
        # instead of 6 derivative filters; exact enough for sigma >= 0.5 voxel
        sm = ndi.gaussian_filter(img, sigma, mode="nearest")
        grads = np.gradient(sm)
        mat = np.empty((len(out), 3, 3), np.float32)
        for a in range(3):
            second = np.gradient(grads[a], axis=tuple(range(a, 3)))
            second = second if isinstance(second, list | tuple) else [second]
            for k, b in enumerate(range(a, 3)):
                v = second[k][idx] * sigma**2
                mat[:, a, b] = v
                mat[:, b, a] = v
        del grads, sm
        ev = np.linalg.eigvalsh(mat)
        ev = np.take_along_axis(ev, np.abs(ev).argsort(1), 1)
        l1, l2, l3 = ev[:, 0], ev[:, 1], ev[:, 2]
        # dark tube: bright-side curvature, i.e. l2, l3 > 0 and large, l1 ~ 0
        valid = (l2 > 0) & (l3 > 0)
        l2c, l3c = np.maximum(l2, 1e-10), np.maximum(l3, 1e-10)
        ra = l2c / l3c
        rb = np.abs(l1) / np.sqrt(l2c * l3c)
        s = np.sqrt(l1**2 + l2**2 + l3**2)
        v = (1 - np.exp(-(ra**2) / (2 * alpha**2))) * np.exp(-(rb**2) / (2 * beta**2))
        v *= 1 - np.exp(-(s**2) / (2 * gamma**2))
        v[~valid] = 0.0
        np.maximum(out, v, out=out)
    res = np.zeros(img.shape, np.float32)
    res[idx] = out
    return res


def _normalised_smooth(img: np.ndarray, weight: np.ndarray, sigma_vox: float) -> np.ndarray:
    num = ndi.gaussian_filter(img * weight, sigma_vox, mode="constant")
    den = ndi.gaussian_filter(weight.astype(np.float64), sigma_vox, mode="constant")
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)


def _superior_axis(affine: np.ndarray | None) -> tuple[int, float]:
    """Voxel axis closest to world superior and its sign (RAS+ world)."""
    if affine is None:
        return 2, 1.0
    col = np.asarray(affine)[2, :3]
    ax = int(np.argmax(np.abs(col)))
    return ax, float(np.sign(col[ax]) or 1.0)


def _resample(a: np.ndarray, factors, order: int, shape=None) -> np.ndarray:
    if np.allclose(factors, 1.0) and shape is None:
        return a
    out = ndi.zoom(a, factors, order=order, mode="nearest", grid_mode=True)
    if shape is not None and out.shape != tuple(shape):
        pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape, strict=True)]
        out = np.pad(out, pad, mode="edge")[: shape[0], : shape[1], : shape[2]]
    return out


def segment_pvs(
    image: np.ndarray,
    regions: np.ndarray,
    zooms,
    *,
    affine: np.ndarray | None = None,
    params: Mapping | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment PVS on a preprocessed (WM ≈ 1) T1w inside BG and WM (``outputs.spec.Region`` codes).

    Returns ``(probseg float32 in [0, 1], mask uint8, params_used)`` on the input grid.
    ``affine`` (RAS) is used only to find the superior axis for the lowest-BG rule.
    """
    p = _sanitize(params)
    image = np.asarray(image, dtype=np.float32)
    regions = np.asarray(regions)
    if image.shape != regions.shape:
        raise ValueError(f"image shape {image.shape} differs from regions shape {regions.shape}")
    zooms = np.asarray(zooms[:3], dtype=float)
    probseg = np.zeros(image.shape, np.float32)
    mask = np.zeros(image.shape, np.uint8)
    used = {"method": METHOD_NAME, "version": __version__, "variant": VARIANT, **p}
    roi_full = (regions == Region.BG) | (regions == Region.WM)
    if not roi_full.any():
        return probseg, mask, used

    # crop to BG ∪ WM with a margin (filters need context), then go isotropic if needed
    margin = np.ceil(3 * max(p["background_sigma_mm"], max(p["sigmas_mm"])) / zooms).astype(int)
    nz = np.argwhere(roi_full)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, image.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    iso = float(zooms.min())
    factors = zooms / iso
    img = _resample(image[crop], factors, order=1)
    reg = _resample(regions[crop], factors, order=0)
    roi = (reg == Region.BG) | (reg == Region.WM)
    bg, wm = reg == Region.BG, reg == Region.WM
    mm = 1.0 / iso  # voxels per mm

    # local background per region (normalised convolution over the region's non-dark voxels)
    bsig = p["background_sigma_mm"] * mm
    back = np.zeros_like(img)
    for r in (bg, wm):
        if r.any():
            w = r & (img > 0.5 * np.median(img[r]))
            back[r] = _normalised_smooth(img, w, bsig)[r]
    contrast = np.where(roi & (back > 0), (back - img) / np.maximum(back, 1e-6), 0.0)

    # exclusion band along the BG ∪ WM border (cortex, ventricles, other tissue)
    e = int(round(p["edge_mm"] * mm))
    inner = ndi.binary_erosion(roi, structure=_ball(e), border_value=0) if e > 0 else roi

    ves = frangi_dark(
        img,
        inner & (contrast > 0.1),  # only darker-than-tissue voxels can be on a dark tube
        [s * mm for s in p["sigmas_mm"]],
        alpha=p["alpha"],
        beta=p["beta"],
        gamma=p["gamma"],
    )
    # 1. clearly visible tubular structures: hysteresis on vesselness, seeded by dark voxels
    s26 = np.ones((3, 3, 3), bool)
    strong = (ves > p["v_high"]) & (contrast > p["seed_contrast"])
    weak = (ves > p["v_low"]) & inner
    lab, n = ndi.label(weak | strong, structure=s26)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[strong])] = True
    keep[0] = False
    structures = keep[lab]
    # voxels: at least half fluid-dark, next to a tubular structure
    cand = ndi.binary_dilation(structures, structure=s26) & (contrast >= p["voxel_contrast"])
    cand &= inner

    # 2-5. cluster rules
    lab, n = ndi.label(cand, structure=s26)
    voxvol = iso**3
    if n:
        ids = np.arange(1, n + 1)
        size = ndi.sum_labels(np.ones_like(img), lab, ids) * voxvol
        keep = (size >= p["min_cluster_mm3"]) & (size <= p["max_cluster_mm3"])
        # lacune / large-lesion cores: inscribed radius of the dark cluster, box by box
        for i, sl in enumerate(ndi.find_objects(lab)):
            if keep[i] and sl is not None:
                sub = np.pad(lab[sl] == i + 1, 1)
                if ndi.distance_transform_edt(sub).max() * iso > p["max_radius_mm"]:
                    keep[i] = False
        # WMH-like: the cluster's own WM background is hypointense
        frac_wm = ndi.mean(wm.astype(float), lab, ids)
        bmean = ndi.mean(back, lab, ids)
        keep &= ~((frac_wm > 0.5) & (bmean < p["wmh_background"]))
        # striatal bridges: WM enclosed by the BG's closing must be fluid-dark
        if bg.any() and p["bridge_closing_mm"] > 0:
            rad_vox = max(1, int(round(p["bridge_closing_mm"] * mm)))
            zone = np.zeros_like(bg)
            bsl = ndi.find_objects(bg.astype(np.uint8))[0]
            sub = np.pad(bg[bsl], rad_vox)
            sub = ndi.binary_closing(sub, structure=_ball(rad_vox))
            zone[bsl] = sub[tuple(slice(rad_vox, -rad_vox) for _ in range(3))]
            zone &= wm
            frac_zone = ndi.mean(zone.astype(float), lab, ids)
            cmax = ndi.maximum(contrast, lab, ids)
            keep &= ~((frac_zone > 0.5) & (cmax < p["bridge_contrast"]))
        # lowest part of the BG
        if p["exclude_inferior_bg"] and bg.any():
            ax, sign = _superior_axis(affine)
            coord = np.broadcast_to(
                (np.arange(img.shape[ax]) * sign).reshape([-1 if d == ax else 1 for d in range(3)]),
                img.shape,
            )
            bz = coord[bg]
            zlo, zhi = np.percentile(bz, [1, 99])
            zcut = zlo + INFERIOR_BG_FRACTION * (zhi - zlo)
            frac_bg = ndi.mean(bg.astype(float), lab, ids)
            cz = ndi.mean(coord.astype(float), lab, ids)
            keep &= ~((frac_bg > 0.5) & (cz < zcut))
        keep = np.concatenate([[False], keep])
        final = keep[lab]
    else:
        final = cand

    # probability-like score: vesselness × darkness, both saturating at twice their threshold
    score = np.sqrt(
        np.clip(ves / (2 * p["v_low"]), 0, 1) * np.clip(contrast / (2 * p["voxel_contrast"]), 0, 1)
    )
    score = np.where(inner, score, 0.0)
    score = np.where(final, np.maximum(score, 0.5), np.minimum(score, 0.49))

    # back to the input grid
    shape_c = tuple(s.stop - s.start for s in crop)
    inv = 1.0 / factors
    probseg[crop] = np.clip(_resample(score, inv, order=1, shape=shape_c), 0, 1)
    if np.allclose(factors, 1.0):
        mask[crop] = final
    else:
        mask[crop] = _resample(final.astype(np.float32), inv, order=1, shape=shape_c) >= 0.5
    mask &= roi_full.astype(np.uint8)
    probseg[~roi_full] = 0.0
    return probseg.astype(np.float32), mask.astype(np.uint8), used


def _ball(r: int) -> np.ndarray:
    g = np.indices((2 * r + 1,) * 3) - r
    return (g**2).sum(0) <= r * r
