"""Gather participant-level derivatives into one cohort table.

Reads only what docs/outputs.md promises (measures TSV + JSON, the PVS mask sidecar, the
status files) plus, from bids_dir, participants.tsv and the T1w JSON sidecars (for the
scanner). Plain ``os.scandir``/``csv``/``json`` rather than PyBIDS: indexing a cohort of
thousands with PyBIDS takes minutes, and the file names here are fixed by our own contract.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp.interfaces.n4 import n4_variant

REGIONS = ("BG", "WM", "whole_brain")
#: measures.tsv columns copied into the wide table as ``<region>_<column>``
MEASURE_COLUMNS = (
    "pvs_volume_mm3",
    "pvs_count",
    "mean_cluster_volume_mm3",
    "region_volume_mm3",
    "pvsnm",
    "wmh_overlap_pct",
)
#: BIDS entity order for the ``<prefix>`` of a T1w (subset of the BIDS anat entities)
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "chunk")
ENTITY_NAMES = {"sub": "participant_id", "ses": "session", "acq": "acquisition", "run": "run"}
MEASURES_SUFFIX = "_desc-pvs_measures.tsv"
MASK_SUFFIX = "_space-T1w_desc-pvs_mask.nii.gz"
#: what must be equal for PVS volumes to be comparable: the method, the exact model, how the
#: regions were made, and the N4 variant (the model sees different intensities after each)
METHOD_COLUMNS = ("method", "model_name", "model_checksum", "regions_method", "n4_mask")
PREPROC_SUFFIX = "_desc-preproc_T1w.json"
NA_STRINGS = {"", "n/a", "na", "nan", "none", "null"}

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


class GroupError(Exception):
    """A problem with the inputs of the group level; its message is one line for the user."""


@dataclass
class Collection:
    """What :func:`collect` found."""

    table: pd.DataFrame
    failures: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def parse_entities(prefix: str) -> dict[str, str]:
    """``sub-01_ses-1_run-2`` -> ``{"sub": "01", "ses": "1", "run": "2"}``."""
    entities = {}
    for part in prefix.split("_"):
        key, sep, value = part.partition("-")
        if sep and value:
            entities[key] = value
    return entities


def normalise_vendor(manufacturer: object) -> str | None:
    """Map the many spellings of ``Manufacturer`` ("SIEMENS", "GE MEDICAL SYSTEMS", ...)
    onto one name per vendor, so vendor groups are not split by spelling."""
    if manufacturer is None or (isinstance(manufacturer, float) and math.isnan(manufacturer)):
        return None
    text = str(manufacturer).strip()
    if text.lower() in NA_STRINGS:
        return None
    low = text.lower() + " "
    for key, name in _VENDORS:
        if low.startswith(key) or key in low:
            return name
    return text


def _to_number(value: str) -> float:
    value = value.strip()
    if value.lower() in NA_STRINGS:
        return math.nan
    return float(value)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise GroupError(f"{path}: cannot be read ({err})") from err
    except json.JSONDecodeError as err:
        raise GroupError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(data, dict):
        raise GroupError(f"{path}: a JSON object is expected")
    return data


def read_measures(path: Path) -> dict[str, float]:
    """One measures TSV as a flat ``{<region>_<column>: value, "icv_mm3": value}`` dict."""
    row: dict[str, float] = {}
    try:
        with open(path, newline="") as fobj:
            reader = csv.DictReader(fobj, delimiter="\t")
            missing = {"region", "pvs_volume_mm3", "icv_mm3", "pvsnm"} - set(
                reader.fieldnames or []
            )
            if missing:
                raise GroupError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for rec in reader:
                region = rec["region"].strip()
                key = region.lower() if region in ("BG", "WM") else region
                for col in MEASURE_COLUMNS:
                    if col in rec and rec[col] is not None:
                        row[f"{key}_{col}"] = _to_number(rec[col])
                if rec.get("icv_mm3") is not None and "icv_mm3" not in row:
                    row["icv_mm3"] = _to_number(rec["icv_mm3"])
    except ValueError as err:
        raise GroupError(f"{path}: a value is not a number ({err})") from err
    except OSError as err:
        raise GroupError(f"{path}: cannot be read ({err})") from err
    return row


class SidecarIndex:
    """T1w JSON sidecars of bids_dir with the BIDS inheritance principle.

    Every ``*T1w.json`` on the path from the dataset root down to the image's folder whose
    entities are a subset of the image's applies, the deeper (more specific) one winning.
    Folder listings are cached: a cohort of thousands shares the top-level files.
    """

    def __init__(self, bids_dir: Path | None):
        self.bids_dir = bids_dir
        self._listing: dict[Path, list[tuple[dict, Path]]] = {}

    def _candidates(self, folder: Path) -> list[tuple[dict, Path]]:
        if folder not in self._listing:
            found = []
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.name.endswith("T1w.json") and entry.is_file():
                            stem = entry.name[: -len("T1w.json")].rstrip("_")
                            found.append((parse_entities(stem), Path(entry.path)))
            except OSError:
                pass
            # fewer entities first: more general files are overridden by specific ones
            found.sort(key=lambda item: len(item[0]))
            self._listing[folder] = found
        return self._listing[folder]

    def metadata(self, entities: dict[str, str]) -> dict:
        """Merged sidecar for the T1w with these entities ({} without a bids_dir)."""
        if self.bids_dir is None or "sub" not in entities:
            return {}
        folders = [self.bids_dir, self.bids_dir / f"sub-{entities['sub']}"]
        if "ses" in entities:
            folders.append(folders[-1] / f"ses-{entities['ses']}")
        folders.append(folders[-1] / "anat")
        merged: dict = {}
        for folder in folders:
            for ents, path in self._candidates(folder):
                if all(entities.get(k) == v for k, v in ents.items()):
                    try:
                        merged.update(_read_json(path))
                    except GroupError:
                        continue  # a broken sidecar only loses the scanner columns
        return merged


def read_participants(bids_dir: Path | None) -> pd.DataFrame | None:
    """participants.tsv of bids_dir (``participant_id`` as ``sub-<label>``), if present."""
    if bids_dir is None:
        return None
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A"], keep_default_na=True)
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
    """Yield every ``*_desc-pvs_measures.tsv`` under ``sub-*/[ses-*/]anat``."""
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
        logdir = output_dir / sub / "log"
        try:
            with os.scandir(logdir) as it:
                run_ids = sorted(e.name for e in it if e.is_dir())
        except OSError:
            continue
        for run_id in run_ids:  # sortable ids: later ones overwrite earlier ones
            path = logdir / run_id / "mcpvs_status.json"
            if not path.is_file():
                continue
            status = _read_json(path)
            for run in status.get("runs", []) or []:
                # a participant-level error (e.g. no usable T1w at all) has no source
                source = run.get("source") or f"{sub} (participant)"
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
    variant, else the desc-preproc_T1w sidecar)."""
    model = mask_json.get("Model") or {}
    method = measures_json.get("Method") or mask_json.get("Method")
    name = measures_json.get("ModelName") or model.get("Name")
    checksum = measures_json.get("ModelChecksum") or model.get("Checksum")
    versions = mask_json.get("SoftwareVersions") or measures_json.get("SoftwareVersions") or {}
    return {
        "method": method if method else "n/a",
        "model_name": name if name else "n/a",
        "model_checksum": checksum if checksum else "n/a",
        "regions_method": measures_json.get("RegionsMethod")
        or mask_json.get("RegionsMethod")
        or "n/a",
        "n4_mask": measures_json.get("N4Mask") or n4_variant(preproc_json.get("N4") or {}),
        "icv_source": measures_json.get("IcvSource", "n/a"),
        "mcpvs_version": versions.get("mcpvs", "n/a"),
    }


