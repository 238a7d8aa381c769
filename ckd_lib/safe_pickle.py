"""Reading the pickles other people's files are made of, without running their code.

Why: unpickling can call any importable function, so a file placed in a data or teacher folder
could run code as the trainer. The two kinds of pickle the study reads from outside are plain:
CIFAR's python batches (dicts of numpy arrays, lists and bytes) and Detectron2's model-zoo
checkpoints (dicts of numpy arrays). This unpickler resolves only the names such files need and
refuses everything else before it is called (:class:`UnsafePickleError`). PyTorch files are read
with ``torch.load(weights_only=True)`` instead (``ckd_lib.results.load_state``).
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to something other than numpy arrays (it could run code)."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it (bytes stored as latin-1 text), nothing else.

    Other codecs (zlib, base64, ...) are not code execution, but no array needs them, so a pickle
    that asks for one is not a plain data file.
    """
    spelled = encoding.lower().replace("-", "").replace("_", "") if isinstance(encoding, str) \
        else None
    if not isinstance(text, str) or spelled != "latin1":
        raise UnsafePickleError(f"pickle asks _codecs.encode for {type(text).__name__} with "
                                f"encoding {encoding!r}; only str with 'latin1' is accepted")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only names a data pickle may load: what numpy arrays and their dicts need.

    numpy 2 pickles under ``numpy._core``, numpy 1 under ``numpy.core``; both spellings resolve
    to the installed numpy's functions, so a file written by either version loads.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        # Protocol 2 writes empty bytes as a call of bytes(); fix_imports names it __builtin__.
        ("__builtin__", "bytes"): bytes,
        ("builtins", "bytes"): bytes,
        # A state dict saved as an OrderedDict; building one runs no code of the file's choosing.
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``_allowed_globals``: a hostile pickle fails before it runs."""

    def __init__(self, file, source: str, what: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source
        self._what = what
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in self._allowed))
            raise UnsafePickleError(
                f"{self._source}: the pickle refers to {module}.{name}, which {self._what} "
                f"does not need; refused without calling it (accepted: {allowed})")
        return found


def load_numpy_pickle(path: str | Path, what: str = "a data file"):
    """Unpickle ``path`` allowing numpy arrays, plain containers, numbers, strings and bytes."""
    with open(path, "rb") as handle:
        return _NumpyOnlyUnpickler(handle, str(path), what).load()
