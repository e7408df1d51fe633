"""Per-participant HTML report, built after the run from the files on disk.

Built only from what docs/outputs.md promises (status file, derivatives, sidecars, crash
files), so the same code serves a successful run, a failed one and ``--reports-only``. Each
reportlet is drawn on its own and may fail on its own: the report then says which figure
could not be drawn and why, and everything else is still shown.
"""

from __future__ import annotations

import logging
import re
import shlex
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
from mcpvs_bidsapp.reports.layout import VIEWER, load_layout

LOGGER = logging.getLogger("mcpvs.report")
TEMPLATES = Path(__file__).parent / "templates"
CRASH_TAIL_LINES = 60


@dataclass
class Figure:
    """One reportlet as the template shows it (a PNG, or the interactive viewer)."""

    key: str
    title: str
    caption: str
    src: str | None = None  # relative to the HTML file
    error: str | None = None
    kind: str = "image"  #: image | viewer
    size_kb: float | None = None


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
    qc_flags: list[dict] = field(default_factory=list)
    visual: list[dict] = field(default_factory=list)  #: estimated visual scores (BG, WM)
    columns: dict = field(default_factory=dict)  #: measures column -> description


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
        prov[f"Model {key.lower()}"] = _flat(value) if isinstance(value, dict) else value
    if sidecar.get(Key.PARAMETERS):
        prov["Parameters"] = _flat(sidecar[Key.PARAMETERS])
    prov["Regions"] = sidecar.get(Key.REGIONS_METHOD, "n/a")
    versions = sidecar.get(Key.SOFTWARE_VERSIONS) or {}
    if versions:
        prov["Software"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    return {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in prov.items()}


def _flat(value, prefix: str = "") -> dict:
    """A nested record as {"a.b": "text"} rows, lists joined: one line per setting."""
    out: dict = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    out[prefix.rstrip(".")] = "n/a" if text is None else text
    return out


#: decimals of each measures column in the report (one format per quantity, every row alike)
COLUMN_DECIMALS = {
    "pvs_volume_mm3": 1,
    "pvs_count": 0,
    "mean_cluster_volume_mm3": 1,
    "region_volume_mm3": 0,
    "icv_mm3": 0,
    "pvsnm": 1,
    "wmh_overlap_pct": 1,
    "est_visual_score": 0,
    "est_visual_count": 0,
    "est_visual_section": 0,
}
#: shorter headers for the measures table (the full descriptions are below it)
COLUMN_HEADERS = {
    "region": "region",
    "pvs_volume_mm3": "PVS volume (mm³)",
    "pvs_count": "PVS count",
    "mean_cluster_volume_mm3": "mean PVS volume (mm³)",
    "region_volume_mm3": "region volume (mm³)",
    "icv_mm3": "ICV (mm³)",
    "pvsnm": "PVSnm",
    "wmh_overlap_pct": "in WMH (%)",
    "est_visual_score": "est. visual score",
    "est_visual_count": "PVS on rating section",
    "est_visual_section": "rating section",
}


def number(value, decimals: int | None = None) -> str:
    """Readable numbers: thousands separated, a fixed number of decimals per quantity."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if decimals is None:
            decimals = 0 if float(value).is_integer() else (1 if abs(value) >= 10 else 3)
        return f"{value:,.{decimals}f}"
    return str(value)


def _measures(path: Path) -> list[dict]:
    table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    return [
        {k: number(v, COLUMN_DECIMALS.get(k)) for k, v in rec.items()}
        for rec in table.to_dict("records")
    ]


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


def _draw(figures_dir: Path, output_dir: Path, prefix: str, reportlet, paths: dict) -> Figure:
    """Draw one reportlet of the layout; a failure is one red line, never a lost report."""
    fig = Figure(key=reportlet.key, title=reportlet.title, caption=reportlet.caption)
    missing = [Path(v).name if v else "the raw T1w" for v in paths.values() if not _exists(v)]
    if missing:
        fig.error = "not drawn: missing " + ", ".join(missing)
        return fig
    out = figures_dir / f"{prefix}_desc-{reportlet.key}.png"
    try:
        func = getattr(reportlets, reportlet.function)
        drawn = Path(func(**paths, **reportlet.options, out_file=out))
        fig.src = drawn.relative_to(output_dir).as_posix()
        fig.size_kb = drawn.stat().st_size / 1024
    except Exception as err:  # one figure failing must not lose the report
        LOGGER.warning("%s: reportlet %s failed (%s)", prefix, reportlet.key, err)
        detail = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        fig.error = f"not drawn: {detail}"
    return fig


def _exists(path) -> bool:
    return path is not None and Path(path).exists()


def _viewer(output_dir: Path, label: str, prefix: str, anat: Path, reportlet) -> Figure:
    """The interactive viewer of one T1w: its volumes as a script beside the figures."""
    from mcpvs_bidsapp.reports import viewer

    fig = Figure(key=reportlet.key, title=reportlet.title, caption=reportlet.caption, kind="viewer")
    files = {d.key: anat / d.name(prefix) for d in spec.IMAGES}
    missing = [p.name for k, p in files.items() if k != spec.PVS_PROBSEG.key and not p.exists()]
    if missing:
        fig.error = "viewer not built: missing " + ", ".join(missing)
        return fig
    try:
        out = viewer.write_viewer_data(
            spec.viewer_data_path(output_dir, label, prefix), prefix, files
        )
        fig.src = out.relative_to(output_dir).as_posix()
        fig.size_kb = out.stat().st_size / 1024
    except Exception as err:
        LOGGER.warning("%s: viewer data not written (%s)", prefix, err)
        fig.error = f"viewer not built: {type(err).__name__}: {err}"
    return fig


_FLAG_NAME_KEYS = ("name", "Name", "flag", "Flag", "code", "Code", "id")
_FLAG_MESSAGE_KEYS = ("message", "Message", "description", "Description", "reason")


def qc_flags(measures_sidecar: dict) -> list[dict]:
    """The QC flags a measures sidecar carries (``Key.QC_FLAGS``), whatever their form: a
    list of strings or of objects, or one object of name -> message; as {name, message,
    details} for the banner."""
    raw = measures_sidecar.get(Key.QC_FLAGS)
    if not raw:
        return []
    if isinstance(raw, dict):
        raw = [{"name": k, "message": v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raw = [raw]
    flags = []
    for item in raw:
        if isinstance(item, dict):
            name = next((str(item[k]) for k in _FLAG_NAME_KEYS if item.get(k)), "")
            message = next((str(item[k]) for k in _FLAG_MESSAGE_KEYS if item.get(k)), "")
            used = set(_FLAG_NAME_KEYS) | set(_FLAG_MESSAGE_KEYS)
            details = ", ".join(f"{k} {v}" for k, v in item.items() if k not in used)
            flags.append({"name": name, "message": message, "details": details})
        else:
            flags.append({"name": "", "message": str(item), "details": ""})
    return flags


def _visual(measures: list[dict]) -> list[dict]:
    rows = []
    for rec in measures:
        if rec.get("est_visual_score", "n/a") not in ("n/a", None):
            rows.append(
                {
                    "region": rec["region"],
                    "score": rec["est_visual_score"],
                    "count": rec.get("est_visual_count", "n/a"),
                    "section": rec.get("est_visual_section", "n/a"),
                    "total": rec.get("pvs_count", "n/a"),
                }
            )
    return rows


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
    for pattern in (f"{prefix}_desc-*.png", f"{prefix}_desc-*.js"):
        for stale in figures_dir.glob(pattern):
            stale.unlink()  # a figure must never outlive the output it showed
    anat = output_dir / Path(source).parent if source else output_dir
    layout = load_layout()
    if report.status != "success":
        if raw is not None and raw.exists():
            for reportlet in layout.failed:
                paths = reportlet.paths(raw, anat, prefix)
                report.figures.append(_draw(figures_dir, output_dir, prefix, reportlet, paths))
        return report

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
    report.qc_flags = qc_flags(measures_json)
    report.columns = {
        k: (v.get("Description", "") if isinstance(v, dict) else str(v))
        for k, v in spec.MEASURE_COLUMNS.items()
    }
    if measures.exists():
        report.measures = _measures(measures)
        report.visual = _visual(report.measures)
    clusters = anat / spec.CLUSTERS.name(prefix)
    if clusters.exists():
        report.census = _census(clusters)
    report.files = sorted(p.relative_to(output_dir).as_posix() for p in anat.glob(f"{prefix}_*"))
    for reportlet in layout.participant:
        if reportlet.key == VIEWER:
            report.figures.append(_viewer(output_dir, label, prefix, anat, reportlet))
            continue
        paths = reportlet.paths(raw, anat, prefix)
        report.figures.append(_draw(figures_dir, output_dir, prefix, reportlet, paths))
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
    assets = {}
    if any(f.kind == "viewer" and f.src for r in runs for f in r.figures):
        from mcpvs_bidsapp.reports import viewer

        assets = viewer.write_assets(output_dir)
        assets["niivue_version"] = viewer.niivue_version()
    page = (
        templates()
        .get_template("participant.html")
        .render(
            label=label,
            version=__version__,
            status=status,
            runs=runs,
            errors=errors,
            crashes=crashes,
            methods=methods,
            run_info=run_info(output_dir, label, status.get("run_id")),
            assets=assets,
            no_status=not status.get("runs"),
            n_failed=sum(1 for r in runs if r.status != "success"),
            generated=datetime.now().isoformat(timespec="seconds"),
            headers=COLUMN_HEADERS,
            nav=[("summary", "Summary")]
            + [(_safe_id(r.prefix), r.prefix) for r in runs]
            + [("run", "Command and settings"), ("methods", "Methods"), ("errors", "Errors")],
        )
    )
    out = write_text(spec.report_path(output_dir, label), page)
    LOGGER.info("sub-%s: report written in %.1f s", label, time.time() - t_start)
    return out


def templates():
    """The Jinja environment of every mcpvs report (participant and group share base.html)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["anchor"] = _safe_id
    env.filters["number"] = number
    return env


def run_info(output_dir: Path, label: str, run_id: str | None) -> dict:
    """The command, resolved settings and environment of a run, from its plan.json."""
    if not run_id:
        return {}
    plan = read_json_or_empty(spec.log_dir(output_dir, label, run_id) / spec.PLAN_FILE)
    if not plan:
        return {}
    env = plan.pop("environment", {}) or {}
    command = plan.pop("command", None)
    software = env.pop("software", {}) or {}
    settings = {k: v for k, v in _flat(plan).items() if k not in ("run_id",)}
    return {
        "command": " ".join(shlex.quote(str(c)) for c in command) if command else None,
        "settings": settings,
        "environment": {k: v for k, v in _flat(env).items() if v not in (None, "n/a")},
        "software": software,
        "plan_file": (spec.log_dir(Path("."), label, run_id) / spec.PLAN_FILE).as_posix(),
    }


def _safe_id(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]", "-", text)
