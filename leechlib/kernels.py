"""The internal seam between leechlib and its extensions (``torch_ext``).

leechlib's public API (``leechlib.*``) is numpy in, numpy out.  Extensions that
run the same mathematics on other devices need a little more: the raw tables the
exact algorithms are built from, the Numba CUDA launchers, and a way to build a
quantizer's index tables once, ahead of time.  This module is the one place that
offers them, so that no extension imports a private ``leechlib._…`` module or
reaches into a private attribute; the package's constants ``SQRT8`` (the scale
between ``coords="unit"`` and ``coords="int"``) and ``MAX_ABS`` (the decoders' input
bound in the integer model), its one integer check ``check_int`` and ``subsample``
(the rows a quantizer fits on), so that an extension defines none of them again.

It is documented and tested, but it is an *internal* interface: its names may
change between minor versions together with ``torch_ext``.  Nothing here imports
torch, and importing this module compiles nothing: the CUDA kernel module is
imported inside the functions that use it, so that importing this module does not
import Numba.

Examples
--------
>>> from leechlib import kernels
>>> t = kernels.count_tables(64)       # the counting tables of the shells up to norm 8
>>> int(t.blocks(32)[-1])              # points of integer norm 32: the minimal vectors
196560
>>> kernels.cuda_available() in (True, False)
True
>>> round(kernels.SQRT8 ** 2, 12)    # the unit model times SQRT8 is the integer model
8.0
>>> kernels.MAX_ABS == 2.0**50
True
>>> kernels.check_int(2, "bits", 1, 8)
2
"""

from __future__ import annotations

from . import _mog
from ._constants import MAX_ABS, SQRT8
from ._validation import check_int, subsample
from .codebook import _tables

__all__ = [
    "SQRT8",
    "MAX_ABS",
    "check_int",
    "subsample",
    "count_tables",
    "cuda_available",
    "cuda_minvec_int",
    "cuda_nearest_int",
    "mog_tables",
]


def count_tables(max_int_norm: int):
    """Counting tables of the Leech shells up to integer norm ``max_int_norm``.

    The object behind :class:`leechlib.ShellCodebook` and
    :class:`leechlib.BallCodebook`: per-class value tables ``vals``, ``vpar``,
    ``nvals``, the count table ``T``, ``class_words`` and ``blocks(N)``, which
    returns ``(starts, eps, cls, per_u, lookup, total)`` for the shell of integer
    norm ``N``.  Cached; read-only by convention.

    Parameters
    ----------
    max_int_norm : int
        Largest integer norm (``8 ×`` the unit norm) the tables must cover.

    Returns
    -------
    object
        The cached table object.

    Examples
    --------
    >>> from leechlib.kernels import count_tables
    >>> int(count_tables(48).blocks(48)[-1])   # the second shell
    16773120
    """
    return _tables(int(max_int_norm))


def mog_tables() -> dict:
    """The MOG tables of the exact decoders, as numpy arrays.

    Returns
    -------
    dict
        ``hexa`` (64, 6) hexacode words; ``column_pattern`` (4, 2, 2): the column bit
        pattern of score ``s``, parity ``pi`` and top bit ``t``; ``octads`` (759, 8);
        ``information_set`` (12,) of :class:`leechlib.GolayCode`.

    Examples
    --------
    >>> from leechlib.kernels import mog_tables
    >>> t = mog_tables()
    >>> t["hexa"].shape, t["column_pattern"].shape, t["octads"].shape
    ((64, 6), (4, 2, 2), (759, 8))
    """
    g, info = _mog.generator()
    return {
        "hexa": _mog.hexacode_words(),
        "column_pattern": _mog.column_pattern(),
        "octads": _mog.octads(),
        "information_set": info,
    }


def cuda_available() -> bool:
    """Whether Numba CUDA can run leechlib's kernels in this process.

    Examples
    --------
    >>> from leechlib.kernels import cuda_available
    >>> isinstance(cuda_available(), bool)
    True
    """
    from ._kernels import cuda

    return bool(cuda.available())


def cuda_nearest_int(x, out, dist, bad, *, factor=1.0, mul=1.0, div=1.0, stream=0):
    """Launch the exact nearest-point kernel on CUDA arrays (Numba CUDA).

    ``x`` (n, 24) float32/float64 rows, scaled by ``factor`` into the integer model;
    writes the nearest points (times ``mul / div``) to ``out`` (n, 24) float64, their
    squared distances to ``dist`` (n,) and a non-zero ``bad[i]`` where row ``i`` was not
    finite or out of range.  Arrays are any ``__cuda_array_interface__`` objects.
    """
    from ._kernels import cuda

    return cuda.nearest_int(x, out, dist, bad, factor=factor, mul=mul, div=div, stream=stream)


def cuda_minvec_int(x, out, idx, *, stream=0):
    """Launch the nearest-minimal-vector kernel on CUDA arrays (Numba CUDA).

    Writes the nearest minimal vector (integer model) of each row of ``x`` to ``out``
    (n, 24) float64 and its index in leechlib's order to ``idx`` (n,) int64.
    """
    from ._kernels import cuda

    return cuda.minvec_int(x, out, idx, stream=stream)
