"""``mcpvs`` entry point: parse, then hand over to the participant or group level."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import time
from pathlib import Path

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
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])

    from mcpvs_bidsapp.bids import check_paths
    from mcpvs_bidsapp.cli.parser import parse_args
    from mcpvs_bidsapp.engine.processes import Interrupted, end_children, stop_on_signals
    from mcpvs_bidsapp.errors import McpvsError

    settings = parse_args(argv)
    _setup_logging(settings.execution.verbosity)
    try:
        with stop_on_signals():
            check_paths(settings.bids_dir, settings.output_dir, settings.execution.work_dir)
            if settings.analysis_level == "group":
                from mcpvs_bidsapp.group.run import run_group

                return run_group(settings)
            from mcpvs_bidsapp.execution.participant import run_participant

            return run_participant(settings)
    except (McpvsError, OSError) as err:
        for line in str(err).splitlines() or [""]:  # several problems: one line each
            print(f"mcpvs: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, Interrupted) else 2
        ended = end_children()
        print(
            f"mcpvs: error: stopped by {signal.Signals(signum).name}"
            f"{f' ({ended} worker process(es) ended)' if ended else ''}; the outputs committed "
            "so far are complete and nothing half-written was left under a final name; rerun "
            "with the same work dir to resume",
            file=sys.stderr,
        )
        return 128 + signum


def _is_bids_app_call(argv: list[str]) -> bool:
    """``demo out participant`` with a folder ``demo`` here is a BIDS-App call; ``demo /tmp/x``
    stays the subcommand even where a folder of that name exists."""
    return len(argv) >= 3 and argv[2] in ("participant", "group") and Path(argv[0]).is_dir()


#: third-party loggers that say at INFO what a user need not read on every run
_QUIET = ("bidsschematools", "numexpr", "nipype.workflow", "nipype.interface", "nipype.utils")


class ConsoleFormatter(logging.Formatter):
    """``mcpvs 14:02:11 message``: the same look as the progress lines; the level only when
    it is not INFO, and the logger's name only when it is not mcpvs's own."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        name = "" if record.name.split(".")[0] == "mcpvs" else f"{record.name}: "
        text = f"mcpvs {stamp} {level}{name}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a caller that redirects
    stderr after ``main`` set logging up, e.g. pytest's capture, still gets the lines)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler sets it; stderr is read instead
        pass


def _setup_logging(verbosity: int) -> None:
    """mcpvs's own messages at INFO (``-v``: DEBUG); other packages' only from WARNING up
    (``-v``: INFO, ``-vv``: everything, Nipype's log on the terminal too)."""
    handler = _StderrHandler()
    handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(
        logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity else logging.WARNING
    )
    logging.getLogger("mcpvs").setLevel(logging.DEBUG if verbosity else logging.INFO)
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)


if __name__ == "__main__":  # nnU-Net / MultiProc workers re-import the main module
    sys.exit(main())
