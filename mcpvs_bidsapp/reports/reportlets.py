"""Reportlets: one PNG figure each, drawn with plain matplotlib from files on disk.

Why not niworkflows' SVG reportlets: they take 6-13 s and 1.7-4 MB each at 1 mm
(../shared/deps/README.md), and a report needs eight of them per T1w. These 256-colour PNG
mosaics take about 19 s and 1 MB for all eight on a loaded 2-core machine
(benchmarks/report_timing.py) and still show single PVS in the zoomed panels. Images are
reoriented to RAS first, so every figure is shown the same way (neurological convention:
the subject's left on the left of axial and coronal panels).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from mcpvs_bidsapp.outputs.spec import PVS_REGIONS, Region  # noqa: E402
from mcpvs_bidsapp.reports import panels  # noqa: E402

DPI = 90
#: screen pixels per mm of the zoomed panels: a 1 mm PVS voxel is a 7 x 7 pixel square,
#: plainly visible inside its one-pixel outline
ZOOM_PX_PER_MM = 7.0
PVS_COLOUR = "#ff2a2a"
PVS_RGB = panels.hex_rgb(PVS_COLOUR)
PVS_CODES = [int(r) for r in PVS_REGIONS]
REGION_COLOURS = {Region.BG: "#ffb000", Region.WM: "#1f9bff"}  # amber, blue: colour-blind safe
_PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, dtype: str) -> Volume:
    return Volume(path, np.dtype(dtype))


def load(path: Path | str, dtype=np.float32) -> Volume:
    """A Volume, read once per report: the reportlets of a T1w share its few images.

    Keyed by modification time too, so a rewritten file is read again; call
    ``load.cache_clear()`` (``clear_cache``) when a report is done to free the memory.
    """
    path = str(path)
    return _load(path, Path(path).stat().st_mtime_ns, np.dtype(dtype).str)


def clear_cache() -> None:
    _load.cache_clear()


class Volume:
    """An image reoriented to RAS, with its voxel sizes, for slicing in world-aligned planes."""

    def __init__(self, path: Path | str | nb.Nifti1Image, dtype=np.float32):
        img = path if isinstance(path, nb.spatialimages.SpatialImage) else nb.load(str(path))
        img = nb.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
        if data.ndim > 3:
            data = data.reshape(data.shape[:3] + (-1,))[..., 0]
        self.data = data.astype(dtype, copy=False)
        self.zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)

    def slice(self, plane: str, index: int) -> np.ndarray:
        """2D slice with rows running inferior->superior (or posterior->anterior for axial)."""
        axis = _PLANES[plane]
        # basic indexing is a view; np.take would first copy the whole (reoriented) volume
        return self.data[(slice(None),) * axis + (index,)].T

    def extent(self, plane: str) -> list[float]:
        shown = [a for a in range(3) if a != _PLANES[plane]]
        w = self.data.shape[shown[0]] * self.zooms[shown[0]]
        h = self.data.shape[shown[1]] * self.zooms[shown[1]]
        return [0.0, w, 0.0, h]


def _window(data: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Grey window from the 0.5th percentile inside the mask (or of non-zero voxels) to 20 %
    above its 99.5th: the white matter stays light grey instead of white, so the dark PVS in
    it keep their contrast and a bright artefact does not wash the image out."""
    values = data[mask > 0] if mask is not None and mask.any() else data[data != 0]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:  # percentiles of a fixed subsample: same window, faster
        values = values[:: values.size // 200_000]
    lo, hi = np.percentile(values, [0.5, 99.5])
    hi = hi + 0.2 * (hi - lo)
    return float(lo), float(hi if hi > lo else lo + 1)


def _bbox(mask: np.ndarray, axis: int, trim: float = 0.0) -> tuple[int, int]:
    """First and last index along ``axis`` where ``mask`` is non-empty, optionally trimmed."""
    others = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=others))
    if present.size == 0:
        return 0, mask.shape[axis] - 1
    lo, hi = int(present[0]), int(present[-1])
    cut = int(round((hi - lo) * trim))
    return lo + cut, hi - cut


def _slices(mask: np.ndarray, plane: str, n: int, trim: float = 0.08) -> list[int]:
    lo, hi = _bbox(mask, _PLANES[plane], trim)
    return sorted({int(round(v)) for v in np.linspace(lo, hi, n)})


def _overlay_cmap(colour: str) -> ListedColormap:
    return ListedColormap([colour])


