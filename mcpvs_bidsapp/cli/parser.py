"""Command-line interface, following the BIDS-Apps convention (as fMRIPrep and MRIQC do)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mcpvs_bidsapp import __version__, methods
from mcpvs_bidsapp.config import DEFAULT_MODEL_NAME, Settings, default_model_store

DESCRIPTION = f"""\
mcpvs {__version__}: segment and measure perivascular spaces (PVS) on 3D T1-weighted MRI.

For every T1w image of a BIDS dataset: brain extraction, N4 bias correction and Fuzzy C-means
white-matter normalisation (as in Huang et al., NeuroImage 2024), basal-ganglia / white-matter
regions, PVS segmentation with an installed nnU-Net v2 model (mcPVS-Net) or the built-in
vesselness method, and PVS volumes, counts and PVSnm per region, written as BIDS-Derivatives
with an HTML report per participant. The group level gathers all participants into one table,
a group report and the paper's statistics.
"""

EPILOG = """\
examples:
  mcpvs /data/bids /data/derivatives/mcpvs participant --participant-label 01 02
  mcpvs /data/bids /data/derivatives/mcpvs group --covariates age hypertension
  mcpvs demo /tmp/mcpvs-demo            build and run a small demo dataset
  mcpvs models --help                   install, list and verify nnU-Net models
  mcpvs slurm --help                    run a cohort as a SLURM job array (docs/hpc.md)
"""


USAGE = """\
mcpvs bids_dir output_dir {participant,group} [options]
       mcpvs demo DEST [options]                   a small demo dataset, run end to end
       mcpvs models COMMAND ...                    install, list, verify nnU-Net models
       mcpvs slurm bids_dir output_dir [options]   a SLURM job array per participant
       mcpvs --help | --version | SUBCOMMAND --help"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends an option's default once: only where
    the help does not already say it and the default says something (not None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], {}, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


def positive_int(value: str) -> int:
    ivalue = int(value)
    if ivalue < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return ivalue


def positive_float(value: str) -> float:
    fvalue = float(value)
    if not math.isfinite(fvalue) or fvalue <= 0:  # nan compares False with everything:
        # --mem-gb nan turned the memory guard off (issue #17, item 14)
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return fvalue


def _step_size(value: str) -> float:
    fvalue = float(value)
    if not 0 < fvalue <= 1:
        raise argparse.ArgumentTypeError(f"tile step size must be in (0, 1], got {value}")
    return fvalue


def _json_file(value: str) -> dict:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"{value}: not valid JSON ({err.msg}, line {err.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"{value}: a JSON object is needed (PyBIDS filters)")
    return data


