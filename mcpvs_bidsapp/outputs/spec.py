"""Every derivative, table column and region code of mcpvs, named once.

Derivative file names follow BIDS-Derivatives: ``<prefix>_<entities>_<suffix><extension>``
where ``<prefix>`` is the input T1w's name without ``_T1w.nii[.gz]`` (``sub-01_ses-1_run-2``)
and ``space-T1w`` marks the input's own voxel grid. docs/outputs.md describes the same
contract for users; a test checks that the two name the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np

# --- BIDS entities ------------------------------------------------------------------------

#: entities a T1w may carry, (long name, file-name key), in the order BIDS writes them
ENTITIES: tuple[tuple[str, str], ...] = (
    ("subject", "sub"),
    ("session", "ses"),
    ("task", "task"),
    ("acquisition", "acq"),
    ("ceagent", "ce"),
    ("reconstruction", "rec"),
    ("direction", "dir"),
    ("run", "run"),
    ("echo", "echo"),
    ("flip", "flip"),
    ("inv", "inv"),
    ("mtransfer", "mt"),
    ("part", "part"),
    ("chunk", "chunk"),
)
ENTITY_BY_KEY = {key: name for name, key in ENTITIES}


# --- regions ------------------------------------------------------------------------------


class Region(IntEnum):
    """Codes of ``desc-regions_dseg`` (every region scheme writes these)."""

    BACKGROUND = 0
    BG = 1  #: basal ganglia: caudate, putamen, pallidum (both hemispheres)
    WM = 2  #: cerebral white matter
    OTHER = 3  #: any other brain tissue

    @property
    def label(self) -> str:
        return _REGION_LABELS[self]


_REGION_LABELS = {
    Region.BACKGROUND: "background",
    Region.BG: "BG",
    Region.WM: "WM",
    Region.OTHER: "other",
}
#: ``desc-regions_dseg.tsv`` and the dseg sidecar's ``Labels``: (index, name)
REGION_TABLE: tuple[tuple[int, str], ...] = tuple((int(r), r.label) for r in Region)
#: the regions PVS are segmented and measured in
PVS_REGIONS: tuple[Region, ...] = (Region.BG, Region.WM)
#: rows of ``desc-pvs_measures.tsv``: the PVS regions, then the whole brain mask
WHOLE_BRAIN = "whole_brain"
MEASURE_REGIONS: tuple[str, ...] = (*(r.label for r in PVS_REGIONS), WHOLE_BRAIN)
#: the ``<region>_`` prefix of the group table's columns for each measures row
GROUP_REGION_KEYS = {"BG": "bg", "WM": "wm", WHOLE_BRAIN: WHOLE_BRAIN}


def region_of_label(code: int) -> str:
    """The measures/census region name of a dseg code (``other`` for anything else)."""
    return {int(r): r.label for r in PVS_REGIONS}.get(int(code), Region.OTHER.label)


#: PVS clusters are 26-connected components, as a rater counts a tube crossing slices
#: diagonally (measures, the built-in method, the element metrics)
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


# --- derivatives --------------------------------------------------------------------------


@dataclass(frozen=True)
class Derivative:
    """One file mcpvs writes for each T1w."""

    key: str
    entities: str  #: ``desc-brain_mask``: everything between the prefix and the extension
    extension: str
    dtype: str | None = None  #: NIfTI data type on disk
    description: str = ""
    sidecar: bool = True  #: a JSON sidecar beside it

    def name(self, prefix: str, extension: str | None = None) -> str:
        return f"{prefix}_{self.entities}{self.extension if extension is None else extension}"

    @property
    def suffix(self) -> str:
        """``_desc-brain_mask.nii.gz``: what follows the prefix (for scanning folders)."""
        return f"_{self.entities}{self.extension}"

    @property
    def sidecar_suffix(self) -> str:
        return f"_{self.entities}.json"


BRAIN_MASK = Derivative(
    "brain_mask", "desc-brain_mask", ".nii.gz", "uint8", "brain mask of the regions scheme"
)
PREPROC_T1W = Derivative(
    "preproc_t1w",
    "desc-preproc_T1w",
    ".nii.gz",
    "float32",
    "brain-masked T1w after N4 bias correction and FCM white-matter intensity normalisation",
)
REGIONS_DSEG = Derivative(
    "regions_dseg", "desc-regions_dseg", ".nii.gz", "uint8", "BG/WM/other regions (Region codes)"
)
PVS_MASK = Derivative("pvs_mask", "space-T1w_desc-pvs_mask", ".nii.gz", "uint8", "binary PVS mask")
PVS_PROBSEG = Derivative(
    "pvs_probseg",
    "space-T1w_desc-pvs_probseg",
    ".nii.gz",
    "float32",
    "PVS probability (nnunet) or score (vesselness), 0-1",
)
MEASURES = Derivative("measures", "desc-pvs_measures", ".tsv", description="measures per region")
CLUSTERS = Derivative(
    "clusters", "desc-pvs_clusters", ".tsv", description="one row per PVS cluster", sidecar=False
)
#: in the order the writer commits them
DERIVATIVES: tuple[Derivative, ...] = (
    BRAIN_MASK,
    PREPROC_T1W,
    REGIONS_DSEG,
    PVS_MASK,
    PVS_PROBSEG,
    MEASURES,
    CLUSTERS,
)
IMAGES: tuple[Derivative, ...] = tuple(d for d in DERIVATIVES if d.extension == ".nii.gz")
#: written last of a T1w's set, so its presence means the whole set is there
COMMIT_MARKER = PVS_MASK

#: ``GeneratedBy[].Name`` in mcpvs's dataset_description.json (how a folder is known as ours)
PIPELINE_NAME = "mcpvs"
#: top-level files of the derivatives folder
DATASET_DESCRIPTION = "dataset_description.json"
REGION_TABLE_FILE = f"{REGIONS_DSEG.entities}.tsv"
STATUS_FILE = "mcpvs_status.json"
PLAN_FILE = "plan.json"
#: held by the run processing a participant (execution/locks.py), beside its log folders
LOCK_FILE = "mcpvs.lock"


def anat_dir(entities: dict) -> Path:
    """Relative folder of a T1w's derivatives, ``sub-X[/ses-Y]/anat``, from long entities."""
    parts = [f"sub-{entities['subject']}"]
    if entities.get("session"):
        parts.append(f"ses-{entities['session']}")
    return Path(*parts, "anat")


