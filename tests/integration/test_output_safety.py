"""The output folder is mcpvs's alone (issue #17, items 1, 6, 7, 8): the writer maps outputs
back to the input grid, never replaces a file it did not write, never follows a symlink out
of the output folder, and one run at a time holds a participant."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.bids import dataset_description
from mcpvs_bidsapp.errors import OutputFolderError
from mcpvs_bidsapp.execution.locks import ParticipantLocks
from mcpvs_bidsapp.interfaces.derivatives import WriteDerivatives
from mcpvs_bidsapp.orientation import to_canonical
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.read import check_output_dir
from mcpvs_bidsapp.outputs.write import check_tree, resolve_target, write_text
from mcpvs_bidsapp.synthetic.datasets import make_small_bids, storage_orders

REPO = Path(__file__).resolve().parents[2]


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NIPYPE_NO_ET": "1"},
        timeout=timeout,
    )


# ------------------------------------------------------------------ the writer


def _fake_outputs(source: Path, work: Path) -> dict:
    """Every input of WriteDerivatives, made on the RAS+ copy of ``source`` (as the steps
    make them), with planted content: the voxel value says where the voxel was."""
    work.mkdir(parents=True, exist_ok=True)
    canonical = to_canonical(nb.load(source))
    data = np.asanyarray(canonical.dataobj, dtype=np.float32)
    brain = data > np.percentile(data, 50)
    dseg = np.where(brain, 3, 0).astype(np.uint8)
    dseg[brain & (data > np.percentile(data, 80))] = 2
    dseg[:8][brain[:8]] = 1  # the first RAS+ slab (the subject's right) is "BG"
    pvs = brain & (data > np.percentile(data, 97))
    files = {}
    for key, array, dtype in (
        ("brain_mask", brain, np.uint8),
        ("preproc_t1w", data / data.max(), np.float32),
        ("regions_dseg", dseg, np.uint8),
        ("pvs_mask", pvs, np.uint8),
        ("pvs_probseg", pvs * 0.8, np.float32),
    ):
        files[key] = str(work / f"{key}.nii.gz")
        nb.Nifti1Image(array.astype(dtype), canonical.affine).to_filename(files[key])
    for key in ("measures", "clusters"):
        files[key] = str(work / f"{key}.tsv")
        Path(files[key]).write_text("region\tpvs_volume_mm3\nBG\t1\n")
    return files


def _write(out: Path, bids: Path, source: Path, work: Path):
    return WriteDerivatives(
        base_directory=str(out),
        bids_dir=str(bids),
        source_file=str(source),
        segment_parameters={"Method": "vesselness"},
        regions_method="fast",
        icv_source="test",
        **_fake_outputs(source, work),
    ).run(cwd=str(work))


@pytest.fixture
def lia_dataset(shared_data, tmp_path) -> tuple[Path, Path]:
    """A one-participant BIDS set whose T1w (the Philips crop) is stored LIA."""
    bids = tmp_path / "bids"
    make_small_bids(bids, shared_data, n_participants=0)
    img = nb.load(shared_data / "t1w" / "philips_bgcrop_96x96x48_t1w.nii.gz")
    source = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    storage_orders(img)["LIA"].to_filename(source)
    return bids, source


def test_writer_puts_every_image_back_on_the_input_grid(lia_dataset, tmp_path):
    bids, source = lia_dataset
    out = tmp_path / "out"
    _write(out, bids, source, tmp_path / "work")
    src = nb.load(source)
    expected = np.asanyarray(src.dataobj, dtype=np.float32)
    expected = expected > np.percentile(expected, 97)
    for derivative in spec.IMAGES:
        img = nb.load(out / "sub-01" / "anat" / derivative.name("sub-01"))
        assert img.shape == src.shape and np.allclose(img.affine, src.affine, atol=1e-6)
        assert "".join(nb.aff2axcodes(img.affine)) == "LIA"
    mask = np.asanyarray(nb.load(out / "sub-01/anat/sub-01_space-T1w_desc-pvs_mask.nii.gz").dataobj)
    assert np.array_equal(mask > 0, expected)  # voxel for voxel where the input had them
    dseg = nb.load(out / "sub-01" / "anat" / "sub-01_desc-regions_dseg.nii.gz")
    right = nb.affines.apply_affine(dseg.affine, np.argwhere(np.asanyarray(dseg.dataobj) == 1))
    assert (right[:, 0] < nb.affines.apply_affine(dseg.affine, [0, 0, 0])[0] + 9).all()


def test_the_commit_marker_is_renamed_last(lia_dataset, tmp_path, monkeypatch):
    """The marker (the PVS mask: "the whole set is there") was renamed 7th of 13, so a kill
    between two renames could leave it without the measures (issue #17, item 14)."""
    bids, source = lia_dataset
    anat = tmp_path / "out" / "sub-01" / "anat"
    renamed, real = [], os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent == anat:
            renamed.append(Path(dst).name)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    _write(tmp_path / "out", bids, source, tmp_path / "work")
    assert len(renamed) == 13 and renamed[-1] == spec.COMMIT_MARKER.name("sub-01"), renamed


def test_writer_never_replaces_a_file_it_did_not_write(lia_dataset, tmp_path):
    """Another pipeline's ``desc-preproc_T1w`` (fMRIPrep names its files the same way) stays
    as it is, and nothing of the set is committed; mcpvs's own files are replaced."""
    bids, source = lia_dataset
    out = tmp_path / "out"
    _write(out, bids, source, tmp_path / "work1")  # an earlier mcpvs run: replaced freely
    _write(out, bids, source, tmp_path / "work2")
    anat = out / "sub-01" / "anat"
    foreign = anat / "sub-01_desc-preproc_T1w.json"
    foreign.write_text(json.dumps({"SkullStripped": False}))  # fMRIPrep's sidecar, say
    before = _digest(out)
    with pytest.raises(Exception, match="was not written by mcpvs; refusing to replace it"):
        _write(out, bids, source, tmp_path / "work3")
    assert _digest(out) == before


def test_foreign_output_dir_is_refused(shared_data, tmp_path):
    """An fMRIPrep output folder, a raw dataset, or sub-* folders without a description are
    not mcpvs's: exit 2, one line, nothing changed (on main the fMRIPrep files were
    overwritten without a word)."""
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1)
    out = tmp_path / "fmriprep"
    anat = out / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (out / "dataset_description.json").write_text(
        json.dumps({"Name": "fMRIPrep outputs", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]})
    )  # fmt: skip
    (anat / "sub-01_desc-preproc_T1w.nii.gz").write_bytes(b"fmriprep's image")
    (anat / "sub-01_desc-preproc_T1w.json").write_text("{}")
    before = _digest(out)
    proc = _cli(bids, out, "participant", "-w", tmp_path / "work")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("mcpvs: error: ") and "Traceback" not in proc.stderr
    assert "holds derivatives of fMRIPrep" in lines[-1] and str(out / "mcpvs") in lines[-1]
    assert _digest(out) == before
    with pytest.raises(OutputFolderError, match="a raw BIDS dataset"):
        check_output_dir(bids)
    bare = tmp_path / "bare"
    (bare / "sub-07" / "anat").mkdir(parents=True)
    (bare / "sub-07" / "anat" / "sub-07_desc-preproc_T1w.nii.gz").write_bytes(b"someone's")
    with pytest.raises(OutputFolderError, match="holds sub-07 but no dataset_description"):
        check_output_dir(bare)
    check_output_dir(tmp_path / "new")  # a new or empty folder is fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")