def build_parser() -> argparse.ArgumentParser:
    """The ``mcpvs bids_dir output_dir {participant,group}`` parser."""
    parser = argparse.ArgumentParser(
        prog="mcpvs",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (read only)")
    parser.add_argument(
        "output_dir", type=Path, help="where the derivatives go (must not be inside bids_dir)"
    )
    parser.add_argument(
        "analysis_level", choices=["participant", "group"], help="which level to run"
    )
    parser.add_argument("--version", action="version", version=f"mcpvs {__version__}")

    g_bids = parser.add_argument_group("selecting data")
    g_bids.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="participants to process, with or without 'sub-' (default: all)",
    )
    g_bids.add_argument(
        "--session-label",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="sessions to process, with or without 'ses-' (default: all)",
    )
    g_bids.add_argument(
        "--bids-filter-file",
        type=_json_file,
        default={},
        metavar="FILE",
        help="JSON file of PyBIDS filters for the T1w query, e.g. "
        '{"t1w": {"acquisition": "mprage"}} or {"acquisition": "mprage"}',
    )
    g_bids.add_argument(
        "--skip-bids-validation",
        action="store_true",
        help="do not check that bids_dir is a valid BIDS dataset",
    )

    g_perf = parser.add_argument_group("resources")
    g_perf.add_argument(
        "--nprocs",
        "--n-cpus",
        type=positive_int,
        default=1,
        help="processes Nipype runs at once (MultiProc)",
    )
    g_perf.add_argument(
        "--omp-nthreads",
        type=positive_int,
        default=None,
        help="threads per process for ANTs, Samseg, torch (default: min(nprocs, 8))",
    )
    g_perf.add_argument(
        "--mem-gb",
        type=positive_float,
        default=None,
        help="memory the scheduler may hand out (GB); steps that need more wait or fail clearly",
    )
    g_perf.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        default=None,
        help="intermediate files; a rerun with the same work dir resumes (default: ./work)",
    )
    g_perf.add_argument(
        "--use-plugin",
        dest="plugin_settings",
        type=Path,
        default=None,
        metavar="FILE",
        help="Nipype plugin settings (YAML/JSON: plugin: SLURM, plugin_args: ...)",
    )
    g_perf.add_argument(
        "--stop-on-first-crash",
        action="store_true",
        help="stop at the first failing step instead of finishing everything else",
    )

    g_wf = parser.add_argument_group("processing")
    g_wf.add_argument(
        "--regions",
        choices=methods.region_scheme_names(),
        default="samseg",
        help="BG/WM regions and ICV: FreeSurfer Samseg as in the paper (~10 min) or a fast "
        "atlas-registration path (~2 min; docs/preprocessing.md gives its agreement with "
        "Samseg)",
    )
    g_wf.add_argument(
        "--n4-mask",
        choices=["auto", "whole-image", "brain"],
        default="auto",
        help="N4 on the brain-masked image with no N4 mask, exactly as the mcPVS-Net authors "
        "ran it (whole-image; ~10 min per 1 mm head on 2 cores), or with the brain mask as "
        "N4's mask (brain; ~2 min, not what the model was trained on). auto (default): "
        "whole-image for an nnU-Net model, brain for the built-in method",
    )
    g_wf.add_argument(
        "--method",
        choices=["auto", *methods.segmenter_names()],
        default="auto",
        help="PVS segmentation: "
        + "; ".join(f"{n}: {methods.segmenter(n).summary}" for n in methods.segmenter_names())
        + "; auto: the model when it is installed, else the built-in method (logged and "
        "recorded)",
    )
    g_wf.add_argument(
        "--model", default=DEFAULT_MODEL_NAME, help="name of the installed nnU-Net model to use"
    )
    g_wf.add_argument(
        "--model-store",
        type=Path,
        default=None,
        help=f"folder of installed models (default: $MCPVS_MODEL_STORE or {default_model_store()})",
    )
    g_wf.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="where nnU-Net runs (auto: CUDA when torch sees a GPU)",
    )
    g_wf.add_argument(
        "--profile",
        choices=["auto", "fast-cpu", "full-gpu"],
        default="auto",
        help="nnU-Net inference profile: fast-cpu = one fold, no mirroring, step 0.75; "
        "full-gpu = all folds, mirroring, step 0.5 (the paper's); auto picks by device",
    )
    g_wf.add_argument(
        "--folds", nargs="+", type=int, default=None, help="nnU-Net folds (overrides the profile)"
    )
    g_wf.add_argument(
        "--mirroring",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time mirroring (overrides the profile)",
    )
    g_wf.add_argument(
        "--step-size",
        type=_step_size,
        default=None,
        help="sliding-window tile step, fraction of the patch (overrides the profile)",
    )
    g_wf.add_argument(
        "--wmh-derivatives",
        type=Path,
        default=None,
        metavar="DIR",
        help="BIDS-Derivatives with WMH masks (suffix mask, label/desc WMH) for PVS-WMH overlap",
    )
    g_wf.add_argument(
        "--lesion-mask",
        default=None,
        metavar="PATTERN",
        help="lesion mask per T1w (infarct, lacunes), on the T1w grid: a path, relative to "
        "bids_dir or absolute, with {subject} {session} {acquisition} {run} {prefix} and "
        "wildcards; default: a BIDS _label-lesion_roi or _desc-lesion_mask beside the T1w. "
        "The built-in method searches no PVS in it or within 3 mm of it",
    )
    g_wf.add_argument(
        "--reports-only",
        action="store_true",
        help="only rebuild the HTML reports from existing outputs",
    )

    g_group = parser.add_argument_group("group level")
    g_group.add_argument(
        "--covariates",
        nargs="+",
        action="extend",
        default=[],
        metavar="COLUMN",
        help="participants.tsv columns to regress PVSnm on (e.g. age hypertension wmh_norm)",
    )
    g_group.add_argument(
        "--visual-score-columns",
        nargs="+",
        action="extend",
        default=[],
        metavar="COLUMN",
        help="participants.tsv columns with visual PVS scores, as REGION=COLUMN or COLUMN "
        "(e.g. BG=bg_score WM=wm_score)",
    )
    g_group.add_argument(
        "--vendor-column",
        default=None,
        metavar="COLUMN",
        help="participants.tsv column with the scanner vendor (default: the T1w sidecar's "
        "Manufacturer)",
    )
    g_group.add_argument(
        "--manual-masks",
        type=Path,
        default=None,
        metavar="DIR",
        help="BIDS-Derivatives with manual PVS masks (desc-manual_mask) for Dice/Precision/Recall",
    )
    g_group.add_argument(
        "--min-group-size",
        type=positive_int,
        default=5,
        help="visual-score groups smaller than this are left out of ANOVA/post-hoc (paper: 5)",
    )
    g_group.add_argument(
        "--split-by-method",
        action="store_true",
        help="when outputs of several methods/models are present, analyse each in its own "
        "group-<method> folder (default: refuse to mix them)",
    )

    g_other = parser.add_argument_group("other")
    g_other.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="count",
        default=0,
        help="more log output (-v, -vv)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse the command line into a :class:`Settings`."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    values = vars(opts)
    values["command"] = ["mcpvs", *(sys.argv[1:] if argv is None else argv)]
    values["bids_filters"] = values.pop("bids_filter_file")
    if values["omp_nthreads"] is None:
        values["omp_nthreads"] = min(values["nprocs"], 8)
    elif values["omp_nthreads"] > values["nprocs"] and not values["plugin_settings"]:
        # MultiProc refuses a step that needs more threads than processes: every T1w failed
        # with "processing did not finish" (issue #17, item 14)
        parser.error(
            f"--omp-nthreads {values['omp_nthreads']} is more than --nprocs {values['nprocs']}: "
            "a step with that many threads could never start; raise --nprocs or lower "
            "--omp-nthreads"
        )
    if values["model_store"] is None:
        values["model_store"] = default_model_store()
    return Settings.from_options(
        values.pop("bids_dir"), values.pop("output_dir"), values.pop("analysis_level"), **values
    )
