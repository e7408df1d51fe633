"""Stopping a run cleanly: SIGTERM and SIGINT end every process the run started.

Nipype's MultiProc runs nodes in a pool of worker processes, and several nodes start children
of their own (the registration, Samseg). On SIGTERM (what SLURM sends at a time limit or on
``scancel``) the main process used to die alone: its worker went on for minutes holding ~1 GB,
and Ctrl-C printed a traceback (issue #17, item 14). :func:`stop_on_signals` turns both signals
into :class:`Interrupted` in the main thread; :func:`end_children` then ends the whole tree,
children first asked (SIGTERM), then told (SIGKILL). psutil walks the tree: a process group
cannot be used, because the CLI must stay in the terminal's group for Ctrl-C to reach it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Interrupted(BaseException):
    """The run was stopped by a signal (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, the signals raise :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    main_pid = os.getpid()

    def handler(signum, _frame):
        if os.getpid() != main_pid:  # a forked worker inherited this: end quietly
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def end_children(grace_s: float = 5.0) -> int:
    """Terminate every descendant of this process, then kill what is left; how many ended.

    The executor's thread then finds its pool broken and logs that with a traceback: that is
    the expected end here, so its logger is silenced first.
    """
    import logging

    import psutil

    logging.getLogger("concurrent.futures").disabled = True

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(children)


@contextmanager
def held_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Hold SIGTERM and SIGINT over a block that must not stop half-way (the writer's commit).

    Yields ``check()``: called where stopping is safe, it raises :class:`Interrupted` when a
    signal came, so that the block's own cleanup (``finally``) runs; at the end of the block a
    held signal is sent again to the handler there was (a worker then ends, the main process
    stops the run). Without it, a worker ended by :func:`end_children` while staging left its
    temporary files in the derivatives folder (main thread only; elsewhere nothing is held).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def hold(signum, _frame):
        received.append(signum)

    def check():
        if received:
            raise Interrupted(received[0])

    previous = {s: signal.signal(s, hold) for s in signums}
    try:
        yield check
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if received:
            os.kill(os.getpid(), received[0])
