"""The Nipype engine: its configuration, its log file and the plugin a run uses."""

from __future__ import annotations

import logging
from pathlib import Path

from mcpvs_bidsapp.errors import BIDSError


def plugin_from_settings(execution) -> tuple[str, dict]:
    """(plugin, plugin_args): ``--use-plugin FILE`` (YAML/JSON), else MultiProc with
    ``--nprocs`` and ``--mem-gb``."""
    if execution.plugin_settings:
        import yaml

        path = Path(execution.plugin_settings)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise BIDSError(f"{path}: not a readable plugin file ({err})") from None
        if not isinstance(data, dict):
            raise BIDSError(f"{path}: a mapping (plugin, plugin_args) is needed")
        return data.get("plugin", "MultiProc"), data.get("plugin_args", {})
    args = {"n_procs": execution.nprocs, "raise_insufficient": True}
    if execution.mem_gb:
        args["memory_gb"] = execution.mem_gb
    return "MultiProc", args


def configure_nipype(stop_on_first_crash: bool) -> None:
    """Text crash files, no monitoring, keep every output (reports read intermediate files)."""
    from nipype import config as nipype_config

    nipype_config.update_config({
        "execution": {
            "crashfile_format": "txt",
            "stop_on_first_crash": stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "check_version": False,
        },
        "monitoring": {"enabled": False},
    })  # fmt: skip


def log_nipype_to_file(log_file: Path, verbosity: int) -> Path:
    """Nipype's own log (with tracebacks) goes to a file; the terminal gets one line per error.

    ``-vv`` also shows it on the terminal.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        nipype_logger = logging.getLogger(name)
        nipype_logger.handlers = [handler]
        nipype_logger.propagate = verbosity >= 2
        nipype_logger.setLevel(logging.INFO)
    return log_file


def run_workflow(workflow, plan, log) -> None:
    """Run a built workflow with the plan's plugin; failures are read from crash files."""
    from mcpvs_bidsapp.engine import slurm

    plugin = plan.resources.plugin
    plugin_args = dict(plan.resources.plugin_args)
    if plugin in slurm.NIPYPE_SLURM_PLUGINS:
        slurm.prepare_nipype_slurm(workflow)
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:  # Nipype: "Workflow did not execute cleanly"
        log.debug("workflow ended with errors: %s", err)
    if plugin == "SLURMGraph":  # it only submits; the status needs the finished outputs
        slurm.wait_for_graph_jobs(Path(workflow.base_dir) / workflow.name / "batch")
