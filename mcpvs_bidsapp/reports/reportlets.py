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

DPI = 90
ZOOM_PX_PER_MM = 4.0
PVS_COLOUR = "#ff2a2a"
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
    """Robust grey window (0.5-99.5th percentile inside the mask, or of non-zero voxels)."""
    values = data[mask > 0] if mask is not None and mask.any() else data[data != 0]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:  # percentiles of a fixed subsample: same window, faster
        values = values[:: values.size // 200_000]
    lo, hi = np.percentile(values, [0.5, 99.5])
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
    ax.text(
        0.02, 0.98, text, transform=ax.transAxes, color="white", fontsize=8, va="top", ha="left"
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


def plot_pvs_mosaic(
    preproc: Path, pvs_mask: Path, brain_mask: Path, plane: str, out_file: Path, ncols: int = 6
) -> Path:
    """PVS (red) over the preprocessed T1w: 3 rows of slices across the brain in one plane."""
    vol = load(preproc)
    pvs = load(pvs_mask, dtype=np.uint8)
    brain = load(brain_mask, dtype=np.uint8).data > 0
    window = _window(vol.data, brain)
    indices = _slices(brain, plane, 3 * ncols, trim=0.15)
    box = _zoom_box(brain, plane, 2)  # panels cropped to the brain: PVS are larger
    crop = vol.slice(plane, indices[0])[box].shape
    ext = _box_extent(vol, plane, crop)
    fig, axes = _grid(len(indices), ncols, 2.2, ext[3] / ext[1])
    for ax, index in zip(axes.flat, indices, strict=False):
        extent = _show(ax, vol, plane, index, window, box=box)
        sl = pvs.slice(plane, index)[box]
        if sl.any():
            ax.imshow(
                np.ma.masked_where(sl == 0, sl),
                cmap=_overlay_cmap(PVS_COLOUR),
                alpha=0.9,
                origin="lower",
                extent=extent,
                interpolation="nearest",
            )
        _label(ax, f"{plane[:3]} {index}: {int((sl > 0).sum())} vx")
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


def cso_slab(dseg: np.ndarray) -> np.ndarray:
    """Centrum semiovale: the WM label in the axial slab 55-85 % up its superior extent.

    Above the lateral ventricles the WM is one sheet of radiating fibres where WM-PVS are
    rated (the paper's WM visual score counts them in the slice with the most).
    """
    wm = dseg == Region.WM
    lo, hi = _bbox(wm, 2)
    slab = np.zeros_like(wm)
    z0, z1 = lo + int(0.55 * (hi - lo)), lo + int(0.85 * (hi - lo))
    slab[:, :, z0 : z1 + 1] = wm[:, :, z0 : z1 + 1]
    return slab


def plot_pvs_zoom(
    preproc: Path, pvs_mask: Path, dseg: Path, region: str, out_file: Path, n: int = 4
) -> Path:
    """Zoomed axial panels on the basal ganglia or centrum semiovale, without and with PVS.

    Each slice is shown twice, side by side (plain | PVS outlined in red), enlarged so that
    single PVS voxels are visible: that pair is what a rater compares.
    """
    vol = load(preproc)
    pvs = load(pvs_mask, dtype=np.uint8)
    seg = load(dseg, dtype=np.uint8).data
    target = (seg == Region.BG) if region == "BG" else cso_slab(seg)
    if not target.any():
        raise ValueError(f"no {region} voxels in the regions image")
    window = _window(vol.data, seg > 0)
    lo, hi = _bbox(target, 2, trim=0.1)
    # the slices with the most PVS in the region come first (that is where errors show)
    counts = [(int((pvs.data[:, :, k] & target[:, :, k]).sum()), k) for k in range(lo, hi + 1)]
    chosen = sorted(k for _, k in sorted(counts, reverse=True)[:n])
    if len(chosen) < n:
        chosen = _slices(target, "axial", n, trim=0.1)
    rows_sl, cols_sl = _zoom_box(target, "axial")
    zoom = vol.zooms[[0, 1]]
    crop_h = (rows_sl.stop - rows_sl.start) * zoom[1]
    crop_w = (cols_sl.stop - cols_sl.start) * zoom[0]
    # about 4 screen pixels per mm, so that a single 1 mm PVS voxel is plainly visible
    panel = max(3.0, crop_w * ZOOM_PX_PER_MM / DPI)
    fig, axes = plt.subplots(
        len(chosen), 2, figsize=(2 * panel, len(chosen) * panel * crop_h / crop_w),
        facecolor="black", squeeze=False,
    )  # fmt: skip
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.01, hspace=0.01)
    extent = [0, crop_w, 0, crop_h]
    for (ax_plain, ax_pvs), k in zip(axes, chosen, strict=True):
        img = vol.slice("axial", k)[rows_sl, cols_sl]
        sl = pvs.slice("axial", k)[rows_sl, cols_sl]
        for ax in (ax_plain, ax_pvs):
            ax.set_axis_off()
            ax.imshow(
                img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
                extent=extent, interpolation="nearest",
            )  # fmt: skip
        if sl.any():
            ax_pvs.contour(
                sl, levels=[0.5], colors=PVS_COLOUR, linewidths=1.3, origin="lower",
                extent=extent, corner_mask=False,
            )  # fmt: skip
        _label(ax_plain, f"{region} axial {k}")
        _label(ax_pvs, f"PVS: {int((sl > 0).sum())} vx")
    return _save(fig, out_file)
