"""BIDS input discovery and derivative naming.

Discovery uses PyBIDS with an in-memory index only, so the input tree is never written to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.read import check_output_dir, prefix_entities, t1w_entities, t1w_prefix

CODE_URL = "https://github.com/mcpvs/mcpvs"


@dataclass
class T1wInput:
    """One T1w image to process, with the entities its derivatives mirror."""

    path: Path
    entities: dict = field(default_factory=dict)
    #: a WMH mask on this T1w's grid (``--wmh-derivatives``), for the PVS-WMH overlap
    wmh_file: Path | None = None
    #: a lesion mask on this T1w's grid (``--lesion-mask`` or a BIDS file beside the T1w):
    #: the built-in method searches no PVS in it and its rim; measures flag PVS next to it
    lesion_file: Path | None = None

    @property
    def subject(self) -> str:
        return self.entities["subject"]

    @property
    def prefix(self) -> str:
        """File-name prefix of its derivatives: the input name without ``_T1w.nii[.gz]``."""
        return t1w_prefix(self.path)

    @property
    def anat_dir(self) -> Path:
        """Relative folder of its derivatives (``sub-X[/ses-Y]/anat``)."""
        return spec.anat_dir(self.entities)

    @property
    def node_name(self) -> str:
        """A Nipype-safe workflow name unique within the participant."""
        return "t1w_" + re.sub(r"[^0-9a-zA-Z]", "_", self.prefix)

    def relative_to(self, bids_dir: Path) -> str:
        return str(self.path.relative_to(bids_dir))


def check_paths(bids_dir: Path, output_dir: Path, work_dir: Path | None) -> None:
    """Refuse output or work folders that would write into the input dataset."""
    bids_dir = bids_dir.resolve()
    if not bids_dir.is_dir():
        raise BIDSError(f"{bids_dir}: bids_dir does not exist or is not a folder")
    out = output_dir.resolve()
    if out == bids_dir or bids_dir in out.parents:
        raise BIDSError(
            f"{output_dir}: output_dir must not be bids_dir or inside it "
            "(use e.g. <bids_dir>/../derivatives/mcpvs)"
        )
    if work_dir is not None:
        work = work_dir.resolve()
        if work == bids_dir or bids_dir in work.parents:
            raise BIDSError(f"{work_dir}: the work dir must not be inside bids_dir")
    check_output_dir(output_dir)


def _validate_dataset(bids_dir: Path) -> None:
    """The minimum a BIDS dataset needs; PyBIDS's own check refuses the rest."""
    desc = bids_dir / "dataset_description.json"
    if not desc.is_file():
        raise BIDSError(
            f"{bids_dir}: not a BIDS dataset (no dataset_description.json); "
            "use --skip-bids-validation to try anyway"
        )
    try:
        json.loads(desc.read_text())
    except json.JSONDecodeError as err:
        raise BIDSError(f"{desc}: not valid JSON ({err.msg}, line {err.lineno})") from err


