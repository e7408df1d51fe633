"""The vocabulary of mcpvs's sidecars: keys, the N4 variant, software versions.

Each value a sidecar carries has one spelling here. The N4 variant, for instance, is the
:class:`N4Mask` enum everywhere in the code; its ``record`` text is what the
preprocessed T1w sidecar's ``N4.N4Mask`` field has said since the first release, and
:meth:`N4Mask.from_record` is the one place that reads it back (older outputs carry only
that text).
"""

from __future__ import annotations

from enum import StrEnum
from importlib import metadata

from mcpvs_bidsapp import __version__


class Key(StrEnum):
    """Top-level keys of the sidecars mcpvs writes (BIDS-style CamelCase)."""

    SOURCES = "Sources"
    SOFTWARE_VERSIONS = "SoftwareVersions"
    WARNINGS = "Warnings"
    METHOD = "Method"
    METHOD_VERSION = "MethodVersion"
    METHOD_DESCRIPTION = "MethodDescription"
    PARAMETERS = "Parameters"
    MODEL = "Model"
    MODEL_NAME = "ModelName"
    MODEL_CHECKSUM = "ModelChecksum"
    REGIONS_METHOD = "RegionsMethod"
    N4 = "N4"
    N4_MASK = "N4Mask"
    ICV_SOURCE = "IcvSource"
    WMH_SOURCE = "WMHSource"
    LESION_SOURCE = "LesionSource"
    #: measures sidecar: the raised QC flags, a list of {"flag", "message", "value",
    #: "threshold"} (empty: none raised; absent: outputs older than the checks); the report
    #: shows each message in a banner, the group table lists the flag names (qc_flags)
    QC_FLAGS = "QCFlags"
    #: measures sidecar: every QC check, {name: {"value", "threshold", "raised", ...}}
    QC_CHECKS = "QCChecks"
    INTENSITY_NORMALIZATION = "IntensityNormalization"
    LABELS = "Labels"
    DESCRIPTION = "Description"


class N4Mask(StrEnum):
    """Which mask N4 fits its bias field in (``--n4-mask``)."""

    #: the authors' call: no ``-x``, the whole (brain-masked) image is N4's mask
    WHOLE_IMAGE = "whole-image"
    #: the brain mask as N4's ``-x`` mask
    BRAIN = "brain"

    @property
    def record(self) -> str:
        """The ``N4.N4Mask`` text of the preprocessed T1w's sidecar."""
        return {N4Mask.WHOLE_IMAGE: "whole image (no -x)", N4Mask.BRAIN: "brain mask (-x)"}[self]

    @property
    def description(self) -> str:
        """How a report says it."""
        return {
            N4Mask.WHOLE_IMAGE: "whole image as N4's mask (the authors' call, no -x)",
            N4Mask.BRAIN: "brain mask as N4's mask (-x)",
        }[self]

    @property
    def methods_text(self) -> str:
        """How the methods paragraph says it."""
        return {
            N4Mask.WHOLE_IMAGE: "on the brain-masked image with the whole field of view as its "
            "mask",
            N4Mask.BRAIN: "within the brain mask",
        }[self]

    @property
    def short(self) -> str:
        """``whole`` / ``brain``: for folder labels."""
        return self.value.split("-")[0]

    @classmethod
    def parse(cls, value: object) -> N4Mask | None:
        """The variant from a measures sidecar's ``N4Mask`` (``whole-image``/``brain``), a
        preprocessed T1w ``N4.N4Mask`` record (``whole image (no -x)``), or None."""
        text = str(value or "").strip().lower()
        if not text or text == "n/a":
            return None
        return cls.WHOLE_IMAGE if text.startswith("whole") else cls.BRAIN

    @classmethod
    def from_record(cls, n4_parameters: dict) -> N4Mask | None:
        """The variant of a preprocessed T1w sidecar's ``N4`` record."""
        return cls.parse((n4_parameters or {}).get(Key.N4_MASK))


def n4_label(value: object) -> str:
    """``whole-image`` / ``brain`` / ``n/a`` for tables, from any spelling."""
    variant = N4Mask.parse(value)
    return variant.value if variant else "n/a"


#: packages whose versions every sidecar records
PACKAGES = (
    "nipype",
    "nibabel",
    "numpy",
    "antspyx",
    "intensity-normalization",
    "deepbet",
    "samseg",
    "nnunetv2",
    "torch",
    "scikit-image",
    "scipy",
)


def software_versions(extra: tuple[str, ...] = ()) -> dict:
    """Versions of mcpvs and of the packages that made the outputs."""
    versions = {"mcpvs": __version__}
    for name in PACKAGES + extra:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict:
    """Where a run ran: Python, platform, CPUs, container, and the software versions."""
    import os
    import platform

    from mcpvs_bidsapp.bids import container_info

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "container": container_info(),
        "software": software_versions(("pybids", "nilearn", "pandas", "statsmodels")),
    }
