"""One settings object for a run, built from the command line.

Kept as a plain dataclass (not fMRIPrep's module-level singleton) because several runs may
live in one process in tests, and Nipype nodes receive the values they need explicitly.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

ENV_MODEL_STORE = "MCPVS_MODEL_STORE"
DEFAULT_MODEL_NAME = "mcpvsnet"


def default_model_store() -> Path:
    """Where installed nnU-Net models live: $MCPVS_MODEL_STORE or ~/.local/share/mcpvs/models."""
    env = os.environ.get(ENV_MODEL_STORE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcpvs" / "models"


def new_run_id() -> str:
    """Sortable run id: time stamp plus a short random suffix (unique across array tasks)."""
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:6]


@dataclass
class Settings:
    """Everything one invocation of ``mcpvs`` needs."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filters: dict = field(default_factory=dict)
    work_dir: Path | None = None
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    skip_bids_validation: bool = False
    stop_on_first_crash: bool = False
    verbosity: int = 0
    run_id: str = field(default_factory=new_run_id)
    reports_only: bool = False
    # preprocessing / regions
    regions: str = "samseg"
    n4_mask: str = "auto"  # auto | whole-image (the authors' call) | brain (-x brain mask)
    # segmentation
    method: str = "auto"  # auto | nnunet | vesselness
    model: str = DEFAULT_MODEL_NAME
    model_store: Path = field(default_factory=default_model_store)
    device: str = "auto"  # auto | cuda | cpu
    folds: list[int] | None = None  # None: every fold the model has
    mirroring: bool | None = None  # None: decided by the profile
    step_size: float | None = None
    profile: str = "auto"  # auto | fast-cpu | full-gpu
    # measures
    wmh_derivatives: Path | None = None
    # group level
    covariates: list[str] = field(default_factory=list)
    visual_score_columns: list[str] = field(default_factory=list)
    vendor_column: str | None = None
    manual_masks: Path | None = None
    min_group_size: int = 5
    split_by_method: bool = False  # group level: one analysis per method/model
    plugin_settings: Path | None = None

    def __post_init__(self) -> None:
        self.bids_dir = Path(self.bids_dir).absolute()
        self.output_dir = Path(self.output_dir).absolute()
        if self.work_dir is None:
            self.work_dir = Path.cwd() / "work"
        self.work_dir = Path(self.work_dir).absolute()
        self.model_store = Path(self.model_store).absolute()
        self.participant_label = [_strip_prefix(x, "sub-") for x in self.participant_label]
        self.session_label = [_strip_prefix(x, "ses-") for x in self.session_label]

    def to_json(self) -> str:
        """Serialisable record of the settings (written into the log folder)."""
        return json.dumps(asdict(self), default=str, indent=2)


def _strip_prefix(label: str, prefix: str) -> str:
    return label[len(prefix) :] if label.startswith(prefix) else label


def n4_mask_for(requested: str, method: str) -> str:
    """The N4 variant to run: ``auto`` follows the PVS method.

    An nnU-Net model gets the authors' whole-image N4, the image it was trained on. The
    built-in method gets the brain-mask N4: it was validated with it, and on a 1 mm head it
    takes 109 s instead of 594 s on 2 cores (docs/preprocessing.md).
    """
    if requested != "auto":
        return requested
    return "whole-image" if method == "nnunet" else "brain"
