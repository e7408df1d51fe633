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


#: how Nipype says that nodes failed (their crash files say why)
NODES_FAILED = "Workflow did not execute cleanly"

#: plugins that submit the whole graph at once and call no status callback
GRAPH_PLUGINS = ("SLURMGraph", "SGEGraph", "PBSGraph", "CondorDAGMan", "LSFGraph")


def run_workflow(workflow, plan, log, status_callback=None) -> str | None:
    """Run a built workflow with the plan's plugin; failures of nodes are read from crash
    files. Returns the engine's own error (one line) when it stopped outside any node, e.g.
    a plugin that refuses the resources, which no crash file records.

    ``status_callback(node, "start" | "end" | "exception")`` (the console progress) is handed
    to every plugin that calls one.
    """
    from mcpvs_bidsapp.engine import slurm

    plugin = plan.resources.plugin
    plugin_args = dict(plan.resources.plugin_args)
    if status_callback is not None and plugin not in GRAPH_PLUGINS:
        plugin_args["status_callback"] = status_callback
    if plugin in slurm.NIPYPE_SLURM_PLUGINS:
        slurm.prepare_nipype_slurm(workflow)
    engine_error = None
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        if NODES_FAILED in str(err):
            log.debug("workflow ended with errors: %s", err)
        else:  # not a node's failure: nothing else will tell the user
            engine_error = " ".join(str(err).split()) or type(err).__name__
            log.error("the Nipype engine stopped: %s", engine_error)
    if plugin == "SLURMGraph":  # it only submits; the status needs the finished outputs
        slurm.wait_for_graph_jobs(Path(workflow.base_dir) / workflow.name / "batch")
    return engine_error
