"""The CLI as a user runs it: error paths (fast) and a real two-participant run (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.cli.run import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``mcpvs`` in a subprocess, as a user would (no shared state with the tests)."""
    return subprocess.run(
        [sys.executable, "-m", "mcpvs_bidsapp.cli.run", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=3000,
        env={**__import__("os").environ, "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)},
    )


def make_bids(root: Path, t1ws: dict[str, Path | None]) -> Path:
    """A BIDS dataset with one T1w per participant (``None``: no anat at all)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.9.0"})
    )
    for label, src in t1ws.items():
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        if src is not None:
            shutil.copyfile(src, anat / f"sub-{label}_T1w.nii.gz")
            (anat / f"sub-{label}_T1w.json").write_text(
                json.dumps({"Manufacturer": "Philips", "MagneticFieldStrength": 3})
            )
    return root


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--participant-label",
        "--session-label",
        "--bids-filter-file",
        "--nprocs",
        "--omp-nthreads",
        "--mem-gb",
        "--work-dir",
        "--skip-bids-validation",
        "--stop-on-first-crash",
        "--regions",
        "--method",
        "--model",
    ):
        assert option in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mcpvs {__version__}"


def test_subcommand_name_clashing_with_a_folder(tmp_path, monkeypatch, capsys):
    """A folder named ``demo`` in the cwd does not hide ``mcpvs demo DEST``, yet it can still be
    the bids_dir of ``mcpvs demo OUT participant``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    assert "folder for the demo" in capsys.readouterr().out
    assert main(["demo", str(tmp_path / "out"), "participant"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "demo: not a BIDS dataset" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["{bids}", "{bids}/derivatives/mcpvs", "participant"],
            "output_dir must not be bids_dir or inside it",
        ),
        (["{bids}", "{bids}", "participant"], "output_dir must not be bids_dir"),
        (
            ["{bids}", "{tmp}/out", "participant", "-w", "{bids}/work"],
            "work dir must not be inside bids_dir",
        ),
        (
            ["{bids}", "{tmp}/out", "participant", "--participant-label", "sub-99"],
            r"participant\(s\) not found: sub-99",
        ),
        (["{tmp}/nothing", "{tmp}/out", "participant"], "does not exist"),
        (["{tmp}/plain", "{tmp}/out", "participant"], "not a BIDS dataset"),
    ],
)
def test_error_paths_one_line_nonzero(tmp_path, shared_data, args, message, capsys):
    bids = make_bids(tmp_path / "bids", {"01": None})
    (tmp_path / "plain").mkdir()
    argv = [a.format(bids=bids, tmp=tmp_path) for a in args]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mcpvs: error: ")
    assert __import__("re").search(message, err), err
    assert not (bids / "derivatives").exists()


def test_bids_examples_empty_images_fail_per_file(shared_data, tmp_path):
    """Placeholder (0-byte) images: one clear line each, exit 1, no traceback, status written."""
    src = shared_data / "bids-examples" / "ds001"
    out = tmp_path / "out"
    proc = run_cli(
        src, out, "participant", "--participant-label", "01", "02", "-w", tmp_path / "work"
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mcpvs: error:")]
    assert errors == [
        "mcpvs: error: sub-01_T1w.nii.gz: file is empty (0 bytes)",
        "mcpvs: error: sub-02_T1w.nii.gz: file is empty (0 bytes)",
    ]
    for label in ("01", "02"):
        status = json.loads(
            next((out / f"sub-{label}" / "log").glob("*/mcpvs_status.json")).read_text()
        )
        assert status["runs"][0]["status"] == "failed"
        assert "file is empty" in status["runs"][0]["error"]
        assert (out / f"sub-{label}.html").exists()
        assert not list((out / f"sub-{label}").glob("anat/*"))  # nothing half-written
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"


@pytest.mark.slow
def test_two_real_participants_and_a_bad_one(shared_data, tmp_path):
    """Two real T1w heads end to end, plus a 4D image that must fail alone.

    The Philips head runs at its native 1 mm; the second head is resampled to 2 mm, which
    keeps CI inside its budget (the authors' whole-image N4 costs ~10 CPU-minutes per 1 mm
    head) and checks a non-1 mm grid at the same time.
    """
    from mcpvs_bidsapp.synthetic.datasets import resample_head

    bad = tmp_path / "bad_4d.nii.gz"
    nb.Nifti1Image(np.ones((40, 40, 40, 3), np.float32), np.eye(4)).to_filename(bad)
    otsu_2mm = resample_head(
        shared_data / "t1w" / "niivue_otsu_t1w.nii.gz", tmp_path / "otsu_2mm.nii.gz", 2.0
    )
    bids = make_bids(
        tmp_path / "bids",
        {
            "01": shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz",
            "02": otsu_2mm,
            "03": bad,
        },
    )
    (bids / "sub-01" / "ses-1").mkdir()  # sessions: move sub-01 into ses-1
    shutil.move(bids / "sub-01" / "anat", bids / "sub-01" / "ses-1" / "anat")
    anat = bids / "sub-01" / "ses-1" / "anat"
    for f in list(anat.iterdir()):
        f.rename(anat / f.name.replace("sub-01_", "sub-01_ses-1_"))
    before = {p: p.stat().st_mtime for p in bids.rglob("*")}
    out = tmp_path / "out"
    proc = run_cli(
        bids,
        out,
        "participant",
        "--regions",
        "fast",
        "--method",
        "vesselness",
        "--nprocs",
        "2",
        "--omp-nthreads",
        "2",
        "--n4-mask",  # the authors' whole-image N4 is covered at 2 mm by other tests
        "brain",
        "-w",
        tmp_path / "work",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mcpvs: error:")]
    assert errors == [
        "mcpvs: error: sub-03_T1w.nii.gz: image is 4D (shape 40x40x40x3); a 3D T1w is needed"
    ]
    assert {p: p.stat().st_mtime for p in bids.rglob("*")} == before  # input untouched

    for prefix, anat_dir, src in (
        ("sub-01_ses-1", out / "sub-01" / "ses-1" / "anat", anat / "sub-01_ses-1_T1w.nii.gz"),
        ("sub-02", out / "sub-02" / "anat", bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"),
    ):
        ref = nb.load(src)
        for name in (
            "desc-brain_mask",
            "desc-preproc_T1w",
            "desc-regions_dseg",
            "space-T1w_desc-pvs_mask",
            "space-T1w_desc-pvs_probseg",
        ):
            img = nb.load(anat_dir / f"{prefix}_{name}.nii.gz")
            assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
            meta = json.loads((anat_dir / f"{prefix}_{name}.json").read_text())
            assert meta["Sources"][0] == f"bids:raw:{src.relative_to(bids).as_posix()}"
        brain = np.asanyarray(nb.load(anat_dir / f"{prefix}_desc-brain_mask.nii.gz").dataobj)
        brain_ml = brain.sum() * np.prod(ref.header.get_zooms()[:3]) / 1000
        assert 900 < brain_ml < 2000  # adult brain/intracranial range, mL
        pvs = np.asanyarray(nb.load(anat_dir / f"{prefix}_space-T1w_desc-pvs_mask.nii.gz").dataobj)
        assert 0 < pvs.sum() < 0.02 * brain.sum()
        assert not np.any(pvs[brain == 0])
        preproc_meta = json.loads((anat_dir / f"{prefix}_desc-preproc_T1w.json").read_text())
        assert preproc_meta["N4"]["N4Mask"] == "brain mask (-x)"
        meta = json.loads((anat_dir / f"{prefix}_space-T1w_desc-pvs_mask.json").read_text())
        assert meta["Method"] == "vesselness"
        assert meta["SoftwareVersions"]["mcpvs"] == __version__
        measures = (anat_dir / f"{prefix}_desc-pvs_measures.tsv").read_text().splitlines()
        assert measures[0].split("\t")[:3] == ["region", "pvs_volume_mm3", "pvs_count"]
        assert [row.split("\t")[0] for row in measures[1:]] == ["BG", "WM", "whole_brain"]
        assert not list(anat_dir.glob(".*"))  # no temporary files left
    status = json.loads(next((out / "sub-03" / "log").glob("*/mcpvs_status.json")).read_text())
    assert status["runs"][0]["status"] == "failed"
    assert not (out / "sub-03" / "anat").exists()
    for label in ("01", "02", "03"):
        assert (out / f"sub-{label}.html").exists()
    assert (out / "desc-regions_dseg.tsv").read_text().startswith("index\tname\n0\tbackground")


# ------------------------------------------------------- operational traps (issue #17, 14)


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mcpvs: error: ")
    return err[-1]


def test_threads_beyond_processes_and_nan_memory_are_usage_errors(tmp_path, capsys):
    """``--omp-nthreads 4 --nprocs 2`` failed every T1w with "processing did not finish"
    (MultiProc refuses such a step; the cause was logged at DEBUG); ``--mem-gb nan`` turned
    the memory guard off (nan compares False)."""
    bids = make_bids(tmp_path / "bids", {"01": None})
    base = [str(bids), str(tmp_path / "out"), "participant"]
    line = _usage_error(base + ["--nprocs", "2", "--omp-nthreads", "4"], capsys)
    assert "--omp-nthreads 4 is more than --nprocs 2" in line
    for value in ("nan", "inf", "-1"):
        assert "must be a positive number" in _usage_error(base + ["--mem-gb", value], capsys)
    assert not (tmp_path / "out").exists()


def test_repeated_selection_options_add_up():
    from mcpvs_bidsapp.cli.parser import parse_args

    s = parse_args(["b", "o", "participant", "--participant-label", "01",
                    "--participant-label", "sub-02", "03", "--session-label", "1",
                    "--session-label", "2"])  # fmt: skip
    assert s.selection.participant_label == ["01", "02", "03"]
    assert s.selection.session_label == ["1", "2"]
    g = parse_args(["b", "o", "group", "--covariates", "age", "--covariates", "sex"])
    assert g.group.covariates == ["age", "sex"]


def test_bids_filter_files_are_checked(tmp_path, capsys):
    """Unknown keys and ``subject`` gave PyBIDS tracebacks; an fMRIPrep filter file with only
    ``bold`` too. Now: one line naming the key (exit 2), and fMRIPrep files work."""
    from mcpvs_bidsapp.bids import collect_t1w

    bids = make_bids(tmp_path / "bids", {"01": None, "02": None})
    for label in ("01", "02"):
        for acq in ("mprage", "fast"):
            img = nb.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
            img.to_filename(bids / f"sub-{label}" / "anat" / f"sub-{label}_acq-{acq}_T1w.nii.gz")

    def filters(data) -> Path:
        path = tmp_path / f"filter{len(list(tmp_path.glob('filter*')))}.json"
        path.write_text(json.dumps(data))
        return path

    cases = {
        "unknown entity 'acqusition'": {"acqusition": "mprage"},
        "'subject' cannot be filtered": {"subject": "01"},
        "'suffix' cannot be filtered": {"t1w": {"suffix": "T2w"}},
        "mixes fMRIPrep queries (t1w) with entities (session)": {"t1w": {}, "session": "1"},
        "is not a value": {"acquisition": {"a": 1}},
    }
    for message, data in cases.items():
        code = main([str(bids), str(tmp_path / "out"), "participant",
                     "--bids-filter-file", str(filters(data))])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (message, err)
    only_bold = collect_t1w(bids, bids_filters={"bold": {"task": "rest"}})
    assert sum(len(v) for v in only_bold.values()) == 4  # no T1w filter: every T1w
    fmriprep = collect_t1w(bids, bids_filters={"t1w": {"acquisition": "mprage"}, "bold": {}})
    assert [t.path.name for t in fmriprep["01"]] == ["sub-01_acq-mprage_T1w.nii.gz"]
    absent = collect_t1w(bids, bids_filters={"t1w": {"run": None}})  # null: entity absent
    assert sum(len(v) for v in absent.values()) == 4


def test_one_t1w_stored_twice_fails_alone(tmp_path, capsys):
    """``sub-01_T1w.nii`` beside ``sub-01_T1w.nii.gz`` stopped the whole cohort on main
    (duplicate Nipype node). Both are refused with one line each; the others go on."""
    bids = make_bids(tmp_path / "bids", {"01": None, "02": None})
    img = nb.Nifti1Image(np.ones((40, 40, 40), np.float32), np.eye(4))
    img.to_filename(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    img.to_filename(bids / "sub-01" / "anat" / "sub-01_T1w.nii")
    (bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("mcpvs: error: ")]
    assert sum("are one T1w stored twice" in ln for ln in lines) == 2, lines
    assert any("sub-02_T1w.nii.gz: file is empty" in ln for ln in lines)
    for label in ("01", "02"):
        status = json.loads(
            next((out / f"sub-{label}" / "log").glob("*/mcpvs_status.json")).read_text()
        )
        assert {r["status"] for r in status["runs"]} == {"failed"}


def test_an_unwritable_participant_folder_costs_only_that_participant(
    tmp_path, capsys, monkeypatch
):
    """One participant whose status cannot be written stopped the status and reports of
    every participant after it on main."""
    from mcpvs_bidsapp.execution import participant as run_module

    bids = make_bids(tmp_path / "bids", {"01": None, "02": None})
    for label in ("01", "02"):
        (bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz").write_bytes(b"")
    real = run_module.write_json

    def write_json(path, data, **kwargs):
        if "sub-01" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data, **kwargs)

    monkeypatch.setattr(run_module, "write_json", write_json)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 1
    assert "mcpvs: error: sub-01: cannot write its status file" in err
    assert list((out / "sub-02" / "log").glob("*/mcpvs_status.json"))
    assert (out / "sub-02.html").is_file()


def test_engine_errors_reach_the_status(tmp_path, shared_data, capsys, monkeypatch):
    """An error of the Nipype engine itself (no crash file) is the T1w's error line, not
    "processing did not finish"."""

    def refuse(self, *args, **kwargs):
        raise RuntimeError("Insufficient resources available for job:\n  n4 needs 4 procs")

    monkeypatch.setattr("nipype.pipeline.engine.workflows.Workflow.run", refuse)
    bids = make_bids(
        tmp_path / "bids", {"01": shared_data / "t1w" / "philips_bgcrop_96x96x48_t1w.nii.gz"}
    )
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1 and "did not finish" not in err
    assert "sub-01_T1w.nii.gz: not processed: Insufficient resources available for job: n4" in err


def _empty_t1ws(root: Path, names: list[str]) -> Path:
    """A BIDS dataset of empty T1w files (``sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz`` ...):
    each selected file fails fast, naming itself, so stderr says which T1w a run took."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    for name in names:
        parts = [p for p in name.split("_") if p.startswith(("sub-", "ses-"))]
        anat = root.joinpath(*parts, "anat")
        anat.mkdir(parents=True, exist_ok=True)
        (anat / name).write_bytes(b"")
    return root


def _taken(err: str) -> list[str]:
    """The T1w files a run took, from their "file is empty" lines."""
    return sorted(
        line.split("mcpvs: error: ", 1)[1].split(":")[0]
        for line in err.splitlines()
        if line.startswith("mcpvs: error: ") and "file is empty" in line
    )


def test_repeated_labels_select_every_participant_and_session(tmp_path, capsys):
    """``--participant-label 01 --participant-label 02`` processed only 02 on main (argparse
    kept the last one); the same for ``--session-label``. Through the CLI: every label given
    is taken, and nothing else."""
    names = [f"sub-{s}_ses-{t}_T1w.nii.gz" for s in ("01", "02", "03") for t in ("1", "2", "3")]
    bids = _empty_t1ws(tmp_path / "bids", names)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "01", "--participant-label", "sub-02",
                 "--session-label", "1", "--session-label", "ses-2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert _taken(err) == [f"sub-{s}_ses-{t}_T1w.nii.gz" for s in ("01", "02") for t in "12"]
    assert sorted(p.name for p in out.glob("sub-*") if p.is_dir()) == ["sub-01", "sub-02"]


def test_repeated_covariates_are_all_fitted(tmp_path):
    """``--covariates age --covariates hypertension`` regressed on hypertension alone on main;
    ``--visual-score-columns`` given twice kept only the last region."""
    from mcpvs_bidsapp.synthetic.cohort import write_cohort

    write_cohort(tmp_path / "out", tmp_path / "bids", n=30, seed=3)
    code = main([str(tmp_path / "bids"), str(tmp_path / "out"), "group",
                 "-w", str(tmp_path / "work"), "--covariates", "age",
                 "--covariates", "hypertension", "--visual-score-columns", "BG=bg_score",
                 "--visual-score-columns", "wm_score"])  # fmt: skip
    assert code == 0
    rho = (tmp_path / "out" / "group_stats_visual_spearman.tsv").read_text().splitlines()
    regions = {row.split("\t")[rho[0].split("\t").index("region")] for row in rho[1:]}
    assert regions == {"BG", "WM"}, regions
    reg = (tmp_path / "out" / "group_stats_regression.tsv").read_text().splitlines()
    header = reg[0].split("\t")
    terms = {row.split("\t")[header.index("term")] for row in reg[1:]}
    assert "age" in terms and "hypertension[T.yes]" in terms, terms  # a yes/no column


def test_threads_beyond_a_plugin_files_processes_is_one_line(tmp_path, capsys):
    """With ``--use-plugin`` (MultiProc, ``n_procs: 2``) the parser cannot compare
    ``--omp-nthreads`` with ``--nprocs``; the run still refuses 4 threads on 2 processes with
    one line (exit 2) before any T1w is tried, instead of "processing did not finish"."""
    bids = _empty_t1ws(tmp_path / "bids", ["sub-01_T1w.nii.gz"])
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: 2\n")
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--use-plugin", str(plugin), "--omp-nthreads", "4"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("mcpvs: error: --omp-nthreads 4 is more than the 2 processes")
    assert not _taken(err)
    plugin.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: 4\n")  # enough: runs
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--use-plugin", str(plugin), "--omp-nthreads", "4"])  # fmt: skip
    assert code == 1 and _taken(capsys.readouterr().err) == ["sub-01_T1w.nii.gz"]


def test_bids_filter_files_select_through_the_cli(tmp_path, capsys):
    """fMRIPrep filter files gave tracebacks on main (one with only ``bold``; ``null`` and
    ``"*"`` too). Through the CLI they select the T1w they say: only ``bold``: every T1w;
    ``null``: the entity absent; ``"*"``: any value of it."""
    plain = ["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"]
    acq = ["sub-01_acq-mprage_T1w.nii.gz", "sub-02_acq-fast_T1w.nii.gz"]
    bids = _empty_t1ws(tmp_path / "bids", plain + acq)
    cases = [
        ({"bold": {"task": "rest"}, "sbref": {"task": "rest"}}, sorted(plain + acq)),
        ({"t1w": {"acquisition": None}, "bold": {}}, plain),
        ({"t1w": {"acquisition": "*"}, "bold": {"task": "rest"}}, sorted(acq)),
        ({"acquisition": ["mprage", None]}, sorted(plain + acq[:1])),
    ]
    for i, (data, expected) in enumerate(cases):
        path = tmp_path / f"filter{i}.json"
        path.write_text(json.dumps(data))
        argv = [str(bids), str(tmp_path / f"out{i}"), "participant", "-w", str(tmp_path / "w")]
        code = main([*argv, "--bids-filter-file", str(path)])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err, (data, err)
        assert _taken(err) == expected, (data, err)


def test_every_bad_key_of_a_filter_file_is_one_line(tmp_path, capsys):
    """A filter file with several mistakes named only the first (fix, rerun, next one): now
    one ``mcpvs: error:`` line per bad key, exit 2, and no T1w is tried."""
    bids = _empty_t1ws(tmp_path / "bids", ["sub-01_T1w.nii.gz", "sub-01_acq-fast_T1w.nii.gz"])
    path = tmp_path / "filter.json"
    data = {"t1w": {"acqusition": "fast", "subject": "01", "run": {"a": 1}, "acquisition": "*"}}
    path.write_text(json.dumps(data))
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--bids-filter-file", str(path)])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 3, lines
    assert all(ln.startswith("mcpvs: error: --bids-filter-file: ") for ln in lines), lines
    assert "unknown entity 'acqusition'" in lines[0]
    assert "'subject' cannot be filtered" in lines[1]
    assert "run: {'a': 1} is not a value" in lines[2]