def _grid(n: int, ncols: int, panel_in: float, aspect: float):
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * panel_in, nrows * panel_in * aspect),
        squeeze=False,
        facecolor="black",
    )
    for ax in axes.flat:
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.01, hspace=0.01)
    return fig, axes


def _label(ax, text: str) -> None:
    """White on a black box: legible on any part of an MR image."""
    ax.text(
        0.02,
        0.98,
        text,
        transform=ax.transAxes,
        color="white",
        fontsize=10,
        va="top",
        ha="left",
        bbox={"facecolor": "black", "edgecolor": "none", "pad": 2, "alpha": 0.85},
    )


def _save(fig, out_file: Path) -> Path:
    """Write a figure as a 256-colour PNG (written beside, then renamed into place).

    MR slices are noisy and compress badly as RGBA; an undithered adaptive palette keeps
    every grey level a rater can tell apart plus the overlay colours, at about a quarter
    of the size (benchmarks/report_timing.py).
    """
    from PIL import Image

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    image = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    tmp = out_file.with_name(f".{out_file.name}")
    image.save(tmp, format="PNG")
    tmp.replace(out_file)
    return out_file


def _show(ax, vol: Volume, plane: str, index: int, window, cmap="gray", box=None) -> list:
    """Draw one slice (optionally cropped to ``box`` = (rows, cols)); return its extent."""
    img = vol.slice(plane, index)
    extent = vol.extent(plane)
    if box is not None:
        img = img[box]
        extent = _box_extent(vol, plane, img.shape)
    ax.imshow(
        img,
        cmap=cmap,
        vmin=window[0],
        vmax=window[1],
        origin="lower",
        extent=extent,
        interpolation="nearest",
    )
    return extent


def _box_extent(vol: Volume, plane: str, shape: tuple[int, int]) -> list[float]:
    shown = [a for a in range(3) if a != _PLANES[plane]]
    return [0.0, shape[1] * vol.zooms[shown[0]], 0.0, shape[0] * vol.zooms[shown[1]]]


def plot_input(t1w: Path, out_file: Path) -> Path:
    """The raw T1w in three planes: shown also for failed runs, to see what went in."""
    vol = load(t1w)
    window = _window(vol.data)
    head = vol.data > window[0] + 0.1 * (window[1] - window[0])
    fig, axes = _grid(3, 3, 3.0, 1.0)
    for ax, plane in zip(axes.flat, _PLANES, strict=True):
        index = int(np.mean(_bbox(head, _PLANES[plane])))
        _show(ax, vol, plane, index, window)
        _label(ax, f"{plane} {index}")
    return _save(fig, out_file)


def plot_brain_mask(t1w: Path, brain_mask: Path, out_file: Path, ncols: int = 6) -> Path:
    """Brain-mask outline (red) on the raw T1w: 6 slices per plane across the mask."""
    vol = load(t1w)
    mask = load(brain_mask, dtype=np.uint8)
    window = _window(vol.data)
    rows = [(plane, _slices(mask.data > 0, plane, ncols, trim=0.1)) for plane in _PLANES]
    fig, axes = plt.subplots(3, ncols, figsize=(ncols * 2.2, 3 * 2.2), facecolor="black")
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.01, hspace=0.01)
    for (plane, indices), row in zip(rows, axes, strict=True):
        for ax, index in zip(row, list(indices) + [None] * ncols, strict=False):
            ax.set_axis_off()
            if index is None:
                continue
            _show(ax, vol, plane, index, window)
            sl = mask.slice(plane, index)
            if sl.any():
                ax.contour(
                    sl,
                    levels=[0.5],
                    colors=PVS_COLOUR,
                    linewidths=0.8,
                    origin="lower",
                    extent=mask.extent(plane),
                )
            _label(ax, f"{plane[:3]} {index}")
    return _save(fig, out_file)


