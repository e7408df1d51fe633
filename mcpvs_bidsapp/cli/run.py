"""``mcpvs`` entry point: validate -> discover -> build -> run -> status and reports."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import nibabel as nb
import numpy as np

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.bids import (
    BIDSError,
    T1wInput,
    check_paths,
    collect_t1w,
    container_info,
    dataset_description,
)
from mcpvs_bidsapp.config import Settings, n4_mask_for
from mcpvs_bidsapp.interfaces.validation import InputImageError, load_t1w
from mcpvs_bidsapp.outputs.write import write_if_absent_json, write_json

LOGGER = logging.getLogger("mcpvs")
EXIT_FAILED_PARTICIPANT = 1
EXIT_USAGE = 2

SUBCOMMANDS = {
    "demo": "mcpvs_bidsapp.cli.demo",
    "models": "mcpvs_bidsapp.cli.models",
    "slurm": "mcpvs_bidsapp.cli.slurm",
}


def main(argv: list[str] | None = None) -> int:
    """Console script; returns the exit code (0 only when every selected T1w succeeded)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS and not _is_bids_app_call(argv):
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])

    from mcpvs_bidsapp.cli.parser import parse_args

    settings = parse_args(argv)
    _setup_logging(settings.verbosity)
    try:
        check_paths(settings.bids_dir, settings.output_dir, settings.work_dir)
        if settings.analysis_level == "group":
            from mcpvs_bidsapp.group.run import run_group

            return run_group(settings)
        return run_participant(settings)
    except (BIDSError, FileNotFoundError, PermissionError, OSError) as err:
        _error(str(err))
        return EXIT_USAGE


def _is_bids_app_call(argv: list[str]) -> bool:
    """``demo out participant`` with a folder ``demo`` here is a BIDS-App call; ``demo /tmp/x``
    stays the subcommand even where a folder of that name exists."""
    return len(argv) >= 3 and argv[2] in ("participant", "group") and Path(argv[0]).is_dir()


def _error(message: str) -> None:
    print(f"mcpvs: error: {message}", file=sys.stderr)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)


def resolve_method(settings: Settings) -> tuple[str, dict | None]:
    """Which PVS method runs, decided once for the whole invocation (never per participant).

    ``auto`` takes the nnU-Net model when it is installed in the model store, else the
    built-in vesselness method; the choice is logged and recorded in every sidecar.
    """
    method = settings.method
    model_installed = False
    if method in ("auto", "nnunet"):
        try:
            from mcpvs_bidsapp.models.store import get_model

            get_model(settings.model, settings.model_store)
            model_installed = True
        except ImportError:
            model_installed = False
        except Exception as err:  # not installed, tampered, unreadable: say which
            if method == "nnunet":
                raise BIDSError(f"model {settings.model!r}: {err}") from err
            LOGGER.warning("nnU-Net model %r not usable (%s)", settings.model, err)
    if method == "auto":
        method = "nnunet" if model_installed else "vesselness"
        LOGGER.warning(
            "PVS method: %s (%s)",
            method,
            f"model {settings.model!r} from {settings.model_store}"
            if model_installed
            else f"no model {settings.model!r} in {settings.model_store}; built-in method",
        )
    if method == "vesselness":
        return method, None
    options = {
        "model_name": settings.model,
        "model_store": str(settings.model_store),
        "device": settings.device,
        "profile": settings.profile,
    }
    if settings.folds is not None:
        options["folds"] = settings.folds
    if settings.mirroring is not None:
        options["mirroring"] = settings.mirroring
    if settings.step_size is not None:
        options["step_size"] = settings.step_size
    return method, options


def preflight(
    t1w_inputs: dict[str, list[T1wInput]],
    settings: Settings,
    method: str,
) -> tuple[dict[str, list[T1wInput]], dict[str, dict[str, str]]]:
    """Check every T1w before building anything; bad files fail now, the rest go on.

    Besides the image checks, the largest step's memory (scaled by image size) must fit the
    budget (``--mem-gb``, else this machine's memory): a T1w that cannot fit fails here with
    a clear line instead of stopping the whole Nipype run or meeting the OOM killer.
    """
    from mcpvs_bidsapp.resources import available_memory_gb, step_mem_gb

    budget = settings.mem_gb or available_memory_gb()
    steps = [
        "brain_extraction",
        "n4",
        "fcm",
        "measures",
        "samseg" if settings.regions == "samseg" else "regions_fast",
        method,
    ]
    good: dict[str, list[T1wInput]] = {}
    errors: dict[str, dict[str, str]] = {}
    for label, items in t1w_inputs.items():
        good[label] = []
        errors[label] = {}
        if not items:
            errors[label]["sub-" + label] = f"sub-{label}: no T1w image found (anat/*_T1w.nii[.gz])"
        for item in items:
            try:  # size first, from the header alone: a huge image is never read
                shape = tuple(nb.load(str(item.path)).shape[:3])
            except Exception:
                shape = ()  # unreadable: load_t1w below says why
            if len(shape) == 3:
                need, step = max((step_mem_gb(s, int(np.prod(shape))), s) for s in steps)
                if need > budget:
                    errors[label][str(item.path)] = (
                        f"{item.path.name}: needs about {need:.1f} GB for its largest step "
                        f"({step}, {'x'.join(map(str, shape))} voxels) but the memory budget "
                        f"is {budget:.1f} GB (--mem-gb or this machine's memory)"
                    )
                    continue
            try:
                load_t1w(item.path)
            except InputImageError as err:
                errors[label][str(item.path)] = str(err)
                continue
            good[label].append(item)
    return good, errors


