"""Load the pickles of nnU-Net model files without running anything from them.

A pickle names callables (``GLOBAL module name``) that the unpickler looks up and calls; a
crafted one names ``builtins.open`` or ``os.system``. A checksum only proves the file did not
change since install, not that it was harmless then. So every pickle of a model — nnU-Net v2's
``checkpoint_*.pth``, v1's ``model_*.model`` (both torch files) and v1's ``plans.pkl`` and
``*.model.pkl`` (plain pickles) — is loaded here with an **allow-list** of the few globals real
files hold, and anything else is refused with one line that names the file and the global,
before it is called.

What real files hold (listed from files written by nnU-Net 1.7.1 and 2.8.1 here, and from the
classes shared/deps/README.md records for published v1 models):

* v1 ``plans.pkl`` / ``*.model.pkl``: ``collections.OrderedDict``, ``numpy.ndarray``,
  ``numpy.dtype``, ``numpy.core.multiarray._reconstruct`` and ``numpy.core.multiarray.scalar``
  (``numpy._core.*`` when written under numpy 2);
* torch checkpoints (v1 and v2): those plus torch's tensor rebuilders, ``torch.device`` and
  ``_codecs.encode`` (all in torch's own ``weights_only`` allow-list).

Torch files are read with ``torch.load(weights_only=True)`` (torch's restricted unpickler) and
the numpy globals above added for that call only (``torch.serialization.safe_globals``), never
process-wide. Plain pickles go through :class:`RestrictedUnpickler`, the standard library's
documented way to restrict globals (``Unpickler.find_class``). numpy 1 and numpy 2 spell the
module of ``scalar``/``_reconstruct`` differently (``numpy.core`` / ``numpy._core``); both names
are accepted and resolved to the running numpy's objects, so a 2023 (numpy 1) model loads under
numpy 2 and the other way round.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

from mcpvs_bidsapp.errors import ModelStoreError, UnsafeModelFileError

#: (module, name) of every global a real v1 plans.pkl / *.model.pkl holds
PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        # bytes in pickles of protocol < 3 (numpy scalars written by python-2-era code)
        ("_codecs", "encode"),
    }
)


def _numpy_object(module: str, name: str):
    """The running numpy's object for a numpy 1 or numpy 2 spelling of it."""
    import numpy as np

    if module == "numpy":
        return getattr(np, name)
    # numpy.core.multiarray (numpy 1) <-> numpy._core.multiarray (numpy 2)
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`PICKLE_GLOBALS`."""

    def __init__(self, fobj, *, path: Path, allowed=PICKLE_GLOBALS) -> None:
        super().__init__(fobj)
        self._path = path
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise UnsafeModelFileError(
                f"{self._path}: refusing to load it: its pickle calls {module}.{name}, which no "
                "nnU-Net model file holds (nothing from it was run)"
            )
        if module == "collections":
            import collections

            return getattr(collections, name)
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        return _numpy_object(module, name)


def load_pickle(path: str | Path) -> object:
    """A v1 ``plans.pkl`` or ``*.model.pkl``, unpickled with the allow-list."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelStoreError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), path=path).load()
    except UnsafeModelFileError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated or not a pickle: one line
        raise ModelStoreError(
            f"{path}: not a readable nnU-Net pickle ({type(err).__name__}: {err})"
        ) from None


#: numeric dtypes whose ``numpy.dtypes.*DType`` class torch must be told about: unpickling a
#: numpy scalar builds a dtype object and sets its state, and torch's unpickler sets state
#: only on allow-listed types (v1 checkpoints hold float32 and float64 scalars)
_DTYPE_CODES = ("?", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "e", "f", "d", "g")


def _torch_safe_globals() -> list:
    """The numpy globals of real checkpoints, under both numpy spellings, for torch."""
    import numpy as np

    out = []
    for module, name in sorted(PICKLE_GLOBALS):
        if module.startswith("numpy"):
            out.append((_numpy_object(module, name), f"{module}.{name}"))
    out.extend(sorted({type(np.dtype(code)) for code in _DTYPE_CODES}, key=str))
    return out


_UNSUPPORTED = (
    re.compile(r"Unsupported global: GLOBAL ([\w.]+)"),
    re.compile(r"but got <class '([\w.]+)'>"),
    re.compile(r"Unsupported operand (\w+)"),
)


def load_checkpoint(path: str | Path) -> dict:
    """A torch checkpoint (v2 ``checkpoint_*.pth``, v1 ``*.model``) loaded with
    ``weights_only=True`` and the numpy allow-list; tensors land on the CPU."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelStoreError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_torch_safe_globals()):
            checkpoint = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as err:
        found = [m.group(1) for p in _UNSUPPORTED if (m := p.search(str(err)))]
        what = found[0] if found else "an object torch's weights-only loader refuses"
        raise UnsafeModelFileError(
            f"{path}: refusing to load it: its pickle calls {what}, which no nnU-Net "
            "checkpoint holds (nothing from it was run)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelStoreError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not isinstance(checkpoint, dict):
        raise ModelStoreError(f"{path}: not an nnU-Net checkpoint (a {type(checkpoint).__name__})")
    return checkpoint