def derivative_path(output_dir: Path | str, t1w, derivative: Derivative, extension=None) -> Path:
    """Where ``derivative`` of ``t1w`` (a :class:`mcpvs_bidsapp.bids.T1wInput`) lives."""
    return Path(output_dir) / t1w.anat_dir / derivative.name(t1w.prefix, extension)


def sidecar_path(image_path: Path | str) -> Path:
    """``x.nii.gz`` / ``x.tsv`` -> ``x.json``."""
    path = Path(image_path)
    return path.with_name(path.name.split(".")[0] + ".json")


def log_dir(output_dir: Path | str, participant_label: str, run_id: str) -> Path:
    """``<output_dir>/sub-<label>/log/<run_id>``: crash files, the status and the plan."""
    return Path(output_dir) / f"sub-{participant_label}" / "log" / run_id


def lock_path(output_dir: Path | str, participant_label: str) -> Path:
    """``<output_dir>/sub-<label>/log/mcpvs.lock``: one run per participant at a time."""
    return Path(output_dir) / f"sub-{participant_label}" / "log" / LOCK_FILE


def work_lock_path(work_dir: Path | str, participant_label: str) -> Path:
    """The same lock in the work dir (two output folders may share one work dir)."""
    return Path(work_dir) / "locks" / f"sub-{participant_label}.lock"


#: top-level folder of the scripts the reports share (the viewer: niivue and ours)
REPORT_ASSETS_DIR = "report_assets"


def nipype_log(work_dir: Path | str, run_id: str) -> Path:
    """The log file of one participant-level invocation (Nipype's and mcpvs's lines)."""
    return Path(work_dir) / "logs" / f"nipype-{run_id}.log"


def report_path(output_dir: Path | str, participant_label: str) -> Path:
    return Path(output_dir) / f"sub-{participant_label}.html"


def figures_dir(output_dir: Path | str, participant_label: str) -> Path:
    return Path(output_dir) / f"sub-{participant_label}" / "figures"


def viewer_data_path(output_dir: Path | str, participant_label: str, prefix: str) -> Path:
    """The viewer's volumes of one T1w, as a script beside its figures."""
    return figures_dir(output_dir, participant_label) / f"{prefix}_desc-viewer.js"


