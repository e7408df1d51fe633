"""group.html: the group report, in the participant report's template and style.

Rendered with Jinja from ``reports/templates/group.html`` (which extends the same
``base.html`` as the participant report), its sections and figure captions from
``data/reports-spec.yml``. Offline: figures are files in ``group_figures/``, links to the
participant reports are relative.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import Key, environment
from mcpvs_bidsapp.outputs.read import read_json_or_empty
from mcpvs_bidsapp.outputs.write import write_text

#: columns whose values are p-values (shown as < 0.001 below that)
P_COLUMNS = {"p", "p_adj", "f_p", "welch_p", "volume_r_p"}
#: the per-participant table: column -> header
PARTICIPANT_COLUMNS = {
    "session": "session",
    "vendor": "vendor",
    "bg_pvsnm": "BG PVSnm",
    "wm_pvsnm": "WM PVSnm",
    "whole_brain_pvsnm": "whole-brain PVSnm",
    "bg_pvs_count": "BG PVS",
    "wm_pvs_count": "WM PVS",
    "bg_est_visual_score": "BG est. score",
    "wm_est_visual_score": "WM est. score",
}


def decimals_for(values) -> int | None:
    """One number of decimals for a whole column: 0 for counts, else by its magnitude."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    numbers = numbers[np.isfinite(numbers)]
    if numbers.empty:
        return None
    if (numbers == numbers.round()).all():
        return 0
    top = float(numbers.abs().max())
    return 3 if top < 10 else 1 if top < 1000 else 0


def cell(column: str, value, decimals: int | None = None) -> str:
    """One table cell as text: p-values, integers and measures each in one format
    (``decimals``: the column's, from :func:`decimals_for`)."""
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        value = float(value)
        if column in P_COLUMNS:
            return "< 0.001" if value < 0.001 else f"{value:.3f}"
        if decimals is not None:
            return f"{value:,.{decimals}f}"
        if value.is_integer() and abs(value) < 1e7:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    text = str(value)
    return "n/a" if text.lower() in spec.NA_STRINGS else text


def frame(table: pd.DataFrame | None, columns: list[str] | None = None, limit: int = 500):
    """A table for the template: {"columns", "rows", "more"}; None when there is nothing."""
    if table is None or table.empty:
        return None
    cols = [c for c in (columns or list(table.columns)) if c in table.columns]
    decimals = [decimals_for(table[c]) if table[c].dtype.kind == "f" else None for c in cols]
    rows = [[cell(c, v, d) for c, v, d in zip(cols, rec, decimals, strict=True)]
            for rec in table[cols].head(limit).itertuples(index=False)]  # fmt: skip
    return {"columns": cols, "rows": rows, "more": max(0, len(table) - limit)}


def _participants(ctx, rel_root: str, pairs) -> dict:
    """The per-participant table: a link to each report, the key measures, the estimated
    and rated scores, outliers and QC flags (from the measures sidecars)."""
    table = ctx.table
    rated = [(region, col) for region, col in pairs]
    show_prefix = bool((table["prefix"] != table["participant_id"]).any())
    columns = [
        c for c in PARTICIPANT_COLUMNS
        if c in table and not (c == "session" and (table["session"] == "n/a").all())
    ]  # fmt: skip
    decimals = {c: decimals_for(table[c]) if table[c].dtype.kind == "f" else None for c in columns}
    rows = []
    for rec in table.to_dict("records"):
        pid = rec["participant_id"]
        report = ctx.output_dir / f"{pid}.html"
        sidecar = read_json_or_empty(spec.sidecar_path(ctx.output_dir / rec["measures_file"]))
        flags = sidecar.get(Key.QC_FLAGS) or []
        rows.append(
            {
                "participant": pid,
                "href": f"{rel_root}/{pid}.html" if report.is_file() else None,
                "prefix": rec["prefix"] if show_prefix else None,
                "cells": [cell(c, rec.get(c), decimals[c]) for c in columns],
                "rated": [cell(col, rec.get(col)) for _, col in rated],
                "outliers": "" if rec["outlier_regions"] == "n/a" else rec["outlier_regions"],
                "qc_flags": len(flags) if isinstance(flags, list | dict) else 1,
            }
        )
    # the rows to look at first: outliers and flagged T1w on top
    rows.sort(key=lambda r: (not (r["outliers"] or r["qc_flags"]), r["participant"]))
    return {
        "show_prefix": show_prefix,
        "headers": [PARTICIPANT_COLUMNS[c] for c in columns],
        "rated_headers": [
            f"{region} rated ({col.removeprefix('participants_')})" for region, col in rated
        ],  # fmt: skip
        "rows": rows,
    }


