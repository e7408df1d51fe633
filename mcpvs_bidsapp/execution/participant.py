"""``mcpvs bids_dir output_dir participant``: preflight -> workflow -> status and reports.

The exit code is 0 only when every selected T1w succeeded; a bad file gets one error line
naming it and the problem, and the other participants still finish.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.bids import (
    T1wInput,
    collect_lesions,
    collect_t1w,
    collect_wmh,
    container_info,
)
from mcpvs_bidsapp.bids import dataset_description as make_dataset_description
from mcpvs_bidsapp.config import RunPlan, Settings
from mcpvs_bidsapp.errors import OutputFolderError
from mcpvs_bidsapp.execution.locks import ParticipantLocks
from mcpvs_bidsapp.execution.preflight import PARTICIPANT_KEY, preflight
from mcpvs_bidsapp.execution.status import crash_messages, outputs_written
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import environment as provenance_environment
from mcpvs_bidsapp.outputs.write import (
    check_tree,
    write_if_absent_json,
    write_json,
    write_region_table,
    write_text,
)

LOGGER = logging.getLogger("mcpvs")
EXIT_FAILED_PARTICIPANT = 1
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def error_line(message: str) -> None:
    print(f"mcpvs: error: {message}", file=sys.stderr)


def run_participant(settings: Settings) -> int:
    """Process every selected T1w; exit 0 only when all succeeded."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    for var in THREAD_VARIABLES:
        os.environ[var] = str(settings.execution.omp_nthreads)

    selection = settings.selection
    t1w_inputs = collect_t1w(
        settings.bids_dir,
        selection.participant_label,
        selection.session_label,
        selection.bids_filters,
        validate=not selection.skip_bids_validation,
    )
    if settings.execution.reports_only:
        return _reports_only(settings, t1w_inputs)

    # every decision that can refuse the run comes before the first write into output_dir
    plan = settings.resolve()
    _prepare_output_dir(settings)
    log_file = spec.nipype_log(plan.work_dir, plan.run_id)
    _log_to_file(log_file)
    n_t1w = sum(len(items) for items in t1w_inputs.values())
    LOGGER.info(
        "mcpvs %s: %d participant(s), %d T1w image(s); %s",
        __version__,
        len(t1w_inputs),
        n_t1w,
        plan.describe(),
    )
    LOGGER.info("log: %s", log_file)
    LOGGER.info(
        "run plan, status and crash files: %s",
        spec.log_dir(plan.output_dir, "<label>", plan.run_id),
    )
    with ParticipantLocks(plan.output_dir, plan.work_dir, plan.run_id) as locks:
        locks.reserve(len(t1w_inputs))
        return _run_locked(settings, plan, t1w_inputs, locks, log_file)


def _run_locked(
    settings: Settings, plan: RunPlan, t1w_inputs, locks: ParticipantLocks, log_file
) -> int:
    exit_code = 0
    mine: dict[str, list[T1wInput]] = {}
    for label, items in t1w_inputs.items():
        try:  # its folder must be ours to write (no symlink out of output_dir), and free
            check_tree(plan.output_dir / f"sub-{label}", plan.output_dir)
            locks.acquire(label)
        except OutputFolderError as err:
            error_line(str(err))
            exit_code = EXIT_FAILED_PARTICIPANT
            continue
        except OSError as err:  # e.g. a file where its log folder should be
            error_line(f"sub-{label}: cannot use its output folder ({err}); skipped")
            exit_code = EXIT_FAILED_PARTICIPANT
            continue
        mine[label] = items

    started = datetime.now().isoformat(timespec="seconds")
    good, errors = preflight(mine, plan)
    for label_errors in errors.values():
        for message in label_errors.values():
            error_line(message)
    if plan.wmh_derivatives:
        good = _attach_wmh(plan, good)
    good = _attach_lesions(plan, good)

    t_start = time.time()
    crashes: dict[str, str] = {}
    engine_error = None
    steps: dict[str, dict] = {}
    if any(good.values()):
        crashes, steps, engine_error = _run_workflow(
            plan, good, settings.execution.verbosity, log_file
        )

    n_ok = n_all = 0
    environment = provenance_environment()
    for label, items in mine.items():
        runs = _runs(plan, label, items, errors[label], crashes, t_start, steps, engine_error)
        n_all += len(runs)
        n_ok += sum(r["status"] == "success" for r in runs)
        if any(r["status"] == "failed" for r in runs):
            exit_code = EXIT_FAILED_PARTICIPANT
        folder = spec.log_dir(plan.output_dir, label, plan.run_id)
        try:  # one unwritable folder must not cost the others their status and report
            write_json(
                folder / spec.STATUS_FILE,
                {
                    "run_id": plan.run_id,
                    "participant_label": label,
                    "started": started,
                    "finished": datetime.now().isoformat(timespec="seconds"),
                    "mcpvs_version": __version__,
                    "method": plan.method,
                    "runs": runs,
                },
                root=plan.output_dir,
            )
            write_text(folder / spec.PLAN_FILE, plan.to_json(environment), root=plan.output_dir)
        except (OSError, OutputFolderError) as err:
            error_line(f"sub-{label}: cannot write its status file ({err})")
            exit_code = EXIT_FAILED_PARTICIPANT
            continue
        _build_report(settings, label)
    print(f"mcpvs: {n_ok} of {n_all} T1w image(s) processed; outputs in {plan.output_dir}")
    for label in mine:
        report = spec.report_path(plan.output_dir, label)
        if report.exists():
            print(f"mcpvs: report {report}")
    return exit_code


