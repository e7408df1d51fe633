"""``mcpvs slurm``: run a cohort as a SLURM job array, one participant per task, then the group.

Clusters already have a scheduler; this helper only writes what a user would otherwise write by
hand (the participant list, an array batch script and a group batch script) and, with
``--submit``, hands them to ``sbatch``. Each task runs the ordinary ``mcpvs ... participant``
command for one participant with its own work dir, so a task is exactly what a local run does.
The group job depends on the array with ``afterany``: it runs when every task has ended,
successful or not, and the group level lists the participants that failed (their status files
say why) instead of the whole study waiting on one bad scan.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from mcpvs_bidsapp.bids import check_paths, collect_t1w
from mcpvs_bidsapp.cli.parser import positive_float, positive_int
from mcpvs_bidsapp.engine.slurm import mem_mb
from mcpvs_bidsapp.errors import BIDSError

ARRAY_SCRIPT = "mcpvs_participant.sbatch"
GROUP_SCRIPT = "mcpvs_group.sbatch"
SUBMIT_SCRIPT = "submit.sh"
PARTICIPANTS_FILE = "participants.txt"

EPILOG = """\
Everything after "--" is passed to every participant-level task, e.g.
  mcpvs slurm /data/bids /data/derivatives/mcpvs -w /scratch/mcpvs-work \\
      --nprocs 4 --mem-gb 16 --max-parallel 50 --submit -- --regions samseg --method nnunet
With a container (Apptainer/Singularity), the same paths are bound inside it:
  mcpvs slurm ... --container /images/mcpvs-0.1.0.sif --gpus 1 --submit
See docs/hpc.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcpvs slurm",
        description="Write (and optionally submit) a SLURM job array that runs mcpvs on one "
        "participant per task, and a group-level job that runs after the array.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where the derivatives go (shared)")
    parser.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        default=None,
        help="shared work folder; each task uses <work-dir>/sub-<label> and the group job "
        "<work-dir>/group (default: ./work)",
    )
    parser.add_argument(
        "--script-dir",
        type=Path,
        default=None,
        help="where the participant list, batch scripts and SLURM logs go "
        "(default: <work-dir>/slurm)",
    )
    sel = parser.add_argument_group("selecting participants")
    sel.add_argument("--participant-label", nargs="+", default=[], metavar="LABEL")
    sel.add_argument("--session-label", nargs="+", default=[], metavar="LABEL")
    sel.add_argument("--bids-filter-file", type=Path, default=None, metavar="FILE")
    sel.add_argument("--skip-bids-validation", action="store_true")
    res = parser.add_argument_group("resources per participant task")
    res.add_argument(
        "--nprocs",
        type=positive_int,
        default=2,
        help="CPUs per task (--cpus-per-task; also mcpvs --nprocs) (default: 2)",
    )
    res.add_argument("--omp-nthreads", type=positive_int, default=None, help="mcpvs --omp-nthreads")
    res.add_argument(
        "--mem-gb",
        type=positive_float,
        default=8.0,
        help="memory per task (--mem; also mcpvs --mem-gb) (default: 8)",
    )
    res.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs per task (--gres=gpu:N, mcpvs --device cuda, apptainer --nv) (default: 0)",
    )
    res.add_argument("--time", default="04:00:00", help="time limit per task (default: 04:00:00)")
    res.add_argument(
        "--max-parallel",
        type=positive_int,
        default=None,
        help="at most this many tasks at once (--array=1-N%%M)",
    )
    res.add_argument("--partition", default=None, help="SLURM partition for every job")
    res.add_argument("--account", default=None, help="SLURM account for every job")
    res.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra #SBATCH line for every job, e.g. --sbatch-arg=--qos=long (repeatable)",
    )
    grp = parser.add_argument_group("group-level job")
    grp.add_argument("--no-group", action="store_true", help="do not write/submit a group job")
    grp.add_argument(
        "--group-args",
        default="",
        metavar="STRING",
        help='options for "mcpvs ... group", as one quoted string, e.g. '
        "--group-args='--covariates age hypertension'",
    )
    grp.add_argument("--group-time", default="02:00:00", help="group job time limit")
    grp.add_argument("--group-mem-gb", type=positive_float, default=8.0, help="group job memory")
    run = parser.add_argument_group("what runs in each job")
    run.add_argument(
        "--container",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="Apptainer/Singularity image (.sif) to run mcpvs in (default: this installation)",
    )
    run.add_argument(
        "--container-runtime",
        default=None,
        choices=["apptainer", "singularity"],
        help="default: apptainer when found on PATH, else singularity",
    )
    run.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="SRC[:DEST]",
        help="extra container bind (the BIDS, output, work and script folders and the "
        "model store are bound at their own paths already) (repeatable)",
    )
    run.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run first in each job, e.g. --setup='module load apptainer' (repeatable)",
    )
    parser.add_argument(
        "--submit", action="store_true", help="submit with sbatch and print the job ids"
    )
    return parser


