"""The report's interactive viewer: niivue (bundled) and each T1w's volumes as a script.

Browsers refuse ``fetch()`` and module scripts on pages opened from ``file://``, but run
classic ``<script src>`` files. So the viewer's volumes are written as one small JavaScript
file per T1w (``sub-<label>/figures/<prefix>_desc-viewer.js``) holding them as base64 NIfTI,
and niivue as one classic script in ``report_assets/`` at the output root, shared by every
report. The volumes are cropped to the brain and stored as 8-bit (the T1w scaled within its
display window, the probability in 1/255 steps, both with the NIfTI scaling that gives back
their values), about 2-3 MB per T1w at 1 mm.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import nibabel as nb
import numpy as np

from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.write import copy_file, write_text

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
#: files copied into ``<output_dir>/report_assets/`` (niivue, its licences, our script)
ASSETS = {
    "niivue.min.js": PACKAGE_DATA / "niivue" / "niivue.min.js",
    "niivue-LICENSES.txt": PACKAGE_DATA / "niivue" / "LICENSES.txt",
    "niivue-VERSION.json": PACKAGE_DATA / "niivue" / "VERSION.json",
    "mcpvs-viewer.js": PACKAGE_DATA / "viewer" / "mcpvs-viewer.js",
}
MARGIN_VOX = 3


def niivue_version() -> str:
    return json.loads(ASSETS["niivue-VERSION.json"].read_text())["niivue"]


def write_assets(output_dir: Path) -> dict[str, str]:
    """Copy the viewer's scripts beside the reports (only when changed); returns their paths
    relative to the output root."""
    folder = Path(output_dir) / spec.REPORT_ASSETS_DIR
    out = {}
    for name, source in ASSETS.items():
        target = folder / name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            copy_file(source, target)
        out[name] = f"{spec.REPORT_ASSETS_DIR}/{name}"
    return out


def _crop_box(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return tuple(slice(0, n) for n in mask.shape)
    lo = np.maximum(idx.min(0) - MARGIN_VOX, 0)
    hi = np.minimum(idx.max(0) + MARGIN_VOX + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _nifti_b64(data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0):
    img = nb.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm")
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=6)).decode("ascii")


def _focus(mask: np.ndarray, region: np.ndarray, section: int, affine: np.ndarray):
    """World (mm) point of a rating section (an axial index of the RAS-reoriented image, see
    :mod:`mcpvs_bidsapp.visual_scores`): the centre of its PVS, else of the region."""
    from mcpvs_bidsapp.visual_scores import to_ras

    pvs = to_ras(mask, affine)[:, :, section] > 0
    reg = to_ras(region, affine)[:, :, section] > 0
    where = np.argwhere(pvs & reg) if (pvs & reg).any() else np.argwhere(reg)
    if where.size == 0:
        return None
    # the hemisphere with more of them, so the crosshair lands on tissue, not the midline
    mid = np.mean(np.flatnonzero(reg.any(axis=1)))
    left, right = where[where[:, 0] < mid], where[where[:, 0] >= mid]
    where = left if len(left) >= len(right) and len(left) else right if len(right) else where
    ornt = nb.orientations.io_orientation(affine)
    ras_affine = affine @ nb.orientations.inv_ornt_aff(ornt, mask.shape)
    point = nb.affines.apply_affine(ras_affine, [*where.mean(0), section])
    return [round(float(v), 2) for v in point]


def write_viewer_data(out_file: Path, prefix: str, files: dict[str, Path]) -> Path:
    """The viewer's volumes of one T1w as ``window.MCPVS_VIEWER_DATA[prefix]``.

    ``files``: preproc_t1w, pvs_mask, regions_dseg, pvs_probseg, brain_mask (paths).
    """
    from mcpvs_bidsapp.outputs.spec import Region
    from mcpvs_bidsapp.reports.reportlets import _window
    from mcpvs_bidsapp.visual_scores import estimate

    t1w = nb.load(str(files["preproc_t1w"]))
    t1 = np.asanyarray(t1w.dataobj, dtype=np.float32)
    brain = np.asanyarray(nb.load(str(files["brain_mask"])).dataobj) > 0
    dseg = np.asanyarray(nb.load(str(files["regions_dseg"])).dataobj).astype(np.uint8)
    mask = (np.asanyarray(nb.load(str(files["pvs_mask"])).dataobj) > 0).astype(np.uint8)
    box = _crop_box(brain | (dseg > 0))
    affine = t1w.affine.copy()
    affine[:3, 3] = nb.affines.apply_affine(t1w.affine, [s.start for s in box])
    lo, hi = _window(t1, brain)
    scale = (hi - lo) / 255.0
    t1_u8 = np.clip(np.round((t1[box] - lo) / scale), 0, 255).astype(np.uint8)
    volumes = [
        {"key": "t1w", "name": spec.PREPROC_T1W.name(prefix), "colormap": "gray",
         "visible": True, "cal_min": lo, "cal_max": hi,
         "b64": _nifti_b64(t1_u8, affine, scale, lo)},
        {"key": "regions", "name": spec.REGIONS_DSEG.name(prefix), "visible": False,
         "opacity": 0.45, "b64": _nifti_b64(dseg[box], affine)},
    ]  # fmt: skip
    prob_file = files.get("pvs_probseg")
    if prob_file is not None and Path(prob_file).exists():
        prob = np.asanyarray(nb.load(str(prob_file)).dataobj, dtype=np.float32)[box]
        prob_u8 = np.clip(np.round(prob * 255), 0, 255).astype(np.uint8)
        volumes.append(
            {"key": "probability", "name": spec.PVS_PROBSEG.name(prefix),
             "colormap": "warm", "visible": False, "opacity": 0.7, "cal_min": 0.05,
             "cal_max": 1.0, "b64": _nifti_b64(prob_u8, affine, 1 / 255.0, 0.0)}
        )  # fmt: skip
    volumes.append(
        {"key": "pvs", "name": spec.PVS_MASK.name(prefix), "colormap": "red",
         "visible": True, "opacity": 1.0, "cal_min": 0.5, "cal_max": 1.0,
         "b64": _nifti_b64(mask[box], affine)}
    )  # fmt: skip
    est = estimate(mask, dseg, t1w.affine)
    focus = {}
    for code in (Region.BG, Region.WM):
        point = _focus(mask, dseg == code, est[code.label].section, t1w.affine)
        if point is not None:
            focus[code.label] = point
    payload = json.dumps({"volumes": volumes, "focus": focus}, separators=(",", ":"))
    text = (
        "// mcpvs viewer data (written with the report; see mcpvs_bidsapp/reports/viewer.py)\n"
        f"(window.MCPVS_VIEWER_DATA = window.MCPVS_VIEWER_DATA || {{}})[{json.dumps(prefix)}]"
        f" = {payload};\n"
    )
    return write_text(out_file, text)
