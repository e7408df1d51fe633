"""The group level's analyses, one module each.

Every module has ``KEY`` (its section of group.html, see ``data/reports-spec.yml``) and
``run(ctx) -> dict | None``: it reads the cohort table from the :class:`Context`, writes its
tables with :meth:`Context.write` and may draw figures with :meth:`Context.figure`; what it
returns is what its section of the report shows. ``None`` (nothing asked for, or nothing to
analyse) leaves its section out. Notes (what could not be done and why) go to
:meth:`Context.note` and appear in that section, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mcpvs_bidsapp.errors import McpvsError
from mcpvs_bidsapp.outputs import spec

LOGGER = logging.getLogger("mcpvs.group")
REGION_KEYS = spec.GROUP_REGION_KEYS
REGIONS = spec.MEASURE_REGIONS
FIG_DIR = spec.GROUP_FIGURES_DIR


@dataclass
class Context:
    """What every analysis of one method group works from."""

    table: pd.DataFrame  #: one row per T1w
    settings: object  #: config.Settings
    dest: Path  #: where this group's tables and report go
    output_dir: Path  #: the derivatives root (participant reports, sub-* folders)
    notes: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  #: name -> path relative to dest
    results: dict[str, dict] = field(default_factory=dict)  #: section key -> what it shows

    @property
    def cross(self) -> pd.DataFrame:
        """One row per participant (first session/acq/run in sorted order): the
        cross-sectional analyses assume independent observations."""
        return self.table.drop_duplicates("participant_id", keep="first")

    @property
    def vendors(self) -> list[str]:
        """The known scanner vendors of the table (``n/a`` is not a vendor)."""
        return sorted(v for v in self.table["vendor"].unique() if v != "n/a")

    def note(self, section: str, text: str) -> None:
        notes = self.notes.setdefault(section, [])
        if text not in notes:
            notes.append(text)

    def write(self, frame: pd.DataFrame, stem: str) -> Path:
        """A table of this group (``spec.GROUP_TABLES[stem]`` describes its columns)."""
        from mcpvs_bidsapp.group.run import write_tsv

        path = write_tsv(frame, self.dest / f"{stem}.tsv", stem)
        self.files[stem] = path
        return path

    def figure(self, fig, name: str, fmt: str = "svg") -> str:
        """Save a matplotlib figure under ``group_figures/`` (atomically); returns its path
        relative to the report."""
        import matplotlib.pyplot as plt

        from mcpvs_bidsapp.outputs.write import atomic_path

        folder = self.dest / FIG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=110)
        plt.close(fig)
        self.figures[name] = f"{FIG_DIR}/{name}.{fmt}"
        return self.figures[name]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: below this many values a group is drawn as dots only (a box of 3 values says nothing)
BOX_MIN_N = 10


def strip(ax, groups: list[np.ndarray], labels: list[str], seed: int = 0) -> None:
    """One dot per value (jittered sideways) and a median bar per group; a box with Tukey
    whiskers only for groups of at least :data:`BOX_MIN_N` values."""
    rng = np.random.default_rng(seed)
    for i, values in enumerate(groups, start=1):
        values = np.asarray(values, float)
        values = values[np.isfinite(values)]
        if values.size >= BOX_MIN_N:
            ax.boxplot(
                values, positions=[i], widths=0.5, whis=1.5, showfliers=False,
                medianprops={"color": "#b00020"},
            )  # fmt: skip
        if values.size:
            ax.scatter(
                i + rng.uniform(-0.15, 0.15, values.size), values, s=14, alpha=0.7,
                color="#1f5fa8", edgecolor="none", zorder=3,
            )  # fmt: skip
            ax.plot([i - 0.25, i + 0.25], [np.median(values)] * 2, color="#b00020", lw=2)
    ax.set_xticks(range(1, len(groups) + 1), [f"{lab}\n(n={len(g)})" for lab, g in
                                               zip(labels, groups, strict=True)])  # fmt: skip
    ax.set_xlim(0.4, len(groups) + 0.6)


def analyse(table: pd.DataFrame, settings, dest: Path, output_dir: Path) -> Context:
    """Every analysis, in the order of the report's sections; returns the context with
    each section's results in ``ctx.results``."""
    from mcpvs_bidsapp.group.analyses import (
        agreement,
        distributions,
        frequency,
        icc,
        manual,
        outliers,
        regression,
        visual,
    )

    check_options(table, settings)  # a wrong option fails now, before anything is written
    ctx = Context(table=outliers.flag(table.copy()), settings=settings, dest=dest,
                  output_dir=output_dir)  # fmt: skip
    ctx.write(ctx.table, "group_pvs")
    if len(ctx.cross) < len(ctx.table):
        ctx.note(
            "overview",
            f"{len(ctx.table)} T1w images of {len(ctx.cross)} participants: regressions, "
            "correlations and ANOVAs use the first session/run of each participant",
        )
    for module in (distributions, frequency, agreement, visual, regression, icc, manual):
        try:
            result = module.run(ctx)
        except McpvsError:
            raise  # a wrong option or a broken file: the whole group level says so
        except Exception as err:
            if not getattr(module, "BEST_EFFORT", False):
                raise
            LOGGER.warning("group analysis %s failed: %s", module.KEY, err)
            ctx.note(module.KEY, f"not done: {type(err).__name__}: {err}")
            result = {}
        if result is not None:
            ctx.results.setdefault(module.KEY, {}).update(result)
    return ctx