def write_report(ctx, coll, method_key: tuple) -> Path:
    """Write ``ctx.dest/group.html`` from what the analyses found."""
    from mcpvs_bidsapp.reports.layout import load_layout
    from mcpvs_bidsapp.reports.participant import templates

    layout = load_layout()
    method, model, checksum, regions, n4_mask = method_key
    rel_root = os.path.relpath(ctx.output_dir, ctx.dest)
    results = ctx.results
    visual = results.get("visual", {})
    pairs = visual.get("pairs", [])
    table = ctx.table
    failures = coll.failures
    present = {
        "overview": True,
        "participants": True,
        "distributions": "distributions" in results,
        "frequency": "frequency" in results or bool(ctx.notes.get("frequency")),
        "visual": bool(visual) or bool(ctx.notes.get("visual")),
        "regression": "regression" in results,
        "icc": "icc" in results,
        "manual": "manual" in results,
        "failures": len(failures) > 0,
        "provenance": True,
    }
    sections = [s for s in layout.group_sections if present.get(s.key)]

    def figure(name: str) -> dict:
        entry = layout.group_figure(name)
        return {"name": name, "src": ctx.figures.get(name), **entry}

    settings = ctx.settings
    group_settings = {
        "covariates": " ".join(settings.group.covariates) or "none",
        "visual score columns": " ".join(settings.group.visual_score_columns) or "none",
        "vendor from": settings.group.vendor_column or "the T1w sidecars' Manufacturer",
        "manual masks": str(settings.group.manual_masks or "none"),
        "min group size": settings.group.min_group_size,
        "split by method": "yes" if settings.group.split_by_method else "no",
        "participants": " ".join(settings.selection.participant_label) or "all",
        "sessions": " ".join(settings.selection.session_label) or "all",
    }
    command = list(getattr(settings.execution, "command", []) or [])
    files = sorted(os.path.relpath(p, ctx.dest) for p in ctx.files.values() if Path(p).exists()) + [
        f"{rel_root}/group_failures.tsv"
    ]
    page = (
        templates()
        .get_template("group.html")
        .render(
            version=__version__,
            generated=datetime.now().isoformat(timespec="seconds"),
            nav=[(s.key, s.title) for s in sections],
            sections=[s.key for s in sections],
            titles={s.key: s.title for s in layout.group_sections},
            method={
                "method": method,
                "model": model if model != "n/a" else None,
                "checksum": checksum if checksum != "n/a" else None,
                "regions": regions,
                "n4_mask": n4_mask,
            },  # fmt: skip
            counts={
                "t1w": len(table),
                "participants": int(table["participant_id"].nunique()),
                "failed": len(failures),
                "reports": sum(
                    1
                    for p in table["participant_id"].unique()
                    if (ctx.output_dir / f"{p}.html").is_file()
                ),
            },  # fmt: skip
            vendor_counts=frame(results.get("distributions", {}).get("vendor_counts")),
            notes={key: list(v) for key, v in ctx.notes.items()},
            warnings=list(coll.warnings),
            participants=_participants(ctx, rel_root, pairs),
            outliers=int((table["outlier_regions"] != "n/a").sum()),
            figures={name: figure(name) for name in ctx.figures},
            distributions=results.get("distributions"),
            frequency=results.get("frequency"),
            visual=visual,
            visual_tables={
                "estimated": frame(visual.get("estimated_counts")),
                "agreement": frame(
                    visual.get("agreement"),
                    [
                        "region",
                        "score_column",
                        "vendor",
                        "n",
                        "kappa_linear",
                        "kappa_quadratic",
                        "kappa_quadratic_ci_low",
                        "kappa_quadratic_ci_high",
                        "exact_pct",
                        "within_one_pct",
                        "mean_difference",
                    ],
                ),
                "spearman": frame(visual.get("spearman")),
                "anova": frame(
                    visual.get("anova"),
                    [
                        "region",
                        "score_column",
                        "vendor",
                        "groups",
                        "excluded_groups",
                        "n",
                        "f",
                        "df1",
                        "df2",
                        "p",
                        "eta2",
                        "welch_f",
                        "welch_p",
                    ],
                ),
                "posthoc": frame(
                    visual.get("posthoc"),
                    [
                        "region",
                        "score_column",
                        "vendor",
                        "group1",
                        "group2",
                        "n1",
                        "n2",
                        "diff",
                        "ci_low",
                        "ci_high",
                        "t",
                        "df",
                        "p_adj",
                    ],
                ),
            },  # fmt: skip
            regression=frame(
                results.get("regression", {}).get("table"),
                [
                    "outcome",
                    "model",
                    "term",
                    "beta_std",
                    "beta_std_ci_low",
                    "beta_std_ci_high",
                    "p",
                    "n",
                    "r2",
                ],
            ),  # fmt: skip
            icc=frame(
                results.get("icc", {}).get("table"),
                [
                    "region",
                    "vendor",
                    "type",
                    "icc",
                    "ci_low",
                    "ci_high",
                    "p",
                    "n_targets",
                    "n_measurements",
                ],
            ),  # fmt: skip
            manual=results.get("manual"),
            manual_tables={
                "summary": frame(results.get("manual", {}).get("summary")),
                "per_run": frame(
                    results.get("manual", {}).get("per_run"),
                    [
                        "participant_id",
                        "session",
                        "vendor",
                        "dice",
                        "precision",
                        "recall",
                        "pvs_volume_mm3",
                        "manual_volume_mm3",
                        "error",
                    ],
                ),
            },  # fmt: skip
            failures=frame(failures, ["participant_id", "session", "source", "error"]),
            failures_file=f"{rel_root}/group_failures.tsv",
            provenance={
                "command": " ".join(command) if command else None,
                "settings": group_settings,
                "mcpvs_versions": ", ".join(sorted(set(map(str, table["mcpvs_version"])))),
                "icv_sources": ", ".join(sorted(set(map(str, table["icv_source"])))),
                "environment": environment(),
                "files": files,
            },
            rel_root=rel_root,
            pairs=pairs,
            isfinite=math.isfinite,
        )
    )
    return write_text(ctx.dest / spec.GROUP_REPORT, page)
