"""group.html: one offline page (no CDN, no scripts) with figures as separate SVG files."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.write import write_text

FIG_DIR = spec.GROUP_FIGURES_DIR
CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f3f3f3}
.note{color:#555;font-size:.9em}.bad{color:#a00}img{max-width:100%}
"""


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "n/a"
        if float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, columns: list[str] | None = None, limit: int = 200) -> str:
    if frame is None or frame.empty:
        return "<p class=note>nothing to show</p>"
    frame = frame[[c for c in (columns or frame.columns) if c in frame.columns]]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.head(limit).itertuples(index=False)
    )
    more = (
        f"<p class=note>first {limit} of {len(frame)} rows shown</p>" if len(frame) > limit else ""
    )
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _figures(dest: Path, results: dict) -> dict[str, str]:
    """Draw every figure; return {name: path relative to dest}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir = dest / FIG_DIR
    figdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    table = results["table"]
    regions = [("bg_pvsnm", "BG"), ("wm_pvsnm", "WM"), ("whole_brain_pvsnm", "whole brain")]
    regions = [(c, n) for c, n in regions if c in table]

    def save(fig, name):
        path = figdir / f"{name}.svg"
        tmp = figdir / f".{name}.tmp.svg"
        fig.savefig(tmp, format="svg", bbox_inches="tight")
        os.replace(tmp, path)
        plt.close(fig)
        out[name] = f"{FIG_DIR}/{name}.svg"

    fig, axes = plt.subplots(1, len(regions), figsize=(3.2 * len(regions), 3.2))
    for ax, (col, name) in zip(np.atleast_1d(axes), regions, strict=True):
        ax.boxplot(table[col].dropna(), whis=1.5)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_ylabel("PVSnm (ppm of ICV)")
    fig.suptitle("PVSnm by region (whiskers and flagged outliers: Tukey 1.5 IQR)", y=1.03)
    save(fig, "pvsnm_by_region")

    vendors = sorted(table["vendor"].unique())
    fig, axes = plt.subplots(1, len(regions), figsize=(3.6 * len(regions), 3.4))
    for ax, (col, name) in zip(np.atleast_1d(axes), regions, strict=True):
        data = [table.loc[table["vendor"] == v, col].dropna() for v in vendors]
        ax.boxplot(data, whis=1.5)
        ax.set_xticks(range(1, len(vendors) + 1), vendors, rotation=30, ha="right")
        ax.set_title(name)
        ax.set_ylabel("PVSnm (ppm of ICV)")
    fig.suptitle("PVSnm by scanner vendor", y=1.03)
    save(fig, "pvsnm_by_vendor")

    if "posthoc" in results:
        cross = results["cross"]
        for region, column in results["visual_pairs"]:
            key = {"BG": "bg", "WM": "wm"}.get(region, "whole_brain")
            score = pd.to_numeric(cross[column], errors="coerce")
            levels = sorted(score.dropna().unique())
            data = [cross.loc[score == lv, f"{key}_pvs_volume_mm3"].dropna() for lv in levels]
            fig, ax = plt.subplots(figsize=(4.5, 3.6))
            ax.boxplot(data, whis=1.5)
            ax.set_xticks(
                range(1, len(levels) + 1),
                [f"{lv:g}\n(n={len(d)})" for lv, d in zip(levels, data, strict=True)],
            )
            ax.set_xlabel(column)
            ax.set_ylabel(f"{region} PVS volume (mm³)")
            ph = results["posthoc"]
            if not ph.empty:
                ph = ph[
                    (ph["region"] == region)
                    & (ph["score_column"] == column)
                    & (ph["vendor"] == "all")
                ]
                top = max((d.max() for d in data if len(d)), default=1.0)
                step = 0.07 * top
                pos = {f"{lv:g}": i + 1 for i, lv in enumerate(levels)}
                level_y = top
                for rec in ph.itertuples():
                    star = _stars(rec.p_adj)
                    if not star or rec.group1 not in pos or rec.group2 not in pos:
                        continue
                    level_y += step
                    x1, x2 = pos[rec.group1], pos[rec.group2]
                    ax.plot(
                        [x1, x1, x2, x2],
                        [level_y - step / 3, level_y, level_y, level_y - step / 3],
                        color="k",
                        lw=0.8,
                    )
                    ax.text((x1 + x2) / 2, level_y, star, ha="center", va="bottom")
            ax.set_title(
                f"{region}: PVS volume by {column}\n(Dunnett's T3: * p<.05 ** p<.01 *** p<.001)",
                fontsize=9,
            )
            save(fig, f"visual_{key}_{column}")

    if "manual_runs" in results and not results["manual_runs"].empty:
        runs = results["manual_runs"]
        runs = runs[runs["error"] == "n/a"]
        if not runs.empty:
            fig, ax = plt.subplots(figsize=(4, 4))
            for v, sub in runs.groupby("vendor"):
                ax.scatter(sub["manual_volume_mm3"], sub["pvs_volume_mm3"], s=12, label=v)
            lim = [0, max(runs["manual_volume_mm3"].max(), runs["pvs_volume_mm3"].max()) * 1.05]
            ax.plot(lim, lim, "k--", lw=0.8)
            ax.set_xlabel("manual PVS volume (mm³)")
            ax.set_ylabel("segmented PVS volume (mm³)")
            ax.legend(fontsize=8)
            save(fig, "manual_volume")
    return out


def write_report(dest: Path, output_dir: Path, results: dict, settings) -> Path:
    """Write ``dest/group.html`` and its figures."""
    figs = _figures(dest, results)
    table = results["table"]
    failures = results["failures"]
    method, model, checksum, regions, n4_mask = results["method_key"]
    rel = os.path.relpath(output_dir, dest)
    parts: list[str] = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mcpvs group report</title>"
        f"<style>{CSS}</style></head><body>",
        "<h1>mcpvs group report</h1>",
        f"<p>mcpvs {html.escape(__version__)} &middot; method <b>{html.escape(method)}</b>"
        f" &middot; model {html.escape(model)} ({html.escape(checksum)}) &middot; regions "
        f"{html.escape(regions)} &middot; N4 {html.escape(str(n4_mask))}</p>",
        "<h2>Counts</h2><table><tr><th>T1w images measured</th><th>participants</th>"
        "<th>failed runs</th></tr>"
        f"<tr><td>{len(table)}</td><td>{table['participant_id'].nunique()}</td>"
        f"<td class={'bad' if len(failures) else ''}>{len(failures)}</td></tr></table>",
        "<p>Tables: <a href='group_pvs.tsv'>group_pvs.tsv</a>, "
        f"<a href='{html.escape(rel)}/group_failures.tsv'>group_failures.tsv</a></p>",
    ]
    vendor_counts = table.groupby("vendor")["participant_id"].nunique()
    parts.append(_table(vendor_counts.rename("participants").reset_index()))
    for note in results.get("notes", []) + results.get("warnings", []):
        parts.append(f"<p class=note>{html.escape(note)}</p>")

    parts.append("<h2>PVSnm distributions</h2>")
    for name in ("pvsnm_by_region", "pvsnm_by_vendor"):
        parts.append(f"<p><img src='{figs[name]}' alt='{name}'></p>")

    outliers = table[table["outlier_regions"] != "n/a"]
    parts.append(
        f"<h2>Outliers ({len(outliers)})</h2><p class=note>PVSnm outside "
        "[Q1 - 1.5 IQR, Q3 + 1.5 IQR] in a region; check their reports.</p>"
    )
    if not outliers.empty:
        rows = []
        for rec in outliers.head(500).itertuples(index=False):
            report = f"{rec.participant_id}.html"
            link = (
                f"<a href='{html.escape(rel)}/{report}'>{rec.participant_id}</a>"
                if (output_dir / report).is_file()
                else f"{rec.participant_id} (no report)"
            )
            rows.append(
                f"<tr><td>{link}</td><td>{_fmt(rec.session)}</td><td>{_fmt(rec.run)}</td>"
                f"<td>{_fmt(rec.outlier_regions)}</td><td>{_fmt(rec.bg_pvsnm)}</td>"
                f"<td>{_fmt(rec.wm_pvsnm)}</td><td>{_fmt(rec.vendor)}</td></tr>"
            )
        parts.append(
            "<table><tr><th>participant</th><th>session</th><th>run</th><th>regions</th>"
            "<th>BG PVSnm</th><th>WM PVSnm</th><th>vendor</th></tr>" + "".join(rows) + "</table>"
        )

    if "regression" in results:
        parts.append("<h2>Multiple linear regression of PVSnm (paper Table 3)</h2>")
        parts.append(
            _table(
                results["regression"],
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
            )
        )
    if "spearman" in results:
        parts.append("<h2>PVS volume and visual scores (paper Fig. 2)</h2><h3>Spearman</h3>")
        parts.append(_table(results["spearman"]))
        parts.append(
            f"<h3>One-way ANOVA (groups &lt; {settings.group.min_group_size} participants "
            "excluded)</h3>"
        )
        parts.append(
            _table(
                results["anova"],
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
            )
        )
        parts.append("<h3>Dunnett's T3 post-hoc</h3>")
        parts.append(
            _table(
                results["posthoc"],
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
            )
        )
        for name, path in figs.items():
            if name.startswith("visual_"):
                parts.append(f"<p><img src='{path}' alt='{name}'></p>")
    if "icc" in results:
        parts.append("<h2>Longitudinal consistency: ICC of PVS volume across sessions</h2>")
        parts.append(
            _table(
                results["icc"],
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
            )
        )
    if "manual" in results:
        parts.append("<h2>Agreement with manual masks (paper Table 2, Fig. 1)</h2>")
        parts.append(_table(results["manual"]))
        if "manual_volume" in figs:
            parts.append(f"<p><img src='{figs['manual_volume']}' alt='manual volume'></p>")
        parts.append(
            _table(
                results["manual_runs"],
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
            )
        )
    if len(failures):
        parts.append(f"<h2 class=bad>Failed runs ({len(failures)})</h2>")
        parts.append(_table(failures, ["participant_id", "session", "source", "error"]))
    parts.append("</body></html>\n")

    path = dest / spec.GROUP_REPORT
    write_text(path, "\n".join(parts))
    return path