def collect_t1w(
    bids_dir: Path,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    bids_filters: dict | None = None,
    validate: bool = True,
) -> dict[str, list[T1wInput]]:
    """Every T1w per selected participant, as {label: [T1wInput, ...]}.

    Unknown participant labels are an error (one line naming them), as in fMRIPrep.
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    bids_dir = Path(bids_dir).absolute()
    participant_label = [p.removeprefix("sub-") for p in participant_label or []]
    session_label = [s.removeprefix("ses-") for s in session_label or []]
    if validate:
        _validate_dataset(bids_dir)
    try:
        layout = BIDSLayout(
            str(bids_dir),
            validate=validate,
            indexer=BIDSLayoutIndexer(validate=validate, index_metadata=False),
        )
    except Exception as err:  # PyBIDS raises many types; the user needs one line
        raise BIDSError(f"{bids_dir}: cannot index as BIDS ({err})") from err

    subjects = sorted(layout.get_subjects())
    if participant_label:
        missing = sorted(set(participant_label) - set(subjects))
        if missing:
            raise BIDSError(
                f"{bids_dir}: participant(s) not found: {', '.join('sub-' + m for m in missing)}"
                f" (available: {', '.join(subjects[:10]) or 'none'}"
                f"{' ...' if len(subjects) > 10 else ''})"
            )
        subjects = [s for s in subjects if s in participant_label]
    if not subjects:
        raise BIDSError(f"{bids_dir}: no participants (sub-<label> folders) found")

    query = {"datatype": "anat", "suffix": "T1w", "extension": [".nii", ".nii.gz"]}
    query.update(t1w_filters(bids_filters or {}, set(layout.get_entities())))
    if session_label:
        query["session"] = session_label

    found: dict[str, list[T1wInput]] = {}
    for subject in subjects:
        try:
            files = layout.get(subject=subject, return_type="object", **query)
        except Exception as err:  # PyBIDS raises many types for a bad query
            raise BIDSError(f"--bids-filter-file: PyBIDS cannot use the filter ({err})") from err
        items = []
        for bids_file in sorted(files, key=lambda f: f.path):
            path = Path(bids_file.path)
            items.append(T1wInput(path=path, entities=t1w_entities(path)))
        found[subject] = items
    return found


#: fMRIPrep's filter file holds one query per kind of image ({"t1w": {...}, "bold": {...}});
#: mcpvs reads "t1w" and ignores the others
FMRIPREP_QUERIES = frozenset(
    {"t1w", "t2w", "flair", "bold", "sbref", "fmap", "roi", "dwi", "asl", "pet", "t2star"}
)
#: fixed by the T1w query or by the command line
_FIXED = {
    "subject": "select participants with --participant-label",
    "suffix": "mcpvs always queries suffix T1w",
    "datatype": "mcpvs always queries the anat datatype",
}


def t1w_filters(filters: dict, entities: set[str]) -> dict:
    """The PyBIDS filters of the T1w query from a ``--bids-filter-file`` (flat, or fMRIPrep's
    ``{"t1w": {...}}``), checked: one line (:class:`BIDSError`) naming the bad key or value,
    not a PyBIDS traceback. As in fMRIPrep, ``null`` means "the entity is absent" and
    ``"*"`` "any value"."""
    from bids.layout import Query

    if not isinstance(filters, dict):
        raise BIDSError("--bids-filter-file: a JSON object is needed")
    if set(filters) & FMRIPREP_QUERIES:
        others = sorted(set(filters) - FMRIPREP_QUERIES)
        if others:
            queries = ", ".join(sorted(set(filters) & FMRIPREP_QUERIES))
            raise BIDSError(
                f"--bids-filter-file: mixes fMRIPrep queries ({queries}) with entities "
                f'({", ".join(others)}); put the T1w entities under "t1w"'
            )
        filters = filters.get("t1w") or {}
        if not isinstance(filters, dict):
            raise BIDSError('--bids-filter-file: "t1w" must be a JSON object of entities')
    known = (set(entities) | {"extension"}) - set(_FIXED)
    out = {}
    problems = []  # one line per bad key, all at once: a user fixes the file in one go
    for key, value in filters.items():
        if key in _FIXED:
            problems.append(f"--bids-filter-file: {key!r} cannot be filtered ({_FIXED[key]})")
            continue
        if key not in known:
            problems.append(
                f"--bids-filter-file: unknown entity {key!r} (entities of this dataset: "
                f"{', '.join(sorted(known))})"
            )
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v is not None and not isinstance(v, str | int | float | bool)]
        if bad:
            problems.append(
                f"--bids-filter-file: {key}: {bad[0]!r} is not a value (a string, a number, "
                "null, or a list of them)"
            )
            continue

        def convert(item):
            return Query.NONE if item is None else Query.ANY if item == "*" else item

        out[key] = [convert(v) for v in value] if isinstance(value, list) else convert(value)
    if problems:
        raise BIDSError("\n".join(problems))
    return out


def dataset_description(container: dict | None = None) -> dict:
    """The derivative dataset_description.json content."""
    generated = {"Name": spec.PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}
    if container:
        generated["Container"] = container
    return {
        "Name": "mcpvs: perivascular space segmentation and measures",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "HowToAcknowledge": (
            "Cite Huang et al. (2024) NeuroImage 'Development and validation of a perivascular "
            "space segmentation method in multi-center datasets' and the mcpvs software."
        ),
    }


def container_info() -> dict | None:
    """Container type/tag when running in one.

    Apptainer/Singularity set ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER`` and ``*_NAME``
    themselves (also under ``--cleanenv``); they win over ``MCPVS_CONTAINER_TYPE=docker``, which
    the image's Docker ENV carries into a SIF built from it.
    """
    import os

    for runtime in ("APPTAINER", "SINGULARITY"):
        if os.environ.get(f"{runtime}_CONTAINER"):
            info = {"Type": runtime.lower()}
            tag = os.environ.get(f"{runtime}_NAME") or os.environ[f"{runtime}_CONTAINER"]
            info["Tag"] = os.path.basename(tag)
            return info
    ctype = os.environ.get("MCPVS_CONTAINER_TYPE")
    if not ctype:
        return None
    info = {"Type": ctype}
    if os.environ.get("MCPVS_CONTAINER_TAG"):
        info["Tag"] = os.environ["MCPVS_CONTAINER_TAG"]
    return info


_WMH_NAME = re.compile(r"^(sub-[^_]+.*)_mask\.nii(\.gz)?$")


def _wmh_entities(name: str) -> dict[str, str] | None:
    """Entities of a WMH mask name (``..._desc-WMH_mask`` or ``..._label-WMH_mask``), or None."""
    match = _WMH_NAME.match(name)
    if not match:
        return None
    pairs = prefix_entities(match.group(1))
    if pairs.get("desc", "").upper() != "WMH" and pairs.get("label", "").upper() != "WMH":
        return None
    return pairs


def find_wmh_mask(wmh_dir: Path, t1w: T1wInput) -> Path | None:
    """The WMH mask of one T1w in a BIDS-Derivatives folder, matched by its entities.

    Subject and session must match; acq, rec and run must match when the mask names them
    (a mask without them serves every T1w of the session, but only if it is the only one);
    ``space-`` must be absent or ``T1w``/``orig`` (a mask in a template space is not usable).
    """
    keys = {"ses": "session", "acq": "acquisition", "rec": "reconstruction", "run": "run"}
    folder = Path(wmh_dir) / f"sub-{t1w.subject}"
    candidates = []
    for path in sorted(folder.rglob(f"sub-{t1w.subject}_*_mask.nii*")):
        ents = _wmh_entities(path.name)
        if ents is None or ents.get("space", "T1w") not in ("T1w", "orig"):
            continue
        if ents.get("ses") != (str(t1w.entities["session"]) if "session" in t1w.entities else None):
            continue
        named = [k for k in ("acq", "rec", "run") if k in ents]
        if any(ents[k] != str(t1w.entities.get(keys[k], "")) for k in named):
            continue
        candidates.append((len(named), path))
    if not candidates:
        return None
    best = max(n for n, _ in candidates)
    chosen = [p for n, p in candidates if n == best]
    if len(chosen) > 1:
        raise BIDSError(
            f"{t1w.path.name}: several WMH masks match ({', '.join(p.name for p in chosen)}); "
            "name them with the T1w's acq/run entities"
        )
    return chosen[0]


def _grid_problem(mask: Path, t1w: T1wInput, what: str) -> str | None:
    """Why ``mask`` cannot be used with ``t1w`` (unreadable, another grid), or None.

    A mask must be on the T1w's voxel grid (same shape, affine equal within 0.01 mm). Masks
    that are not are refused rather than resampled: resampling by the header affines alone
    assumes the other image is already aligned, and a wrong mask looks just like a right one.
    """
    import nibabel as nb
    import numpy as np

    try:
        ref, img = nb.load(str(t1w.path)), nb.load(str(mask))
    except Exception as err:
        return f"{mask}: cannot read the {what} ({err})"
    if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-2):
        return (
            f"{mask}: not on the grid of {t1w.path.name} (shape "
            f"{'x'.join(map(str, img.shape[:3]))} vs {'x'.join(map(str, ref.shape[:3]))}"
            f"{'' if img.shape[:3] != ref.shape[:3] else ', different affine'}); resample "
            "it to the T1w (nearest neighbour, with its registration) first"
        )
    return None


def collect_wmh(wmh_dir: Path, t1w_inputs: list[T1wInput]) -> tuple[dict[str, str], list[str]]:
    """{str(T1w path): WMH mask path} for the T1w images that have a usable mask.

    A mask must be on the T1w's voxel grid (same shape, affine equal within 0.01 mm). Masks
    that are not are refused rather than resampled: resampling by the header affines alone
    assumes the FLAIR and T1w are already aligned, which a FLAIR-space mask is not, and a
    wrong overlap looks just like a right one. Returns the problems as one line each; the
    T1w is then processed without the overlap (``wmh_overlap_pct`` = n/a).
    """
    wmh_dir = Path(wmh_dir)
    if not wmh_dir.is_dir():
        raise BIDSError(f"{wmh_dir}: --wmh-derivatives is not a folder")
    found: dict[str, str] = {}
    problems: list[str] = []
    for t1w in t1w_inputs:
        try:
            mask = find_wmh_mask(wmh_dir, t1w)
        except BIDSError as err:
            problems.append(str(err))
            continue
        if mask is None:
            problems.append(f"{t1w.path.name}: no WMH mask in {wmh_dir}; no PVS-WMH overlap")
            continue
        problem = _grid_problem(mask, t1w, "WMH mask")
        if problem:
            problems.append(f"{problem}; no PVS-WMH overlap for this T1w")
            continue
        found[str(t1w.path)] = str(mask)
    return found, problems


#: lesion masks beside the T1w in the raw dataset: BIDS's ``_label-lesion_roi`` (anat lesion
#: masks) or a ``_desc-lesion_mask``, with the T1w's own entities
LESION_SUFFIXES: tuple[str, ...] = ("_label-lesion_roi", "_desc-lesion_mask")


def lesion_beside(t1w: T1wInput) -> Path | None:
    """The lesion mask next to the T1w (``<prefix>_label-lesion_roi.nii[.gz]`` or
    ``<prefix>_desc-lesion_mask.nii[.gz]``), or None."""
    for suffix in LESION_SUFFIXES:
        for ext in (".nii.gz", ".nii"):
            path = t1w.path.parent / f"{t1w.prefix}{suffix}{ext}"
            if path.is_file():
                return path
    return None


def lesion_from_pattern(pattern: str, t1w: T1wInput, bids_dir: Path) -> list[Path]:
    """The files ``--lesion-mask PATTERN`` names for ``t1w``.

    ``PATTERN`` is a path (relative ones are relative to ``bids_dir``) with the placeholders
    ``{subject}``, ``{session}``, ``{acquisition}``, ``{run}`` (the T1w's entity values, empty
    when absent) and ``{prefix}`` (the T1w's file-name prefix), and may hold glob wildcards,
    e.g. ``derivatives/lesions/sub-{subject}/{prefix}_desc-lesion_mask.nii.gz``.
    """
    values = {k: str(t1w.entities.get(k, "")) for k in ("subject", "session", "acquisition", "run")}
    try:
        text = pattern.format(prefix=t1w.prefix, **values)
    except (KeyError, IndexError, ValueError) as err:
        raise BIDSError(
            f"--lesion-mask {pattern}: unknown placeholder {err} (use {{subject}}, {{session}}, "
            "{acquisition}, {run}, {prefix})"
        ) from err
    path = Path(text)
    if not path.is_absolute():
        path = Path(bids_dir) / path
    if any(c in text for c in "*?["):
        anchor = Path(path.anchor)
        return sorted(anchor.glob(str(path.relative_to(anchor))))
    return [path] if path.is_file() else []


def collect_lesions(
    t1w_inputs: list[T1wInput], pattern: str | None, bids_dir: Path
) -> tuple[dict[str, str], list[str]]:
    """{str(T1w path): lesion mask} for the T1w images that have a usable one, and problems.

    With ``pattern`` (``--lesion-mask``) the pattern decides; without it a BIDS lesion mask
    beside the T1w (:data:`LESION_SUFFIXES`) is used when there is one. A missing or unusable
    mask is a warning: the built-in method then finds cavities on its own.
    """
    found: dict[str, str] = {}
    problems: list[str] = []
    for t1w in t1w_inputs:
        if pattern:
            hits = lesion_from_pattern(pattern, t1w, bids_dir)
            if len(hits) > 1:
                problems.append(
                    f"{t1w.path.name}: --lesion-mask matches {len(hits)} files "
                    f"({', '.join(p.name for p in hits[:3])}); no lesion mask used"
                )
                continue
            if not hits:
                problems.append(
                    f"{t1w.path.name}: no lesion mask matches --lesion-mask {pattern}; "
                    "cavities are detected automatically"
                )
                continue
            mask = hits[0]
        else:
            mask = lesion_beside(t1w)
            if mask is None:
                continue
        problem = _grid_problem(mask, t1w, "lesion mask")
        if problem:
            problems.append(f"{problem}; no lesion mask used, cavities detected automatically")
            continue
        found[str(t1w.path)] = str(mask)
    return found, problems