# --- tables -------------------------------------------------------------------------------

#: ``desc-pvs_measures.tsv``: column -> BIDS column description (also its JSON sidecar)
MEASURE_COLUMNS: dict[str, dict[str, str]] = {
    "region": {
        "Description": "BG (basal ganglia), WM (cerebral white matter) or whole_brain",
    },
    "pvs_volume_mm3": {"Description": "PVS volume in the region", "Units": "mm^3"},
    "pvs_count": {
        "Description": "PVS clusters (26-connected) whose centroid lies in the region",
    },
    "mean_cluster_volume_mm3": {"Description": "pvs_volume_mm3 / pvs_count", "Units": "mm^3"},
    "region_volume_mm3": {"Description": "volume of the region", "Units": "mm^3"},
    "icv_mm3": {"Description": "intracranial volume (see IcvSource)", "Units": "mm^3"},
    "pvsnm": {"Description": "normalised PVS volume, 1e6 * pvs_volume_mm3 / icv_mm3"},
    "wmh_overlap_pct": {
        "Description": "percentage of the region's PVS voxels inside the WMH mask",
        "Units": "%",
    },
    "est_visual_score": {
        "Description": "estimated visual PVS score (1-4): the paper's rating rule for the "
        "region (section 2.6; BG: <5, 5-10, >10, uncountable PVS on the rating section; WM: "
        "<10 in total, <=10, 11-20, >20 in the section with the most) applied to the PVS mask "
        "(mcpvs_bidsapp/visual_scores.py); BG and WM rows only",
        "Levels": {
            "1": "BG <5 on the section; WM <10 in total",
            "2": "BG 5-10; WM >=10 in total, <=10 in every section",
            "3": "BG >10, countable; WM 11-20 in the section with the most",
            "4": "BG uncountable (>20); WM >20 in a section",
        },
    },
    "est_visual_count": {
        "Description": "PVS (8-connected in the section) counted on the rating section: the "
        "axial section of the region with the most PVS",
    },
    "est_visual_section": {
        "Description": "that axial section: its index in the image reoriented to RAS (the "
        "report's slice numbers)",
    },
}
#: measures columns copied into the group table as ``<region key>_<column>``
GROUP_MEASURE_COLUMNS: tuple[str, ...] = (
    "pvs_volume_mm3",
    "pvs_count",
    "mean_cluster_volume_mm3",
    "region_volume_mm3",
    "pvsnm",
    "wmh_overlap_pct",
    "est_visual_score",
    "est_visual_count",
    "est_visual_section",
)
#: measures columns that only the BG and WM rows have (``n/a`` for the whole brain)
VISUAL_SCORE_COLUMNS: tuple[str, ...] = (
    "est_visual_score",
    "est_visual_count",
    "est_visual_section",
)
#: ``desc-pvs_clusters.tsv``
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster_id",
    "region",
    "volume_mm3",
    "n_voxels",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "length_mm",
    "mean_width_mm",
    "orientation_x",
    "orientation_y",
    "orientation_z",
)
#: what must be equal for PVS volumes to be comparable in one group analysis: the method,
#: the exact model, how the regions were made, and the N4 variant
METHOD_COLUMNS: tuple[str, ...] = (
    "method",
    "model_name",
    "model_checksum",
    "regions_method",
    "n4_mask",
)
#: how a TSV of mcpvs writes a missing value
NA = "n/a"
#: the group table's ``qc_flags`` when the QC checks ran and raised nothing
QC_OK = "ok"
#: strings read back as missing
NA_STRINGS = frozenset({"", "n/a", "na", "nan", "none", "null"})

# --- group level --------------------------------------------------------------------------

