"""What real PVS look like on the shared heads, and whether the phantoms look the same.

Subcommands (all print figures; PNGs go to ``--out``):

* ``make-bids DIR`` - a BIDS dataset of the shared real heads (symlinks) to run
  ``mcpvs DIR OUT participant`` on once; the other subcommands read its outputs;
* ``candidates`` - dark-dot candidates on each head (local minima of the 0.5 mm-smoothed
  image ≥ 10 % darker than the 9 mm median of their own region, 2 voxels inside BG or WM),
  rendered as contact sheets (three orthogonal 17 mm patches each) for visual labelling;
* ``measure`` - the labelled PVS-like candidates (``benchmarks/data/real_pvs_labels.json``):
  darkest voxel and half-dip core over the robust local tissue level, apparent width (FWHM
  of the dip across the structure), length (FWHM along it), dot vs tube;
* ``phantom`` - the same candidate search and measurement on a realistic phantom made in
  the same head, restricted to candidates on inserted PVS: the phantom-vs-real comparison of
  docs/builtin-method.md; also a side-by-side PNG of real and phantom PVS at the same zoom;
* ``demo-mask`` - element statistics of the mcPVS-Net authors' own output mask
  (``../shared/data/masks``): number, size, width and elongation of its 26-connected elements.

    PYTHONPATH=. python benchmarks/builtin_method_real_pvs.py make-bids /work/cache-builtin/bids
    mcpvs /work/cache-builtin/bids /work/cache-builtin/out participant --regions samseg \\
        --method vesselness -w /work/cache-builtin/work
    PYTHONPATH=. python benchmarks/builtin_method_real_pvs.py measure \\
        --derivatives /work/cache-builtin/out
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcpvs_bidsapp.synthetic.datasets import shared_data_dir  # noqa: E402

LABELS = ROOT / "benchmarks" / "data" / "real_pvs_labels.json"
#: the visual review of every mask cluster (``review --sheets``): one label per cluster at its
#: darkest voxel, so that a later mask is scored against the same judgements
CLUSTER_REVIEW = ROOT / "benchmarks" / "data" / "cluster_review.json"
#: shared head file stem -> participant label used in the benchmark BIDS dataset
HEADS = {
    "philips_adni_sag3d_mprage_t1w": "philips",
    "arc2017_stroke_t1w": "arc",
    "niivue_otsu_t1w": "otsu",
    "mne_sample_brain_t1w": "mne",
}


def make_bids(dest: Path) -> Path:
    """Symlinked BIDS dataset of the shared real heads (sub-philips, sub-arc, ...)."""
    data = shared_data_dir() / "t1w"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dataset_description.json").write_text(
        json.dumps({"Name": "mcpvs shared real heads", "BIDSVersion": "1.9.0"})
    )
    rows = ["participant_id"]
    for stem, label in HEADS.items():
        anat = dest / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        link = anat / f"sub-{label}_T1w.nii.gz"
        if not link.exists():
            link.symlink_to(data / f"{stem}.nii.gz")
        (anat / f"sub-{label}_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
        rows.append(f"sub-{label}")
    (dest / "participants.tsv").write_text("\n".join(rows) + "\n")
    return dest


def load_head(stem: str, derivatives: Path):
    from mcpvs_bidsapp.synthetic import phantoms

    label = HEADS[stem]
    return phantoms.head_from_derivatives(
        shared_data_dir() / "t1w" / f"{stem}.nii.gz", derivatives / f"sub-{label}" / "anat", stem
    )


def _region_median(image, regions, size_vox=9):
    back = np.zeros(image.shape, np.float32)
    for r in (1, 2):
        m = regions == r
        if m.any():
            fill = np.where(m, image, np.median(image[m])).astype(np.float32)
            back[m] = ndi.median_filter(fill, size=size_vox)[m]
    return back


def noise_sd(image, regions) -> float:
    """Voxel noise SD in WM units: robust SD of the residual after a 3-voxel box filter."""
    res = image - ndi.uniform_filter(image, 3)
    v = res[regions == 2]
    return float(1.4826 * np.median(np.abs(v - np.median(v))) / np.sqrt(1 - 1 / 27))


def find_candidates(image, regions, min_contrast=0.10) -> list[dict]:
    """Local minima of the 0.5 mm-smoothed image ≥ ``min_contrast`` below their region's
    9 mm median, 2 voxels inside BG or WM, darkest first."""
    roi = (regions == 1) | (regions == 2)
    inner = ndi.binary_erosion(roi, iterations=2)
    sm = ndi.gaussian_filter(image.astype(np.float32), 0.5)
    back = _region_median(image, regions)
    con = np.where(roi, 1 - sm / np.maximum(back, 1e-3), 0)
    locmin = (sm == ndi.minimum_filter(sm, size=3)) & inner & (con > min_contrast)
    out = [
        {"ijk": [int(v) for v in ijk], "region": int(regions[tuple(ijk)]), "contrast": float(c)}
        for ijk, c in zip(np.argwhere(locmin), con[locmin], strict=True)
    ]
    return sorted(out, key=lambda c: -c["contrast"])


def measure_candidate(image, regions, ijk) -> dict:
    """Darkest voxel and half-dip core over the local tissue, widths and length (mm, 1 mm
    voxels assumed: the shared heads are 1 mm isotropic)."""
    from scipy.ndimage import map_coordinates

    h = 5
    x, y, z = ijk
    pad = np.pad(image.astype(float), h + 4, mode="edge")
    preg = np.pad(regions, h + 4)
    x, y, z = x + h + 4, y + h + 4, z + h + 4
    sl = tuple(slice(v - h, v + h + 1) for v in (x, y, z))
    sub, reg = pad[sl], preg[sl] == preg[x, y, z]
    g = np.indices(sub.shape) - h
    dist = np.sqrt((g**2).sum(0))
    b = float(np.median(sub[reg & (dist > 2.5)]))
    imin = float(sub[h, h, h])
    core = (sub <= b - 0.5 * (b - imin)) & (dist <= 3) & reg
    lab, _ = ndi.label(core, np.ones((3, 3, 3)))
    core = lab == lab[h, h, h] if lab[h, h, h] else np.zeros_like(core)
    big = tuple(slice(v - h - 3, v + h + 4) for v in (x, y, z))
    s = ndi.gaussian_filter(pad[big], 0.7)
    cc = h + 3
    hess = np.zeros((3, 3))
    for a in range(3):
        ga = np.gradient(s, axis=a)
        for bb in range(3):
            hess[a, bb] = np.gradient(ga, axis=bb)[cc, cc, cc]
    _, evec = np.linalg.eigh(hess)
    raw = pad[big]

    def fwhm(v):
        t = np.arange(-4, 4.01, 0.1)
        prof = map_coordinates(
            raw, np.array([cc + t * v[0], cc + t * v[1], cc + t * v[2]]), order=1
        )
        dip = b - prof
        half = 0.5 * dip[len(t) // 2]
        lo = hi = len(t) // 2
        while lo > 0 and dip[lo] > half:
            lo -= 1
        while hi < len(t) - 1 and dip[hi] > half:
            hi += 1
        return (hi - lo) * 0.1

    width, width2, length = fwhm(evec[:, 2]), fwhm(evec[:, 1]), fwhm(evec[:, 0])
    return {
        "background": b,
        "peak_ratio": imin / b,
        "core_median_ratio": float(np.median(sub[core]) / b) if core.any() else float("nan"),
        "core_voxels": int(core.sum()),
        "width_mm": width,
        "width2_mm": width2,
        "length_mm": length,
        "tube": bool(length >= 2 * width),
    }


def summarise(rows: list[dict], title: str) -> dict:
    out = {"n": len(rows)}
    print(f"{title}: n={len(rows)}")
    for key in ("peak_ratio", "core_median_ratio", "width_mm", "width2_mm", "length_mm"):
        vals = np.array([r[key] for r in rows], float)
        if len(vals):
            pct = np.nanpercentile(vals, [10, 25, 50, 75, 90])
            out[key] = [round(float(v), 3) for v in pct]
            print(f"  {key:18s} p10/25/50/75/90 = " + " / ".join(f"{v:.2f}" for v in pct))
    if rows:
        out["tube_fraction"] = float(np.mean([r["tube"] for r in rows]))
        print(f"  tube-like (length ≥ 2 × width): {out['tube_fraction']:.2f}")
    return out


def _world_to_ijk(affine, xyz):
    inv = np.linalg.inv(affine)
    return [int(round(v)) for v in inv[:3, :3] @ np.asarray(xyz, float) + inv[:3, 3]]


def _patches(image, ijk, h=8):
    p = np.pad(image, h, mode="constant")
    x, y, z = (v + h for v in ijk)
    return [
        p[x - h : x + h + 1, y - h : y + h + 1, z].T,
        p[x - h : x + h + 1, y, z - h : z + h + 1].T,
        p[x, y - h : y + h + 1, z - h : z + h + 1].T,
    ]


def contact_sheet(image, items, path, title, cols=4, vmin=0.5, vmax=1.15):
    """Three orthogonal 17-voxel patches per item (axial, coronal, sagittal of the array
    axes), labelled with the item's caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, int(np.ceil(len(items) / cols)))
    fig = plt.figure(figsize=(cols * 3.6, rows * 1.45 + 0.4))
    for k, (ijk, caption) in enumerate(items):
        for v, im in enumerate(_patches(image, ijk)):
            ax = fig.add_subplot(rows, cols * 3, k * 3 + v + 1)
            ax.imshow(
                im, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if v == 0:
                ax.set_title(caption, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    plt.subplots_adjust(wspace=0.03, hspace=0.3, left=0.01, right=0.99, top=0.94, bottom=0.01)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_candidates(args) -> None:
    for stem in args.heads:
        head = load_head(stem, args.derivatives)
        cands = find_candidates(head.image, head.regions)
        print(f"{stem}: {len(cands)} candidates, noise SD {noise_sd(head.image, head.regions):.3f}")
        for start in range(0, len(cands), 24):
            items = [
                (c["ijk"], f"{start + i} {'BG' if c['region'] == 1 else 'WM'} {c['contrast']:.2f}")
                for i, c in enumerate(cands[start : start + 24])
            ]
            contact_sheet(
                head.image,
                items,
                args.out / f"{stem}_candidates_{start:03d}.png",
                f"{stem}: dark-dot candidates {start}-{start + len(items) - 1}",
            )


def _labelled(stem: str, path: Path | None = None) -> list[tuple[list[float], int]]:
    """(world xyz, label) rows of ``stem`` in a labels file (default :data:`LABELS`, read when
    called so that a test can point it elsewhere; or :data:`CLUSTER_REVIEW`); none when the
    file is absent."""
    path = LABELS if path is None else path
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    return [(r[:3], int(r[3])) for r in doc["heads"].get(stem, {}).get("labels", [])]


def _element_labels(near: np.ndarray, n: int, affine, labels) -> np.ndarray:
    """Per element 1..n of a label image (``near``: the elements grown by one voxel), the label
    of ``labels`` rows falling on it (PVS-like wins over unsure over not), -1 for none."""
    best = np.full(n + 1, -1)
    rank = {1: 3, 2: 2, 0: 1}
    for xyz, lb in labels:
        ijk = _world_to_ijk(affine, xyz)
        if all(0 <= v < d for v, d in zip(ijk, near.shape, strict=True)):
            c = int(near[tuple(ijk)])
            if c and rank[lb] > rank.get(int(best[c]), 0):
                best[c] = lb
    return best[1:]


def score_review(mask: np.ndarray, affine, stem: str) -> dict | None:
    """The mask's clusters against the visual review of ``stem`` (:data:`CLUSTER_REVIEW`): a
    cluster takes the label of a reviewed darkest voxel within one voxel of it (PVS-like wins
    over unsure over not when several fall on it); clusters with none are ``unreviewed``.

    Also the single-voxel clusters' labels (``single_voxel``), and the second, independent
    review of dark dots (:data:`LABELS`, labelled on the dot, not on the mask): ``either`` is
    the fraction of judged clusters PVS-like in one review and "not" in neither. On the Philips
    head 24 of the 38 single-voxel clusters left "unsure" sit on a dot labelled PVS-like
    (2026-12-03): one voxel of a visible PVS is hard to judge on the mask's own views."""
    from mcpvs_bidsapp import measures

    labels = _labelled(stem, CLUSTER_REVIEW)
    if not labels:
        return None
    lab, n = measures.label_clusters(mask)
    near = ndi.grey_dilation(lab, size=(3, 3, 3))
    near = np.where(lab > 0, lab, near)
    best = _element_labels(near, n, affine, labels)
    dots = _element_labels(near, n, affine, _labelled(stem))
    one = np.bincount(lab.ravel(), minlength=n + 1)[1:] == 1
    out = {"pvs_like": int((best == 1).sum()), "not_pvs": int((best == 0).sum()),
           "unsure": int((best == 2).sum()), "unreviewed": int((best < 0).sum())}  # fmt: skip
    judged = out["pvs_like"] + out["not_pvs"] + out["unsure"]
    out["pvs_like_fraction"] = out["pvs_like"] / judged if judged else float("nan")
    out["single_voxel"] = {
        "clusters": int(one.sum()),
        "pvs_like": int((one & (best == 1)).sum()),
        "not_pvs": int((one & (best == 0)).sum()),
        "unsure": int((one & (best == 2)).sum()),
    }
    out["unsure_on_labelled_pvs"] = int(((best == 2) & (dots == 1)).sum())
    either = ((best == 1) | (dots == 1)) & (best != 0) & (dots != 0) & (best >= 0)
    out["either_pvs_like_fraction"] = float(either.sum() / judged) if judged else float("nan")
    return out


def cmd_measure(args) -> dict:
    result = {}
    for stem in args.heads:
        labels = _labelled(stem)
        if not labels:
            continue
        head = load_head(stem, args.derivatives)
        rows = []
        for xyz, lab in labels:
            if lab == 1:
                ijk = _world_to_ijk(head.affine, xyz)
                m = measure_candidate(head.image, head.regions, ijk)
                m["region"] = int(head.regions[tuple(ijk)])
                rows.append(m)
        print(f"== {stem}: noise SD {noise_sd(head.image, head.regions):.3f} (WM units)")
        result[stem] = {
            "noise_sd": noise_sd(head.image, head.regions),
            "n_labelled": len(labels),
            "all": summarise(rows, "PVS-like, all"),
            "BG": summarise([r for r in rows if r["region"] == 1], "PVS-like, BG"),
            "WM": summarise([r for r in rows if r["region"] == 2], "PVS-like, WM"),
        }
    return result


def phantom_measure(head, load="moderate", seed=3, **kw) -> tuple[dict, object]:
    """Candidates on a realistic phantom of ``head`` that sit on an inserted PVS, measured
    like the real ones."""
    from mcpvs_bidsapp.synthetic import realistic

    ph = realistic.insert_realistic_pvs(
        head.image, head.affine, head.brain_mask, head.regions == 2, head.regions == 1,
        load=load, seed=seed, **kw,
    )  # fmt: skip
    cands = find_candidates(ph.image, head.regions)
    near = ndi.binary_dilation(ph.truth_mask > 0)
    on = [c for c in cands if near[tuple(c["ijk"])]]
    rows = []
    for c in on:
        m = measure_candidate(ph.image, head.regions, c["ijk"])
        m["region"] = c["region"]
        rows.append(m)
    n_truth = sum(1 for p in ph.pvs if p.n_truth_voxels)
    vals = ph.image[ph.truth_mask > 0] / np.maximum(ph.local_tissue[ph.truth_mask > 0], 1e-6)
    print(
        f"phantom {head.name} load={load} seed={seed} PSF FWHM {ph.psf_fwhm_mm:.2f} mm: "
        f"{len(ph.pvs)} PVS, {n_truth} with truth voxels, {len(on)} found as candidates "
        f"(≥ 10 % dip); truth voxels / local tissue (with the head's noise): median "
        f"{np.median(vals):.3f}, noise-free per-PVS median {ph.truth_median_ratio():.3f}"
    )
    out = summarise(rows, "phantom PVS found as candidates")
    out["truth_voxel_median_ratio"] = float(np.median(vals))
    out["candidate_fraction"] = len(on) / max(n_truth, 1)
    return out, ph


def cmd_phantom(args) -> dict:
    result = {}
    for stem in args.heads:
        head = load_head(stem, args.derivatives)
        out, ph = phantom_measure(head, args.load, args.seed)
        result[stem] = out
        # side by side: real labelled PVS and phantom PVS of the same head, same zoom
        real = [
            (_world_to_ijk(head.affine, xyz), "real") for xyz, lab in _labelled(stem) if lab == 1
        ][:12]
        cands = find_candidates(ph.image, head.regions)
        on = [c for c in cands if ph.truth_mask[tuple(c["ijk"])]]
        rng = np.random.default_rng(0)
        pick = [on[i] for i in sorted(rng.choice(len(on), min(12, len(on)), replace=False))]
        fake = []
        for c in pick:
            pid = int(ph.pvs_id[tuple(c["ijk"])])
            p = ph.pvs[pid - 1]
            fake.append((c["ijk"], f"phantom {p.kind} d={p.diameter_mm:.1f}mm"))
        if real:
            contact_sheet(
                head.image, real, args.out / f"{stem}_real_pvs.png",
                f"{stem}: real PVS-like dots (visually labelled)",
            )  # fmt: skip
        contact_sheet(
            ph.image, fake, args.out / f"{stem}_phantom_pvs.png",
            f"{stem}: realistic phantom PVS (PSF FWHM {ph.psf_fwhm_mm:.2f} mm), same window",
        )  # fmt: skip
    return result


def cmd_demo_mask(args) -> dict:
    import nibabel as nib

    path = shared_data_dir() / "masks" / "mcpvsnet_demo_pvs_predicted.nii.gz"
    m = np.asarray(nib.load(str(path)).dataobj) > 0
    lab, n = ndi.label(m, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(lab.ravel())[1:]
    lengths, widths = [], []
    for i, sl in enumerate(ndi.find_objects(lab)):
        pts = np.argwhere(lab[sl] == i + 1).astype(float)
        if len(pts) >= 3:
            ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
            lengths.append(np.sqrt(12 * max(ev[0], 0)) + 1)
            widths.append(np.sqrt(12 * max(ev[1], 0)) + 1)
        else:
            lengths.append(len(pts))
            widths.append(1.0)
    lengths, widths = np.array(lengths), np.array(widths)
    areas = []
    for z in range(m.shape[2]):
        lab2, k = ndi.label(m[:, :, z])
        if k:
            areas += list(np.bincount(lab2.ravel())[1:])
    areas = np.array(areas)
    res = {
        "elements": int(n),
        "volume_mm3": int(m.sum()),
        "size_vox_p10_25_50_75_90_99": np.percentile(sizes, [10, 25, 50, 75, 90, 99]).tolist(),
        "size_max": int(sizes.max()),
        "fraction_le_5_vox": float((sizes <= 5).mean()),
        "fraction_le_20_vox": float((sizes <= 20).mean()),
        "length_mm_p25_50_75_90": np.percentile(lengths, [25, 50, 75, 90]).round(1).tolist(),
        "width_mm_p25_50_75_90": np.percentile(widths, [25, 50, 75, 90]).round(1).tolist(),
        "elongated_fraction": float((lengths / widths > 2).mean()),
        "axial_blob_area_p25_50_75_90": np.percentile(areas, [25, 50, 75, 90]).tolist(),
    }
    for k, v in res.items():
        print(f"{k}: {v}")
    return res


#: hand-drawn box (scanner RAS mm) around the arc2017 head's left-hemisphere infarct; the
#: reference infarct is the largest thick-fluid body inside it (see :func:`reference_infarct`)
ARC_INFARCT_BOX_MM = ((-72.0, -18.0), (-44.0, 78.0), (-12.0, 37.0))


def reference_infarct(image, brain, affine, box=ARC_INFARCT_BOX_MM) -> np.ndarray:
    """The benchmark's reference infarct cavity: fluid-dark voxels (< 0.5 x WM) in the brain
    inside ``box`` that belong to the largest body of fluid at least 2 mm from tissue,
    grown back by 2 mm within the fluid (a morphological opening, so a sulcus or a PVS does
    not count). Drawn for the review only; the method never sees the box."""
    ijk = np.indices(image.shape).reshape(3, -1).T
    xyz = ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    inside = np.ones(len(xyz), bool)
    for a, (lo, hi) in enumerate(box):
        inside &= (xyz[:, a] >= lo) & (xyz[:, a] <= hi)
    inbox = inside.reshape(image.shape)
    fluid = (image < 0.5) & (brain > 0) & inbox
    core = ndi.distance_transform_edt(fluid) >= 2.0
    lab, n = ndi.label(core, structure=np.ones((3, 3, 3)))
    if not n:
        return np.zeros(image.shape, bool)
    big = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return fluid & (ndi.distance_transform_edt(~big) <= 2.0)


def _derivative(anat: Path, derivative):
    import nibabel as nib

    hits = sorted(anat.glob(f"*_{derivative.entities}{derivative.extension}"))
    if len(hits) != 1:
        raise FileNotFoundError(f"{anat}: expected one {derivative.entities}, found {len(hits)}")
    return nib.load(str(hits[0]))


def review_head(stem: str, derivatives: Path, params=None) -> dict:
    """Segment one head's own preprocessed T1w (what the app gives the method) and measure
    what a reader checks: clusters, BG clusters, labelled real PVS found, PVS near the infarct
    (arc2017), QC flags. Returns the figures and the arrays for the contact sheets."""
    import time

    from mcpvs_bidsapp import measures, vesselness
    from mcpvs_bidsapp.outputs import spec

    anat = derivatives / f"sub-{HEADS[stem]}" / "anat"
    pre_img = _derivative(anat, spec.PREPROC_T1W)
    pre = np.asarray(pre_img.dataobj, dtype=np.float32)
    brain = np.asarray(_derivative(anat, spec.BRAIN_MASK).dataobj) > 0
    regions = np.where(brain, np.asarray(_derivative(anat, spec.REGIONS_DSEG).dataobj), 0)
    regions = regions.astype(np.uint8)
    zooms = pre_img.header.get_zooms()[:3]
    t0 = time.perf_counter()
    _, mask, used = vesselness.segment_pvs(
        pre, regions, zooms, affine=pre_img.affine, params=params
    )
    seconds = time.perf_counter() - t0
    census = measures.cluster_census(mask, regions, pre_img.affine)
    qc = measures.qc_flags(mask, regions, brain, pre_img.affine, census, t1w=pre)
    vox = float(abs(np.linalg.det(pre_img.affine[:3, :3])))
    out: dict = {
        "head": stem,
        "seconds": seconds,
        "clusters": int(len(census)),
        "bg_clusters": int((census.region == spec.Region.BG.label).sum()),
        "volume_mm3": float(mask.sum() * vox),
        "bg_volume_mm3": float((mask.astype(bool) & (regions == spec.Region.BG)).sum() * vox),
        "qc_flags": [f["flag"] for f in qc["QCFlags"]],
        "measured": used.get("measured", {}),
    }
    near = ndi.binary_dilation(mask > 0, structure=np.ones((3, 3, 3)))
    labels = _labelled(stem)
    if labels:
        hits = {0: 0, 1: 0, 2: 0}
        totals = {0: 0, 1: 0, 2: 0}
        for xyz, lab in labels:
            ijk = _world_to_ijk(pre_img.affine, xyz)
            totals[lab] += 1
            hits[lab] += bool(near[tuple(ijk)])
        out["labelled_pvs_found"] = [hits[1], totals[1]]
        out["labelled_not_pvs_hit"] = [hits[0], totals[0]]
        out["labelled_unsure_hit"] = [hits[2], totals[2]]
    reviewed = score_review(mask, pre_img.affine, stem)
    if reviewed is not None:
        out["cluster_review"] = reviewed
    if stem == "arc2017_stroke_t1w":
        inf = reference_infarct(pre, brain, pre_img.affine)
        dist = ndi.distance_transform_edt(~inf, sampling=zooms)
        pvs = mask > 0
        lab, n = ndi.label(pvs, structure=np.ones((3, 3, 3)))
        wall = ndi.binary_dilation(inf, structure=np.ones((3, 3, 3)))
        on_wall = np.unique(lab[wall & pvs])
        out["infarct_mm3"] = float(inf.sum() * vox)
        out["pvs_within_3mm_of_infarct_fraction"] = float(
            (pvs & (dist <= 3.0)).sum() / max(pvs.sum(), 1)
        )
        out["clusters_on_cavity_wall"] = int((on_wall > 0).sum())
        out["_infarct"] = inf
    out["_mask"], out["_image"], out["_affine"], out["_census"] = mask, pre, pre_img.affine, census
    return out


def review_sheets(res: dict, out_dir: Path, per_sheet: int = 20) -> list[Path]:
    """Every cluster: axial patch without and with its outline, coronal and sagittal with it
    (21 mm, RAS view, same window), largest first; 20 per PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    ornt = nib.orientations.io_orientation(res["_affine"])
    canon = nib.orientations.apply_orientation
    img = canon(res["_image"], ornt)
    mask = canon(res["_mask"], ornt) > 0
    extra = canon(res["_infarct"], ornt) > 0 if "_infarct" in res else None
    lab, _ = ndi.label(mask, structure=np.ones((3, 3, 3)))
    items = []
    for i, sl in enumerate(ndi.find_objects(lab)):
        sub = lab[sl] == i + 1
        pts = np.argwhere(sub) + [s.start for s in sl]
        vals = img[tuple(pts.T)]
        items.append((pts[int(np.argmin(vals))], int(sub.sum()), i + 1))
    items.sort(key=lambda t: (-t[1], tuple(t[0])))
    # world position of each sheet cluster's darkest voxel: the key of the review labels
    to_native = nib.orientations.inv_ornt_aff(ornt, res["_image"].shape)
    world = res["_affine"] @ to_native
    index = [
        {"number": k + 1, "voxels": size,
         "xyz": [round(float(v), 2) for v in world[:3, :3] @ c + world[:3, 3]]}
        for k, (c, size, _) in enumerate(items)
    ]  # fmt: skip
    (out_dir / f"{res['head']}_clusters.json").write_text(
        "[\n" + ",\n".join(json.dumps(i) for i in index) + "\n]\n"
    )
    h = 10
    pad = np.pad(img, h)
    padm = np.pad(mask, h)
    pade = np.pad(extra, h) if extra is not None else None
    paths = []
    for start in range(0, len(items), per_sheet):
        chunk = items[start : start + per_sheet]
        cols = 4
        rows = int(np.ceil(len(chunk) / cols))
        fig = plt.figure(figsize=(cols * 4 * 1.5, rows * 1.65 + 0.4))
        for k, (c, size, _) in enumerate(chunk):
            x, y, z = (int(v) + h for v in c)
            views = [
                (pad[x - h : x + h + 1, y - h : y + h + 1, z].T, None),
                (pad[x - h : x + h + 1, y - h : y + h + 1, z].T,
                 padm[x - h : x + h + 1, y - h : y + h + 1, z].T),
                (pad[x - h : x + h + 1, y, z - h : z + h + 1].T,
                 padm[x - h : x + h + 1, y, z - h : z + h + 1].T),
                (pad[x, y - h : y + h + 1, z - h : z + h + 1].T,
                 padm[x, y - h : y + h + 1, z - h : z + h + 1].T),
            ]  # fmt: skip
            for v, (im, m) in enumerate(views):
                ax = fig.add_subplot(rows, cols * 4, k * 4 + v + 1)
                ax.imshow(im, origin="lower", cmap="gray", vmin=0.45, vmax=1.15,
                          interpolation="nearest")  # fmt: skip
                if m is not None and m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors="r", linewidths=0.5)
                if v == 1 and pade is not None:
                    e = pade[x - h : x + h + 1, y - h : y + h + 1, z].T
                    if e.any():
                        ax.contour(e.astype(float), levels=[0.5], colors="c", linewidths=0.5)
                ax.set_xticks([])
                ax.set_yticks([])
                if v == 0:
                    ax.set_title(f"#{start + k + 1} {size} vox", fontsize=8, loc="left")
        fig.suptitle(
            f"{res['head']}: every PVS cluster of the built-in method, clusters "
            f"{start + 1}-{start + len(chunk)} of {len(items)} (axial, axial+outline, "
            "coronal, sagittal; 21 mm)",
            fontsize=8,
        )
        plt.subplots_adjust(wspace=0.03, hspace=0.35, left=0.005, right=0.995, top=0.95,
                            bottom=0.005)  # fmt: skip
        path = out_dir / f"{res['head']}_clusters_{start // per_sheet + 1:02d}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def outside_regions(res: dict, reference: Path) -> dict:
    """How much of a review's mask lies in clusters that are mostly (> half their voxels)
    outside BG ∪ WM of another run of the same T1w (``reference``, e.g. the Samseg run when
    the mask came from ``--regions fast``): the grey matter a coarse region lets in."""
    from mcpvs_bidsapp import measures
    from mcpvs_bidsapp.outputs import spec

    img = _derivative(reference / f"sub-{HEADS[res['head']]}" / "anat", spec.REGIONS_DSEG)
    if img.shape != res["_mask"].shape or not np.allclose(img.affine, res["_affine"], atol=1e-3):
        raise ValueError(f"{reference}: its regions are not on the grid of the reviewed mask")
    inside = np.isin(np.asarray(img.dataobj), [int(spec.Region.BG), int(spec.Region.WM)])
    lab, n = measures.label_clusters(res["_mask"])
    ids = np.arange(1, n + 1)
    share = np.asarray(ndi.mean(inside.astype(float), lab, ids)) if n else np.zeros(0)
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    out = share < 0.5
    vox = float(abs(np.linalg.det(res["_affine"][:3, :3])))
    return {
        "clusters": int(out.sum()),
        "volume_mm3": float(size[out].sum() * vox),
        "volume_fraction": float(size[out].sum() / max(size.sum(), 1)),
    }


def cmd_review(args) -> dict:
    result = {}
    for stem in args.heads:
        res = review_head(stem, args.derivatives, args.params)
        paths = review_sheets(res, args.out) if args.sheets else []
        figures = {k: v for k, v in res.items() if not k.startswith("_")}
        if args.reference_regions:
            figures["outside_reference_regions"] = outside_regions(res, args.reference_regions)
        figures["sheets"] = [str(p) for p in paths]
        print(json.dumps(figures, indent=1, default=float))
        result[stem] = figures
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "command",
        choices=["make-bids", "candidates", "measure", "phantom", "demo-mask", "review"],
    )
    ap.add_argument("dest", nargs="?", type=Path, help="make-bids: where the dataset goes")
    ap.add_argument("--derivatives", type=Path, default=Path("/work/cache-builtin/out"))
    ap.add_argument("--heads", nargs="*", default=list(HEADS)[:3])
    ap.add_argument("--out", type=Path, default=Path("/work/cache-builtin/real_pvs"))
    ap.add_argument("--load", default="moderate")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--params", type=json.loads, default=None, help="review: JSON overrides")
    ap.add_argument("--sheets", action="store_true", help="review: write the contact sheets")
    ap.add_argument(
        "--reference-regions",
        type=Path,
        help="review: derivatives of another run of the same heads (e.g. Samseg for a fast "
        "run); reports the mask's clusters lying mostly outside its BG and WM",
    )
    args = ap.parse_args(argv)
    if args.command == "make-bids":
        print(make_bids(args.dest or Path("/work/cache-builtin/bids")))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    fn = {
        "candidates": cmd_candidates,
        "measure": cmd_measure,
        "phantom": cmd_phantom,
        "demo-mask": cmd_demo_mask,
        "review": cmd_review,
    }[args.command]
    res = fn(args)
    if args.json and res is not None:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
