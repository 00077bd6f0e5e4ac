"""A restricted unpickler for the benchmark's pickled raw formats.

Several official files are pickles (Spherical ``s2_cifar100.gz``, ECG ``challenge2017.pkl``, the CIFAR-100
batches, PSICOV feature files, Satellite's object ``.npy``). Unpickling runs arbitrary code, so these files
are checksum-verified first (see :mod:`nb360.data.rawfolder`) and then read with :class:`SafeUnpickler`,
which admits only numpy arrays, numpy dtypes/scalars and builtin containers and scalars.

The NB201-space tables (NATS-Bench ``.pickle.pbz2`` files, nb201.md 6.3) are bz2-compressed pickles; they are
read with :func:`safe_load_bz2`. That adds the bz2 stream only: their content (dicts keyed by ints, strings
and ``(dataset, seed)`` tuples, lists, a set, ``collections.OrderedDict``, None, floats and numpy float
scalars) is within the allow-list below, which is not widened for them.
"""

from __future__ import annotations

import bz2
import io
import os
import pickle
from typing import IO, Any

import numpy as np

_ALLOWED: set[tuple[str, str]] = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 2 / latin-1 pickles of numpy arrays carry their bytes
}
# Numpy's own dtype classes (numpy.dtypes.Float32DType, ...) appear in pickles written by numpy >= 1.25.
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than numpy arrays and builtin containers."""


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or module.startswith(_ALLOWED_MODULE_PREFIXES):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: only numpy arrays and builtin containers are allowed"
        )


def safe_load(f: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle from a binary file object with :class:`SafeUnpickler`."""
    return SafeUnpickler(f, encoding=encoding).load()


def safe_loads(data: bytes, encoding: str = "ASCII") -> Any:
    return safe_load(io.BytesIO(data), encoding=encoding)


def safe_load_bz2(path: str | os.PathLike) -> Any:
    """Unpickle a bz2-compressed pickle file with :class:`SafeUnpickler`, then read the stream to its end.

    The pickle stops at its STOP opcode, possibly before the bz2 end-of-stream marker and its checksum;
    reading on checks them, and refuses trailing bytes (two files concatenated, or a tampered tail).
    Raises ``OSError``/``EOFError`` for a corrupt or truncated stream and :class:`UnsafePickleError` for
    forbidden content.
    """
    with bz2.open(path, "rb") as f:
        obj = SafeUnpickler(f, encoding="ASCII").load()
        if f.read(1):
            raise pickle.UnpicklingError(f"{path}: bytes after the end of the pickle")
    return obj


def npy_dtype(f: IO[bytes]) -> np.dtype:
    """Read a ``.npy`` header (leaving ``f`` at the start of the payload) and return its dtype."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        _, _, dtype = np.lib.format.read_array_header_2_0(f)
    return dtype


def safe_load_npy(f: IO[bytes]) -> np.ndarray:
    """Read a ``.npy`` stream; object arrays (pickled payloads) go through :class:`SafeUnpickler`.

    ``np.load(allow_pickle=True)`` would call the unrestricted ``pickle.load``.
    """
    dtype = npy_dtype(f)
    if dtype.hasobject:
        arr = safe_load(f, encoding="latin1")
        if not isinstance(arr, np.ndarray):
            raise UnsafePickleError("object .npy payload is not a numpy array")
        return arr
    f.seek(0)
    return np.load(f, allow_pickle=False)
