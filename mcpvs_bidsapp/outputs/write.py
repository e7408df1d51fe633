"""The one atomic writer: a crash or a full disk never leaves a half file under a final name."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def stage(final: Path | str, writer) -> Path:
    """Write ``final``'s content to a temporary file beside it with ``writer(tmp_path)``.

    Returns the temporary path; the caller renames it into place (``os.replace``) when every
    file of a set is ready, or deletes it. Beside the final name so that the rename is atomic
    on POSIX file systems (also on clusters' shared file systems).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name.split('.')[0]}.", suffix="".join(final.suffixes), dir=final.parent
    )
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        _fsync(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


@contextmanager
def atomic_path(final: Path | str):
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    tmp = stage(final, lambda _: None)
    try:
        yield tmp
        _fsync(tmp)
        try:
            os.replace(tmp, final)
        except OSError as err:  # name the file the user knows, not the temporary one
            raise OSError(err.errno, err.strerror, str(final)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: Path | str, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


def write_json(final: Path | str, data: dict) -> Path:
    """Write a JSON file atomically (sorted keys off: BIDS readers like the given order)."""
    return write_text(final, json.dumps(data, indent=2, default=_json_default) + "\n")


def copy_file(src: Path | str, final: Path | str) -> Path:
    """Copy a file atomically."""
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)
    return Path(final)


def write_if_absent_json(final: Path | str, data: dict) -> Path:
    """Write a shared file (dataset_description, label tables) only when it is missing.

    Many array tasks may race here: each writes its own temporary file and the rename is
    atomic, so the file is always complete; identical content makes the race harmless.
    """
    final = Path(final)
    if not final.exists():
        write_json(final, data)
    return final


def _fsync(path: Path | str) -> None:
    """Flush a staged file to disk before it is renamed into place.

    Without it a node that crashes just after the rename can leave an empty file under the
    final name on ext4/XFS (the rename reaches the journal before the data); on a cluster's
    shared derivatives folder that would be a silently lost output.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def tsv_text(frame) -> str:
    """A table as mcpvs writes every TSV: tab-separated, ``n/a`` for missing, 6 digits."""
    from mcpvs_bidsapp.outputs.spec import NA

    return frame.to_csv(sep="\t", index=False, na_rep=NA, float_format="%.6g")


def write_tsv(final: Path | str, frame) -> Path:
    """Write a table atomically (see :func:`tsv_text`)."""
    return write_text(final, tsv_text(frame))


def write_region_table(out_root: Path | str) -> Path:
    """The top-level region table (``spec.REGION_TABLE_FILE``: index, name), shared by every
    regions image."""
    import pandas as pd

    from mcpvs_bidsapp.outputs.spec import REGION_TABLE, REGION_TABLE_FILE

    final = Path(out_root) / REGION_TABLE_FILE
    text = tsv_text(pd.DataFrame(REGION_TABLE, columns=["index", "name"]))
    if not final.exists() or final.read_text() != text:
        write_text(final, text)
    return final