def plot_preproc(t1w: Path, preproc: Path, brain_mask: Path, out_file: Path) -> Path:
    """Raw T1w (top) vs N4 + FCM (bottom), same slices, plus the brain intensity histograms."""
    raw = load(t1w)
    pre = load(preproc)
    mask = load(brain_mask, dtype=np.uint8).data > 0
    raw_w = _window(raw.data, mask)
    pre_w = _window(pre.data, mask)
    fig, axes = plt.subplots(2, 4, figsize=(4 * 2.8, 2 * 2.8), facecolor="black")
    fig.subplots_adjust(left=0, right=1, bottom=0.06, top=1, wspace=0.02, hspace=0.02)
    for col, plane in enumerate(_PLANES):
        index = int(np.mean(_bbox(mask, _PLANES[plane])))
        for row, (vol, window, name) in enumerate(((raw, raw_w, "raw"), (pre, pre_w, "N4 + FCM"))):
            ax = axes[row, col]
            ax.set_axis_off()
            _show(ax, vol, plane, index, window)
            _label(ax, f"{name}, {plane}")
    for row, (vol, name) in enumerate(((raw, "raw"), (pre, "N4 + FCM"))):
        ax = axes[row, 3]
        values = vol.data[mask]
        lo, hi = _window(vol.data, mask)
        ax.hist(values[(values >= lo) & (values <= hi)], bins=120, color="#cccccc")
        ax.set_facecolor("black")
        ax.tick_params(colors="white", labelsize=7)
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#888888")
        _label(ax, f"{name}: intensities in the brain")
        if name != "raw":
            ax.axvline(1.0, color=PVS_COLOUR, lw=1)  # FCM maps the WM mean to 1
    return _save(fig, out_file)


def plot_regions(preproc: Path, dseg: Path, out_file: Path, ncols: int = 6) -> Path:
    """BG (amber) and WM (blue) labels over the preprocessed T1w: axial and coronal rows."""
    vol = load(preproc)
    seg = load(dseg, dtype=np.uint8)
    window = _window(vol.data, seg.data > 0)
    colours = ListedColormap(["none", REGION_COLOURS[Region.BG], REGION_COLOURS[Region.WM], "none"])
    planes = ["axial", "axial", "coronal"]
    labelled = np.isin(seg.data, PVS_CODES)  # slices through the regions, not the neck
    if not labelled.any():
        labelled = seg.data > 0
    indices = _slices(labelled, "axial", 2 * ncols, trim=0.05)
    rows = [indices[:ncols], indices[ncols:], _slices(labelled, "coronal", ncols, trim=0.1)]
    boxes = {p: _zoom_box(seg.data > 0, p, 2) for p in ("axial", "coronal")}
    fig, axes = plt.subplots(3, ncols, figsize=(ncols * 2.2, 3 * 2.2), facecolor="black")
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.01, hspace=0.01)
    for plane, row_idx, row in zip(planes, rows, axes, strict=True):
        for ax, index in zip(row, list(row_idx) + [None] * ncols, strict=False):
            ax.set_axis_off()
            if index is None:
                continue
            extent = _show(ax, vol, plane, index, window, box=boxes[plane])
            labels = seg.slice(plane, index)[boxes[plane]].astype(float)
            labels[labels > Region.OTHER] = Region.OTHER
            ax.imshow(
                np.ma.masked_where(~np.isin(labels, PVS_CODES), labels),
                cmap=colours,
                vmin=Region.BACKGROUND,
                vmax=Region.OTHER,
                alpha=0.45,
                origin="lower",
                extent=extent,
                interpolation="nearest",
            )
            _label(ax, f"{plane[:3]} {index}")
    return _save(fig, out_file)


def _zoom_box(region: np.ndarray, plane: str, margin_vox: int = 6) -> tuple[slice, slice]:
    """Crop (rows, cols) of 2D slices around a region's extent in a plane."""
    shown = [a for a in range(3) if a != _PLANES[plane]]
    col_lo, col_hi = _bbox(region, shown[0])
    row_lo, row_hi = _bbox(region, shown[1])
    return (
        slice(max(row_lo - margin_vox, 0), row_hi + margin_vox + 1),
        slice(max(col_lo - margin_vox, 0), col_hi + margin_vox + 1),
    )


