"""Pixel-exact figure panels: a slice enlarged to a fixed number of screen pixels per mm, with
one-pixel outlines drawn *around* the voxels of a mask (never over them) and legible labels.

Matplotlib's ``contour`` on a 1-voxel PVS draws a diamond through the voxel and its
``imshow`` resamples to whatever the figure size gives; a rater comparing a plain and an
outlined panel needs the same voxel at the same pixels in both, and the dark dot left
visible inside its outline. So the zoom and mosaic panels are composed here as RGB arrays
(nearest-neighbour enlargement, so one voxel is a square block) and written with Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

BACKGROUND = (0, 0, 0)
HEADER = (34, 34, 34)
TEXT = (255, 255, 255)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


@lru_cache(maxsize=4)
def font(size: int):
    """DejaVu Sans (shipped with matplotlib, so no system font is needed) at ``size`` px."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


@dataclass(frozen=True)
class View:
    """A 2-D section shown with rows top (anterior / superior) to bottom, columns left to right
    in the neurological convention (the subject's left on the left)."""

    image: np.ndarray  #: (rows, cols) float
    spacing: tuple[float, float]  #: (row, col) mm per voxel


def section(data: np.ndarray, zooms, plane: str, index: int) -> View:
    """A section of a RAS-oriented volume (axis 0: L->R, 1: P->A, 2: I->S).

    axial: rows anterior at the top, columns left to right; coronal: rows superior at the top;
    sagittal: rows superior at the top, columns posterior to anterior.
    """
    z = [float(v) for v in zooms]
    if plane == "axial":
        img, spacing = data[:, :, index].T[::-1], (z[1], z[0])
    elif plane == "coronal":
        img, spacing = data[:, index, :].T[::-1], (z[2], z[0])
    elif plane == "sagittal":
        img, spacing = data[index, :, :].T[::-1], (z[2], z[1])
    else:
        raise ValueError(f"unknown plane {plane!r}")
    return View(np.asarray(img), spacing)


def enlarge_index(n: int, spacing_mm: float, px_per_mm: float) -> np.ndarray:
    """For each output pixel along an axis, the voxel it shows (nearest neighbour)."""
    size = max(1, int(round(n * spacing_mm * px_per_mm)))
    return np.minimum((np.arange(size) + 0.5) / (spacing_mm * px_per_mm), n - 1).astype(int)


def enlarge(view: View, px_per_mm: float, rows: slice, cols: slice) -> tuple[np.ndarray, tuple]:
    """The cropped section enlarged by nearest neighbour; returns (pixels, index arrays)."""
    crop = view.image[rows, cols]
    ri = enlarge_index(crop.shape[0], view.spacing[0], px_per_mm)
    ci = enlarge_index(crop.shape[1], view.spacing[1], px_per_mm)
    return crop[np.ix_(ri, ci)], (ri, ci)


def grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    scaled = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def outline(rgb: np.ndarray, mask_px: np.ndarray, colour, *, gap: int = 0) -> None:
    """Colour the one-pixel ring just outside ``mask_px`` (``gap`` pixels further out), so the
    masked pixels themselves stay as they were."""
    mask_px = mask_px.astype(bool)
    if not mask_px.any():
        return
    inner = ndimage.binary_dilation(mask_px, iterations=gap) if gap else mask_px
    ring = ndimage.binary_dilation(inner) & ~inner
    rgb[ring] = colour


def boundary(rgb: np.ndarray, labels_px: np.ndarray, colour) -> None:
    """A thin contour of a region (its outer edge pixels), dotted so it never reads as PVS."""
    region = labels_px.astype(bool)
    if not region.any():
        return
    edge = region & ~ndimage.binary_erosion(region)
    rr, cc = np.nonzero(edge)
    keep = ((rr + cc) // 2) % 2 == 0
    rgb[rr[keep], cc[keep]] = colour


def wrap(text: str, width_px: int, size: int) -> list[str]:
    """``text`` broken into lines that fit ``width_px`` at ``size``."""
    fnt = font(size)
    lines: list[str] = []
    for word in text.split():
        if lines and fnt.getlength(lines[-1] + " " + word) <= width_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def text_strip(width: int, lines: list[str], size: int = 15, fill=HEADER) -> np.ndarray:
    """A dark strip holding ``lines`` of white text (legible on any screen), wrapped to fit."""
    from PIL import Image, ImageDraw

    fnt = font(size)
    lines = [part for line in lines for part in wrap(line, width - size, size)]
    height = int(len(lines) * size * 1.35 + size * 0.5)
    img = Image.new("RGB", (width, height), fill)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((int(size * 0.5), int(size * 0.3 + i * size * 1.35)), line, font=fnt, fill=TEXT)
    return np.asarray(img)


def corner_text(rgb: np.ndarray, text: str, size: int = 14, where: str = "top-left") -> None:
    """Text in a dark box in a corner of a panel (in place)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    fnt = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
    w, h = right - left + 8, bottom - top + 6
    x = 2 if "left" in where else rgb.shape[1] - w - 2
    y = 2 if "top" in where else rgb.shape[0] - h - 2
    draw.rectangle((x, y, x + w, y + h), fill=(0, 0, 0))
    draw.text((x + 4 - left, y + 3 - top), text, font=fnt, fill=TEXT)
    rgb[...] = np.asarray(img)


def hstack(panels: list[np.ndarray], gap: int = 6, fill=BACKGROUND) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    parts = []
    for i, p in enumerate(panels):
        pad = np.full((height - p.shape[0], p.shape[1], 3), fill, np.uint8)
        parts.append(np.concatenate([p, pad]) if pad.size else p)
        if i < len(panels) - 1:
            parts.append(np.full((height, gap, 3), fill, np.uint8))
    return np.concatenate(parts, axis=1)


def vstack(rows: list[np.ndarray], gap: int = 6, fill=BACKGROUND) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    parts = []
    for i, r in enumerate(rows):
        pad = np.full((r.shape[0], width - r.shape[1], 3), fill, np.uint8)
        parts.append(np.concatenate([r, pad], axis=1) if pad.size else r)
        if i < len(rows) - 1:
            parts.append(np.full((gap, width, 3), fill, np.uint8))
    return np.concatenate(parts, axis=0)


def grid(panels: list[np.ndarray], ncols: int, gap: int = 4) -> np.ndarray:
    rows = [hstack(panels[i : i + ncols], gap) for i in range(0, len(panels), ncols)]
    return vstack(rows, gap)


def save_png(rgb: np.ndarray, out_file) -> None:
    """A 256-colour PNG (undithered adaptive palette: every grey a rater tells apart plus the
    overlay colours, about a quarter of the RGB size), written beside and renamed into place."""
    from pathlib import Path

    from PIL import Image

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).quantize(
        colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    tmp = out_file.with_name(f".{out_file.name}")
    image.save(tmp, format="PNG", optimize=True)
    tmp.replace(out_file)
