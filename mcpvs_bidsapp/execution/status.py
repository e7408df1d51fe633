"""What happened to each T1w: crash files read back as one line, and the status file."""

from __future__ import annotations

import re
from pathlib import Path

from mcpvs_bidsapp.bids import T1wInput
from mcpvs_bidsapp.outputs import spec

_NODE_RE = re.compile(r"^Node: (\S+)", re.M)


def crash_messages(crash_dir: Path) -> dict[str, str]:
    """{t1w workflow name: 'problem (step ...; crash file ...)'} from Nipype's crash files."""
    messages: dict[str, str] = {}
    if not crash_dir.is_dir():
        return messages
    for crash in sorted(crash_dir.glob("crash-*.txt")):
        text = crash.read_text(errors="replace")
        node = _NODE_RE.search(text)
        node_path = node.group(1) if node else ""
        t1w_wf = next((p for p in node_path.split(".") if p.startswith("t1w_")), None)
        if t1w_wf is None:
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        exc = next(
            (ln for ln in reversed(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)),
            lines[-1] if lines else "unknown error",
        )
        exc = re.sub(r"^[A-Za-z_.]*(Error|Exception)\w*: ", "", exc)
        step = ".".join(p for p in node_path.split(".") if not p.startswith(("mcpvs_wf", "sub_")))
        messages.setdefault(t1w_wf, f"{exc} (step {step}; crash file {crash})")
    return messages


def outputs_written(output_dir: Path, item: T1wInput, since: float) -> bool:
    """The writer commits every file of a T1w at once, and only after all steps succeeded;
    the commit marker newer than this run's start means this run wrote them."""
    marker = spec.derivative_path(output_dir, item, spec.COMMIT_MARKER)
    return marker.exists() and marker.stat().st_mtime >= since - 1
