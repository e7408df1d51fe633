"""Per-participant HTML report: summary, measures and errors (figures come from reportlets)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.io import write_text


def latest_status(output_dir: Path, label: str) -> dict | None:
    """The newest ``mcpvs_status.json`` of a participant (run ids sort by time)."""
    logs = sorted((output_dir / f"sub-{label}" / "log").glob("*/mcpvs_status.json"))
    return json.loads(logs[-1].read_text()) if logs else None


def build_participant_report(output_dir: Path, label: str, bids_dir: Path | None = None) -> Path:
    """Write ``sub-<label>.html`` at the output root from what is on disk (also after failures)."""
    output_dir = Path(output_dir)
    status = latest_status(output_dir, label) or {"runs": []}
    parts = [
        f"<h1>mcpvs report: sub-{html.escape(label)}</h1>",
        f"<p>mcpvs {html.escape(__version__)}; run {html.escape(str(status.get('run_id')))}; "
        f"PVS method: <b>{html.escape(str(status.get('method', 'n/a')))}</b></p>",
    ]
    errors = []
    for run in status.get("runs", []):
        source = run.get("source") or f"sub-{label}"
        parts.append(f"<h2>{html.escape(source)}</h2>")
        if run["status"] != "success":
            errors.append(run.get("error") or "unknown error")
            parts.append(f"<p class='error'>Failed: {html.escape(str(run.get('error')))}</p>")
            continue
        prefix = Path(source).name.split("_T1w")[0]
        anat = output_dir / Path(source).parent
        measures = anat / f"{prefix}_desc-pvs_measures.tsv"
        sidecar = anat / f"{prefix}_space-T1w_desc-pvs_mask.json"
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
            model = meta.get("Model") or {}
            parts.append(
                f"<p>Method: <b>{html.escape(str(meta.get('Method')))}</b>"
                + (
                    f", model {html.escape(str(model.get('Name')))} "
                    f"({html.escape(str(model.get('Checksum', ''))[:19])})"
                    if model
                    else ""
                )
                + f"; regions: {html.escape(str(meta.get('RegionsMethod')))}</p>"
            )
        if measures.exists():
            table = pd.read_csv(measures, sep="\t")
            parts.append(
                table.to_html(
                    index=False,
                    float_format=lambda v: f"{v:.4g}",
                    na_rep="n/a",
                    border=0,
                    classes="measures",
                )
            )
    parts.append("<h2>Errors</h2>")
    parts.append(
        "<ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in errors) + "</ul>"
        if errors
        else "<p>No errors.</p>"
    )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>mcpvs: sub-{html.escape(label)}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
        ".error{color:#b00}table.measures td,table.measures th{padding:2px 8px}</style>"
        "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    return write_text(output_dir / f"sub-{label}.html", page)
