"""Time the group level over a synthetic cohort (default 1,000 participants).

    PYTHONPATH=$PWD python benchmarks/group_level.py [--participants 1000] [--sessions 1]

Writes the cohort into a temporary folder (not timed), then runs the group level with
covariates, visual scores and manual masks in a child process (imports included, as the
CLI would) and prints its wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from pathlib import Path
from mcpvs_bidsapp.config import Settings
from mcpvs_bidsapp.group.run import run_group
root = Path(sys.argv[1])
s = Settings.from_options(root / "bids", root / "out", "group",
             work_dir=root / "work", covariates=["age", "hypertension", "wmh_norm"],
             visual_score_columns=["BG=bg_score", "WM=wm_score"],
             manual_masks=root / "bids" / "derivatives" / "manual")
sys.exit(run_group(s))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--manual", type=int, default=20, help="participants with manual masks")
    opts = parser.parse_args()

    from mcpvs_bidsapp.synthetic.cohort import write_cohort

    with tempfile.TemporaryDirectory(prefix="mcpvs-group-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_cohort(
            root / "out",
            root / "bids",
            n=opts.participants,
            seed=0,
            age_effect=2.0,
            sessions=opts.sessions,
            n_failed=opts.participants // 100,
            n_manual=opts.manual,
        )
        print(
            f"cohort written: {opts.participants} participants x {opts.sessions} session(s) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024
        cpu = usage.ru_utime + usage.ru_stime  # less sensitive than wall time to a busy host
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows = sum(1 for _ in open(root / "out" / "group_pvs.tsv")) - 1
        load = os.getloadavg()[0]
        print(
            f"group level: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak_mb:.0f} MB, "
            f"{rows} rows in group_pvs.tsv (host load average {load:.1f}, {os.cpu_count()} CPUs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