GROUP_FIGURES_DIR = "group_figures"
GROUP_REPORT = "group.html"
#: the common space of the cohort frequency map: nilearn's MNI152 (ICBM152 2009a asymmetric)
TEMPLATE_SPACE = "MNI152NLin2009aAsym"
GROUP_FREQUENCY_MAP = f"group_space-{TEMPLATE_SPACE}_desc-pvsfrequency_probseg.nii.gz"
#: group table stem -> its columns' descriptions (the TSV's JSON sidecar)
GROUP_TABLES: dict[str, dict[str, str]] = {
    "group_pvs": {
        "participant_id": "sub-<label>",
        "session": "ses-<label> value, n/a without sessions",
        "acquisition": "acq-<label> value or n/a",
        "run": "run-<index> value or n/a",
        "prefix": "entities of the input T1w (file-name prefix of its outputs)",
        "<region>_pvs_volume_mm3": "PVS volume in the region (bg, wm, whole_brain), mm^3",
        "<region>_pvs_count": "PVS clusters whose centroid lies in the region",
        "<region>_mean_cluster_volume_mm3": "pvs_volume_mm3 / pvs_count",
        "<region>_region_volume_mm3": "volume of the region itself, mm^3",
        "<region>_pvsnm": "1e6 x PVS volume / ICV (the paper's PVSnm)",
        "<region>_wmh_overlap_pct": "% of PVS voxels inside the WMH mask",
        "<region>_est_visual_score": "estimated visual score (1-4) by the paper's rule (bg, wm)",
        "<region>_est_visual_count": "PVS counted on the rating section (bg, wm)",
        "<region>_est_visual_section": "axial section (RAS index) the score was read on",
        "icv_mm3": "intracranial volume, mm^3",
        "method": "PVS segmentation method (nnunet or vesselness)",
        "model_name": "nnU-Net model name (n/a for vesselness)",
        "model_checksum": "checksum of the installed model (n/a for vesselness)",
        "regions_method": "how the BG/WM regions were made (samseg or fast)",
        "n4_mask": "N4 variant: whole-image (the authors' call) or brain (-x brain mask)",
        "icv_source": "where icv_mm3 comes from",
        "mcpvs_version": "mcpvs version that made the PVS mask",
        "qc_flags": "QC flags the measures sidecar raised (QCFlags), joined by ';'; ok: none; "
        "n/a: outputs older than the checks",
        "manufacturer": "Manufacturer from the T1w JSON sidecar (BIDS inheritance applied)",
        "manufacturers_model_name": "ManufacturersModelName from the T1w sidecar",
        "magnetic_field_strength": "MagneticFieldStrength (T) from the T1w sidecar",
        "measures_file": "the desc-pvs_measures.tsv this row comes from",
        "vendor": "scanner vendor used for grouping (normalised Manufacturer, or --vendor-column)",
        "outlier_regions": "regions whose PVSnm lies outside Tukey's fences (1.5 IQR)",
        "(other)": "columns of participants.tsv, as they are",
    },
    "group_failures": {
        "participant_id": "sub-<label>",
        "session": "session of the failed T1w or n/a",
        "source": "the input T1w, relative to bids_dir",
        "status": "status recorded by the newest participant-level run of this T1w",
        "error": "its error message",
        "run_id": "the participant-level invocation that recorded it",
        "status_file": "the mcpvs_status.json it was read from",
    },
    "group_stats_regression": {
        "outcome": "dependent variable (bg_pvsnm or wm_pvsnm)",
        "model": "covariates, or covariates+vendor (scanner vendor dummies added)",
        "term": "predictor; categorical ones as column[T.level] against a reference level",
        "beta_std": "standardised beta (OLS on z-scored outcome and predictors)",
        "beta_std_ci_low": "95 % CI of beta_std, lower bound",
        "beta_std_ci_high": "95 % CI of beta_std, upper bound",
        "b": "unstandardised coefficient (PVSnm units per unit of the predictor)",
        "b_ci_low": "95 % CI of b, lower bound",
        "b_ci_high": "95 % CI of b, upper bound",
        "se": "standard error of b",
        "t": "t statistic",
        "p": "two-sided p-value",
        "n": "participants in the model (complete cases)",
        "r2": "model R^2",
        "r2_adj": "adjusted R^2",
        "f": "model F statistic",
        "f_p": "p-value of the model F test",
    },
    "group_stats_visual_spearman": {
        "region": "BG, WM or whole_brain",
        "score_column": "participants.tsv column with the visual score",
        "vendor": "all, or one vendor",
        "n": "participants with both values",
        "rho": "Spearman's rank correlation of PVS volume with the score",
        "ci_low": "95 % CI (Fisher z, Bonett & Wright SE), lower bound",
        "ci_high": "95 % CI, upper bound",
        "p": "two-sided p-value (scipy.stats.spearmanr)",
    },
    "group_stats_visual_anova": {
        "region": "BG, WM or whole_brain",
        "score_column": "visual score column",
        "vendor": "all, or one vendor",
        "groups": "score groups analysed (>= --min-group-size participants)",
        "excluded_groups": "score groups left out as too small, with their sizes",
        "n": "participants analysed",
        "k": "number of groups",
        "f": "one-way ANOVA F",
        "df1": "numerator degrees of freedom",
        "df2": "denominator degrees of freedom",
        "p": "ANOVA p-value",
        "eta2": "eta squared (between-group / total sum of squares)",
        "welch_f": "Welch's ANOVA F (unequal variances)",
        "welch_df2": "Welch denominator degrees of freedom",
        "welch_p": "Welch's ANOVA p-value",
    },
    "group_stats_visual_posthoc": {
        "region": "BG, WM or whole_brain",
        "score_column": "visual score column",
        "vendor": "all, or one vendor",
        "group1": "first score group",
        "group2": "second score group",
        "n1": "size of group1",
        "n2": "size of group2",
        "mean1": "mean PVS volume of group1, mm^3",
        "mean2": "mean PVS volume of group2, mm^3",
        "diff": "mean2 - mean1",
        "ci_low": "simultaneous 95 % CI of diff (Dunnett's T3), lower bound",
        "ci_high": "upper bound",
        "hedges_g": "standardised mean difference (Hedges' g)",
        "se": "standard error of diff (unpooled)",
        "t": "Welch t statistic",
        "df": "Welch-Satterthwaite degrees of freedom",
        "p_adj": "Dunnett's T3 p-value (studentized maximum modulus, all pairs)",
    },
    "group_stats_visual_agreement": {
        "region": "BG or WM",
        "score_column": "participants.tsv column with the rated visual score",
        "vendor": "all, or one vendor",
        "n": "participants with both a rated and an estimated score",
        "kappa_linear": "Cohen's kappa with linear weights (scikit-learn), rated vs estimated",
        "kappa_quadratic": "Cohen's kappa with quadratic weights",
        "kappa_quadratic_ci_low": "95 % percentile-bootstrap CI (1000 resamples, n >= 10)",
        "kappa_quadratic_ci_high": "upper bound",
        "exact_pct": "% of participants whose estimated score equals the rated one",
        "within_one_pct": "% within one score point",
        "mean_difference": "mean of estimated - rated (positive: the masks hold more PVS)",
    },
    "group_stats_icc": {
        "region": "BG, WM or whole_brain (PVS volume)",
        "vendor": "all, or one vendor",
        "type": "ICC1, ICC2 or ICC3 (Shrout & Fleiss 1979)",
        "description": "model and definition",
        "icc": "intra-class correlation",
        "f": "F statistic of the test ICC = 0",
        "df1": "numerator degrees of freedom",
        "df2": "denominator degrees of freedom",
        "p": "p-value",
        "ci_low": "95 % CI, lower bound",
        "ci_high": "95 % CI, upper bound",
        "n_targets": "participants with all sessions used",
        "n_measurements": "sessions per participant",
        "sessions": "the session labels used, in order",
    },
    "group_stats_manual": {
        "vendor": "all, or one vendor",
        "n": "T1w images with a manual mask",
        "<metric>_mean": "mean Dice / Precision / Recall",
        "<metric>_sd": "their standard deviation",
        "volume_r": "Pearson r between manual and PVS-mask volumes",
        "volume_r_ci_low": "95 % CI, lower bound",
        "volume_r_ci_high": "upper bound",
        "volume_r_p": "p-value",
    },
    "group_manual_metrics": {
        "participant_id": "sub-<label>",
        "session": "session or n/a",
        "prefix": "entities of the T1w",
        "vendor": "scanner vendor",
        "manual_mask": "the manual mask compared",
        "error": "why this pair could not be compared, else n/a",
        "dice": "2 TP / (2 TP + FP + FN)",
        "precision": "TP / (TP + FP)",
        "recall": "TP / (TP + FN)",
        "tp_voxels": "voxels in both masks",
        "fp_voxels": "voxels only in the PVS mask",
        "fn_voxels": "voxels only in the manual mask",
        "pvs_volume_mm3": "PVS mask volume, mm^3",
        "manual_volume_mm3": "manual mask volume, mm^3",
    },
}
