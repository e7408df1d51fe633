"""``mcpvs demo DEST``: build a small BIDS dataset with known PVS and run the app on it.

The images come from nilearn's bundled MNI152 template (shipped in its wheel, no download)
with synthetic PVS inserted by :mod:`mcpvs_bidsapp.synthetic.phantoms`; the inserted tubes
are written as manual masks so the group level can score the segmentation against known truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: participant label -> (PVS load, seed, age, hypertension, vendor); loads differ so that
#: the group table shows a spread
DEMO_PARTICIPANTS = {
    "01": ("few", 11, 62, 0, "Siemens"),
    "02": ("many", 12, 74, 1, "Philips"),
}


def build_demo_dataset(dest: Path, participants: dict | None = None) -> tuple[Path, Path]:
    """Write ``dest/bids`` and ``dest/manual_masks``; return both paths."""
    from mcpvs_bidsapp.synthetic.phantoms import phantom_from_mni

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
    rows = ["participant_id\tage\thypertension\tvendor"]
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
        image, truth, _, _ = phantom_from_mni(load=load, seed=seed)
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
        rows.append(f"sub-{label}\t{age}\t{htn}\t{vendor}")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, truth_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mcpvs demo",
        description="Build a 2-participant demo BIDS dataset with known synthetic PVS and run "
        "mcpvs on it (participant with the fast regions path, then group).",
    )
    parser.add_argument("dest", type=Path, help="empty or new folder for the demo")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--build-only", action="store_true", help="only write the dataset")
    opts = parser.parse_args(argv)

    from mcpvs_bidsapp.cli.run import main as mcpvs_main

    dest = opts.dest.absolute()
    bids, truth = build_demo_dataset(dest)
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
        [str(bids), str(out), "group", "--covariates", "age", "--manual-masks", str(truth)]
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
