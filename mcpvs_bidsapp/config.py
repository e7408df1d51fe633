"""What a user asked for (:class:`Settings`) and what will run (:class:`RunPlan`).

``Settings`` is the command line, in sections, with ``auto`` still in it. ``Settings.resolve()``
decides everything once, before any workflow is built: which PVS segmenter and model (checked),
which region scheme, which N4 variant, which resources and Nipype plugin. The result is a frozen
``RunPlan``: it is the workflow's whole configuration (``init_mcpvs_wf(plan, t1w_inputs)``), it is
logged once, and it is written to each participant's log folder as ``plan.json``, so every output
can be traced to the decisions that made it.

Plain dataclasses rather than fMRIPrep's module-level singleton, because several runs may live in
one process in tests, and Nipype nodes receive the values they need explicitly.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.outputs.provenance import N4Mask

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


def _strip_prefix(label: str, prefix: str) -> str:
    return label[len(prefix) :] if label.startswith(prefix) else label


# --- settings: what the user asked for --------------------------------------------------------


@dataclass
class Selection:
    """Which T1w images to process."""

    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filters: dict = field(default_factory=dict)
    skip_bids_validation: bool = False

    def __post_init__(self) -> None:
        self.participant_label = [_strip_prefix(x, "sub-") for x in self.participant_label]
        self.session_label = [_strip_prefix(x, "ses-") for x in self.session_label]


@dataclass
class Execution:
    """Where and with what resources the run happens."""

    work_dir: Path | None = None
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    plugin_settings: Path | None = None
    stop_on_first_crash: bool = False
    verbosity: int = 0
    run_id: str = field(default_factory=new_run_id)
    reports_only: bool = False
    #: the command line as typed (``mcpvs`` and its arguments), recorded in plan.json
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir if self.work_dir is not None else Path.cwd() / "work")
        self.work_dir = self.work_dir.absolute()


@dataclass
class WorkflowOptions:
    """Choices that change the numbers (all recorded in the sidecars)."""

    regions: str = "samseg"
    n4_mask: str = "auto"  #: auto | whole-image | brain (see outputs.provenance.N4Mask)
    method: str = "auto"  #: auto | a registered PVS segmenter
    wmh_derivatives: Path | None = None
    #: ``--lesion-mask``: a path pattern per T1w (see bids.lesion_from_pattern); None: BIDS
    #: lesion masks beside the T1w, if any
    lesion_mask: str | None = None


@dataclass
class ModelOptions:
    """The nnU-Net model and its inference settings."""

    name: str = DEFAULT_MODEL_NAME
    store: Path = field(default_factory=default_model_store)
    device: str = "auto"  #: auto | cuda | cpu
    folds: list[int] | None = None  #: None: from the profile
    mirroring: bool | None = None  #: None: from the profile
    step_size: float | None = None
    profile: str = "auto"  #: auto | fast-cpu | full-gpu

    def __post_init__(self) -> None:
        self.store = Path(self.store).absolute()


@dataclass
class GroupOptions:
    """The group level's analyses."""

    covariates: list[str] = field(default_factory=list)
    visual_score_columns: list[str] = field(default_factory=list)
    vendor_column: str | None = None
    manual_masks: Path | None = None
    min_group_size: int = 5
    split_by_method: bool = False