def check_options(table: pd.DataFrame, settings, participants_matched: int | None = None) -> None:
    """Refuse, with one line, options that name what is not there or cannot be used (a
    participants.tsv column, a column mixing numbers and text, participant ids that match no
    output, the manual-mask folder): before anything is written or registered."""
    from mcpvs_bidsapp.errors import GroupError
    from mcpvs_bidsapp.group.analyses.visual import parse_visual_columns

    group = settings.group
    asked = []
    if group.covariates:
        columns = resolve_columns(table, group.covariates, "--covariates")
        check_value_types(table, columns, "--covariates", settings.bids_dir, numeric=False)
        asked.append("--covariates")
    if group.visual_score_columns:
        named = [c for _, c in parse_visual_columns(group.visual_score_columns)]
        columns = resolve_columns(table, named, "--visual-score-columns")
        check_value_types(table, columns, "--visual-score-columns", settings.bids_dir, numeric=True)
        asked.append("--visual-score-columns")
    if group.manual_masks and not Path(group.manual_masks).is_dir():
        raise GroupError(f"--manual-masks {group.manual_masks}: no such folder")
    if asked and participants_matched == 0:
        raise GroupError(
            f"{Path(settings.bids_dir) / 'participants.tsv'}: none of its participant_id values "
            f"matches a participant with outputs ({table['participant_id'].iloc[0]}, ...), so "
            f"{' and '.join(asked)} have no values; write the ids as sub-<label>"
        )


def check_value_types(
    table: pd.DataFrame, columns: list[str], option: str, bids_dir, *, numeric: bool
) -> None:
    """Refuse a column that mixes numbers and text (``90+`` among ages, ``1,5`` with a decimal
    comma): fitted as it is, each distinct value would become a category of its own and the
    real effect would vanish. With ``numeric`` (visual scores), any text cell is refused."""
    from mcpvs_bidsapp.errors import GroupError

    for column in columns:
        values = table.drop_duplicates("participant_id")[["participant_id", column]].dropna()
        if values.empty:
            continue
        as_number = pd.to_numeric(values[column], errors="coerce")
        bad = values[as_number.isna()]
        if bad.empty or (len(bad) == len(values) and not numeric):
            continue  # all numbers, or a text covariate (yes/no, site): categorical
        cells = ", ".join(
            f"{v!r} ({pid})" for pid, v in bad.head(3).itertuples(index=False, name=None)
        )
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise GroupError(
            f"{_column_file(bids_dir, column)}: column {column.removeprefix('participants_')!r} "
            f"({option}) {'must be numeric' if numeric else 'mixes numbers and text'}: "
            f"{len(bad)} of {len(values)} value(s) are not numbers: {cells}{more}; write them "
            "as numbers, or n/a to leave those participants out"
        )


def _column_file(bids_dir, column: str) -> str:
    """participants.tsv when the column is in its header, else the sessions.tsv files."""
    name = column.removeprefix("participants_")
    path = Path(bids_dir) / "participants.tsv" if bids_dir else Path("participants.tsv")
    try:
        header = path.read_text().splitlines()[0].split("\t")
    except (OSError, IndexError):
        header = []
    return str(path) if name in [h.strip() for h in header] else "sub-*/sub-*_sessions.tsv"


def resolve_columns(table: pd.DataFrame, columns: list[str], option: str) -> list[str]:
    """participants.tsv columns by the user's names (a name that clashes with one of ours,
    e.g. ``vendor``, was stored as ``participants_<name>``); one line if one is missing."""
    from mcpvs_bidsapp.errors import GroupError

    out = [f"participants_{c}" if f"participants_{c}" in table.columns else c for c in columns]
    missing = [c.removeprefix("participants_") for c in out if c not in table.columns]
    if missing:
        raise GroupError(
            f"{option} {' '.join(missing)}: no such column in participants.tsv or sessions.tsv "
            "(or no participants.tsv in bids_dir)"
        )
    return out
