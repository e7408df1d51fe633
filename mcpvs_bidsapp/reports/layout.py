"""The reports' layout, read from ``data/reports-spec.yml``: which reportlets, titles,
captions and sections, in which order. One file to change a report's text or order."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mcpvs_bidsapp.outputs import spec

SPEC_FILE = Path(__file__).resolve().parents[1] / "data" / "reports-spec.yml"
#: the raw input T1w, for reportlets that draw it (every other file is a derivative key)
RAW_T1W = "raw_t1w"
#: the reportlet that is the interactive viewer, not a figure
VIEWER = "viewer"


@dataclass(frozen=True)
class Reportlet:
    key: str
    title: str
    caption: str
    function: str | None = None  #: in mcpvs_bidsapp.reports.reportlets (None: the viewer)
    files: dict = field(default_factory=dict)  #: argument -> raw_t1w or a derivative key
    options: dict = field(default_factory=dict)

    def paths(self, raw: Path | None, anat: Path, prefix: str) -> dict[str, Path | None]:
        """The file arguments of this reportlet for one T1w."""
        derivatives = {d.key: d for d in spec.DERIVATIVES}
        out: dict[str, Path | None] = {}
        for arg, name in self.files.items():
            out[arg] = raw if name == RAW_T1W else anat / derivatives[name].name(prefix)
        return out


@dataclass(frozen=True)
class Section:
    key: str
    title: str


@dataclass(frozen=True)
class Layout:
    participant: tuple[Reportlet, ...]
    failed: tuple[Reportlet, ...]
    group_sections: tuple[Section, ...]
    group_figures: dict  #: figure name -> {title, caption}

    def group_figure(self, name: str) -> dict:
        """Title and caption of a group figure; ``visual_volume_bg_score`` uses the entry
        of its family (``visual_volume``)."""
        for key in sorted(self.group_figures, key=len, reverse=True):
            if name == key or name.startswith(key + "_"):
                return self.group_figures[key]
        return {"title": name, "caption": ""}


def _reportlets(items: list[dict]) -> tuple[Reportlet, ...]:
    derivatives = {d.key for d in spec.DERIVATIVES} | {RAW_T1W}
    out = []
    for item in items:
        unknown = set(item.get("files", {}).values()) - derivatives
        if unknown:
            raise ValueError(f"{SPEC_FILE.name}: reportlet {item['key']}: unknown file {unknown}")
        out.append(
            Reportlet(
                key=item["key"],
                title=item["title"],
                caption=" ".join(str(item.get("caption", "")).split()),
                function=item.get("function"),
                files=dict(item.get("files", {})),
                options=dict(item.get("options", {})),
            )
        )
    return tuple(out)


@lru_cache(maxsize=1)
def load_layout(path: Path = SPEC_FILE) -> Layout:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    figures = {
        name: {"title": v["title"], "caption": " ".join(str(v.get("caption", "")).split())}
        for name, v in data["group"]["figures"].items()
    }
    return Layout(
        participant=_reportlets(data["participant"]["reportlets"]),
        failed=_reportlets(data["participant"]["failed"]),
        group_sections=tuple(Section(**s) for s in data["group"]["sections"]),
        group_figures=figures,
    )