def _cerebrum(seg: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """Where the PVS regions are (BG and WM), else the brain: the slices worth showing."""
    labelled = np.isin(seg, PVS_CODES)
    if labelled.any():
        return labelled
    return brain if brain is not None and brain.any() else seg > 0


def _display_box(region_view: np.ndarray, margin_px: tuple[int, int]) -> tuple[slice, slice]:
    rows = np.flatnonzero(region_view.any(axis=1))
    cols = np.flatnonzero(region_view.any(axis=0))
    if rows.size == 0:
        return slice(0, region_view.shape[0]), slice(0, region_view.shape[1])
    return (
        slice(max(rows[0] - margin_px[0], 0), rows[-1] + margin_px[0] + 1),
        slice(max(cols[0] - margin_px[1], 0), cols[-1] + margin_px[1] + 1),
    )


def plot_pvs_mosaic(
    preproc: Path,
    pvs_mask: Path,
    dseg: Path,
    plane: str,
    out_file: Path,
    n: int = 12,
    ncols: int = 4,
    panel_px: int = 300,
) -> Path:
    """PVS outlined in red on the preprocessed T1w, ``n`` sections through the BG/WM regions.

    Only sections that hold the PVS regions are shown (axial: from 10 mm below the basal
    ganglia to the top of the white matter; no skull base, no vertex caps); the outline is
    drawn around the PVS voxels, so the dark tube stays visible inside it.
    """
    vol = load(preproc)
    pvs = load(pvs_mask, dtype=np.uint8)
    seg = load(dseg, dtype=np.uint8)
    cerebrum = _cerebrum(seg.data)
    axis = _PLANES[plane]
    bg = seg.data == Region.BG
    if plane == "axial" and bg.any():
        # from 10 mm below the basal ganglia up: the temporal poles and the cerebellum level
        # below hold WM label but no PVS anyone rates
        lowest = _bbox(bg, 2)[0] - int(round(10.0 / seg.zooms[2]))
        cerebrum = cerebrum.copy()
        cerebrum[:, :, : max(lowest, 0)] = False
    indices = _slices(cerebrum, plane, n, trim=0.02)
    window = _window(vol.data, seg.data > 0)
    # one crop for every panel: the brain's extent in this plane (its projection)
    projection = (seg.data > 0).any(axis=axis, keepdims=True)
    box = _display_box(panels.section(projection, seg.zooms, plane, 0).image, (2, 2))
    spacing = panels.section(vol.data, vol.zooms, plane, indices[0]).spacing
    ppm = panel_px / ((box[1].stop - box[1].start) * spacing[1])
    out = []
    for k in indices:
        img, _ = panels.enlarge(panels.section(vol.data, vol.zooms, plane, k), ppm, *box)
        mask, _ = panels.enlarge(panels.section(pvs.data > 0, pvs.zooms, plane, k), ppm, *box)
        rgb = panels.grey(img, window)
        panels.outline(rgb, mask, PVS_RGB)
        n_vox = int((pvs.data[(slice(None),) * axis + (k,)] > 0).sum())
        panels.corner_text(rgb, f"{plane} {k} · {n_vox} PVS vx", size=13)
        out.append(rgb)
    panels.save_png(panels.grid(out, ncols), out_file)
    return Path(out_file)


def _pick_sections(
    counts: np.ndarray, region: np.ndarray, first: int, n: int, min_gap: int
) -> list[int]:
    """The rating section, then the sections with the most PVS (ties: the largest region
    area) at least ``min_gap`` sections from every one already chosen; none without PVS."""
    area = region.sum(axis=(0, 1))
    # further sections only where there are PVS to check (a second empty one shows nothing)
    order = [int(k) for k in np.lexsort((area, counts))[::-1] if area[k] > 0 and counts[k]]
    chosen = [first]
    for k in order:
        if len(chosen) >= n:
            break
        if all(abs(k - c) >= min_gap for c in chosen):
            chosen.append(k)
    return chosen


def _widen(box: slice, size: int, minimum: int, toward: str) -> slice:
    """``box`` grown to at least ``minimum`` pixels, away from the midline (``toward``: the
    side it grows to, ``low`` or ``high``), so a hemisphere's window never shows the other's."""
    extra = minimum - (box.stop - box.start)
    if extra <= 0:
        return box
    if toward == "low":
        return slice(max(box.stop - minimum, 0), box.stop)
    return slice(box.start, min(box.start + minimum, size))


def _windows(region_view: np.ndarray, midline_col: int, spacing, max_rows_mm: float, margin_mm):
    """Crop boxes (rows, cols) covering a region on one section: one per hemisphere, split
    front to back when taller than ``max_rows_mm`` so each stays at full zoom; at least
    50 mm wide, so a window always shows the tissue around what it is about."""
    margin = (int(round(margin_mm / spacing[0])), int(round(margin_mm / spacing[1])))
    out = []
    for name, cols in (("left", slice(0, midline_col)), ("right", slice(midline_col, None))):
        half = np.zeros_like(region_view)
        half[:, cols] = region_view[:, cols]
        if not half.any():
            continue
        rows, cbox = _display_box(half, margin)
        # never across the midline: the other hemisphere has a window of its own
        if name == "left":
            cbox = slice(cbox.start, min(cbox.stop, midline_col))
        else:
            cbox = slice(max(cbox.start, midline_col), cbox.stop)
        side = "low" if name == "left" else "high"
        cbox = _widen(cbox, region_view.shape[1], int(round(50.0 / spacing[1])), side)
        height_mm = (rows.stop - rows.start) * spacing[0]
        n_parts = max(1, int(np.ceil(height_mm / max_rows_mm)))
        edges = np.linspace(rows.start, rows.stop, n_parts + 1).round().astype(int)
        for part in range(n_parts):
            lo = max(int(edges[part]) - margin[0], 0) if part else int(edges[part])
            hi = int(edges[part + 1]) + (margin[0] if part < n_parts - 1 else 0)
            where = "" if n_parts == 1 else (" front" if part == 0 else " back")
            out.append((f"{name}{where}", (slice(lo, hi), cbox), cols))
    return out


def plot_pvs_zoom(
    preproc: Path,
    pvs_mask: Path,
    dseg: Path,
    region: str,
    out_file: Path,
    n_sections: int | None = None,
    px_per_mm: float = ZOOM_PX_PER_MM,
) -> Path:
    """Zoomed axial sections of the BG or the WM, each window shown twice side by side: plain
    (left) and with the PVS outlined in red and the region's contour dotted (right).

    The first section is the one a rater would count (:mod:`mcpvs_bidsapp.visual_scores`:
    the most PVS in the region, or where the region is largest when there are none); the
    others are the next sections with the most PVS, at least 6 mm apart. Each hemisphere is a
    window of its own (the WM also split front and back) so every window is shown at
    ``px_per_mm`` screen pixels per mm.
    """
    from mcpvs_bidsapp import visual_scores

    vol = load(preproc)
    pvs = load(pvs_mask, dtype=np.uint8)
    seg = load(dseg, dtype=np.uint8)
    code = Region.BG if region == "BG" else Region.WM
    target = seg.data == code
    if not target.any():
        raise ValueError(f"no {region} voxels in the regions image")
    est = visual_scores.estimate(pvs.data, seg.data, np.eye(4))[code.label]
    counts = visual_scores.section_counts((pvs.data > 0) & target)
    n_sections = n_sections or (2 if code == Region.BG else 1)
    min_gap = max(1, int(round(6.0 / vol.zooms[2])))
    sections = _pick_sections(counts, target, est.section, n_sections, min_gap)
    window = _window(vol.data, seg.data > 0)
    brain = seg.data > 0
    midline = int(round(np.mean(np.flatnonzero(brain.any(axis=(1, 2))))))
    colour = panels.hex_rgb(REGION_COLOURS[code])
    name = "basal ganglia" if code == Region.BG else "white matter"
    rows = []
    for rank, k in enumerate(sections):
        img_v = panels.section(vol.data, vol.zooms, "axial", k)
        reg_v = panels.section(target, vol.zooms, "axial", k).image
        pvs_v = panels.section(pvs.data > 0, vol.zooms, "axial", k).image
        in_region = int(counts[k])
        head = (
            f"Axial section {k}: {in_region} PVS in the {name}, the most of any section; the "
            f"section a rater would count: estimated {region} visual score {est.score} of 4"
            if rank == 0 and in_region
            else f"Axial section {k}: no PVS in the {name} on any section; shown where the "
            f"{name} is largest (estimated {region} visual score {est.score} of 4)"
            if rank == 0
            else f"Axial section {k}: {in_region} PVS in the {name}"
        )
        max_rows = 200.0 if code == Region.BG else 80.0
        for hemi, box, half in _windows(reg_v, midline, img_v.spacing, max_rows, 6.0):
            img, _ = panels.enlarge(img_v, px_per_mm, *box)
            reg = panels.enlarge(panels.View(reg_v, img_v.spacing), px_per_mm, *box)[0]
            msk = panels.enlarge(panels.View(pvs_v, img_v.spacing), px_per_mm, *box)[0]
            plain = panels.grey(img, window)
            marked = plain.copy()
            panels.boundary(marked, reg, colour)
            panels.outline(marked, msk, PVS_RGB)
            in_half = np.zeros_like(reg_v)
            in_half[:, half] = reg_v[:, half]
            n_here = int(ndimage_label_count(pvs_v[box] & in_half[box]))
            panels.corner_text(plain, f"{hemi} · T1w", size=14)
            panels.corner_text(marked, f"{hemi} · PVS outlined ({n_here} in the {region})", size=14)
            pair = panels.hstack([plain, marked], gap=8)
            rows.append(panels.vstack([panels.text_strip(pair.shape[1], [head]), pair], gap=0))
            head = f"Axial section {k} ({name}), continued"
    panels.save_png(panels.vstack(rows, gap=10), out_file)
    return Path(out_file)


def ndimage_label_count(mask: np.ndarray) -> int:
    """8-connected components of a 2-D mask (how the visual scores count)."""
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3), bool))[1])
