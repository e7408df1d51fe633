"""Time the participant report on a full-resolution real head (1 mm Philips MPRAGE).

Prints the seconds and file size of every reportlet (and of the viewer's volumes) and of the
whole report, so the choice of plain PNG figures over niworkflows' SVG reportlets (6-13 s
and 1.7-4 MB each, ../shared/deps/README.md) can be checked on any machine:

    PYTHONPATH=$PWD NIPYPE_NO_ET=1 python benchmarks/report_timing.py [--zoom-mm 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoom-mm", type=float, default=None, help="resample (default: 1 mm)")
    args = parser.parse_args()

    from _report_data import make_report_dataset

    from mcpvs_bidsapp.reports import participant
    from mcpvs_bidsapp.synthetic.datasets import shared_data_dir

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        shared = shared_data_dir(Path(__file__))
        bids, out = make_report_dataset(Path(tmp), shared, zoom_mm=args.zoom_mm)
        print(f"fixture (derivatives by hand): {time.perf_counter() - t0:.1f} s")

        timings = []
        original_draw, original_viewer = participant._draw, participant._viewer

        def timed(figures_dir, output_dir, prefix, reportlet, paths):
            t = time.perf_counter()
            fig = original_draw(figures_dir, output_dir, prefix, reportlet, paths)
            timings.append((reportlet.key, time.perf_counter() - t, fig))
            return fig

        def timed_viewer(output_dir, label, prefix, anat, reportlet):
            t = time.perf_counter()
            fig = original_viewer(output_dir, label, prefix, anat, reportlet)
            timings.append((reportlet.key, time.perf_counter() - t, fig))
            return fig

        participant._draw = timed
        participant._viewer = timed_viewer
        for label in ("01", "02"):
            timings.clear()
            t = time.perf_counter()
            page = participant.build_participant_report(out, label, bids)
            total = time.perf_counter() - t
            print(f"\nsub-{label} ({'success' if label == '01' else 'failed'}):")
            size = 0
            for key, seconds, fig in timings:
                kb = (out / fig.src).stat().st_size / 1024 if fig.src else 0
                size += kb
                print(f"  {key:12s} {seconds:5.2f} s  {kb:7.0f} KiB  {fig.error or ''}")
            print(
                f"  total report {total:5.2f} s, figures {size:.0f} KiB, "
                f"HTML {page.stat().st_size / 1024:.0f} KiB"
            )


if __name__ == "__main__":
    main()
