"""Gather participant-level derivatives into one cohort table.

Reads only what docs/outputs.md promises (measures TSV + JSON, the PVS mask sidecar, the
status files; names from :mod:`mcpvs_bidsapp.outputs.spec`, read with
:mod:`mcpvs_bidsapp.outputs.read`) plus, from bids_dir, participants.tsv and the T1w JSON
sidecars (for the scanner).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp.errors import GroupError
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import Key, n4_label
from mcpvs_bidsapp.outputs.read import (
    SidecarIndex,
    prefix_entities,
    read_json,
    read_measures,
    source_prefix,
    status_files,
)

MEASURES_SUFFIX = spec.MEASURES.suffix

_VENDORS = (
    ("siemens", "Siemens"),
    ("ge ", "GE"),
    ("ge medical", "GE"),
    ("general electric", "GE"),
    ("philips", "Philips"),
    ("united imaging", "United Imaging"),
    ("uih", "United Imaging"),
    ("canon", "Canon"),
    ("toshiba", "Canon"),
    ("hitachi", "Hitachi"),
)


@dataclass
class Collection:
    """What :func:`collect` found."""

    table: pd.DataFrame
    failures: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    #: participants with outputs that have a participants.tsv row (None: no participants.tsv)
    participants_matched: int | None = None


def normalise_vendor(manufacturer: object) -> str | None:
    """Map the many spellings of ``Manufacturer`` ("SIEMENS", "GE MEDICAL SYSTEMS", ...)
    onto one name per vendor, so vendor groups are not split by spelling."""
    if manufacturer is None or (isinstance(manufacturer, float) and math.isnan(manufacturer)):
        return None
    text = str(manufacturer).strip()
    if text.lower() in spec.NA_STRINGS:
        return None
    low = text.lower() + " "
    for key, name in _VENDORS:
        if low.startswith(key) or key in low:
            return name
    return text


def read_participants(bids_dir: Path | None) -> pd.DataFrame | None:
    """participants.tsv of bids_dir (``participant_id`` as ``sub-<label>``), if present."""
    if bids_dir is None:
        return None
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return None
    try:
        # participant_id as text: "01" read as a number becomes sub-1 and matches no output
        frame = pd.read_csv(
            path,
            sep="\t",
            na_values=["n/a", "N/A"],
            keep_default_na=True,
            dtype={"participant_id": str},
        )
    except (OSError, ValueError) as err:
        raise GroupError(f"{path}: cannot be read as a TSV ({err})") from err
    if "participant_id" not in frame.columns:
        raise GroupError(f"{path}: no participant_id column")
    frame["participant_id"] = frame["participant_id"].astype(str).str.strip()
    frame.loc[~frame["participant_id"].str.startswith("sub-"), "participant_id"] = (
        "sub-" + frame["participant_id"]
    )
    if frame["participant_id"].duplicated().any():
        dup = frame.loc[frame["participant_id"].duplicated(), "participant_id"].iloc[0]
        raise GroupError(f"{path}: participant_id {dup} appears more than once")
    return frame


def _iter_measures(output_dir: Path, participants: list[str], sessions: list[str]):
    """Yield every measures table (``spec.MEASURES``) under ``sub-*/[ses-*/]anat``."""
    with os.scandir(output_dir) as it:
        subjects = sorted(e.name for e in it if e.name.startswith("sub-") and e.is_dir())
    for sub in subjects:
        if participants and sub[4:] not in participants:
            continue
        subdir = output_dir / sub
        folders = [subdir / "anat"]
        with os.scandir(subdir) as it:
            folders += [
                Path(e.path) / "anat"
                for e in sorted(it, key=lambda e: e.name)
                if e.name.startswith("ses-")
                and e.is_dir()
                and (not sessions or e.name[4:] in sessions)
            ]
        for folder in folders:
            try:
                with os.scandir(folder) as it:
                    names = sorted(e.name for e in it if e.name.endswith(MEASURES_SUFFIX))
            except OSError:
                continue
            for name in names:
                yield folder / name


def _status_runs(output_dir: Path, participants: list[str]) -> dict[str, dict]:
    """Newest status entry of every run source (a later invocation may cover only some runs)."""
    latest: dict[str, dict] = {}
    with os.scandir(output_dir) as it:
        subjects = sorted(e.name for e in it if e.name.startswith("sub-") and e.is_dir())
    for sub in subjects:
        if participants and sub[4:] not in participants:
            continue
        participant_key = f"{sub} (participant)"
        for path in status_files(output_dir, sub[4:]):  # later ones overwrite earlier ones
            run_id = path.parent.name
            status = read_json(path)
            # a participant-wide error (no T1w found, e.g. a --session-label typo) is the state
            # of that invocation only: any later invocation of the participant supersedes it
            latest.pop(participant_key, None)
            for run in status.get("runs", []) or []:
                # a participant-level error (e.g. no usable T1w at all) has no source
                source = run.get("source") or participant_key
                latest[str(source)] = {
                    "participant_id": sub,
                    "run_id": status.get("run_id", run_id),
                    "source": source,
                    "entities": run.get("entities") or {},
                    "status": run.get("status"),
                    "error": run.get("error"),
                    "status_file": str(path.relative_to(output_dir)),
                }
    return latest


def _method_info(measures_json: dict, mask_json: dict, preproc_json: dict) -> dict:
    """Method / model provenance, from the measures sidecar, else the mask sidecar (the N4
    variant, else the preprocessed T1w's sidecar)."""
    model = mask_json.get(Key.MODEL) or {}
    method = measures_json.get(Key.METHOD) or mask_json.get(Key.METHOD)
    name = measures_json.get(Key.MODEL_NAME) or model.get("Name")
    checksum = measures_json.get(Key.MODEL_CHECKSUM) or model.get("Checksum")
    versions = (
        mask_json.get(Key.SOFTWARE_VERSIONS) or measures_json.get(Key.SOFTWARE_VERSIONS) or {}
    )
    return {
        "method": method if method else "n/a",
        "model_name": name if name else "n/a",
        "model_checksum": checksum if checksum else "n/a",
        "regions_method": measures_json.get(Key.REGIONS_METHOD)
        or mask_json.get(Key.REGIONS_METHOD)
        or "n/a",
        "n4_mask": measures_json.get(Key.N4_MASK)
        or n4_label(preproc_json.get(Key.N4, {}).get(Key.N4_MASK)),
        "icv_source": measures_json.get(Key.ICV_SOURCE, "n/a"),
        "mcpvs_version": versions.get("mcpvs", "n/a"),
    }


def qc_label(measures_json: dict) -> str:
    """The group table's ``qc_flags``: raised flag names joined by ``;``, ``ok`` when the
    checks ran and raised none, ``n/a`` for outputs older than the checks."""
    if Key.QC_FLAGS not in measures_json:
        return spec.NA
    names = [str(f.get("flag", "?")) for f in measures_json.get(Key.QC_FLAGS) or []]
    return ";".join(names) if names else spec.QC_OK


def collect(
    output_dir: Path,
    bids_dir: Path | None = None,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    vendor_column: str | None = None,
) -> Collection:
    """Build the cohort table (one row per T1w) and the list of failed runs."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise GroupError(f"{output_dir}: output folder does not exist")
    if bids_dir is not None and not Path(bids_dir).is_dir():
        bids_dir = None
    participants = participant_label or []
    sessions = session_label or []
    sidecars = SidecarIndex(Path(bids_dir) if bids_dir else None)
    warnings: list[str] = []

    rows = []
    for path in _iter_measures(output_dir, participants, sessions):
        prefix = path.name[: -len(MEASURES_SUFFIX)]
        entities = prefix_entities(prefix)
        if "sub" not in entities:
            warnings.append(f"{path}: no sub- entity in the file name; skipped")
            continue
        json_path = path.with_suffix(".json")
        measures_json = read_json(json_path) if json_path.is_file() else {}
        if not measures_json:
            warnings.append(f"{json_path}: missing; method read from the PVS mask sidecar")
        mask_json_path = path.parent / (prefix + spec.PVS_MASK.sidecar_suffix)
        mask_json = read_json(mask_json_path) if mask_json_path.is_file() else {}
        if not measures_json and not mask_json:
            raise GroupError(
                f"{path}: neither its .json nor {mask_json_path.name} exists, so the method "
                "that made it is unknown"
            )
        row: dict = {
            "participant_id": f"sub-{entities['sub']}",
            "session": entities.get("ses", "n/a"),
            "acquisition": entities.get("acq", "n/a"),
            "run": entities.get("run", "n/a"),
            "prefix": prefix,
        }
        row.update(read_measures(path))
        # only outputs older than the measures sidecar's N4Mask need the preproc sidecar: one
        # file fewer to open per T1w on a large cohort
        preproc_json_path = path.parent / (prefix + spec.PREPROC_T1W.sidecar_suffix)
        preproc_json = (
            read_json(preproc_json_path)
            if Key.N4_MASK not in measures_json and preproc_json_path.is_file()
            else {}
        )
        row.update(_method_info(measures_json, mask_json, preproc_json))
        row["qc_flags"] = qc_label(measures_json)
        meta = sidecars.metadata(entities)
        row["manufacturer"] = meta.get("Manufacturer", "n/a")
        row["manufacturers_model_name"] = meta.get("ManufacturersModelName", "n/a")
        field_strength = meta.get("MagneticFieldStrength")
        row["magnetic_field_strength"] = (
            float(field_strength) if isinstance(field_strength, int | float) else math.nan
        )
        row["measures_file"] = str(path.relative_to(output_dir))
        rows.append(row)

    table = pd.DataFrame(rows)
    statuses = _status_runs(output_dir, participants)
    failures = []
    found = set(table["prefix"]) if not table.empty else set()
    for source, status in sorted(statuses.items()):
        ses = str(status["entities"].get("session", "n/a"))
        if sessions and ses not in sessions:
            continue
        ok = status["status"] == "success"
        has_outputs = source_prefix(source) in found
        if ok and has_outputs:
            continue
        if ok:
            reason = f"status says success but no *{MEASURES_SUFFIX} was found"
        else:
            reason = str(status["error"] or "failed (no error message recorded)")
            if has_outputs:
                reason += " [outputs of an earlier successful run are in group_pvs.tsv]"
        failures.append(
            {
                "participant_id": status["participant_id"],
                "session": ses,
                "source": source,
                "status": status["status"] or "unknown",
                "error": " ".join(reason.split()),
                "run_id": status["run_id"],
                "status_file": status["status_file"],
            }
        )
    failures_df = pd.DataFrame(
        failures,
        columns=[
            "participant_id",
            "session",
            "source",
            "status",
            "error",
            "run_id",
            "status_file",
        ],
    )
    if table.empty:
        return Collection(table, failures_df, warnings)

    # participants.tsv columns (all of them, so users can pick covariates later)
    parts = read_participants(Path(bids_dir) if bids_dir else None)
    clash: list[str] = []
    matched = None
    if parts is not None:
        reserved = set(table.columns) | {"vendor", "outlier_regions"}
        clash = [c for c in parts.columns if c != "participant_id" and c in reserved]
        parts = parts.rename(columns={c: f"participants_{c}" for c in clash})
        ids = set(parts["participant_id"])
        with_outputs = sorted(table["participant_id"].unique())
        missing = [p for p in with_outputs if p not in ids]
        matched = len(with_outputs) - len(missing)
        if missing:
            unused = sorted(ids - set(with_outputs))
            rows = f"; its ids without outputs: {_some(unused)}" if unused else ""
            warnings.append(
                f"{Path(bids_dir) / 'participants.tsv'}: no row for {len(missing)} of "
                f"{len(with_outputs)} participant(s) with outputs ({_some(missing)}), whose "
                f"covariates and scores are n/a{rows}"
            )
        table = table.merge(parts, on="participant_id", how="left", validate="many_to_one")
    else:
        warnings.append("no participants.tsv in bids_dir: no covariates available")

    table = _merge_sessions(table, Path(bids_dir) if bids_dir else None, warnings)

    if vendor_column:
        if parts is None or (vendor_column not in parts.columns and vendor_column not in clash):
            raise GroupError(f"--vendor-column {vendor_column}: no such column in participants.tsv")
        # participants.tsv columns that clash with ours carry a participants_ prefix
        column = f"participants_{vendor_column}" if vendor_column in clash else vendor_column
        table["vendor"] = table[column].map(normalise_vendor)
    else:
        table["vendor"] = table["manufacturer"].map(normalise_vendor)
    table["vendor"] = table["vendor"].fillna("n/a")
    table = table.sort_values(["participant_id", "session", "acquisition", "run"], kind="stable")
    return Collection(table.reset_index(drop=True), failures_df, warnings, matched)


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _merge_sessions(table: pd.DataFrame, bids_dir: Path | None, warnings: list[str]):
    """Per-session values from ``sub-<label>/sub-<label>_sessions.tsv`` (e.g. age at the
    scan); where a column is also in participants.tsv the session's value wins."""
    if bids_dir is None or (table["session"] == "n/a").all():
        return table
    rows = []
    for pid in table.loc[table["session"] != "n/a", "participant_id"].unique():
        path = bids_dir / pid / f"{pid}_sessions.tsv"
        if not path.is_file():
            continue
        try:
            with open(path, newline="") as fobj:
                for rec in csv.DictReader(fobj, delimiter="\t"):
                    ses = str(rec.pop("session_id", "") or "").removeprefix("ses-")
                    if ses:
                        rows.append({"participant_id": pid, "session": ses} | rec)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            warnings.append(f"{path}: cannot be read ({err}); its values are left out")
    if not rows:
        return table
    sessions = pd.DataFrame(rows).replace({v: math.nan for v in ("n/a", "N/A", "")})
    for col in sessions.columns[2:]:
        converted = pd.to_numeric(sessions[col], errors="coerce")
        if converted.notna().sum() == sessions[col].notna().sum():
            sessions[col] = converted
    if sessions.duplicated(["participant_id", "session"]).any():
        warnings.append("a sessions.tsv lists a session twice; the first row is used")
        sessions = sessions.drop_duplicates(["participant_id", "session"])
    ours = [
        c
        for c in sessions.columns[2:]
        if c in spec.METHOD_COLUMNS or c in spec.GROUP_MEASURE_COLUMNS
    ]
    sessions = sessions.rename(columns={c: f"sessions_{c}" for c in ours})
    merged = table.merge(
        sessions, on=["participant_id", "session"], how="left", suffixes=("", "__session")
    )
    for col in [c for c in merged.columns if c.endswith("__session")]:
        base = col[: -len("__session")]
        merged[base] = merged[col].combine_first(merged[base])
        merged = merged.drop(columns=col)
    return merged


def method_groups(table: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Split the table by (method, model name, model checksum, regions method, N4 variant)."""
    keys = list(spec.METHOD_COLUMNS)
    return {key: sub for key, sub in table.groupby(keys, sort=True, dropna=False)}


def method_label(key: tuple) -> str:
    """Folder-safe label of one method group, e.g. ``nnunet-mcpvsnet-1a2b3c4d-samseg-n4whole``."""
    method, name, checksum, regions, n4 = key
    parts = [method]
    if method == "nnunet" or name != "n/a":
        parts.append(name)
        if checksum != "n/a":
            parts.append(checksum.split(":")[-1][:8])
    parts.append(regions)
    if n4 != "n/a":  # outputs older than the N4 record carry none
        parts.append("n4" + str(n4).split("-")[0])
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", "", str(p)) or "na" for p in parts)
