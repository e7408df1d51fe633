"""Atomic writes: a failure while writing leaves neither a half file nor a temp file."""

from __future__ import annotations

import pytest

from mcpvs_bidsapp.outputs.write import atomic_path, stage, write_json


def test_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "sub-01" / "x_desc-pvs_mask.nii.gz"
    with pytest.raises(OSError, match="No space left"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_failed_stage_cleans_up(tmp_path):
    def writer(path):
        open(path, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        stage(tmp_path / "a.tsv", writer)
    assert list(tmp_path.iterdir()) == []


def test_write_json_replaces_atomically(tmp_path):
    final = tmp_path / "dataset_description.json"
    write_json(final, {"Name": "a"})
    write_json(final, {"Name": "b"})
    assert final.read_text().strip().endswith("}")
    assert '"b"' in final.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["dataset_description.json"]
