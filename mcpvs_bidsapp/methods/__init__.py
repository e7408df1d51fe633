"""PVS segmenters and region schemes, each one file behind a registry.

A new PVS method is one module in :mod:`mcpvs_bidsapp.methods.pvs` (a new region scheme one
module in :mod:`mcpvs_bidsapp.methods.regions`) that calls :func:`register_segmenter`
(:func:`register_region_scheme`) when imported: the packages import every module they hold,
so the CLI's choices, the workflow, the memory checks and the methods text pick it up with no
other file touched. Code outside the package (a test, a plugin) may register its own too.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from mcpvs_bidsapp.errors import BIDSError
from mcpvs_bidsapp.methods.base import PVSSegmenter, RegionScheme

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mcpvs_bidsapp.config import Settings

SEGMENTERS: dict[str, PVSSegmenter] = {}
REGION_SCHEMES: dict[str, RegionScheme] = {}
_LOADED = False


def register_segmenter(segmenter: PVSSegmenter) -> PVSSegmenter:
    """Add a segmenter under its ``name`` (a later one of the same name replaces it)."""
    if not isinstance(segmenter, PVSSegmenter):
        raise TypeError(f"{segmenter!r} does not implement methods.base.PVSSegmenter")
    SEGMENTERS[segmenter.name] = segmenter
    return segmenter


def register_region_scheme(scheme: RegionScheme) -> RegionScheme:
    """Add a region scheme under its ``name``."""
    if not isinstance(scheme, RegionScheme):
        raise TypeError(f"{scheme!r} does not implement methods.base.RegionScheme")
    REGION_SCHEMES[scheme.name] = scheme
    return scheme


def load_builtin() -> None:
    """Import every module of ``methods.pvs`` and ``methods.regions`` (they register
    themselves). Cheap: the modules import their heavy dependencies only when they run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for package in ("mcpvs_bidsapp.methods.pvs", "mcpvs_bidsapp.methods.regions"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")


def segmenter_names() -> list[str]:
    load_builtin()
    return sorted(SEGMENTERS)


def region_scheme_names() -> list[str]:
    load_builtin()
    return sorted(REGION_SCHEMES)


def segmenter(name: str) -> PVSSegmenter:
    load_builtin()
    try:
        return SEGMENTERS[name]
    except KeyError:
        raise BIDSError(
            f"unknown PVS method {name!r} (choose from {', '.join(segmenter_names())})"
        ) from None


def region_scheme(name: str) -> RegionScheme:
    load_builtin()
    try:
        return REGION_SCHEMES[name]
    except KeyError:
        raise BIDSError(
            f"unknown regions method {name!r} (choose from {', '.join(region_scheme_names())})"
        ) from None


def resolve_segmenter(settings: Settings) -> tuple[PVSSegmenter, Mapping[str, Any]]:
    """The segmenter that runs, decided once for the whole invocation, and its options.

    ``auto`` takes the available segmenter of highest ``auto_priority`` (an installed nnU-Net
    model before the built-in method); the choice is logged and recorded in every sidecar.
    """
    import logging

    load_builtin()
    requested = settings.workflow.method
    if requested == "auto":
        ranked = sorted(
            (s for s in SEGMENTERS.values() if s.auto_priority is not None),
            key=lambda s: -s.auto_priority,
        )
        chosen = next((s for s in ranked if s.available(settings)), None)
        if chosen is None:
            raise BIDSError("--method auto: no PVS method is available")
        options = chosen.resolve(settings)
        # DEBUG: the plan's line names the method once the run is accepted; a refused run
        # (e.g. threads beyond the plugin's processes) stays one line
        logging.getLogger("mcpvs").debug("PVS method: %s (--method auto)", chosen.name)
        return chosen, options
    chosen = segmenter(requested)
    return chosen, chosen.resolve(settings)
