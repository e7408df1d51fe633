"""``mcpvs`` entry point: parse, then hand over to the participant or group level."""

from __future__ import annotations

import importlib
import logging
import sys
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
    from mcpvs_bidsapp.errors import McpvsError

    settings = parse_args(argv)
    _setup_logging(settings.execution.verbosity)
    try:
        check_paths(settings.bids_dir, settings.output_dir, settings.execution.work_dir)
        if settings.analysis_level == "group":
            from mcpvs_bidsapp.group.run import run_group

            return run_group(settings)
        from mcpvs_bidsapp.execution.participant import run_participant

        return run_participant(settings)
    except (McpvsError, OSError) as err:
        print(f"mcpvs: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def _is_bids_app_call(argv: list[str]) -> bool:
    """``demo out participant`` with a folder ``demo`` here is a BIDS-App call; ``demo /tmp/x``
    stays the subcommand even where a folder of that name exists."""
    return len(argv) >= 3 and argv[2] in ("participant", "group") and Path(argv[0]).is_dir()


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)


if __name__ == "__main__":  # nnU-Net / MultiProc workers re-import the main module
    sys.exit(main())
