"""Cohorts on SLURM: the ``mcpvs slurm`` array helper and Nipype's SLURM plugin, on a real SLURM.

The real-cluster tests start Debian's slurm-wlm (munged, slurmctld, slurmd; one node, 2 CPUs)
with ``ci/slurm/start.sh`` and submit through the same ``mcpvs slurm ... --submit`` a user
runs. They skip, saying why, where slurm-wlm is not installed or the tests are not root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from mcpvs_bidsapp.cli.slurm import main as slurm_main

REPO = Path(__file__).resolve().parents[1]
SLURM_EXES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def tiny_bids(root: Path, labels=("01", "02", "03"), no_t1w=()) -> Path:
    """A BIDS tree with tiny images: enough for listing participants, not for processing."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.9.0"})
    )
    img = nb.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for label in (*labels, *no_t1w):
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        if label not in no_t1w:
            img.to_filename(anat / f"sub-{label}_T1w.nii.gz")
        else:
            (anat / f"sub-{label}_T2w.json").write_text("{}")
    return root


# ---------------------------------------------------------------- scripts (no cluster needed)


def test_scripts_one_participant_per_task(tmp_path, capsys):
    bids = tiny_bids(tmp_path / "bids", no_t1w=("04",))
    work = tmp_path / "work dir"  # a space: every path must be quoted in the scripts
    rc = slurm_main(
        [
            str(bids),
            str(tmp_path / "out"),
            "-w",
            str(work),
            "--nprocs",
            "4",
            "--mem-gb",
            "12.5",
            "--max-parallel",
            "2",
            "--partition",
            "short",
            "--sbatch-arg=--qos=long",
            "--group-args=--covariates age",
            "--",
            "--regions",
            "fast",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "3 participant(s)" in captured.out
    assert "sub-04" in captured.err  # listed as not submitted: no T1w
    scripts = work / "slurm"
    assert (scripts / "participants.txt").read_text().split() == ["01", "02", "03"]
    array = (scripts / "mcpvs_participant.sbatch").read_text()
    for line in (
        "#SBATCH --array=1-3%2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=12800M",
        "#SBATCH --partition=short",
        "#SBATCH --qos=long",
    ):
        assert line in array.splitlines()
    assert "--gres" not in array
    assert '--participant-label "$LABEL"' in array and '--work-dir "$WORK"' in array
    assert "--nprocs 4 --mem-gb 12.5" in array and array.rstrip().endswith("--regions fast")
    assert f"WORK='{work}'/\"sub-$LABEL\"" in array
    group = (scripts / "mcpvs_group.sbatch").read_text()
    assert " group --work-dir " in group and group.rstrip().endswith("--covariates age")
    submit = (scripts / "submit.sh").read_text()
    assert "--dependency=afterany:$ARRAY mcpvs_group.sbatch" in submit
    for script in ("mcpvs_participant.sbatch", "mcpvs_group.sbatch", "submit.sh"):
        assert subprocess.run(["bash", "-n", str(scripts / script)]).returncode == 0

    # what a task does: line i of participants.txt, its own work dir, the ordinary command
    task = array.replace(f"{sys.executable} -m mcpvs_bidsapp.cli.run", "echo")
    out = subprocess.run(
        ["bash", "-c", task],
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "2"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"--participant-label 02 --work-dir {work}/sub-02 " in out
    beyond = subprocess.run(
        ["bash", "-c", task], env={**os.environ, "SLURM_ARRAY_TASK_ID": "4"}, capture_output=True
    )
    assert beyond.returncode == 2 and b"no line 4 in" in beyond.stderr


def test_scripts_gpu_and_container(tmp_path):
    bids = tiny_bids(tmp_path / "bids")
    image = tmp_path / "mcpvs.sif"
    image.write_bytes(b"not really an image")
    store = tmp_path / "models"
    rc = slurm_main(
        [
            str(bids),
            str(tmp_path / "out"),
            "-w",
            str(tmp_path / "work"),
            "--gpus",
            "1",
            "--container",
            str(image),
            "--container-runtime",
            "singularity",
            "--bind",
            "/scratch",
            "--",
            "--model-store",
            str(store),
        ]
    )
    assert rc == 0
    array = (tmp_path / "work" / "slurm" / "mcpvs_participant.sbatch").read_text()
    group = (tmp_path / "work" / "slurm" / "mcpvs_group.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in array.splitlines()
    assert f"singularity exec --cleanenv --nv -B {tmp_path / 'bids'} " in array
    for bound in (tmp_path / "out", tmp_path / "work", store, "/scratch"):
        assert f"-B {bound} " in array
    assert f"{image} mcpvs {tmp_path / 'bids'} " in array and "--device cuda" in array
    # the group level needs no GPU
    assert "--nv" not in group and "--gres" not in group and "--device" not in group


def test_errors_are_one_line(tmp_path, capsys):
    bids = tiny_bids(tmp_path / "bids")
    assert slurm_main([str(bids), str(tmp_path / "o"), "--participant-label", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sub-99" in err[0] and err[0].startswith("mcpvs slurm: error:")
    assert slurm_main([str(bids), str(bids / "derivatives")]) == 2
    assert "inside" in capsys.readouterr().err
    missing = tmp_path / "none.sif"
    assert slurm_main([str(bids), str(tmp_path / "o"), "--container", str(missing)]) == 2
    assert "container image not found" in capsys.readouterr().err


def test_submit_without_sbatch_says_so(tmp_path):
    bids = tiny_bids(tmp_path / "bids")
    result = subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", "slurm", str(bids), str(tmp_path / "o")]
        + ["--submit"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mcpvs slurm: error: sbatch not found on PATH "
        "(run on a SLURM login node, or leave out --submit)"
    )


def test_prepare_nipype_slurm_maps_n_procs_and_mem_gb():
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from mcpvs_bidsapp.engine.slurm import prepare_nipype_slurm

    inner = pe.Workflow(name="inner")
    heavy = pe.Node(IdentityInterface(fields=["x"]), name="heavy", n_procs=2, mem_gb=7.5)
    heavy.plugin_args = {"sbatch_args": "--time=60"}
    inner.add_nodes([heavy])
    outer = pe.Workflow(name="outer")
    light = pe.Node(IdentityInterface(fields=["x"]), name="light")
    outer.add_nodes([light, inner])
    assert prepare_nipype_slurm(outer) == 2
    assert heavy.plugin_args["sbatch_args"] == " --cpus-per-task=2 --mem=7680M --time=60"
    assert light.plugin_args["sbatch_args"] == " --cpus-per-task=1 --mem=205M"


# ---------------------------------------------------------------- a real SLURM


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Start a one-node SLURM for this module; yield the environment to talk to it."""
    missing = [exe for exe in SLURM_EXES if shutil.which(exe) is None]
    if missing:
        pytest.skip(
            f"SLURM not installed ({', '.join(missing)} not found); "
            "apt-get install -y slurm-wlm munge"
        )
    if os.geteuid() != 0:
        pytest.skip("starting slurmd/slurmctld for the test cluster needs root")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "MCPVS_SLURM_PORT": str(_free_port_pair())}
    start = subprocess.run(
        [str(REPO / "ci" / "slurm" / "start.sh"), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        if start.returncode != 0:  # installed but not starting: a real failure, not a skip
            pytest.fail(f"test SLURM did not start:\n{start.stdout}\n{start.stderr}")
        yield {
            **os.environ,
            "SLURM_CONF": str(state / "slurm.conf"),
            "PYTHONPATH": str(REPO),
            "NIPYPE_NO_ET": "1",
        }
    finally:
        subprocess.run([str(REPO / "ci" / "slurm" / "stop.sh"), str(state)], timeout=120)


def job_states(job_id: str, env: dict) -> list[str]:
    """State of a job, or of every task of an array job (kept by slurmctld: MinJobAge)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.findall(r"\bJobState=(\S+)", out)


def wait_for(job_ids: list[str], env: dict, timeout: float) -> dict[str, list[str]]:
    """Poll until every job (and array task) has ended; return their states."""
    deadline = time.time() + timeout
    while True:
        states = {job: job_states(job, env) for job in job_ids}
        if all(s and set(s) <= TERMINAL for s in states.values()):
            return states
        if time.time() > deadline:
            subprocess.run(["scancel", *job_ids], env=env)
            pytest.fail(f"SLURM jobs did not end in {timeout:.0f} s: {states}")
        time.sleep(2)


def submit_with_mcpvs_slurm(args: list[str], env: dict) -> tuple[str, str | None, str]:
    """``mcpvs slurm ... --submit`` as a user runs it; returns (array id, group id, stdout)."""
    result = subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", "slurm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    array = re.search(r"participant array job: (\d+)", result.stdout).group(1)
    group = re.search(r"group job: (\d+)", result.stdout)
    return array, group.group(1) if group else None, result.stdout


@pytest.mark.slow
def test_array_tasks_on_real_slurm(slurm_env, tmp_path):
    """Each task runs mcpvs for its own participant; the shared files are written once, whole."""
    bids = tiny_bids(tmp_path / "bids")
    out, work = tmp_path / "out", tmp_path / "work"
    array, group, _ = submit_with_mcpvs_slurm(
        [str(bids), str(out), "-w", str(work), "--nprocs", "1", "--mem-gb", "1"]
        + ["--max-parallel", "3", "--no-group", "--submit", "--", "--reports-only"],
        slurm_env,
    )
    assert group is None
    states = wait_for([array], slurm_env, timeout=180)
    logs = sorted((work / "slurm" / "logs").glob(f"participant-{array}_*.out"))
    assert states[array] == ["COMPLETED"] * 3, [p.read_text()[-2000:] for p in logs]
    seen = {re.search(r"mcpvs task (\d): sub-(\d+)", p.read_text()).groups() for p in logs}
    assert seen == {("1", "01"), ("2", "02"), ("3", "03")}
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert (out / "desc-regions_dseg.tsv").read_text().startswith("index\tname")


def _double(x):
    import os

    return 2 * x, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_CPUS_PER_TASK")


@pytest.mark.slow
def test_nipype_slurm_plugin_on_real_slurm(slurm_env, tmp_path, monkeypatch):
    """The one-controller route: every node is its own SLURM job with its own resources."""
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    from mcpvs_bidsapp.engine.slurm import prepare_nipype_slurm

    for key in ("SLURM_CONF", "PYTHONPATH"):
        monkeypatch.setenv(key, slurm_env[key])
    monkeypatch.delenv("LOGNAME", raising=False)  # unset in many batch/container setups
    wf = pe.Workflow(name="plugin_check", base_dir=str(tmp_path / "work"))
    wf.config["execution"]["remove_unnecessary_outputs"] = False  # as mcpvs runs (cli/run.py)
    fields = ["out", "job", "cpus"]
    first = pe.Node(
        Function(["x"], fields, _double), name="first", n_procs=2, mem_gb=0.5
    )  # fmt: skip
    first.inputs.x = 3
    second = pe.Node(Function(["x"], fields, _double), name="second", mem_gb=0.25)
    wf.connect(first, "out", second, "x")
    prepare_nipype_slurm(wf)
    result = wf.run(
        plugin="SLURM",
        plugin_args={"sbatch_args": f"--time=5 -D {tmp_path}", "max_jobs": 2},
    )
    outputs = {node.name: node.result.outputs for node in result.nodes()}
    assert outputs["second"].out == 12
    assert outputs["first"].job and outputs["second"].job
    assert outputs["first"].job != outputs["second"].job  # two separate SLURM jobs
    assert (outputs["first"].cpus, outputs["second"].cpus) == ("2", "1")


def _fail_if_negative(x):
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


@pytest.mark.slow
def test_nipype_slurmgraph_plugin_waits_and_cancels_orphans(slurm_env, tmp_path, monkeypatch):
    """SLURMGraph submits the whole graph at once; mcpvs waits for it, and cancels the jobs
    that can never start because a step they depend on failed."""
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    from mcpvs_bidsapp.engine.slurm import prepare_nipype_slurm, wait_for_graph_jobs

    for key in ("SLURM_CONF", "PYTHONPATH"):
        monkeypatch.setenv(key, slurm_env[key])
    wf = pe.Workflow(name="graph_check", base_dir=str(tmp_path / "work"))
    wf.config["execution"]["remove_unnecessary_outputs"] = False
    wf.config["execution"]["crashdump_dir"] = str(tmp_path / "crash")
    wf.config["execution"]["crashfile_format"] = "txt"  # as mcpvs sets it; read by the status
    fields = ["out", "job", "cpus"]
    first = pe.Node(Function(["x"], fields, _double), name="first", n_procs=2, mem_gb=0.5)
    first.inputs.x = 3
    good = pe.Node(Function(["x"], fields, _double), name="good", mem_gb=0.25)
    bad = pe.Node(Function(["x"], ["out"], _fail_if_negative), name="bad", mem_gb=0.25)
    bad.inputs.x = -1
    orphan = pe.Node(Function(["x"], fields, _double), name="orphan", mem_gb=0.25)
    wf.connect([(first, good, [("out", "x")]), (bad, orphan, [("out", "x")])])
    prepare_nipype_slurm(wf)
    wf.run(plugin="SLURMGraph", plugin_args={"sbatch_args": "--time=5"})
    cancelled = wait_for_graph_jobs(tmp_path / "work" / "graph_check" / "batch", poll_s=1)
    assert len(cancelled) == 1  # the orphan
    from nipype.utils.filemanip import loadpkl

    result = loadpkl(tmp_path / "work" / "graph_check" / "good" / "result_good.pklz")
    assert result.outputs.out == 12 and result.outputs.cpus == "1"
    first_result = loadpkl(tmp_path / "work" / "graph_check" / "first" / "result_first.pklz")
    assert first_result.outputs.cpus == "2"
    assert not (tmp_path / "work" / "graph_check" / "orphan" / "result_orphan.pklz").exists()
    crashes = list((tmp_path / "crash").glob("crash-*bad*"))
    assert crashes and "negative input -1" in crashes[0].read_text(errors="replace")


def _read_outputs(root: Path) -> dict[str, object]:
    """Every derivative except per-run logs and reports: arrays for images, frames for TSVs."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or "/log/" in rel or rel.endswith((".html", ".svg", ".png")):
            continue
        if rel.endswith(".nii.gz"):
            found[rel] = np.asanyarray(nb.load(path).dataobj)
        elif rel.endswith(".tsv"):
            found[rel] = pd.read_csv(path, sep="\t")
    return found


@pytest.mark.slow
def test_array_then_group_equals_local_run(slurm_env, shared_data, tmp_path):
    """3 real heads through SLURM (array + dependent group) give the outputs of a local run."""
    from mcpvs_bidsapp.synthetic.datasets import make_small_bids

    bids = make_small_bids(tmp_path / "bids", shared_data, n_participants=3, zoom_mm=2.0)
    # N4 inside the brain mask (what auto picks for vesselness), named so the comparison
    # does not depend on the default; several times cheaper than the authors' whole-image N4
    options = ["--regions", "fast", "--n4-mask", "brain", "--method", "vesselness"]
    local_out = tmp_path / "local"
    # one thread per step in both runs: ITK's N4 rounds differently with another thread count
    # (~1e-6 relative), which can flip a voxel at the PVS threshold
    local_opts = [*options, "--nprocs", "2", "--omp-nthreads", "1"]
    for level, extra in (("participant", local_opts), ("group", [])):
        local = subprocess.run(
            [sys.executable, "-m", "mcpvs_bidsapp.cli.run", str(bids), str(local_out), level]
            + ["-w", str(tmp_path / "local_work"), *extra],
            env=slurm_env,
            capture_output=True,
            text=True,
            timeout=1800,  # ~4 min on an idle 2-core machine; generous for a loaded one
        )
        assert local.returncode == 0, local.stderr[-3000:]

    out, work = tmp_path / "slurm_out", tmp_path / "slurm_work"
    array, group, _ = submit_with_mcpvs_slurm(
        [str(bids), str(out), "-w", str(work), "--nprocs", "1", "--mem-gb", "4"]
        + ["--group-mem-gb", "2", "--submit", "--", *options],
        slurm_env,
    )
    states = wait_for([array, group], slurm_env, timeout=1200)
    logs = {p.name: p.read_text()[-3000:] for p in (work / "slurm" / "logs").glob("*.out")}
    assert states[array] == ["COMPLETED"] * 3, logs
    assert states[group] == ["COMPLETED"], logs

    expected, got = _read_outputs(local_out), _read_outputs(out)
    assert sorted(got) == sorted(expected)
    assert any(k.endswith("desc-pvs_mask.nii.gz") for k in got)
    assert any(k.startswith("group") or "/" not in k and k.endswith(".tsv") for k in got)
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(got[name], value), name
        else:
            pd.testing.assert_frame_equal(got[name], value, obj=name)
