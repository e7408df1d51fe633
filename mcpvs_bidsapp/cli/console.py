"""The console: mcpvs's log lines on stderr, in the same look as the progress lines."""

from __future__ import annotations

import logging
import sys
import time

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


def setup_logging(verbosity: int) -> None:
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