def mcpvs_command(opts: argparse.Namespace) -> list[str]:
    """How a job starts mcpvs: in the container, or this very installation's Python."""
    if opts.container is None:
        # this interpreter, so a virtual environment need not be activated in the job
        return [sys.executable, "-m", "mcpvs_bidsapp.cli.run"]
    runtime = opts.container_runtime
    if runtime is None:
        found = shutil.which("apptainer") or not shutil.which("singularity")
        runtime = "apptainer" if found else "singularity"
    binds = [opts.bids_dir, opts.output_dir, opts.work_dir, opts.script_dir]
    binds += [Path(b.split(":")[0]) for b in opts.bind if ":" not in b]
    model_store = _forwarded_value(opts.participant_args, "--model-store")
    if model_store:
        binds.append(Path(model_store).absolute())
    bind_args = []
    for path in dict.fromkeys(str(b) for b in binds):
        bind_args += ["-B", path]
    for extra in opts.bind:
        if ":" in extra:
            bind_args += ["-B", extra]
    # --cleanenv: the host's PYTHONPATH & co. must not leak into the image's Python
    cmd = [runtime, "exec", "--cleanenv"]
    if opts.gpus:
        cmd.append("--nv")
    return [*cmd, *bind_args, str(opts.container.absolute()), "mcpvs"]


def _forwarded_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def _sbatch_header(opts, *, name: str, time: str, mem: int, cpus: int, log: str) -> list[str]:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={mem}M",
        f"#SBATCH --time={time}",
        f"#SBATCH --output={opts.script_dir / 'logs' / log}",
    ]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    lines += [f"#SBATCH {arg}" for arg in opts.sbatch_arg]
    return lines


def participant_script(opts: argparse.Namespace, n_tasks: int) -> str:
    """The array batch script: task i runs line i of participants.txt."""
    array = f"1-{n_tasks}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")
    lines = _sbatch_header(
        opts,
        name="mcpvs-participant",
        time=opts.time,
        mem=mem_mb(opts.mem_gb),
        cpus=opts.nprocs,
        log="participant-%A_%a.out",
    )
    lines.insert(2, f"#SBATCH --array={array}")
    if opts.gpus:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus}")
    args = [
        str(opts.bids_dir),
        str(opts.output_dir),
        "participant",
        "--participant-label",
        "@LABEL@",
        "--work-dir",
        "@WORK@",
        "--nprocs",
        str(opts.nprocs),
        "--mem-gb",
        f"{opts.mem_gb:g}",
    ]
    if opts.omp_nthreads:
        args += ["--omp-nthreads", str(opts.omp_nthreads)]
    if opts.session_label:
        args += ["--session-label", *opts.session_label]
    if opts.bids_filter_file:
        args += ["--bids-filter-file", str(opts.bids_filter_file)]
    if opts.skip_bids_validation:
        args.append("--skip-bids-validation")
    if opts.gpus and _forwarded_value(opts.participant_args, "--device") is None:
        args += ["--device", "cuda"]
    args += opts.participant_args
    command = " ".join(shlex.quote(a) for a in [*mcpvs_command(opts), *args])
    command = command.replace("@LABEL@", '"$LABEL"').replace("@WORK@", '"$WORK"')
    participants = shlex.quote(str(opts.script_dir / PARTICIPANTS_FILE))
    work_root = shlex.quote(str(opts.work_dir))
    lines += [
        "",
        "# one participant per task; set -e so a failed task shows as FAILED in sacct",
        "set -euo pipefail",
        *opts.setup,
        f'LABEL=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {participants})',
        f'[ -n "$LABEL" ] || {{ echo "mcpvs: no line $SLURM_ARRAY_TASK_ID in {participants}" >&2; '
        "exit 2; }",
        f'WORK={work_root}/"sub-$LABEL"',
        'echo "mcpvs task $SLURM_ARRAY_TASK_ID: sub-$LABEL on $(hostname), work dir $WORK"',
        command,
        "",
    ]
    return "\n".join(lines)


def group_script(opts: argparse.Namespace) -> str:
    """The group batch script (submitted with --dependency=afterany:<array job id>)."""
    lines = _sbatch_header(
        opts,
        name="mcpvs-group",
        time=opts.group_time,
        mem=mem_mb(opts.group_mem_gb),
        cpus=1,
        log="group-%j.out",
    )
    group_opts = shlex.split(opts.group_args)
    if opts.skip_bids_validation and "--skip-bids-validation" not in group_opts:
        group_opts.append("--skip-bids-validation")
    args = [
        str(opts.bids_dir),
        str(opts.output_dir),
        "group",
        "--work-dir",
        str(opts.work_dir / "group"),
        *group_opts,
    ]
    opts_no_gpu = argparse.Namespace(**{**vars(opts), "gpus": 0})
    command = " ".join(shlex.quote(a) for a in [*mcpvs_command(opts_no_gpu), *args])
    lines += ["", "set -euo pipefail", *opts.setup, command, ""]
    return "\n".join(lines)