# ------------------------------------------------------------------ symlinks


def test_write_targets_are_resolved(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "bids" / "sub-01"
    elsewhere.mkdir(parents=True)
    out.mkdir()
    (out / "sub-01").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputFolderError, match="outside output_dir"):
        write_text(out / "sub-01" / "log" / "x.json", "{}", root=out)
    with pytest.raises(OutputFolderError, match="outside output_dir"):
        check_tree(out / "sub-01", out)
    assert not list(elsewhere.rglob("*"))
    (out / "sub-02").mkdir()
    (out / "sub-02" / "figures").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputFolderError, match="figures"):
        check_tree(out / "sub-02", out)
    linked_root = tmp_path / "scratch"  # a link above output_dir is fine
    linked_root.symlink_to(out, target_is_directory=True)
    assert resolve_target(linked_root / "sub-03" / "x", linked_root)
    write_text(out / "sub-03" / "ok.json", "{}", root=linked_root)


def test_symlinked_participant_folder_is_refused_and_others_finish(shared_data, tmp_path):
    """``out/sub-01 -> bids/sub-01`` sent logs and figures into the input on main. Now that
    participant is refused before anything is written; the others still run (sub-02's file
    is empty: it fails, with its status and report written)."""
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=2)
    (bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"")
    before = _digest(bids)
    out = tmp_path / "out"
    out.mkdir()  # an mcpvs output folder (an earlier run's description)
    (out / spec.DATASET_DESCRIPTION).write_text(json.dumps(dataset_description()))
    (out / "sub-01").symlink_to(bids / "sub-01", target_is_directory=True)
    proc = _cli(bids, out, "participant", "-w", tmp_path / "work", "--regions", "fast")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mcpvs: error: ")]
    assert any("outside output_dir" in ln and "sub-01" in ln for ln in errors), errors
    assert any("sub-02_T1w.nii.gz: file is empty" in ln for ln in errors), errors
    assert _digest(bids) == before  # nothing written into the input
    assert list((out / "sub-02" / "log").glob(f"*/{spec.STATUS_FILE}"))
    assert (out / "sub-02.html").is_file() and not (out / "sub-01.html").exists()


