"""``mcpvs bids_dir output_dir group``: cohort table, statistics and the group report.

:func:`run_group` collects the participant outputs (:mod:`.collect`), refuses to mix methods,
runs every analysis of :mod:`.analyses` (one module each) on each method group and writes
group.html (:mod:`.report`). A refused run writes nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp.errors import GroupError, McpvsError
from mcpvs_bidsapp.group.analyses.visual import parse_visual_columns
from mcpvs_bidsapp.group.collect import Collection, collect, method_groups, method_label
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.write import tsv_text, write_text

LOGGER = logging.getLogger("mcpvs.group")

__all__ = ["parse_visual_columns", "run_group", "write_tsv"]


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
    from mcpvs_bidsapp.group.analyses import analyse, check_options

    output_dir = Path(settings.output_dir)
    coll: Collection = collect(
        output_dir,
        settings.bids_dir,
        participant_label=settings.selection.participant_label,
        session_label=settings.selection.session_label,
        vendor_column=settings.group.vendor_column,
    )
    # every refusal comes before the first write: a refused run leaves the last good group
    # outputs as they were (issue #17, item 9)
    if coll.table.empty:
        failed = (
            f"; {len(coll.failures)} failed run(s) recorded in sub-*/log/*/{spec.STATUS_FILE}"
            f" (e.g. {coll.failures.iloc[0]['error']})"
            if len(coll.failures)
            else ""
        )
        raise GroupError(
            f"{output_dir}: no participant outputs (sub-*/[ses-*/]anat/*{spec.MEASURES.suffix})"
            f" found{failed}"
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
    for sub in groups.values():
        check_options(sub, settings, coll.participants_matched)

    # warnings only for a run that goes ahead: a refusal is one line
    for warning in coll.warnings:
        LOGGER.warning(warning)
    started = _fs_now(output_dir)
    write_tsv(coll.failures, output_dir / "group_failures.tsv", "group_failures")
    for key, sub in groups.items():
        dest = output_dir if len(groups) == 1 else output_dir / f"group-{method_label(key)}"
        ctx = analyse(sub.reset_index(drop=True), settings, dest, output_dir)
        page = report.write_report(ctx, coll, key)
        LOGGER.info(
            "group level for %s: %d T1w image(s); report %s", method_label(key), len(sub), page
        )
    for stale in remove_stale_group_files(output_dir, started):
        LOGGER.info("removed %s (not produced by this group run)", stale)
    return 0


def _fs_now(folder: Path) -> float:
    """The file system's own clock (a shared file system's server may differ from ours)."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=folder, prefix=".mcpvs-clock-") as fobj:
        return Path(fobj.name).stat().st_mtime


def group_output_files(output_dir: Path) -> list[Path]:
    """Every file the group level writes (tables, sidecars, report, figures), in output_dir
    and in its ``group-<method>`` folders; nothing else is ever listed."""
    folders = [output_dir] + sorted(
        p for p in output_dir.glob("group-*") if p.is_dir() and not p.is_symlink()
    )
    names = {f"{stem}{ext}" for stem in spec.GROUP_TABLES for ext in (".tsv", ".json")}
    names.add(spec.GROUP_REPORT)
    found = []
    for folder in folders:
        found += [folder / n for n in sorted(names) if (folder / n).is_file()]
        figures = folder / spec.GROUP_FIGURES_DIR
        if figures.is_dir() and not figures.is_symlink():
            found += sorted(p for p in figures.iterdir() if p.is_file())
    return found


def remove_stale_group_files(output_dir: Path, started: float) -> list[Path]:
    """Delete group files an earlier group run wrote and this one did not (old visual-score
    tables, a method folder whose participants are gone, old figures), so that every group
    file in output_dir belongs to the newest run."""
    removed = []
    for path in group_output_files(output_dir):
        if path.stat().st_mtime < started:
            path.unlink()
            removed.append(path)
    for folder in sorted(output_dir.glob("group-*"), reverse=True):
        for sub in (folder / spec.GROUP_FIGURES_DIR, folder):
            if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
    figures = output_dir / spec.GROUP_FIGURES_DIR
    if figures.is_dir() and not figures.is_symlink() and not any(figures.iterdir()):
        figures.rmdir()
    return removed
