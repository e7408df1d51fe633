"""The one reader of names and sidecars: entities, BIDS inheritance, measures, status files.

Used by the writer (entities of the input), the group level, the reports and the manual-mask
comparison, so that a file name or a sidecar is read one way everywhere. Plain
``os.scandir``/``csv``/``json`` rather than PyBIDS: indexing a cohort of thousands with
PyBIDS takes minutes, and these names are fixed by our own contract (:mod:`.spec`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

from mcpvs_bidsapp.errors import BIDSError, McpvsError
from mcpvs_bidsapp.outputs import spec

_T1W_NAME = re.compile(r"^(sub-[^_]+.*?)_T1w\.nii(\.gz)?$")


def t1w_prefix(t1w_path: Path | str) -> str:
    """``sub-01_ses-1_run-2_T1w.nii.gz`` -> ``sub-01_ses-1_run-2``."""
    name = Path(t1w_path).name
    match = _T1W_NAME.match(name)
    if not match:
        raise BIDSError(f"{name}: not a BIDS T1w file name (sub-<label>[_...]_T1w.nii[.gz])")
    return match.group(1)


def source_prefix(source: str) -> str:
    """``sub-01/anat/sub-01_run-2_T1w.nii.gz`` -> ``sub-01_run-2`` (no check of the name)."""
    return re.sub(r"_T1w\.nii(\.gz)?$", "", Path(source).name)


def prefix_entities(prefix: str) -> dict[str, str]:
    """``sub-01_ses-1_desc-x`` -> ``{"sub": "01", "ses": "1", "desc": "x"}`` (file-name keys)."""
    entities = {}
    for part in prefix.split("_"):
        key, sep, value = part.partition("-")
        if sep and value:
            entities[key] = value
    return entities


def t1w_entities(t1w_path: Path | str) -> dict:
    """BIDS entities of a T1w by their long names (``run`` as an int, as PyBIDS gives it)."""
    entities = {}
    for key, value in prefix_entities(t1w_prefix(t1w_path)).items():
        name = spec.ENTITY_BY_KEY.get(key)
        if name:
            entities[name] = int(value) if name == "run" and value.isdigit() else value
    return entities


class SidecarError(McpvsError):
    """A JSON file that cannot be read as an object."""


def read_json(path: Path | str) -> dict:
    """A JSON object from ``path``; :class:`SidecarError` (one line) when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SidecarError(f"{path}: cannot be read ({err})") from err
    except json.JSONDecodeError as err:
        raise SidecarError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(data, dict):
        raise SidecarError(f"{path}: a JSON object is expected")
    return data


def read_json_or_empty(path: Path | str) -> dict:
    """A JSON object, or ``{}`` when missing or unreadable (reports show what they can)."""
    try:
        return read_json(path)
    except SidecarError:
        return {}


class SidecarIndex:
    """T1w JSON sidecars of bids_dir with the BIDS inheritance principle.

    Every ``*T1w.json`` on the path from the dataset root down to the image's folder whose
    entities are a subset of the image's applies, the deeper (more specific) one winning.
    Folder listings are cached: a cohort of thousands shares the top-level files.
    """

    def __init__(self, bids_dir: Path | None):
        self.bids_dir = Path(bids_dir) if bids_dir is not None else None
        self._listing: dict[Path, list[tuple[dict, Path]]] = {}

    def _candidates(self, folder: Path) -> list[tuple[dict, Path]]:
        if folder not in self._listing:
            found = []
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.name.endswith("T1w.json") and entry.is_file():
                            stem = entry.name[: -len("T1w.json")].rstrip("_")
                            found.append((prefix_entities(stem), Path(entry.path)))
            except OSError:
                pass
            # fewer entities first: more general files are overridden by specific ones
            found.sort(key=lambda item: len(item[0]))
            self._listing[folder] = found
        return self._listing[folder]

    def metadata(self, entities: dict[str, str]) -> dict:
        """Merged sidecar for the T1w with these (file-name key) entities."""
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
                        merged.update(read_json(path))
                    except SidecarError:
                        continue  # a broken sidecar only loses the scanner columns
        return merged

    def for_source(self, source: str) -> dict:
        """Merged sidecar of a T1w given relative to bids_dir."""
        return self.metadata(prefix_entities(source_prefix(source)))


def to_number(value: str) -> float:
    """A TSV cell as a float (``n/a`` and friends are NaN); ValueError otherwise."""
    value = value.strip()
    if value.lower() in spec.NA_STRINGS:
        return math.nan
    return float(value)


class MeasuresError(McpvsError):
    """A measures table that cannot be read."""


def read_measures(path: Path) -> dict[str, float]:
    """One measures TSV as a flat ``{<region key>_<column>: value, "icv_mm3": value}`` dict."""
    row: dict[str, float] = {}
    try:
        with open(path, newline="") as fobj:
            reader = csv.DictReader(fobj, delimiter="\t")
            missing = {"region", "pvs_volume_mm3", "icv_mm3", "pvsnm"} - set(
                reader.fieldnames or []
            )
            if missing:
                raise MeasuresError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for rec in reader:
                region = rec["region"].strip()
                key = spec.GROUP_REGION_KEYS.get(region, region)
                for col in spec.GROUP_MEASURE_COLUMNS:
                    if col in rec and rec[col] is not None:
                        row[f"{key}_{col}"] = to_number(rec[col])
                if rec.get("icv_mm3") is not None and "icv_mm3" not in row:
                    row["icv_mm3"] = to_number(rec["icv_mm3"])
    except ValueError as err:
        raise MeasuresError(f"{path}: a value is not a number ({err})") from err
    except OSError as err:
        raise MeasuresError(f"{path}: cannot be read ({err})") from err
    return row


def status_files(output_dir: Path, participant_label: str) -> list[Path]:
    """Every ``mcpvs_status.json`` of a participant, oldest first (run ids sort by time)."""
    logdir = Path(output_dir) / f"sub-{participant_label}" / "log"
    try:
        with os.scandir(logdir) as it:
            run_ids = sorted(e.name for e in it if e.is_dir())
    except OSError:
        return []
    return [p for r in run_ids if (p := logdir / r / spec.STATUS_FILE).is_file()]


def latest_status(output_dir: Path, participant_label: str) -> dict | None:
    """The newest status of a participant, or None."""
    files = status_files(output_dir, participant_label)
    return json.loads(files[-1].read_text()) if files else None
