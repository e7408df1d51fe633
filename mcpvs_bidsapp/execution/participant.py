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
from mcpvs_bidsapp.execution.preflight import PARTICIPANT_KEY, preflight
from mcpvs_bidsapp.execution.status import crash_messages, outputs_written
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.read import read_json
from mcpvs_bidsapp.outputs.write import (
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
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(settings.output_dir, os.W_OK):
        raise PermissionError(f"{settings.output_dir}: output_dir is not writable")
    write_if_absent_json(
        settings.output_dir / spec.DATASET_DESCRIPTION, make_dataset_description(container_info())
    )
    write_region_table(settings.output_dir)

    if settings.execution.reports_only:
        return _reports_only(settings, t1w_inputs)

    plan = settings.resolve()
    LOGGER.info("plan: %s", plan.describe())
    started = datetime.now().isoformat(timespec="seconds")
    good, errors = preflight(t1w_inputs, plan)
    for label_errors in errors.values():
        for message in label_errors.values():
            error_line(message)
    if plan.wmh_derivatives:
        good = _attach_wmh(plan, good)
    good = _attach_lesions(plan, good)

    t_start = time.time()
    crashes: dict[str, str] = {}
    if any(good.values()):
        crashes = _run_workflow(plan, good, settings.execution.verbosity)

    exit_code = 0
    for label, items in t1w_inputs.items():
        runs = _runs(plan, label, items, errors[label], crashes, t_start)
        if any(r["status"] == "failed" for r in runs):
            exit_code = EXIT_FAILED_PARTICIPANT
        folder = spec.log_dir(plan.output_dir, label, plan.run_id)
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
        )
        write_text(folder / spec.PLAN_FILE, plan.to_json())
        _build_report(settings, label)
    statuses = [_load_status(plan, label) for label in t1w_inputs]
    n_ok = sum(1 for st in statuses for r in st["runs"] if r["status"] == "success")
    n_all = sum(len(st["runs"]) for st in statuses)
    print(f"mcpvs: {n_ok} of {n_all} T1w image(s) processed; outputs in {plan.output_dir}")
    return exit_code


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


def _runs(plan, label, items, errors, crashes, t_start) -> list[dict]:
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
            if crash is None:
                message = (
                    f"{item.path.name}: processing did not finish (see the crash files "
                    f"in {spec.log_dir(plan.output_dir, label, plan.run_id)})"
                )
            else:
                message = (
                    crash if crash.startswith(item.path.name) else f"{item.path.name}: {crash}"
                )
            error_line(message)
        runs.append(
            {
                "source": source,
                "entities": item.entities,
                "status": "failed" if message else "success",
                "error": message,
            }
        )
    return runs


def _load_status(plan: RunPlan, label: str) -> dict:
    return read_json(spec.log_dir(plan.output_dir, label, plan.run_id) / spec.STATUS_FILE)


def _run_workflow(plan: RunPlan, good, verbosity: int) -> dict[str, str]:
    """Run Nipype; return {t1w node name: one-line error} for what failed."""
    from mcpvs_bidsapp.engine.plugin import configure_nipype, log_nipype_to_file, run_workflow
    from mcpvs_bidsapp.workflows.base import init_mcpvs_wf

    plan.work_dir.mkdir(parents=True, exist_ok=True)
    configure_nipype(plan.resources.stop_on_first_crash)
    log_nipype_to_file(plan.work_dir / "logs" / f"nipype-{plan.run_id}.log", verbosity)
    workflow = init_mcpvs_wf(plan, good)
    run_workflow(workflow, plan, LOGGER)
    messages: dict[str, str] = {}
    for label in good:
        messages.update(crash_messages(spec.log_dir(plan.output_dir, label, plan.run_id)))
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
