"""What a new user meets first: the help, a refused run, the demo's folder, the progress lines."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.cli.run import main

REPO = Path(__file__).resolve().parents[2]


def _parsers():
    from mcpvs_bidsapp.cli import demo, models, parser, slurm

    yield "mcpvs", parser.build_parser()
    yield "mcpvs demo", demo.build_parser()
    yield "mcpvs slurm", slurm.build_parser()
    top = models.build_parser()
    yield "mcpvs models", top
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from ((f"mcpvs models {n}", p) for n, p in action.choices.items())


@pytest.mark.parametrize(("name", "parser"), list(_parsers()), ids=lambda v: str(v))
def test_every_option_has_help_and_one_default(name, parser):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.dest}"
    text = parser.format_help()
    # one "(default: ...)" per option at most, whatever the help wraps to
    flat = " ".join(text.split())
    for chunk in re.split(r"\s(?=-{1,2}[a-z])", flat):
        assert chunk.count("(default") <= 1, f"{name}: {chunk}"
    assert "docs/methods.md" not in text


def test_usage_names_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    for sub in ("mcpvs demo", "mcpvs models", "mcpvs slurm", "{participant,group}"):
        assert sub in usage


def _tiny_bids(root: Path) -> Path:
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    data = np.random.default_rng(0).random((24, 24, 24)).astype(np.float32) * 100
    nb.Nifti1Image(data, np.eye(4)).to_filename(anat / "sub-01_T1w.nii.gz")
    return root


def test_a_refused_run_writes_nothing(tmp_path):
    """nnunet without an installed model is refused before anything is written, and says so
    in one line (no INFO lines of other packages around it)."""
    bids = _tiny_bids(tmp_path / "bids")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", str(bids), str(out), "participant",
         "--method", "nnunet", "--model-store", str(tmp_path / "no-models"),
         "-w", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**__import__("os").environ, "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcpvs: error: "), proc.stderr
    assert "INFO" not in proc.stderr and "NumExpr" not in proc.stderr
    assert not out.exists()


def test_group_on_an_empty_folder_writes_nothing(tmp_path, capsys):
    bids = _tiny_bids(tmp_path / "bids")
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(bids), str(out), "group"]) == 1
    assert "no participant outputs" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_group_with_a_wrong_option_writes_nothing(tmp_path, capsys):
    from mcpvs_bidsapp.synthetic.cohort import write_cohort

    write_cohort(tmp_path / "out", tmp_path / "bids", n=6, seed=1)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    for option in (["--covariates", "bmi"], ["--visual-score-columns", "BG=nope"],
                   ["--manual-masks", str(tmp_path / "none")]):  # fmt: skip
        code = main([str(tmp_path / "bids"), str(tmp_path / "out"), "group", *option])
        assert code == 1
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    from mcpvs_bidsapp.cli import demo

    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("my files")
    assert demo.main([str(dest), "--build-only"]) == 2
    err = capsys.readouterr().err
    assert "not empty and is not an mcpvs demo" in err and "--force" in err
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]


def test_demo_reuses_its_own_inputs(tmp_path, monkeypatch):
    """A folder holding this demo's inputs (its marker) is reused without rewriting a file;
    a marker of another demo version needs --force."""
    from mcpvs_bidsapp.cli import demo
    from mcpvs_bidsapp.errors import McpvsError

    calls = []

    def fake_build(dest, participants=None):
        calls.append(dest)
        for name in ("bids", "manual_masks"):
            (dest / name).mkdir(parents=True, exist_ok=True)
        return dest / "bids", dest / "manual_masks"

    monkeypatch.setattr(demo, "build_demo_dataset", fake_build)
    dest = tmp_path / "demo"
    assert demo.prepare_demo(dest)[2] is False
    stamp = (dest / demo.MARKER).stat().st_mtime_ns
    assert demo.prepare_demo(dest)[2] is True and len(calls) == 1
    assert (dest / demo.MARKER).stat().st_mtime_ns == stamp
    (dest / demo.MARKER).write_text(json.dumps({"demo_data_version": -1}))
    with pytest.raises(McpvsError, match="another mcpvs demo version"):
        demo.prepare_demo(dest)
    assert demo.prepare_demo(dest, force=True)[2] is False and len(calls) == 2


def _workflow(base: Path):
    """Two T1w-like sub-workflows of three steps each (Function nodes)."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    def double(x):
        return 2 * x

    wf = pe.Workflow(name="mcpvs_wf", base_dir=str(base))
    for name in ("t1w_sub_01", "t1w_sub_02"):
        sub = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=["x"]), name="inputnode")
        inputnode.inputs.x = 1
        a = pe.Node(niu.Function(function=double), name="first")
        b = pe.Node(niu.Function(function=double), name="second")
        c = pe.Node(niu.Function(function=double), name="third")
        sub.connect([(inputnode, a, [("x", "x")]), (a, b, [("out", "x")]),
                     (b, c, [("out", "x")])])  # fmt: skip
        wf.add_nodes([sub])
    return wf


def test_progress_lines_and_a_resumed_run_recomputes_nothing(tmp_path):
    from mcpvs_bidsapp.execution.progress import Progress

    labels = {"t1w_sub_01": "sub-01", "t1w_sub_02": "sub-02"}
    runs = []
    for _ in range(2):
        wf = _workflow(tmp_path)
        stream = io.StringIO()
        progress = Progress(wf, labels, stream=stream, tty=False)
        with progress:
            wf.run(plugin="Linear", plugin_args={"status_callback": progress})
        runs.append((progress.counts(), stream.getvalue()))
    (first, text1), (second, text2) = runs
    assert first["t1w_sub_01"] == {"total": 3, "run": 3, "reused": 0, "written": 0, "failed": 0}
    assert second["t1w_sub_02"] == {"total": 3, "run": 0, "reused": 3, "written": 0, "failed": 0}
    assert "sub-01: first started (step 1 of 3)" in text1
    assert re.search(r"sub-01: first done in \d+ s \(1/3\); next: second", text1)
    assert "sub-01: 3 steps: 3 computed, 0 reused from the work dir" in text1
    assert "sub-02: 3 steps: 0 computed, 3 reused from the work dir" in text2


def test_progress_on_a_terminal_is_one_bar(tmp_path):
    from mcpvs_bidsapp.execution.progress import Progress

    wf = _workflow(tmp_path)
    stream = io.StringIO()
    progress = Progress(wf, {"t1w_sub_01": "sub-01", "t1w_sub_02": "sub-02"}, stream, tty=True)
    with progress:
        wf.run(plugin="Linear", plugin_args={"status_callback": progress})
    text = stream.getvalue()
    assert "mcpvs 6/6 steps" in text  # the bar's last state
    assert "started" not in text  # on a terminal only finished steps get a line
    assert re.search(r"sub-02: third done in \d+ s; all 3 steps done", text)
