"""Console progress of a participant run: which T1w, which step, how long, what comes next.

Nipype's plugins call ``status_callback(node, "start" | "end" | "exception")`` in the main
process (MultiProc, Linear, SLURM; not the graph-submission plugins). :class:`Progress` turns
those calls into

* on a terminal: one tqdm line (steps done of all, the steps running now with their elapsed
  time, refreshed every second) and one line per finished or failed step above it;
* otherwise (a log file, a SLURM job's output): plain lines, one when a step starts and one
  when it ends, with the time stamp, its elapsed time and the next step of that T1w.

A node that Nipype finds cached in the work dir is counted as *reused* (MultiProc ends it
without starting it; for plugins that start it anyway the same cache test is made at its
start), so a resumed run says how much it did not recompute. The derivatives writer always
runs (``overwrite=True``, so outputs deleted by hand come back); it is counted as *written*,
not as recomputed.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

#: what a T1w workflow's name starts with (``bids.T1wInput.node_name``)
T1W_PREFIX = "t1w_"


@dataclass
class StepCounts:
    """What happened to the steps of one T1w."""

    total: int = 0
    run: int = 0  #: computed now
    reused: int = 0  #: found in the work dir (not recomputed)
    written: int = 0  #: always-run steps (the derivatives writer)
    failed: int = 0
    order: list[str] = field(default_factory=list)  #: step names, in a topological order
    started: dict[str, float] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    reused_pending: set[str] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "run": self.run,
            "reused": self.reused,
            "written": self.written,
            "failed": self.failed,
        }


def _t1w_and_step(node) -> tuple[str | None, str]:
    parts = str(getattr(node, "fullname", node)).split(".")
    t1w = next((p for p in parts if p.startswith(T1W_PREFIX)), None)
    return t1w, parts[-1]


def _will_reuse(node) -> bool:
    """Whether Nipype will take this node's results from the work dir instead of running it
    (its own test in ``Node.run``)."""
    if _always_runs(node):
        return False
    try:
        cached, updated = node.is_cached()
    except Exception:  # a node that cannot be hashed here simply runs
        return False
    return bool(cached and updated)


def _always_runs(node) -> bool:
    return bool(getattr(node, "overwrite", False)) or bool(
        getattr(getattr(node, "interface", None), "always_run", False)
    )


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Collects Nipype's status callbacks for one workflow and reports them on a stream."""

    def __init__(self, workflow, labels: dict[str, str], stream=None, tty: bool | None = None):
        """``labels``: T1w workflow name -> what to call it (``sub-01_ses-1``)."""
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.labels = labels
        self.steps: dict[str, StepCounts] = {name: StepCounts() for name in labels}
        self._always: set[tuple[str, str]] = set()
        self._count_steps(workflow)
        self._lock = threading.Lock()
        self._bar = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.t_start = time.time()

    def _count_steps(self, workflow) -> None:
        """The steps of every T1w, in an order Nipype may run them (identity nodes are
        removed from the execution graph, so they are not steps)."""
        import networkx as nx
        from nipype.interfaces.utility import IdentityInterface

        graph = workflow._create_flat_graph()
        for node in nx.topological_sort(graph):
            if isinstance(node.interface, IdentityInterface):
                continue
            t1w, step = _t1w_and_step(node)
            if t1w not in self.steps:
                continue
            self.steps[t1w].total += 1
            self.steps[t1w].order.append(step)
            if _always_runs(node):
                self._always.add((t1w, step))

    # --- the callback -------------------------------------------------------------------

    def __call__(self, node, status: str) -> None:
        t1w, step = _t1w_and_step(node)
        if t1w not in self.steps:
            return
        with self._lock:
            counts = self.steps[t1w]
            now = time.time()
            if status == "start":
                if _will_reuse(node):  # plugins without a local hash check (Linear)
                    counts.reused_pending.add(step)
                counts.started[step] = now
                if not self.tty:
                    self._line(
                        f"{self.labels[t1w]}: {step} started ({self._position(counts, step)})"
                    )
            elif status == "end":
                began = counts.started.pop(step, None)
                counts.done.add(step)
                if step in counts.reused_pending:
                    counts.reused_pending.discard(step)
                    began = None
                if began is None:
                    counts.reused += 1
                    kind = "reused from the work dir"
                elif (t1w, step) in self._always:
                    counts.written += 1
                    kind = f"done in {format_seconds(now - began)}"
                else:
                    counts.run += 1
                    kind = f"done in {format_seconds(now - began)}"
                if began is not None or not self.tty:
                    self._line(f"{self.labels[t1w]}: {step} {kind}{self._next(counts)}")
                self._advance()
            elif status == "exception":
                began = counts.started.pop(step, None)
                counts.failed += 1
                counts.done.add(step)
                took = f" after {format_seconds(now - began)}" if began else ""
                self._line(
                    f"{self.labels[t1w]}: {step} FAILED{took} (crash file in the log folder)"
                )
                self._advance()

    def _position(self, counts: StepCounts, step: str) -> str:
        index = counts.order.index(step) + 1 if step in counts.order else len(counts.done) + 1
        return f"step {index} of {counts.total}"

    def _next(self, counts: StepCounts) -> str:
        waiting = [s for s in counts.order if s not in counts.done and s not in counts.started]
        if len(counts.done) >= counts.total:
            return f"; all {counts.total} steps done"
        return f" ({len(counts.done)}/{counts.total}); next: {waiting[0]}" if waiting else ""

    # --- output ---------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        line = f"mcpvs {stamp} {text}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _running(self) -> str:
        now = time.time()
        running = [
            f"{self.labels[t1w]} {step} {format_seconds(now - began)}"
            for t1w, counts in self.steps.items()
            for step, began in counts.started.items()
        ]
        return " | ".join(running) or "waiting"

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.n = sum(len(c.done) for c in self.steps.values())
            self._bar.set_postfix_str(self._running(), refresh=True)

    def __enter__(self) -> Progress:
        total = sum(c.total for c in self.steps.values())
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                file=self.stream,
                unit="step",
                desc="mcpvs",
                bar_format="{desc} {n_fmt}/{total_fmt} steps [{elapsed}] {postfix}",
                dynamic_ncols=True,
            )
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        else:
            self._line(f"{len(self.steps)} T1w image(s), {total} steps to run or reuse")
        return self

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._bar is not None:
                    self._bar.set_postfix_str(self._running(), refresh=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._bar is not None:
            self._advance()
            self._bar.close()
            self._bar = None
        for t1w in self.steps:
            self._line(f"{self.labels[t1w]}: {self.summary(t1w)}")

    def summary(self, t1w: str) -> str:
        c = self.steps[t1w]
        parts = [f"{c.run} computed", f"{c.reused} reused from the work dir"]
        if c.written:
            parts.append(f"{c.written} written")
        if c.failed:
            parts.append(f"{c.failed} failed")
        left = c.total - len(c.done)
        if left:
            parts.append(f"{left} not run")
        return f"{c.total} steps: " + ", ".join(parts)

    def counts(self) -> dict[str, dict]:
        """{T1w workflow name: {total, run, reused, written, failed}} for the status file."""
        return {t1w: c.as_dict() for t1w, c in self.steps.items()}
