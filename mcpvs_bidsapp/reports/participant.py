"""Per-participant HTML report, built after the run from the files on disk.

Built only from what docs/outputs.md promises (status file, derivatives, sidecars, crash
files), so the same code serves a successful run, a failed one and ``--reports-only``. Each
reportlet is drawn on its own and may fail on its own: the report then says which figure
could not be drawn and why, and everything else is still shown.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import Key, N4Mask
from mcpvs_bidsapp.outputs.read import (
    SidecarIndex,
    latest_status,
    read_json_or_empty,
    source_prefix,
)
from mcpvs_bidsapp.outputs.write import write_text
from mcpvs_bidsapp.reports import reportlets
from mcpvs_bidsapp.reports.boilerplate import methods_boilerplate

LOGGER = logging.getLogger("mcpvs.report")
TEMPLATES = Path(__file__).parent / "templates"
CRASH_TAIL_LINES = 60


@dataclass
class Figure:
    """One reportlet as the template shows it."""

    key: str
    title: str
    caption: str
    src: str | None = None  # relative to the HTML file
    error: str | None = None


@dataclass
class RunReport:
    """Everything the report says about one T1w."""

    source: str
    prefix: str
    status: str
    error: str | None = None
    acquisition: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    measures: list[dict] = field(default_factory=list)
    census: dict = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    n4_mask: N4Mask | None = None


def t1w_metadata(bids_dir: Path | None, source: str) -> dict:
    """Sidecar metadata of a raw T1w (relative to bids_dir) with BIDS inheritance."""
    return SidecarIndex(bids_dir).for_source(source) if bids_dir is not None else {}


def _acquisition(raw: Path | None, meta: dict) -> dict:
    info = {
        "Manufacturer": meta.get("Manufacturer", "n/a"),
        "Model": meta.get("ManufacturersModelName", "n/a"),
        "Field strength (T)": meta.get("MagneticFieldStrength", "n/a"),
    }
    for key in ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle"):
        if key in meta:
            info[key] = meta[key]
    if raw is not None and raw.exists():
        try:
            import nibabel as nb

            img = nb.load(str(raw))
            info["Shape"] = " x ".join(str(s) for s in img.shape)
            info["Voxel size (mm)"] = " x ".join(f"{z:.3g}" for z in img.header.get_zooms()[:3])
            info["Orientation"] = "".join(nb.aff2axcodes(img.affine))
        except Exception as err:  # the report shows unreadable inputs, it does not fail on them
            info["Image"] = f"cannot read: {err}"
    return info


def _provenance(sidecar: dict) -> dict:
    """Method, model and where it came from, as key -> text for the summary."""
    if not sidecar:
        return {}
    prov = {"Method": sidecar.get(Key.METHOD, "n/a")}
    if sidecar.get(Key.METHOD_DESCRIPTION):
        prov["Description"] = sidecar[Key.METHOD_DESCRIPTION]
    model = sidecar.get(Key.MODEL) or {}
    for key, value in model.items():  # every key the model store recorded, in its order
        prov[f"Model {key.lower()}"] = json.dumps(value) if isinstance(value, dict) else value
    if sidecar.get(Key.PARAMETERS):
        prov["Parameters"] = json.dumps(sidecar[Key.PARAMETERS], sort_keys=True)
    prov["Regions"] = sidecar.get(Key.REGIONS_METHOD, "n/a")
    versions = sidecar.get(Key.SOFTWARE_VERSIONS) or {}
    if versions:
        prov["Software"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    return {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in prov.items()}


def _number(value) -> str:
    """Readable numbers: 1,632,000 rather than 1.632e+06; 4 significant digits below 1000."""
    if isinstance(value, float) and pd.isna(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _measures(path: Path) -> list[dict]:
    table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    return [{k: _number(v) for k, v in rec.items()} for rec in table.to_dict("records")]


def _census(path: Path) -> dict:
    table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    if table.empty:
        return {"clusters": 0}
    return {
        "clusters": len(table),
        "median volume (mm³)": f"{table.volume_mm3.median():.3g}",
        "median length (mm)": f"{table.length_mm.median():.3g}",
        "median width (mm)": f"{table.mean_width_mm.median():.3g}",
        "largest cluster (mm³)": f"{table.volume_mm3.max():.4g}",
    }


def _reportlet_specs(prefix: str, anat: Path, raw: Path | None) -> list[tuple]:
    """(key, title, caption, function, kwargs-of-paths) for every reportlet of one T1w."""
    f = {
        "mask": anat / spec.BRAIN_MASK.name(prefix),
        "preproc": anat / spec.PREPROC_T1W.name(prefix),
        "dseg": anat / spec.REGIONS_DSEG.name(prefix),
        "pvs": anat / spec.PVS_MASK.name(prefix),
    }
    specs = [
        (
            "brainmask",
            "Brain mask on the raw T1w",
            "Red outline: the brain mask on the raw image, six slices per plane. It should hug "
            "the brain surface: no skull, dura or eyes inside, no cortex or cerebellum cut.",
            reportlets.plot_brain_mask,
            {"t1w": raw, "brain_mask": f["mask"]},
        ),
        (
            "preproc",
            "N4 bias correction and FCM normalisation (before / after)",
            "Top: raw T1w; bottom: after N4 and fuzzy-c-means white-matter normalisation "
            "(WM mean at 1, red line in the histogram). The WM should look evenly bright "
            "after correction and its histogram peak should sit at 1.",
            reportlets.plot_preproc,
            {"t1w": raw, "preproc": f["preproc"], "brain_mask": f["mask"]},
        ),
        (
            "regions",
            "Regions: basal ganglia and white matter",
            "Amber: basal ganglia (BG); blue: cerebral white matter (WM). PVS volumes and "
            "counts per region depend on these labels: check that BG covers the striatum and "
            "pallidum and that WM does not spill into cortex or ventricles.",
            reportlets.plot_regions,
            {"preproc": f["preproc"], "dseg": f["dseg"]},
        ),
    ]
    for plane in ("axial", "coronal", "sagittal"):
        specs.append(
            (
                f"pvs{plane}",
                f"PVS, {plane}",
                f"Red: PVS mask over the preprocessed T1w, {plane} slices across the brain "
                "(number of PVS voxels per slice in the corner). PVS run as thin dark tubes "
                "along vessels: radially in the centrum semiovale, upwards in the basal "
                "ganglia. Red along cortex, sulci, ventricle edges or in WMH is an error.",
                reportlets.plot_pvs_mosaic,
                {"preproc": f["preproc"], "pvs_mask": f["pvs"], "brain_mask": f["mask"],
                 "plane": plane},
            )
        )  # fmt: skip
    specs += [
        (
            "pvszoomBG",
            "PVS zoomed on the basal ganglia",
            "The axial BG slices with the most PVS, enlarged; left plain, right with the PVS "
            "mask outlined. Every dark dot or tube should be outlined and every outline "
            "should sit on one.",
            reportlets.plot_pvs_zoom,
            {"preproc": f["preproc"], "pvs_mask": f["pvs"], "dseg": f["dseg"], "region": "BG"},
        ),
        (
            "pvszoomCSO",
            "PVS zoomed on the centrum semiovale",
            "The axial white-matter slices above the ventricles with the most PVS, enlarged; "
            "left plain, right outlined. WM-PVS here run perpendicular to the cortex.",
            reportlets.plot_pvs_zoom,
            {"preproc": f["preproc"], "pvs_mask": f["pvs"], "dseg": f["dseg"], "region": "CSO"},
        ),
    ]
    return specs


def _draw(figures_dir: Path, output_dir: Path, prefix: str, reportlet: tuple) -> Figure:
    key, title, caption, func, kwargs = reportlet
    fig = Figure(key=key, title=title, caption=caption)
    missing = [
        Path(v).name
        for k, v in kwargs.items()
        if k not in ("plane", "region") and (v is None or not Path(v).exists())
    ]
    if missing:
        fig.error = "not drawn: missing " + ", ".join(missing)
        return fig
    out = figures_dir / f"{prefix}_desc-{key}.png"
    try:
        reportlets_out = func(**kwargs, out_file=out)
        fig.src = Path(reportlets_out).relative_to(output_dir).as_posix()
    except Exception as err:  # one figure failing must not lose the report
        LOGGER.warning("%s: reportlet %s failed (%s)", prefix, key, err)
        detail = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        fig.error = f"not drawn: {detail}"
    return fig


def _run_report(output_dir: Path, label: str, run: dict, bids_dir: Path | None) -> RunReport:
    source = run.get("source")
    raw = Path(bids_dir) / source if (bids_dir is not None and source) else None
    prefix = source_prefix(source) if source else f"sub-{label}"
    report = RunReport(
        source=source or f"sub-{label}",
        prefix=prefix,
        status=run.get("status", "unknown"),
        error=run.get("error"),
    )
    if source:
        report.acquisition = _acquisition(raw, t1w_metadata(bids_dir, source))
    figures_dir = spec.figures_dir(output_dir, label)
    for stale in figures_dir.glob(f"{prefix}_desc-*.png"):
        stale.unlink()  # a figure must never outlive the output it showed
    if report.status != "success":
        if raw is not None and raw.exists():
            report.figures.append(
                _draw(
                    figures_dir,
                    output_dir,
                    prefix,
                    (
                        "input",
                        "Input T1w",
                        "The raw input in three planes, to see what went in.",
                        reportlets.plot_input,
                        {"t1w": raw},
                    ),
                )
            )
        return report

    anat = output_dir / Path(source).parent
    sidecar = read_json_or_empty(spec.sidecar_path(anat / spec.PVS_MASK.name(prefix)))
    report.provenance = _provenance(sidecar)
    measures = anat / spec.MEASURES.name(prefix)
    measures_json = read_json_or_empty(spec.sidecar_path(measures))
    report.n4_mask = N4Mask.parse(measures_json.get(Key.N4_MASK))
    if report.n4_mask is not None:
        report.provenance["N4"] = report.n4_mask.description
    if measures_json.get(Key.ICV_SOURCE):
        report.provenance["ICV"] = measures_json[Key.ICV_SOURCE]
    if measures_json.get(Key.WMH_SOURCE):
        report.provenance["WMH mask"] = measures_json[Key.WMH_SOURCE]
    if measures.exists():
        report.measures = _measures(measures)
    clusters = anat / spec.CLUSTERS.name(prefix)
    if clusters.exists():
        report.census = _census(clusters)
    report.files = sorted(p.relative_to(output_dir).as_posix() for p in anat.glob(f"{prefix}_*"))
    for reportlet in _reportlet_specs(prefix, anat, raw):
        report.figures.append(_draw(figures_dir, output_dir, prefix, reportlet))
    return report


def crash_files(output_dir: Path, label: str, run_id: str | None) -> list[dict]:
    """Crash files of the run the status describes: name and the end of the traceback."""
    if not run_id:
        return []
    folder = spec.log_dir(output_dir, label, run_id)
    crashes = []
    for path in sorted(folder.glob("crash-*.txt")):
        lines = path.read_text(errors="replace").splitlines()
        node = next((ln for ln in lines if ln.startswith("Node:")), "")
        crashes.append(
            {
                "name": path.relative_to(output_dir).as_posix(),
                "node": node.removeprefix("Node:").strip(),
                "tail": "\n".join(lines[-CRASH_TAIL_LINES:]),
            }
        )
    return crashes


def build_participant_report(output_dir: Path, label: str, bids_dir: Path | None = None) -> Path:
    """Write ``sub-<label>.html`` at the output root from what is on disk (also after failures)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    t_start = time.time()
    output_dir = Path(output_dir)
    label = label.removeprefix("sub-")
    status = latest_status(output_dir, label) or {"runs": []}
    try:
        runs = [_run_report(output_dir, label, run, bids_dir) for run in status.get("runs", [])]
    finally:
        reportlets.clear_cache()
    crashes = crash_files(output_dir, label, status.get("run_id"))
    errors = [
        {"source": r.source, "error": r.error or "failed (no message)"}
        for r in runs
        if r.status != "success"
    ]
    described = next((r for r in runs if r.provenance), None)
    methods = methods_boilerplate(
        described.provenance if described else {},
        n4_mask=described.n4_mask if described else None,
    )
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["anchor"] = _safe_id
    page = env.get_template("participant.html").render(
        label=label,
        version=__version__,
        status=status,
        runs=runs,
        errors=errors,
        crashes=crashes,
        methods=methods,
        no_status=not status.get("runs"),
        generated=datetime.now().isoformat(timespec="seconds"),
    )
    out = write_text(spec.report_path(output_dir, label), page)
    LOGGER.info("sub-%s: report written in %.1f s", label, time.time() - t_start)
    return out


def _safe_id(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]", "-", text)