@dataclass
class Settings:
    """Everything one invocation of ``mcpvs`` was asked to do, in sections."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    selection: Selection = field(default_factory=Selection)
    execution: Execution = field(default_factory=Execution)
    workflow: WorkflowOptions = field(default_factory=WorkflowOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    group: GroupOptions = field(default_factory=GroupOptions)

    def __post_init__(self) -> None:
        self.bids_dir = Path(self.bids_dir).absolute()
        self.output_dir = Path(self.output_dir).absolute()

    @classmethod
    def from_options(cls, bids_dir, output_dir, analysis_level, **options) -> Settings:
        """Build from flat option names (the parser's ``dest`` names), each going to the
        section that declares it; an unknown name is a programming error (TypeError)."""
        values: dict[str, dict] = {name: {} for name in _SECTIONS}
        for key, value in options.items():
            if key not in _FLAT_NAMES:
                raise TypeError(f"unknown setting {key!r}")
            section, name = _FLAT_NAMES[key]
            values[section][name] = value
        return cls(
            bids_dir,
            output_dir,
            analysis_level,
            **{name: section(**values[name]) for name, section in _SECTIONS.items()},
        )

    def resolve(self) -> RunPlan:
        """Decide everything ``auto`` leaves open; one line (:class:`BIDSError`) if impossible."""
        from mcpvs_bidsapp import methods
        from mcpvs_bidsapp.engine.plugin import plugin_from_settings

        scheme = methods.region_scheme(self.workflow.regions)
        segmenter, method_options = methods.resolve_segmenter(self)
        requested = self.workflow.n4_mask
        n4_mask = segmenter.default_n4_mask if requested == "auto" else N4Mask(requested)
        plugin, plugin_args = plugin_from_settings(self.execution)
        slots = plugin_args.get("n_procs") if plugin == "MultiProc" else None
        if slots and self.execution.omp_nthreads > int(slots):
            raise BIDSError(
                f"--omp-nthreads {self.execution.omp_nthreads} is more than the {slots} "
                "processes MultiProc may run: a step with that many threads could never start"
            )
        resources = Resources(
            nprocs=self.execution.nprocs,
            omp_nthreads=self.execution.omp_nthreads,
            mem_gb=self.execution.mem_gb,
            plugin=plugin,
            plugin_args=MappingProxyType(dict(plugin_args)),
            stop_on_first_crash=self.execution.stop_on_first_crash,
        )
        return RunPlan(
            run_id=self.execution.run_id,
            bids_dir=self.bids_dir,
            output_dir=self.output_dir,
            work_dir=Path(self.execution.work_dir),
            method=segmenter.name,
            method_options=MappingProxyType(dict(method_options)),
            regions=scheme.name,
            n4_mask=n4_mask,
            n4_mask_requested=requested,
            method_requested=self.workflow.method,
            resources=resources,
            wmh_derivatives=self.workflow.wmh_derivatives,
            command=tuple(self.execution.command),
            lesion_mask=self.workflow.lesion_mask,
        )


_SECTIONS = {
    "selection": Selection,
    "execution": Execution,
    "workflow": WorkflowOptions,
    "model": ModelOptions,
    "group": GroupOptions,
}
#: flat option name (the parser's dest) -> (section, field); ModelOptions' name and store are
#: ``--model`` and ``--model-store`` on the command line
_FLAT_NAMES = {
    f.name: (section, f.name)
    for section, klass in _SECTIONS.items()
    for f in fields(klass)
    if klass is not ModelOptions
} | {
    ("model" if f.name == "name" else "model_store" if f.name == "store" else f.name): (
        "model",
        f.name,
    )
    for f in fields(ModelOptions)
}


# --- the resolved plan: what will run ----------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """What the Nipype engine may use."""

    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None  #: the memory budget; None: this machine's memory
    plugin: str = "MultiProc"
    plugin_args: Any = field(default_factory=lambda: MappingProxyType({}))
    stop_on_first_crash: bool = False


@dataclass(frozen=True)
class RunPlan:
    """Every decision of one participant-level run, made once (see :meth:`Settings.resolve`)."""

    run_id: str
    bids_dir: Path
    output_dir: Path
    work_dir: Path
    method: str  #: a key of ``methods.SEGMENTERS``
    method_options: Any  #: the segmenter's resolved options (e.g. model name and checksum)
    regions: str  #: a key of ``methods.REGION_SCHEMES``
    n4_mask: N4Mask
    n4_mask_requested: str = "auto"
    method_requested: str = "auto"  #: what --method said (``method`` is what it resolved to)
    resources: Resources = field(default_factory=Resources)
    wmh_derivatives: Path | None = None
    lesion_mask: str | None = None
    mcpvs_version: str = __version__
    command: tuple[str, ...] = ()  #: the command line that asked for this run

    def __post_init__(self) -> None:
        if not isinstance(self.n4_mask, N4Mask):
            object.__setattr__(self, "n4_mask", N4Mask(self.n4_mask))
        if not isinstance(self.method_options, MappingProxyType):
            object.__setattr__(
                self, "method_options", MappingProxyType(dict(self.method_options or {}))
            )

    @property
    def segmenter(self):
        from mcpvs_bidsapp import methods

        return methods.segmenter(self.method)

    @property
    def region_scheme(self):
        from mcpvs_bidsapp import methods

        return methods.region_scheme(self.regions)

    def to_dict(self) -> dict:
        def plain(value):
            if isinstance(value, MappingProxyType | dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, N4Mask):
                return value.value
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)} | {
            "resources": {f.name: plain(getattr(self.resources, f.name)) for f in fields(Resources)}
        }

    def to_json(self, environment: dict | None = None) -> str:
        """``plan.json``: the plan, and the environment it ran in when given
        (:func:`mcpvs_bidsapp.outputs.provenance.environment`)."""
        data = self.to_dict() | ({"environment": environment} if environment else {})
        return json.dumps(data, indent=2) + "\n"

    def describe(self) -> str:
        """One line for the log."""
        options = ", ".join(f"{k}={v}" for k, v in self.method_options.items())
        return (
            f"method {self.method}{f' ({options})' if options else ''}"
            f"{' (--method auto)' if self.method_requested == 'auto' else ''}; "
            f"regions {self.regions}; "
            f"N4 mask {self.n4_mask.value}"
            f"{' (auto)' if self.n4_mask_requested == 'auto' else ''}; "
            f"{self.resources.nprocs} process(es) x {self.resources.omp_nthreads} thread(s)"
        )


__all__ = [
    "BIDSError",
    "Execution",
    "GroupOptions",
    "ModelOptions",
    "Resources",
    "RunPlan",
    "Selection",
    "Settings",
    "WorkflowOptions",
]