# ------------------------------------------------------------------ one run per participant


def _hold(path_out, path_work, ready, release):
    """A run of mcpvs that holds sub-01 (it wrote its dataset description first)."""
    Path(path_out).mkdir(parents=True, exist_ok=True)
    (Path(path_out) / spec.DATASET_DESCRIPTION).write_text(json.dumps(dataset_description()))
    locks = ParticipantLocks(Path(path_out), Path(path_work), "20261201-000000_holder")
    locks.acquire("01")
    ready.set()
    release.wait(60)
    locks.close()


def test_a_participant_held_by_another_run_is_skipped(shared_data, tmp_path):
    """A resubmitted job on the same output folder: the second run names the holder, writes
    nothing for that participant (its newer 'failed' status used to win over the first run's
    complete outputs) and exits 1; the lock dies with its holder."""
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1)
    out, work = tmp_path / "out", tmp_path / "work"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out), str(work), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        before = _digest(out / "sub-01")
        proc = _cli(bids, out, "participant", "-w", tmp_path / "work2")  # same output folder
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        line = next(ln for ln in proc.stderr.splitlines() if "another mcpvs run" in ln)
        assert "sub-01" in line and f"pid {holder.pid}" in line and "20261201-000000_holder" in line
        assert _digest(out / "sub-01") == before  # no status, no log, nothing
        assert not (out / "sub-01.html").exists()
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies without releasing
        holder.join(30)
        locks = ParticipantLocks(out, work, "20261201-000001_next")
        locks.acquire("01")  # the kernel dropped the lock with its process
        locks.close()
    finally:
        if holder.is_alive():  # (a killed waiter would leave set() waiting for it)
            release.set()
            holder.join(30)


def _child_exits():
    time.sleep(0.1)


def test_lock_survives_forked_workers(tmp_path):
    """Nipype's MultiProc forks workers while the lock is held: a worker that ends must not
    release the parent's lock."""
    locks = ParticipantLocks(tmp_path / "out", tmp_path / "work", "20261201-000000_parent")
    locks.acquire("01")
    try:
        child = multiprocessing.get_context("fork").Process(target=_child_exits)
        child.start()
        child.join(30)
        other = ParticipantLocks(tmp_path / "out", tmp_path / "work", "20261201-000000_other")
        proc = subprocess.run(
            [sys.executable, "-c", (
                "import sys; from pathlib import Path;"
                "from mcpvs_bidsapp.execution.locks import ParticipantLocks;"
                f"l = ParticipantLocks(Path({str(tmp_path / 'out')!r}), "
                f"Path({str(tmp_path / 'work')!r}), 'x');"
                "l.acquire('01')"
            )],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        assert proc.returncode != 0 and "another mcpvs run" in proc.stderr
        del other
    finally:
        locks.close()


def test_a_neighbouring_task_that_just_started_is_not_foreign(tmp_path):
    """A SLURM task may see another task's fresh ``sub-*/log`` (its lock) before any file of
    the dataset is there: that folder is still one of ours."""
    out = tmp_path / "out"
    (out / "sub-01" / "log").mkdir(parents=True)
    (out / "sub-01" / "log" / spec.LOCK_FILE).write_text("")
    check_output_dir(out)
    (out / "sub-01" / "anat").mkdir()
    with pytest.raises(OutputFolderError, match="holds sub-01 but no dataset_description"):
        check_output_dir(out)


@pytest.mark.slow
def test_a_large_cohort_can_hold_its_locks(tmp_path):
    """A cohort in one invocation holds two locks per participant, past the usual soft limit
    of open files (1,024; here lowered to 256 for 300 participants), which is raised within
    the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with ParticipantLocks(tmp_path / "out", tmp_path / "work", "run") as locks:
            locks.reserve(300)
            for i in range(300):
                locks.acquire(f"{i:04d}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
