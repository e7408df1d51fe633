"""``mcpvs demo DEST``: build a small BIDS dataset with known PVS and run the app on it.

The images come from nilearn's bundled MNI152 template (shipped in its wheel, no download)
with synthetic PVS inserted by :mod:`mcpvs_bidsapp.synthetic.phantoms`; the inserted tubes
are written as manual masks so the group level can score the segmentation against known truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

#: participant label -> (PVS load, seed, age, hypertension, vendor); loads differ so that
#: the group table shows a spread
DEMO_PARTICIPANTS = {
    "01": ("few", 11, 62, 0, "Siemens"),
    "02": ("many", 12, 74, 1, "Philips"),
}


def build_demo_dataset(dest: Path, participants: dict | None = None) -> tuple[Path, Path]:
    """Write ``dest/bids`` and ``dest/manual_masks``; return both paths."""
    import numpy as np

    from mcpvs_bidsapp.synthetic.phantoms import phantom_from_mni
    from mcpvs_bidsapp.visual_scores import estimate

    participants = participants or DEMO_PARTICIPANTS
    bids = Path(dest) / "bids"
    truth_root = Path(dest) / "manual_masks"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "mcpvs demo: MNI152 with synthetic PVS",
                "BIDSVersion": "1.9.0",
                "License": "CC0",
                "GeneratedBy": [{"Name": "mcpvs demo"}],
            },
            indent=2,
        )
    )
    # the visual scores a rater who saw exactly the inserted PVS would give (the paper's rules
    # on the truth), so the group report can show their agreement with the masks' scores
    rows = ["participant_id\tage\thypertension\tvendor\tbg_score\twm_score"]
    truth_root.mkdir(parents=True, exist_ok=True)
    (truth_root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "mcpvs demo: inserted PVS (known truth)",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "mcpvs demo"}],
            },
            indent=2,
        )
    )
    for label, (load, seed, age, htn, vendor) in participants.items():
        image, truth, _, regions = phantom_from_mni(load=load, seed=seed)
        scores = estimate(
            np.asanyarray(truth.dataobj), np.asanyarray(regions.dataobj), truth.affine
        )
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        image.to_filename(anat / f"sub-{label}_T1w.nii.gz")
        (anat / f"sub-{label}_T1w.json").write_text(
            json.dumps(
                {
                    "Manufacturer": vendor,
                    "MagneticFieldStrength": 3,
                    "Description": f"MNI152 2009a with synthetic PVS (load {load}, seed {seed})",
                },
                indent=2,
            )
        )
        truth_anat = truth_root / f"sub-{label}" / "anat"
        truth_anat.mkdir(parents=True, exist_ok=True)
        truth.to_filename(truth_anat / f"sub-{label}_desc-manual_mask.nii.gz")
        rows.append(
            f"sub-{label}\t{age}\t{htn}\t{vendor}\t{scores['BG'].score}\t{scores['WM'].score}"
        )
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, truth_root


#: written last into DEST once the demo inputs are complete; names what they were built from
MARKER = "mcpvs-demo.json"
#: bump when the demo inputs change (phantom, participants, sidecars): old folders are rebuilt
DEMO_DATA_VERSION = 3


def _marker_content(participants: dict) -> dict:
    return {
        "demo_data_version": DEMO_DATA_VERSION,
        "participants": {k: list(v) for k, v in participants.items()},
    }


def prepare_demo(dest: Path, force: bool = False, participants: dict | None = None):
    """The demo inputs in ``dest``, written once: ``(bids, truth, reused)``.

    A folder that already holds this demo's inputs (its marker says so) is reused as it is,
    so the second ``mcpvs demo`` finds the same files and Nipype resumes from the work dir
    instead of recomputing. Any other non-empty folder is refused unless ``force``.
    """
    from mcpvs_bidsapp.errors import McpvsError

    participants = participants or DEMO_PARTICIPANTS
    marker = dest / MARKER
    want = _marker_content(participants)
    bids, truth = dest / "bids", dest / "manual_masks"
    if marker.is_file():
        try:
            have = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            have = None
        if have == want and bids.is_dir() and truth.is_dir():
            return bids, truth, True
        if not force:
            raise McpvsError(
                f"{dest}: holds the inputs of another mcpvs demo version; "
                "use --force to rebuild them (every step is then recomputed) or a new folder"
            )
    elif dest.is_dir() and any(dest.iterdir()) and not force:
        raise McpvsError(
            f"{dest}: folder is not empty and is not an mcpvs demo; choose an empty or new "
            "folder, or --force to write the demo into it anyway"
        )
    marker.unlink(missing_ok=True)
    bids, truth = build_demo_dataset(dest, participants)
    marker.write_text(json.dumps(want, indent=2) + "\n")
    return bids, truth, False


def build_parser() -> argparse.ArgumentParser:
    from mcpvs_bidsapp.cli.parser import HelpFormatter, positive_int

    parser = argparse.ArgumentParser(
        prog="mcpvs demo",
        formatter_class=HelpFormatter,
        description=textwrap.fill(
            "Build a 2-participant demo BIDS dataset with known synthetic PVS and run mcpvs on "
            "it (participant level with the built-in method and the fast regions path, then "
            "the group level). Run it again on the same folder and it resumes: the inputs are "
            "written once, so every step already done is reused from DEST/work.",
            width=90,
        ),
    )
    parser.add_argument(
        "dest",
        type=Path,
        help="empty or new folder for the demo, or the folder of an earlier demo (resumed)",
    )
    parser.add_argument(
        "--nprocs",
        type=positive_int,
        default=2,
        help="processes to run at once (mcpvs --nprocs); threads per process follow it",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder that is not a demo of this version (its demo "
        "inputs are rebuilt; other files are left as they are)",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="only write the dataset, run nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)

    from mcpvs_bidsapp.cli.run import EXIT_USAGE
    from mcpvs_bidsapp.cli.run import main as mcpvs_main
    from mcpvs_bidsapp.errors import McpvsError

    dest = opts.dest.absolute()
    try:
        bids, truth, reused = prepare_demo(dest, force=opts.force)
    except McpvsError as err:
        print(f"mcpvs demo: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if reused:
        print(f"mcpvs demo: reusing the dataset in {bids} (the run resumes from {dest / 'work'})")
    else:
        print(f"mcpvs demo: dataset written to {bids}")
    if opts.build_only:
        return 0
    out = dest / "derivatives" / "mcpvs"
    common = ["-w", str(dest / "work"), "--nprocs", str(opts.nprocs)]
    code = mcpvs_main(
        # the demo favours speed: fast regions and N4 inside the brain mask (see mcpvs --help)
        [
            str(bids),
            str(out),
            "participant",
            "--regions",
            "fast",
            "--n4-mask",
            "brain",
            "--method",
            "vesselness",
            *common,
        ]
    )
    group_code = mcpvs_main(
        [
            str(bids),
            str(out),
            "group",
            "--covariates",
            "age",
            "--visual-score-columns",
            "BG=bg_score",
            "WM=wm_score",
            "--manual-masks",
            str(truth),
            "-w",
            str(dest / "work"),
        ]
    )
    reports = sorted(out.glob("sub-*.html"))
    print("mcpvs demo: outputs in", out)
    for report in reports:
        print("mcpvs demo: report", report)
    if (out / "group.html").exists():
        print("mcpvs demo: group report", out / "group.html")
    return code or group_code


if __name__ == "__main__":
    sys.exit(main())