def submit_script(opts: argparse.Namespace) -> str:
    """What --submit does, as a script a user can read, edit and run."""
    lines = [
        "#!/bin/bash",
        "# Submit the participant array, then the group job after it (afterany: it runs when",
        "# every task has ended, also when some failed; the group level lists the failures).",
        "set -euo pipefail",
        f"cd {shlex.quote(str(opts.script_dir))}",
        f"ARRAY=$(sbatch --parsable {ARRAY_SCRIPT} | cut -d';' -f1)",
        'echo "participant array job: $ARRAY"',
    ]
    if not opts.no_group:
        lines += [
            "GROUP=$(sbatch --parsable --dependency=afterany:$ARRAY "
            f"{GROUP_SCRIPT} | cut -d';' -f1)",
            'echo "group job: $GROUP (after $ARRAY)"',
        ]
    return "\n".join(lines) + "\n"


def _sbatch(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        ["sbatch", "--parsable", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"sbatch {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout.strip().split(";")[0]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    participant_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, participant_args = argv[:cut], argv[cut + 1 :]
    opts = build_parser().parse_args(argv)
    opts.participant_args = participant_args
    opts.bids_dir = opts.bids_dir.absolute()
    opts.output_dir = opts.output_dir.absolute()
    opts.work_dir = (opts.work_dir or Path.cwd() / "work").absolute()
    opts.script_dir = (opts.script_dir or opts.work_dir / "slurm").absolute()
    if opts.bids_filter_file is not None:
        opts.bids_filter_file = opts.bids_filter_file.absolute()
    if opts.gpus < 0:
        return _fail("--gpus must be 0 or more")
    if opts.container is not None and not opts.container.is_file():
        return _fail(f"{opts.container}: container image not found")
    if opts.submit and shutil.which("sbatch") is None:
        return _fail("sbatch not found on PATH (run on a SLURM login node, or leave out --submit)")

    try:
        check_paths(opts.bids_dir, opts.output_dir, opts.work_dir)
        filters = {}
        if opts.bids_filter_file is not None:
            import json

            try:
                filters = json.loads(opts.bids_filter_file.read_text())
            except (OSError, ValueError) as err:
                raise BIDSError(f"{opts.bids_filter_file}: cannot read as JSON ({err})") from err
        found = collect_t1w(
            opts.bids_dir,
            opts.participant_label,
            opts.session_label,
            filters,
            validate=not opts.skip_bids_validation,
        )
    except (BIDSError, OSError) as err:
        return _fail(str(err))
    labels = [label for label, items in found.items() if items]
    skipped = [label for label, items in found.items() if not items]
    if skipped:
        print(
            f"mcpvs slurm: no T1w for {len(skipped)} participant(s), not submitted: "
            + " ".join(f"sub-{s}" for s in skipped),
            file=sys.stderr,
        )
    if not labels:
        return _fail(f"{opts.bids_dir}: no participant with a T1w image to run")

    opts.script_dir.mkdir(parents=True, exist_ok=True)
    (opts.script_dir / "logs").mkdir(exist_ok=True)
    opts.work_dir.mkdir(parents=True, exist_ok=True)
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    (opts.script_dir / PARTICIPANTS_FILE).write_text("\n".join(labels) + "\n")
    (opts.script_dir / ARRAY_SCRIPT).write_text(participant_script(opts, len(labels)))
    if not opts.no_group:
        (opts.script_dir / GROUP_SCRIPT).write_text(group_script(opts))
    (opts.script_dir / SUBMIT_SCRIPT).write_text(submit_script(opts))
    (opts.script_dir / SUBMIT_SCRIPT).chmod(0o755)
    print(
        f"mcpvs slurm: {len(labels)} participant(s); scripts in {opts.script_dir} "
        f"({ARRAY_SCRIPT}{', ' + GROUP_SCRIPT if not opts.no_group else ''}, {SUBMIT_SCRIPT})"
    )
    if not opts.submit:
        print(f"mcpvs slurm: submit with: {opts.script_dir / SUBMIT_SCRIPT}")
        return 0
    try:
        array_id = _sbatch([ARRAY_SCRIPT], opts.script_dir)
        print(f"participant array job: {array_id} ({len(labels)} tasks)")
        if not opts.no_group:
            group_id = _sbatch([f"--dependency=afterany:{array_id}", GROUP_SCRIPT], opts.script_dir)
            print(f"group job: {group_id} (after {array_id})")
    except RuntimeError as err:
        return _fail(str(err))
    return 0


def _fail(message: str) -> int:
    print(f"mcpvs slurm: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