def _prepare_output_dir(settings: Settings) -> None:
    """Create output_dir with its shared top-level files (only once the run is accepted)."""
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(settings.output_dir, os.W_OK):
        raise PermissionError(f"{settings.output_dir}: output_dir is not writable")
    write_if_absent_json(
        settings.output_dir / spec.DATASET_DESCRIPTION, make_dataset_description(container_info())
    )
    write_region_table(settings.output_dir)


def _log_to_file(log_file) -> None:
    """mcpvs's own log lines go to the run's log file too (Nipype's are added by the engine)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO)
    mcpvs_logger = logging.getLogger("mcpvs")
    mcpvs_logger.handlers = [h for h in mcpvs_logger.handlers if not _is_run_log(h)] + [handler]
    handler._mcpvs_run_log = True  # type: ignore[attr-defined]
    if mcpvs_logger.level == logging.NOTSET or mcpvs_logger.level > logging.INFO:
        mcpvs_logger.setLevel(logging.INFO)


def _is_run_log(handler) -> bool:
    if getattr(handler, "_mcpvs_run_log", False):
        handler.close()
        return True
    return False


def _attach_wmh(plan: RunPlan, good: dict[str, list[T1wInput]]) -> dict[str, list[T1wInput]]:
    """The WMH mask of every T1w that has a usable one (problems are warnings)."""
    from dataclasses import replace
    from pathlib import Path

    found, problems = collect_wmh(plan.wmh_derivatives, [t for ts in good.values() for t in ts])
    for problem in problems:
        LOGGER.warning("%s", problem)
    return {
        label: [
            replace(t, wmh_file=Path(found[str(t.path)])) if str(t.path) in found else t
            for t in items
        ]
        for label, items in good.items()
    }


def _attach_lesions(plan: RunPlan, good: dict[str, list[T1wInput]]) -> dict[str, list[T1wInput]]:
    """The lesion mask of every T1w that has one (``--lesion-mask`` or a BIDS file beside
    it); problems are warnings, the T1w then runs with automatic cavity detection."""
    from dataclasses import replace
    from pathlib import Path

    found, problems = collect_lesions(
        [t for ts in good.values() for t in ts], plan.lesion_mask, plan.bids_dir
    )
    for problem in problems:
        LOGGER.warning("%s", problem)
    return {
        label: [
            replace(t, lesion_file=Path(found[str(t.path)])) if str(t.path) in found else t
            for t in items
        ]
        for label, items in good.items()
    }


def _runs(plan, label, items, errors, crashes, t_start, steps, engine_error=None) -> list[dict]:
    """The status entries of one participant's T1w images."""
    runs = []
    for key, message in errors.items():
        if key.startswith(PARTICIPANT_KEY):
            runs.append(
                {"source": None, "entities": {"subject": label}, "status": "failed",
                 "error": message}
            )  # fmt: skip
    for item in items:
        source = item.relative_to(plan.bids_dir)
        message = errors.get(str(item.path))
        if message is None and not outputs_written(plan.output_dir, item, since=t_start):
            crash = crashes.get(item.node_name)
            if crash is None and engine_error:
                message = f"{item.path.name}: not processed: {engine_error}"
            elif crash is None:
                message = (
                    f"{item.path.name}: processing did not finish (see the crash files "
                    f"in {spec.log_dir(plan.output_dir, label, plan.run_id)})"
                )
            else:
                message = (
                    crash if crash.startswith(item.path.name) else f"{item.path.name}: {crash}"
                )
            error_line(message)
        entry = {
            "source": source,
            "entities": item.entities,
            "status": "failed" if message else "success",
            "error": message,
        }
        if item.node_name in steps:
            entry["steps"] = steps[item.node_name]
        runs.append(entry)
    return runs


def _run_workflow(
    plan: RunPlan, good, verbosity: int, log_file
) -> tuple[dict[str, str], dict, str | None]:
    """Run Nipype; return ({t1w node name: one-line error} for what failed, {t1w node name:
    step counts}, the engine's own error when it stopped before or outside any node, else
    None)."""
    from mcpvs_bidsapp.engine.plugin import configure_nipype, log_nipype_to_file, run_workflow
    from mcpvs_bidsapp.execution.progress import Progress
    from mcpvs_bidsapp.workflows.base import init_mcpvs_wf

    plan.work_dir.mkdir(parents=True, exist_ok=True)
    configure_nipype(plan.resources.stop_on_first_crash)
    log_nipype_to_file(log_file, verbosity)
    workflow = init_mcpvs_wf(plan, good)
    progress = Progress(workflow, {t.node_name: t.prefix for ts in good.values() for t in ts})
    with progress:
        engine_error = run_workflow(workflow, plan, LOGGER, status_callback=progress)
    messages: dict[str, str] = {}
    for label in good:
        messages.update(crash_messages(spec.log_dir(plan.output_dir, label, plan.run_id)))
    return messages, progress.counts(), engine_error


def _build_report(settings: Settings, label: str) -> None:
    try:
        from mcpvs_bidsapp.reports.participant import build_participant_report

        build_participant_report(settings.output_dir, label, settings.bids_dir)
    except Exception as err:  # a report problem must not turn a good run into a failure
        LOGGER.warning("sub-%s: report not written (%s)", label, err)


def _reports_only(settings: Settings, t1w_inputs) -> int:
    if not settings.output_dir.is_dir():
        raise FileNotFoundError(f"{settings.output_dir}: no outputs to rebuild reports from")
    # the shared files first, as a run does: a neighbouring SLURM task's check of the folder
    # must find it mcpvs's while this one writes sub-<label>/figures
    _prepare_output_dir(settings)
    for label in t1w_inputs:
        try:
            check_tree(settings.output_dir / f"sub-{label}", settings.output_dir)
        except OutputFolderError as err:
            error_line(str(err))
            continue
        _build_report(settings, label)
    print(f"mcpvs: reports rebuilt in {settings.output_dir}")
    return 0
