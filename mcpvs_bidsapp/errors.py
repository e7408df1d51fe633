"""One exception family: every error a user should see as one line derives from McpvsError.

The CLI catches :class:`McpvsError` and prints its message as ``mcpvs: error: <message>``;
anything else is a bug and keeps its traceback. Each subclass keeps the built-in base its
callers already catch (``ValueError`` for a bad image, ``RuntimeError`` for a failed tool),
so code that caught those still works.
"""

from __future__ import annotations


class McpvsError(Exception):
    """A problem the user can act on; the message is one line naming the file and the fault."""


class BIDSError(McpvsError):
    """A problem with the input dataset, the selection or the output folder."""


class InputImageError(McpvsError, ValueError):
    """A T1w image that cannot be processed (the message starts with the file name)."""


class GroupError(McpvsError):
    """A problem with the inputs of the group level."""


class ModelStoreError(McpvsError):
    """A model cannot be installed, found or used."""


class ChecksumMismatchError(ModelStoreError):
    """An installed file no longer has the checksum recorded at install time."""


class SegmentationError(McpvsError, RuntimeError):
    """A PVS segmenter could not run on an image."""


class NnUNetError(SegmentationError):
    """The nnU-Net node could not run (bad input, unusable model)."""


class SamsegError(McpvsError, RuntimeError):
    """Samseg failed or gave unusable output."""
