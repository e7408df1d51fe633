"""``mcpvs bids_dir output_dir group``: cohort table, statistics and the group report."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mcpvs_bidsapp.errors import GroupError, McpvsError
from mcpvs_bidsapp.group import stats
from mcpvs_bidsapp.group.collect import Collection, collect, method_groups, method_label
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.write import tsv_text, write_text

LOGGER = logging.getLogger("mcpvs.group")
REGION_KEYS = spec.GROUP_REGION_KEYS
REGIONS = spec.MEASURE_REGIONS


def write_tsv(frame: pd.DataFrame, path: Path, describe: str | None = None) -> Path:
    """Write a group table atomically, plus its column-description sidecar
    (``spec.GROUP_TABLES[describe]``)."""
    if describe and frame.columns.empty:  # nothing to report: still a header for readers
        frame = pd.DataFrame(columns=[c for c in spec.GROUP_TABLES[describe] if "<" not in c])
    write_text(path, tsv_text(frame))
    if describe:
        write_text(
            path.with_suffix(".json"), json.dumps(spec.GROUP_TABLES[describe], indent=2) + "\n"
        )
    return path


def parse_visual_columns(specs: list[str]) -> list[tuple[str, str]]:
    """``BG=bg_score`` -> (BG, bg_score); a bare column gets its region from a ``bg``/``wm``
    name prefix, else whole_brain."""
    out = []
    for item in specs:
        region, sep, column = item.partition("=")
        if not sep:
            column = item
            low = item.lower()
            region = "BG" if low.startswith("bg") else "WM" if low.startswith("wm") else ""
            region = region or "whole_brain"
        canon = {r.lower(): r for r in REGIONS}.get(region.strip().lower())
        if canon is None:
            raise GroupError(f"--visual-score-columns {item}: region must be BG, WM or whole_brain")
        out.append((canon, column.strip()))
    return out


def first_per_participant(table: pd.DataFrame) -> pd.DataFrame:
    """One row per participant (first session/acq/run in sorted order): the cross-sectional
    analyses assume independent observations."""
    return table.drop_duplicates("participant_id", keep="first")


def _resolve(table: pd.DataFrame, columns: list[str], option: str) -> list[str]:
    """participants.tsv columns by the user's names (a name that clashes with one of ours,
    e.g. ``vendor``, was stored as ``participants_<name>``)."""
    out = [f"participants_{c}" if f"participants_{c}" in table.columns else c for c in columns]
    _check_columns(table, out, option)
    return out


def _check_columns(table: pd.DataFrame, columns: list[str], option: str) -> None:
    missing = [c.removeprefix("participants_") for c in columns if c not in table.columns]
    if missing:
        raise GroupError(
            f"{option} {' '.join(missing)}: no such column in participants.tsv or sessions.tsv "
            "(or no participants.tsv in bids_dir)"
        )


def analyse(table: pd.DataFrame, settings, dest: Path, failures: pd.DataFrame) -> dict:
    """All statistics for one method group; writes the TSVs and returns them for the report."""
    results: dict = {"files": {}}
    table = table.copy()
    flags = []
    for key in REGION_KEYS.values():
        col = f"{key}_pvsnm"
        if col in table:
            flags.append(np.where(stats.tukey_outliers(table[col]), key, ""))
    if not flags:
        flags = [np.full(len(table), "")]
    table["outlier_regions"] = [
        ",".join(f for f in row if f) or "n/a" for row in zip(*flags, strict=True)
    ]
    front = [c for c in table.columns if c != "outlier_regions"]
    table = table[front + ["outlier_regions"]]
    results["table"] = table
    results["files"]["group_pvs"] = write_tsv(table, dest / "group_pvs.tsv", "group_pvs")
    results["failures"] = failures
    known = sorted(v for v in table["vendor"].unique() if v != "n/a")
    vendor = "vendor" if len(known) > 1 else None
    cross = first_per_participant(table)
    # an unknown vendor is a missing value for the models, not a vendor of its own
    model_frame = cross.assign(vendor=cross["vendor"].replace("n/a", np.nan))
    notes: list[str] = []
    if len(cross) < len(table):
        notes.append(
            f"{len(table)} T1w images of {len(cross)} participants: regressions, correlations "
            "and ANOVAs use the first session/run of each participant"
        )

    # multiple linear regression (Table 3)
    if settings.group.covariates:
        covariates = _resolve(table, settings.group.covariates, "--covariates")
        frames = []
        for outcome in ("bg_pvsnm", "wm_pvsnm"):
            models = [("covariates", None)] + ([("covariates+vendor", "vendor")] if vendor else [])
            for name, vcol in models:
                res, model_notes = stats.regression(model_frame, outcome, covariates, vcol)
                notes += [
                    n if "reference level" in n else f"{outcome} ({name}): {n}" for n in model_notes
                ]
                if not res.empty:
                    res.insert(1, "model", name)
                    frames.append(res)
        reg = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        results["regression"] = reg
        results["files"]["regression"] = write_tsv(
            reg, dest / "group_stats_regression.tsv", "group_stats_regression"
        )

    # visual scores: Spearman, ANOVA, Dunnett's T3 (section 2.7, Fig. 2)
    if settings.group.visual_score_columns:
        pairs = parse_visual_columns(settings.group.visual_score_columns)
        columns = _resolve(table, [c for _, c in pairs], "--visual-score-columns")
        pairs = [(region, col) for (region, _), col in zip(pairs, columns, strict=True)]
        sp_rows, an_rows, ph_frames = [], [], []
        vendors = ["all"] + (known if vendor else [])
        for region, column in pairs:
            volume = f"{REGION_KEYS[region]}_pvs_volume_mm3"
            for v in vendors:
                sub = cross if v == "all" else cross[cross["vendor"] == v]
                score = pd.to_numeric(sub[column], errors="coerce")
                head = {"region": region, "score_column": column, "vendor": v}
                sp_rows.append(head | stats.spearman(sub[volume], score))
                min_n = settings.group.min_group_size
                kept, dropped = stats.split_groups(sub[volume], score, min_n)
                kept = {_label(k): x for k, x in kept.items()}
                anova = stats.oneway_anova(kept)
                an_rows.append(
                    head
                    | {
                        "groups": ",".join(kept) or "n/a",
                        "excluded_groups": ",".join(
                            f"{_label(k)}(n={len(x)})" for k, x in dropped.items()
                        )
                        or "n/a",
                    }
                    | anova
                )
                if len(kept) >= 2:
                    ph = stats.dunnett_t3(kept)
                    for i, (key, val) in enumerate(head.items()):
                        ph.insert(i, key, val)
                    ph_frames.append(ph)
        results["spearman"] = pd.DataFrame(sp_rows)
        results["anova"] = pd.DataFrame(an_rows)
        results["posthoc"] = (
            pd.concat(ph_frames, ignore_index=True) if ph_frames else (pd.DataFrame())
        )
        results["visual_pairs"] = pairs
        results["cross"] = cross
        for key, name in (
            ("spearman", "group_stats_visual_spearman"),
            ("anova", "group_stats_visual_anova"),
            ("posthoc", "group_stats_visual_posthoc"),
        ):
            results["files"][key] = write_tsv(results[key], dest / f"{name}.tsv", name)

    # longitudinal consistency (section 2.8)
    icc_frame = _icc_table(table, settings.group.min_group_size, notes)
    if icc_frame is not None:
        results["icc"] = icc_frame
        results["files"]["icc"] = write_tsv(
            icc_frame, dest / "group_stats_icc.tsv", "group_stats_icc"
        )

    # manual masks (section 2.6, Table 2, Fig. 1)
    if settings.group.manual_masks:
        from mcpvs_bidsapp.group import manual

        manual_dir = Path(settings.group.manual_masks)
        if not manual_dir.is_dir():
            raise GroupError(f"--manual-masks {manual_dir}: no such folder")
        per_run = manual.manual_metrics(table, settings.output_dir, manual_dir)
        if per_run.empty:
            notes.append(f"no manual mask in {manual_dir} matches a participant output")
        results["manual_runs"] = per_run
        results["manual"] = manual.summarise(per_run)
        results["files"]["manual_runs"] = write_tsv(
            per_run, dest / "group_manual_metrics.tsv", "group_manual_metrics"
        )
        results["files"]["manual"] = write_tsv(
            results["manual"], dest / "group_stats_manual.tsv", "group_stats_manual"
        )
    results["notes"] = list(dict.fromkeys(notes))  # each note once
    return results


def _label(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _icc_table(table: pd.DataFrame, min_n: int, notes: list[str]) -> pd.DataFrame | None:
    """ICCs of PVS volume across sessions, for participants with the usual number of them."""
    long = table[table["session"] != "n/a"].drop_duplicates(["participant_id", "session"])
    if long.empty:
        return None
    counts = long.groupby("participant_id")["session"].count()
    counts = counts[counts >= 2]
    if counts.empty:
        return None
    k = int(counts.mode().max())
    subjects = counts[counts >= k].index
    long = long[long["participant_id"].isin(subjects)].copy()
    long["timepoint"] = long.groupby("participant_id").cumcount()
    long = long[long["timepoint"] < k]
    skipped = int((counts < k).sum())
    if skipped:
        notes.append(f"ICC: {skipped} participant(s) with fewer than {k} sessions left out")
    vendors = long.groupby("participant_id")["vendor"].first()
    frames = []
    for region, key in REGION_KEYS.items():
        wide = long.pivot(
            index="participant_id", columns="timepoint", values=f"{key}_pvs_volume_mm3"
        ).dropna()
        sessions = ",".join(
            long.groupby("timepoint")["session"].agg(lambda s: "/".join(sorted(set(s))))
        )
        for v in ["all"] + (sorted(vendors.unique()) if vendors.nunique() > 1 else []):
            sub = wide if v == "all" else wide[vendors.reindex(wide.index) == v]
            if len(sub) < max(2, min_n if v != "all" else 2):
                continue
            res = stats.icc(sub.to_numpy())
            res.insert(0, "region", region)
            res.insert(1, "vendor", v)
            res["sessions"] = sessions
            frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else None


def run_group(settings) -> int:
    """Run the group level; 0 on success, 1 with one clear line on stderr otherwise."""
    try:
        return _run(settings)
    except McpvsError as err:
        print(f"mcpvs group: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. output_dir not writable, disk full
        where = f"{err.filename}: " if err.filename else ""
        print(f"mcpvs group: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


def _run(settings) -> int:
    from mcpvs_bidsapp.group import report

    output_dir = Path(settings.output_dir)
    coll: Collection = collect(
        output_dir,
        settings.bids_dir,
        participant_label=settings.selection.participant_label,
        session_label=settings.selection.session_label,
        vendor_column=settings.group.vendor_column,
    )
    for warning in coll.warnings:
        LOGGER.warning(warning)
    write_tsv(coll.failures, output_dir / "group_failures.tsv", "group_failures")
    if coll.table.empty:
        raise GroupError(
            f"{output_dir}: no participant outputs (sub-*/[ses-*/]anat/*{spec.MEASURES.suffix})"
            f" found; {len(coll.failures)} failed run(s) listed in group_failures.tsv"
        )
    groups = method_groups(coll.table)
    split = settings.group.split_by_method
    if len(groups) > 1 and not split:
        desc = "; ".join(f"{method_label(key)}: {len(sub)} run(s)" for key, sub in groups.items())
        raise GroupError(
            f"{output_dir}: outputs of {len(groups)} different methods/models are mixed "
            f"({desc}); their PVS volumes are not comparable. Rerun the participant level "
            "with one method, or pass --split-by-method to analyse each group separately"
        )
    for key, sub in groups.items():
        dest = output_dir if len(groups) == 1 else output_dir / f"group-{method_label(key)}"
        results = analyse(sub.reset_index(drop=True), settings, dest, coll.failures)
        results["method_key"] = key
        results["warnings"] = coll.warnings
        report.write_report(dest, output_dir, results, settings)
        LOGGER.info("group level for %s written to %s", method_label(key), dest)
    return 0
