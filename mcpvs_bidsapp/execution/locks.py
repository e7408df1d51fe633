"""One run per participant at a time: a lock in the output folder and one in the work dir.

A resubmitted SLURM job, or a second terminal, on the same output folder used to crash one of
the two runs half-way, and its newer ``failed`` status then won over a complete, valid output
(issue #17, item 8). Now a participant's run takes ``sub-<label>/log/mcpvs.lock`` in the output
folder (and one per participant in the work dir, which another output folder may share); a
second run that finds it held skips that participant with one line naming the holder, writes
nothing for it (no status, no report), and goes on with the others.

The locks are ``filelock.FileLock``: an ``flock`` on the file, which the kernel drops when the
holding process ends however it ends (SIGKILL, OOM killer, a node failure on NFS v4), so a lock
is never left stale. On a file system without ``flock`` (some Lustre mounts) filelock falls back
to a lock file that records its holder. Who holds the lock is written beside it
(``mcpvs.lock.json``: host, process id, run id, start time), since a lock cannot carry text.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from mcpvs_bidsapp.errors import OutputFolderError
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.write import resolve_target, write_json


class ParticipantLocks:
    """The locks of the participants this run processes; release them with :meth:`close`."""

    def __init__(self, output_dir: Path, work_dir: Path, run_id: str):
        self.output_dir = Path(output_dir)
        self.work_dir = Path(work_dir)
        self.run_id = run_id
        self._stack = ExitStack()

    def reserve(self, n_participants: int) -> None:
        """Two open files per participant for the whole run: a cohort of thousands in one
        invocation would pass the usual soft limit of 1,024 open files, so it is raised
        (within the hard limit) when needed."""
        import resource

        need = 2 * n_participants + 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            target = need if hard == resource.RLIM_INFINITY else min(need, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))

    def acquire(self, label: str) -> None:
        """Take both locks of ``label`` or raise :class:`OutputFolderError` naming the holder."""
        from filelock import FileLock, Timeout

        targets = (
            spec.lock_path(self.output_dir, label),
            spec.work_lock_path(self.work_dir, label),
        )
        held = ExitStack()
        try:
            for path in targets:
                resolve_target(path, self.output_dir if path == targets[0] else self.work_dir)
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(path), timeout=0)
                try:
                    with warnings.catch_warnings():  # the soft fallback says so in a warning
                        warnings.simplefilter("ignore")
                        lock.acquire()
                except Timeout:
                    raise OutputFolderError(
                        f"sub-{label}: another mcpvs run is processing this participant "
                        f"({_holder(path)}; lock {path}); skipped, its outputs are left as they "
                        "are"
                    ) from None
                held.callback(lock.release)
                write_json(_holder_file(path), self._holder_record(label))
                held.callback(_holder_file(path).unlink, missing_ok=True)
        except BaseException:
            held.close()
            raise
        self._stack.push(held.pop_all())

    def _holder_record(self, label: str) -> dict:
        return {
            "participant_label": label,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run_id": self.run_id,
            "since": datetime.now().isoformat(timespec="seconds"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ParticipantLocks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _holder_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".json")


def _holder(lock: Path) -> str:
    """'run 2026... (pid 123 on node7, SLURM job 42, since ...)' from the holder record."""
    try:
        info = json.loads(_holder_file(lock).read_text())
    except (OSError, ValueError):
        return "holder unknown"
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return (
        f"run {info.get('run_id', '?')}, pid {info.get('pid', '?')} on {info.get('host', '?')}"
        f"{job}, since {info.get('since', '?')}"
    )