def run_participant(settings: Settings) -> int:
    """Process every selected T1w; exit 0 only when all succeeded."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    ):
        os.environ[var] = str(settings.omp_nthreads)

    t1w_inputs = collect_t1w(
        settings.bids_dir,
        settings.participant_label,
        settings.session_label,
        settings.bids_filters,
        validate=not settings.skip_bids_validation,
    )
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(settings.output_dir, os.W_OK):
        raise PermissionError(f"{settings.output_dir}: output_dir is not writable")
    write_if_absent_json(
        settings.output_dir / "dataset_description.json", dataset_description(container_info())
    )
    from mcpvs_bidsapp.outputs.write import write_region_table

    write_region_table(settings.output_dir)

    if settings.reports_only:
        return _reports_only(settings, t1w_inputs)

    method, nnunet_options = resolve_method(settings)
    if settings.n4_mask == "auto":  # resolved where the workflow is built; said here once
        LOGGER.warning(
            "N4 mask: %s (--n4-mask auto with method %s)", n4_mask_for("auto", method), method
        )
    started = datetime.now().isoformat(timespec="seconds")
    good, errors = preflight(t1w_inputs, settings, method)
    for label_errors in errors.values():
        for message in label_errors.values():
            _error(message)

    wmh_files: dict[str, str] = {}
    if settings.wmh_derivatives:
        from mcpvs_bidsapp.bids import collect_wmh

        wmh_files, problems = collect_wmh(
            settings.wmh_derivatives, [t for items in good.values() for t in items]
        )
        for problem in problems:
            LOGGER.warning("%s", problem)

    t_start = time.time()
    crash_messages: dict[str, str] = {}
    if any(good.values()):
        crash_messages = _run_workflow(settings, good, method, nnunet_options, wmh_files)

    exit_code = 0
    for label, items in t1w_inputs.items():
        runs = []
        for key, message in errors[label].items():
            if key.startswith("sub-"):
                runs.append(
                    {
                        "source": None,
                        "entities": {"subject": label},
                        "status": "failed",
                        "error": message,
                    }
                )
        for item in items:
            source = item.relative_to(settings.bids_dir)
            message = errors[label].get(str(item.path))
            if message is None and not _outputs_written(settings, item, since=t_start):
                crash = crash_messages.get(item.node_name)
                if crash is None:
                    message = (
                        f"{item.path.name}: processing did not finish (see the crash files "
                        f"in {_log_dir(settings, label)})"
                    )
                else:
                    message = (
                        crash
                        if crash.startswith(item.path.name)
                        else (f"{item.path.name}: {crash}")
                    )
                _error(message)
            runs.append(
                {
                    "source": source,
                    "entities": item.entities,
                    "status": "failed" if message else "success",
                    "error": message,
                }
            )
        if any(r["status"] == "failed" for r in runs):
            exit_code = EXIT_FAILED_PARTICIPANT
        status = {
            "run_id": settings.run_id,
            "participant_label": label,
            "started": started,
            "finished": datetime.now().isoformat(timespec="seconds"),
            "mcpvs_version": __version__,
            "method": method,
            "runs": runs,
        }
        write_json(_log_dir(settings, label) / "mcpvs_status.json", status)
        _build_report(settings, label)
    n_ok = sum(
        1
        for lab in t1w_inputs
        for r in _load_status(settings, lab)["runs"]
        if r["status"] == "success"
    )
    n_all = sum(len(_load_status(settings, lab)["runs"]) for lab in t1w_inputs)
    print(f"mcpvs: {n_ok} of {n_all} T1w image(s) processed; outputs in {settings.output_dir}")
    return exit_code


def _log_dir(settings: Settings, label: str) -> Path:
    from mcpvs_bidsapp.workflows.base import log_dir

    return log_dir(settings, label)


def _load_status(settings: Settings, label: str) -> dict:
    return json.loads((_log_dir(settings, label) / "mcpvs_status.json").read_text())


def _outputs_written(settings: Settings, item: T1wInput, since: float) -> bool:
    """The writer commits every file of a T1w at once, and only after all steps succeeded."""
    mask = settings.output_dir / item.anat_dir / f"{item.prefix}_space-T1w_desc-pvs_mask.nii.gz"
    return mask.exists() and mask.stat().st_mtime >= since - 1


def _run_workflow(settings, good, method, nnunet_options, wmh_files=None) -> dict[str, str]:
    """Run Nipype; return {t1w node name: one-line error} for what failed."""
    from nipype import config as nipype_config

    from mcpvs_bidsapp.workflows.base import init_mcpvs_wf

    settings.work_dir.mkdir(parents=True, exist_ok=True)
    nipype_config.update_config({
        "execution": {
            "crashfile_format": "txt",
            "stop_on_first_crash": settings.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "check_version": False,
        },
        "monitoring": {"enabled": False},
    })  # fmt: skip
    _log_nipype_to_file(settings)
    workflow = init_mcpvs_wf(
        settings, good, method=method, nnunet_options=nnunet_options, wmh_files=wmh_files
    )
    plugin, plugin_args = _plugin(settings)
    if plugin in ("SLURM", "SLURMGraph"):
        from mcpvs_bidsapp.cli.slurm import prepare_nipype_slurm

        prepare_nipype_slurm(workflow)
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:  # Nipype: "Workflow did not execute cleanly"
        LOGGER.debug("workflow ended with errors: %s", err)
    if plugin == "SLURMGraph":  # it only submits; the status needs the finished outputs
        from mcpvs_bidsapp.cli.slurm import wait_for_graph_jobs

        wait_for_graph_jobs(Path(workflow.base_dir) / workflow.name / "batch")
    messages = {}
    for label in good:
        messages.update(_crash_messages(_log_dir(settings, label)))
    return messages


def _log_nipype_to_file(settings: Settings) -> Path:
    """Nipype's own log (with tracebacks) goes to a file; the terminal gets one line per error.

    ``-vv`` also shows it on the terminal.
    """
    log_file = settings.work_dir / "logs" / f"nipype-{settings.run_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        nipype_logger = logging.getLogger(name)
        nipype_logger.handlers = [handler]
        nipype_logger.propagate = settings.verbosity >= 2
        nipype_logger.setLevel(logging.INFO)
    return log_file


def _plugin(settings: Settings) -> tuple[str, dict]:
    if settings.plugin_settings:
        import yaml

        try:
            data = yaml.safe_load(Path(settings.plugin_settings).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise BIDSError(
                f"{settings.plugin_settings}: not a readable plugin file ({err})"
            ) from None
        if not isinstance(data, dict):
            raise BIDSError(
                f"{settings.plugin_settings}: a mapping (plugin, plugin_args) is needed"
            )
        return data.get("plugin", "MultiProc"), data.get("plugin_args", {})
    args = {"n_procs": settings.nprocs, "raise_insufficient": True}
    if settings.mem_gb:
        args["memory_gb"] = settings.mem_gb
    return "MultiProc", args


_NODE_RE = re.compile(r"^Node: (\S+)", re.M)


def _crash_messages(crash_dir: Path) -> dict[str, str]:
    """{t1w workflow name: 'file: problem (step ...)'} from Nipype's text crash files."""
    messages: dict[str, str] = {}
    if not crash_dir.is_dir():
        return messages
    for crash in sorted(crash_dir.glob("crash-*.txt")):
        text = crash.read_text(errors="replace")
        node = _NODE_RE.search(text)
        node_path = node.group(1) if node else ""
        t1w_wf = next((p for p in node_path.split(".") if p.startswith("t1w_")), None)
        if t1w_wf is None:
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        exc = next(
            (ln for ln in reversed(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)),
            lines[-1] if lines else "unknown error",
        )
        exc = re.sub(r"^[A-Za-z_.]*(Error|Exception)\w*: ", "", exc)
        step = ".".join(p for p in node_path.split(".") if not p.startswith(("mcpvs_wf", "sub_")))
        messages.setdefault(t1w_wf, f"{exc} (step {step}; crash file {crash})")
    return messages


def _build_report(settings: Settings, label: str) -> None:
    try:
        from mcpvs_bidsapp.reports.participant import build_participant_report

        build_participant_report(settings.output_dir, label, settings.bids_dir)
    except Exception as err:  # a report problem must not turn a good run into a failure
        LOGGER.warning("sub-%s: report not written (%s)", label, err)


def _reports_only(settings: Settings, t1w_inputs) -> int:
    for label in t1w_inputs:
        _build_report(settings, label)
    print(f"mcpvs: reports rebuilt in {settings.output_dir}")
    return 0


if __name__ == "__main__":  # nnU-Net / MultiProc workers re-import the main module
    sys.exit(main())