def source_prefix(source: str) -> str:
    """``sub-01/anat/sub-01_run-2_T1w.nii.gz`` -> ``sub-01_run-2`` (the outputs' prefix)."""
    return re.sub(r"_T1w\.nii(\.gz)?$", "", Path(source).name)


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
        entities = parse_entities(prefix)
        if "sub" not in entities:
            warnings.append(f"{path}: no sub- entity in the file name; skipped")
            continue
        json_path = path.with_suffix(".json")
        measures_json = _read_json(json_path) if json_path.is_file() else {}
        if not measures_json:
            warnings.append(f"{json_path}: missing; method read from the PVS mask sidecar")
        mask_json_path = path.parent / (prefix + MASK_SUFFIX.replace(".nii.gz", ".json"))
        mask_json = _read_json(mask_json_path) if mask_json_path.is_file() else {}
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
        preproc_json_path = path.parent / (prefix + PREPROC_SUFFIX)
        preproc_json = (
            _read_json(preproc_json_path)
            if "N4Mask" not in measures_json and preproc_json_path.is_file()
            else {}
        )
        row.update(_method_info(measures_json, mask_json, preproc_json))
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
            reason = "status says success but no desc-pvs_measures.tsv was found"
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
    if parts is not None:
        reserved = set(table.columns) | {"vendor", "outlier_regions"}
        clash = [c for c in parts.columns if c != "participant_id" and c in reserved]
        parts = parts.rename(columns={c: f"participants_{c}" for c in clash})
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
    return Collection(table.reset_index(drop=True), failures_df, warnings)


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
    ours = [c for c in sessions.columns[2:] if c in METHOD_COLUMNS or c in MEASURE_COLUMNS]
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
    keys = list(METHOD_COLUMNS)
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
