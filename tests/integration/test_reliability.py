"""Reliability: a matrix of bad inputs, kill and resume, read-only inputs, determinism, memory."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.bids import collect_t1w
from mcpvs_bidsapp.synthetic.datasets import make_small_bids, resample_head

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)},
        start_new_session=True,
        **kwargs,
    )


def run_cli(*args, timeout=1800) -> subprocess.CompletedProcess:
    proc = _cli(*args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _save(path: Path, data, affine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine).to_filename(path)


def _tree_digest(root: Path, skip=("log",), suffixes=(".nii.gz", ".tsv", ".json")) -> dict:
    """sha256 of every derivative file (logs and reports differ by run id by design)."""
    digests = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not set(rel.parts) & set(skip) and path.name.endswith(suffixes):
            digests[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


#: participant label -> (what is wrong, how to make it, the expected error text)
def _bad_inputs(tmp: Path, real_head: Path) -> dict:
    rng = np.random.default_rng(1)
    good = rng.normal(100, 20, (48, 48, 48)).astype(np.float32)

    def corrupt_gzip(p: Path) -> None:
        _save(p, good)
        raw = p.read_bytes()
        p.write_bytes(raw[:200] + bytes(len(raw) - 200))  # gzip stream destroyed after header

    def wrong_affine(p: Path) -> None:
        img = nb.Nifti1Image(good, np.eye(4))
        img.header["pixdim"][1:4] = 1
        img.set_sform(np.zeros((4, 4)), code=1)
        img.set_qform(None, code=0)
        img.to_filename(p)

    return {
        "zerobyte": (lambda p: p.write_bytes(b""), r"file is empty \(0 bytes\)"),
        "truncated": (
            lambda p: p.write_bytes(real_head.read_bytes()[:5000]),
            "truncated or corrupt image data",
        ),
        "corrupt": (corrupt_gzip, "not a readable NIfTI|truncated or corrupt"),
        "notnifti": (
            lambda p: p.write_bytes(gzip.compress(b"%PDF-1.4 not an image" * 50)),
            "not a readable NIfTI",
        ),
        "twod": (lambda p: _save(p, good[:, :, 0]), "image is 2D"),
        "fourd": (lambda p: _save(p, np.stack([good] * 3, -1)), "image is 4D"),
        "allzero": (lambda p: _save(p, np.zeros_like(good)), "image is all zeros"),
        "constant": (lambda p: _save(p, np.full_like(good, 3.0)), "image is constant"),
        "nan": (lambda p: _save(p, np.where(good > 130, np.nan, good)), "NaN/Inf voxels"),
        "inf": (lambda p: _save(p, np.where(good > 130, np.inf, good)), "NaN/Inf voxels"),
        "tiny": (lambda p: _save(p, good[:8, :8, :8]), "image is too small"),
        "coarse": (lambda p: _save(p, good, np.diag([5.0, 5.0, 5.0, 1.0])), "too coarse"),
        "badaffine": (wrong_affine, "affine .* singular"),
        "huge": (
            lambda p: _save(
                p,
                np.zeros((1024, 1024, 600), np.uint8) + 1,
            ),
            "needs about .* GB for its largest step",
        ),
    }


@pytest.mark.slow  # a whole CLI run over a dozen bad inputs: 90 s on a loaded 2-core machine
def test_bad_input_matrix(shared_data, tmp_path):
    """Each bad file: one line naming it, exit 1, no derivative, listed in status and report."""
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "bad", "BIDSVersion": "1.9.0"}')
    cases = _bad_inputs(tmp_path, shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz")
    for label, (make, _) in cases.items():
        path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        make(path)
    (bids / "sub-noanat").mkdir()  # a participant without any T1w
    (bids / "sub-noanat" / "func").mkdir()
    (bids / "sub-noanat" / "func" / "sub-noanat_task-rest_bold.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    proc = run_cli(bids, out, "participant", "--mem-gb", "16", "-w", tmp_path / "work")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mcpvs: error: ")]
    assert len(lines) == len(cases) + 1
    import re

    for label, (_, expected) in cases.items():
        line = next(ln for ln in lines if f"sub-{label}_T1w.nii.gz: " in ln)
        assert re.search(expected, line), line
        status = json.loads(
            next((out / f"sub-{label}" / "log").glob("*/mcpvs_status.json")).read_text()
        )
        assert status["runs"][0]["status"] == "failed"
        assert re.search(expected, status["runs"][0]["error"])
        assert not (out / f"sub-{label}" / "anat").exists()
        report = (out / f"sub-{label}.html").read_text()
        assert f"sub-{label}_T1w.nii.gz" in report
    assert any("sub-noanat: no T1w image found" in ln for ln in lines)


def test_two_runs_in_one_session_are_both_found(shared_data, tmp_path):
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1, sessions=True)
    anat = bids / "sub-01" / "ses-1" / "anat"
    for run in (1, 2):
        (anat / "sub-01_ses-1_T1w.nii.gz").link_to(anat / f"sub-01_ses-1_run-{run}_T1w.nii.gz")
    (anat / "sub-01_ses-1_T1w.nii.gz").unlink()
    found = collect_t1w(bids)["01"]
    assert [t.prefix for t in found] == ["sub-01_ses-1_run-1", "sub-01_ses-1_run-2"]
    assert len({t.node_name for t in found}) == 2


def test_unwritable_output_dir(shared_data, tmp_path):
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    proc = run_cli(bids, blocker / "out", "participant", "-w", tmp_path / "work", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mcpvs: error: ")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_kill_resume_readonly_and_determinism(shared_data, tmp_path):
    """SIGKILL mid-run, rerun with the same work dir: same bytes as an uninterrupted run.

    The input tree is read-only (write bits removed) and its checksums must not change.
    """
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1, zoom_mm=2.0)
    before = _tree_digest(bids, skip=(), suffixes=("",))
    for path in [*bids.rglob("*"), bids]:
        path.chmod(path.stat().st_mode & ~0o222)
    args = [
        "participant",
        "--regions",
        "fast",
        "--method",
        "vesselness",
        "--n4-mask",  # the authors' N4, run end to end here (auto picks brain for vesselness)
        "whole-image",
        "--nprocs",
        "1",
        "--omp-nthreads",
        "1",
    ]

    clean = run_cli(bids, tmp_path / "out_a", *args, "-w", tmp_path / "work_a")
    assert clean.returncode == 0, clean.stderr[-3000:]

    work_b = tmp_path / "work_b"
    proc = _cli(bids, tmp_path / "out_b", *args, "-w", work_b)
    deadline = time.time() + 900
    marker = None
    while time.time() < deadline and marker is None:  # kill once N4 has finished
        marker = next(work_b.rglob("result_n4.pklz"), None)
        time.sleep(0.5)
    assert marker is not None and proc.poll() is None, "run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "out_b").rglob("*_desc-pvs_mask.nii.gz"))  # nothing committed
    done_before = {p: p.stat().st_mtime for p in work_b.rglob("result_*.pklz")}

    resumed = run_cli(bids, tmp_path / "out_b", *args, "-w", work_b)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reran = [p.parent.name for p, mtime in done_before.items() if p.stat().st_mtime != mtime]
    assert reran == [] or set(reran) <= {"write_derivatives"}, f"recomputed: {reran}"
    assert marker.stat().st_mtime == done_before[marker]

    digests_a = _tree_digest(tmp_path / "out_a")
    assert digests_a and digests_a == _tree_digest(tmp_path / "out_b")
    assert not list((tmp_path / "out_b").rglob(".*.nii.gz"))  # no temporary files left
    for path in [*bids.rglob("*"), bids]:
        path.chmod(path.stat().st_mode | 0o200)
    assert _tree_digest(bids, skip=(), suffixes=("",)) == before


def test_resample_head_keeps_world_position(shared_data, tmp_path):
    """The small test sets must stay real heads in the same place (plumbing tests rely on it)."""
    src = shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz"
    dest = resample_head(src, tmp_path / "small.nii.gz", 2.0)
    big, small = nb.load(src), nb.load(dest)
    centre_big = big.affine @ np.r_[(np.array(big.shape[:3]) - 1) / 2, 1]
    centre_small = small.affine @ np.r_[(np.array(small.shape[:3]) - 1) / 2, 1]
    assert np.allclose(centre_big[:3], centre_small[:3], atol=1.5)
    assert np.allclose(small.header.get_zooms()[:3], 2.0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_every_worker_in_one_line(shared_data, tmp_path, signum):
    """SIGTERM (a SLURM time limit, scancel) left the MultiProc worker running for minutes
    (~1 GB) and SIGINT printed a traceback (issue #17, item 14): now the whole tree ends,
    with one line and exit 128 + signal."""
    import psutil

    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1, zoom_mm=2.0)
    proc = _cli(bids, tmp_path / "out", "participant", "--regions", "fast", "--method",
                "vesselness", "--nprocs", "2", "-w", tmp_path / "work")  # fmt: skip
    main = psutil.Process(proc.pid)
    deadline = time.time() + 300
    workers = []
    while time.time() < deadline and not workers and proc.poll() is None:
        time.sleep(0.5)  # wait for the pool's workers (and their own children)
        workers = [c for c in main.children(recursive=True) if "resource_tracker" not in
                   " ".join(c.cmdline())]  # fmt: skip
    assert workers, "no worker process appeared"
    time.sleep(2)
    descendants = main.children(recursive=True)
    os.kill(proc.pid, signum)  # the main process only, as SLURM's first signal goes
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in err, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("mcpvs: error:")]
    assert len(errors) == 1, errors  # one line, the signal named
    assert errors[0].startswith(f"mcpvs: error: stopped by {signal.Signals(signum).name}")
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert not list((tmp_path / "out").rglob("*_desc-pvs_mask.nii.gz"))


def _half_written(anat: Path) -> list[str]:
    """What a stopped run must never leave in a T1w's derivatives folder: staged temporary
    files (``.<name>.XXXX``), or derivatives under final names without the whole committed
    set (the commit marker and every file of the set beside it)."""
    from mcpvs_bidsapp.outputs import spec

    if not anat.is_dir():
        return []
    names = {p.name for p in anat.iterdir()}
    bad = sorted(n for n in names if n.startswith("."))
    finals = {n for n in names if not n.startswith(".")}
    if finals:
        prefix = "sub-01"
        expected = {d.name(prefix) for d in spec.DERIVATIVES}
        expected |= {spec.sidecar_path(anat / d.name(prefix)).name for d in spec.DERIVATIVES
                     if d.sidecar}  # fmt: skip
        if spec.COMMIT_MARKER.name(prefix) not in finals or not expected <= finals:
            bad += [f"incomplete set: {sorted(finals)}"]
    return bad


@pytest.mark.slow
def test_sigterm_while_the_derivatives_are_written(shared_data, tmp_path):
    """SIGTERM when the writer starts staging a T1w's derivatives (the moment a SLURM time
    limit is most costly): exit 143, one error line, no process left, and nothing
    half-written: no staged temporary file, no derivative without the whole committed set."""
    import psutil

    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=1, zoom_mm=2.0)
    out = tmp_path / "out"
    anat = out / "sub-01" / "anat"
    proc = _cli(bids, out, "participant", "--regions", "fast", "--method", "vesselness",
                "--nprocs", "2", "-w", tmp_path / "work")  # fmt: skip
    main = psutil.Process(proc.pid)
    deadline = time.time() + 900
    descendants = []
    while time.time() < deadline and proc.poll() is None:
        try:
            descendants = main.children(recursive=True) or descendants
        except psutil.Error:
            pass
        if anat.is_dir() and any(anat.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before writing (nothing to interrupt)"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("mcpvs: error:")]
    assert len(errors) == 1 and errors[0].startswith("mcpvs: error: stopped by SIGTERM"), errors
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert not _half_written(anat), _half_written(anat)


def test_held_signals_stop_only_where_it_is_safe():
    """The writer's commit holds SIGTERM: staging stops at the next ``check()`` with its
    cleanup run, a rename loop (no check) finishes, and the signal then reaches the handler
    there was (here the CLI's: :class:`Interrupted`)."""
    from mcpvs_bidsapp.engine.processes import Interrupted, held_signals, stop_on_signals

    steps = []
    with pytest.raises(Interrupted) as stopped, stop_on_signals(), held_signals() as check:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("goes on")  # held: nothing raised here
            check()
            steps.append("never")
        finally:
            steps.append("cleanup")
    assert steps == ["goes on", "cleanup"] and stopped.value.signum == signal.SIGTERM
    steps.clear()
    with pytest.raises(Interrupted), stop_on_signals(), held_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        steps += ["rename 1", "rename 2"]
    assert steps == ["rename 1", "rename 2"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # all handlers restored


@pytest.mark.slow
def test_a_t1w_stored_twice_does_not_stop_a_real_participant(shared_data, tmp_path):
    """``sub-01_T1w.nii`` beside ``sub-01_T1w.nii.gz`` (two good images) aborted the whole
    cohort on main (duplicate Nipype node): now sub-01 fails with one line per file and
    sub-02, a real head, is processed and committed in the same run."""
    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=2, zoom_mm=2.0)
    anat = bids / "sub-01" / "anat"
    nb.load(anat / "sub-01_T1w.nii.gz").to_filename(anat / "sub-01_T1w.nii")
    out = tmp_path / "out"
    proc = run_cli(bids, out, "participant", "--regions", "fast", "--method", "vesselness",
                   "--nprocs", "2", "-w", tmp_path / "work")  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mcpvs: error:")]
    assert len(errors) == 2 and all("are one T1w stored twice" in ln for ln in errors), errors
    assert (out / "sub-02" / "anat" / "sub-02_space-T1w_desc-pvs_mask.nii.gz").is_file()
    assert not (out / "sub-01" / "anat").exists()
    status = json.loads(next((out / "sub-02" / "log").glob("*/mcpvs_status.json")).read_text())
    assert [r["status"] for r in status["runs"]] == ["success"]
