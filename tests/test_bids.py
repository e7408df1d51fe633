"""Discovery and naming: the bids-examples layouts (empty images) and derivative names."""

from __future__ import annotations

import shutil

import pytest

from mcpvs_bidsapp.bids import check_paths, collect_t1w
from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.outputs.read import t1w_entities, t1w_prefix


def test_derivative_prefix_keeps_all_entities_in_order():
    name = "sub-01_ses-1_acq-mprage_rec-norm_run-2_T1w.nii.gz"
    assert t1w_prefix(name) == "sub-01_ses-1_acq-mprage_rec-norm_run-2"
    assert t1w_entities(name) == {
        "subject": "01",
        "session": "1",
        "acquisition": "mprage",
        "reconstruction": "norm",
        "run": 2,
    }


def test_derivative_prefix_refuses_non_bids_names():
    with pytest.raises(BIDSError, match="brain.nii.gz: not a BIDS T1w file name"):
        t1w_prefix("brain.nii.gz")


@pytest.mark.parametrize(
    "dataset, n_subjects, sessions",
    [
        ("ds001", 16, False),
        ("7t_trt", 22, True),
        ("ds004332", 2, False),
        ("hcp_example_bids", 1, False),
        ("synthetic", 5, True),
    ],
)
def test_bids_examples_discovery(shared_data, dataset, n_subjects, sessions):
    root = shared_data / "bids-examples" / dataset
    found = collect_t1w(root, validate=False)
    assert len(found) == n_subjects
    items = [t for ts in found.values() for t in ts]
    assert items, "every example layout here has T1w images"
    for item in items:
        assert item.path.name.endswith(("_T1w.nii.gz", "_T1w.nii"))
        assert item.path.is_relative_to(root)
        assert ("session" in item.entities) == sessions
        assert item.anat_dir.parts[0] == f"sub-{item.subject}"


def test_session_filter_and_filter_file(shared_data):
    root = shared_data / "bids-examples" / "7t_trt"
    # sub-01 has a T1w in ses-1 only (ses-2 holds functional data)
    found = collect_t1w(root, participant_label=["01"], session_label=["ses-1"], validate=False)
    assert [t.entities.get("session") for t in found["01"]] == ["1"]
    found = collect_t1w(root, participant_label=["01"], session_label=["2"], validate=False)
    assert found["01"] == []
    found = collect_t1w(
        root, participant_label=["01"], bids_filters={"t1w": {"session": "2"}}, validate=False
    )
    assert found["01"] == []


def test_unknown_participant_is_one_clear_error(shared_data):
    root = shared_data / "bids-examples" / "ds001"
    with pytest.raises(BIDSError, match=r"participant\(s\) not found: sub-99"):
        collect_t1w(root, participant_label=["99"], validate=False)


def test_not_bids_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(BIDSError, match="not a BIDS dataset"):
        collect_t1w(tmp_path / "data")


def test_discovery_never_writes_into_bids_dir(shared_data, tmp_path):
    root = tmp_path / "ds001"
    shutil.copytree(shared_data / "bids-examples" / "ds001", root)
    before = sorted(str(p) for p in root.rglob("*"))
    collect_t1w(root, validate=True)
    assert sorted(str(p) for p in root.rglob("*")) == before


@pytest.mark.parametrize("inside", ["same", "child"])
def test_output_inside_bids_dir_refused(tmp_path, inside):
    bids = tmp_path / "bids"
    bids.mkdir()
    out = bids if inside == "same" else bids / "derivatives" / "mcpvs"
    with pytest.raises(BIDSError, match="output_dir must not be bids_dir or inside it"):
        check_paths(bids, out, None)
    with pytest.raises(BIDSError, match="work dir must not be inside bids_dir"):
        check_paths(bids, tmp_path / "out", bids / "work")
