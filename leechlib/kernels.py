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

import functools

from . import _mog
from ._constants import MAX_ABS, SQRT8
from ._validation import check_int, subsample
from .codebook import _tables
from .trio import TrioCodebook

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
    "packed_matmul",
    "packed_weight",
    "hadamard_rows",
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


# ---------------------------------------------------------------------------
# products with quantized weights from their packed codes
# ---------------------------------------------------------------------------


def _check_packed(packed, scales, group, table, block: int, width: int) -> tuple:
    """Validate the arrays of :func:`packed_matmul` / :func:`packed_weight`; returns ``(R, nb)``."""
    import numpy as np

    for name, a, dt in (("packed", packed, np.uint8), ("scales", scales, np.float32), ("group", group, np.int64)):
        if not isinstance(a, np.ndarray) or a.dtype != dt:
            raise TypeError(f"{name} must be a numpy array of {np.dtype(dt).name}, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
    if packed.ndim != 2 or scales.ndim != 2 or group.ndim != 1:
        raise ValueError(f"packed (R, bytes), scales (R, groups) and group (blocks,) must be 2-D, 2-D "
                         f"and 1-D, got {packed.shape}, {scales.shape}, {group.shape}")
    R, nb = packed.shape[0], group.shape[0]
    if scales.shape[0] != R:
        raise ValueError(f"scales must have one row per row of packed ({R}), got {scales.shape[0]}")
    if packed.shape[1] * 8 < nb * width:
        raise ValueError(f"packed rows hold {packed.shape[1] * 8} bits, {nb} codes of {width} bits need "
                         f"{nb * width}")
    if nb and (group.min() < 0 or group.max() >= scales.shape[1]):
        raise ValueError(f"group must index the {scales.shape[1]} scale columns")
    if table is not None:
        if not isinstance(table, np.ndarray) or table.dtype != np.float32 or table.ndim != 2:
            raise TypeError("table must be a 2-D numpy array of float32")
        if table.shape[0] != 1 << width or table.shape[1] != block or not table.flags.c_contiguous:
            raise ValueError(f"table must be C-contiguous of shape (2**width, block) = ({1 << width}, {block}), "
                             f"got {table.shape}")
    return R, nb


@functools.cache
def _trio_args() -> tuple:
    """The decode arguments of the trio code (built once)."""
    cb = TrioCodebook()
    T = cb.tables
    return (cb.row_bits, cb.combo_bits, T["tab"], T["perm"], T["sign"], T["cls_of"], T["gen_lo"], T["gen_hi"],
            T["combos"])


@functools.cache
def _trio_octet_rows() -> tuple:
    """The class rows and packed tier triples of :func:`~leechlib._kernels.qmatmul.trio_octet_args`."""
    from ._kernels.qmatmul import trio_octet_args

    T = TrioCodebook().tables
    return trio_octet_args(T["tab"], T["combos"], TrioCodebook().row_bits)


@functools.cache
def _trio_octet_maps() -> tuple:
    """The signed permutations of an octet slot (:func:`~leechlib._kernels.qmatmul.trio_octet_maps`)."""
    from ._kernels.qmatmul import trio_octet_maps

    T = TrioCodebook().tables
    return trio_octet_maps(T["perm"], T["sign"])


def _codebook_args(codebook, table, width):
    """``(block, width, trio arguments or None)`` of the two codebook kinds."""
    if codebook == "trio":
        return 24, 48, _trio_args()
    if codebook == "table":
        width = check_int(width, "width", 1, 24)
        if table is None:
            raise TypeError("codebook='table' needs table=")
        return (table.shape[1] if getattr(table, "ndim", 0) == 2 else 0), width, None
    raise ValueError(f"codebook must be 'table' or 'trio', got {codebook!r}")


def _byte_groups(group, width):
    """The scale column of each byte of scalar codes, or None where a byte's codes
    straddle two scale groups (or ``width`` does not divide a byte)."""
    import numpy as np

    if width not in (1, 2, 4, 8) or len(group) == 0:
        return None
    m = 8 // width
    nk = -(-len(group) // m)
    g = np.empty(nk * m, dtype=np.int64)
    g[: len(group)] = group
    g[len(group):] = group[-1]
    g = g.reshape(nk, m)
    if not (g == g[:, :1]).all():
        return None
    return np.ascontiguousarray(g[:, 0])


def packed_matmul(x, packed, scales, group, *, codebook: str, table=None, width=None, workers=None):
    """``x @ W.T`` for a weight ``W`` held as packed codes (never materialised).

    ``W[r, d*j : d*(j+1)] = scales[r, group[j]] * U(code[r, j])``, the codes of ``width``
    bits packed row by row, least significant bit first.  ``codebook="table"``:
    ``U(c) = table[c]`` (``table`` float32 of shape ``(2**width, d)``: every code is a
    row, so no code can read out of bounds); ``codebook="trio"``: ``U`` is the trio
    code's decode (:class:`leechlib.trio.TrioCodebook`, integer model; ``d = 24``,
    ``width = 48``).

    Parameters
    ----------
    x : numpy.ndarray
        float32 ``(B, P)``, C-contiguous, ``P = d * blocks`` (pad with zeros).
    packed : numpy.ndarray
        uint8 ``(R, bytes)``.
    scales : numpy.ndarray
        float32 ``(R, groups)``.
    group : numpy.ndarray
        int64 ``(blocks,)``: the scale column of each block.
    workers : int, optional
        Threads (``None``: Numba's default; -1: all cores).

    Returns
    -------
    numpy.ndarray
        float32 ``(B, R)``.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.kernels import packed_matmul
    >>> table = np.array([[-1.5], [-0.5], [0.5], [1.5]], dtype=np.float32)    # 2-bit levels
    >>> packed = np.array([[0b11100100]], dtype=np.uint8)          # codes 0, 1, 2, 3
    >>> scales = np.ones((1, 1), dtype=np.float32)
    >>> x = np.ones((1, 4), dtype=np.float32)
    >>> packed_matmul(x, packed, scales, np.zeros(4, dtype=np.int64), codebook="table", table=table, width=2)
    array([[0.]], dtype=float32)
    """
    import numpy as np

    from ._jit import num_threads
    from ._kernels import qmatmul

    d, width, trio = _codebook_args(codebook, table, width)
    R, nb = _check_packed(packed, scales, group, table if trio is None else None, d, width)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"x must be a numpy array of float32, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 2 or x.shape[1] != d * nb or not x.flags.c_contiguous:
        raise ValueError(f"x must be C-contiguous of shape (B, {d * nb}), got {x.shape}")
    out = np.zeros((x.shape[0], R), dtype=np.float32)
    if R == 0 or x.shape[0] == 0:
        return out
    with num_threads(workers):
        byte_group = _byte_groups(group, width) if trio is None and d == 1 and x.shape[0] <= qmatmul.LUT_BATCH else None
        if byte_group is not None:
            m = 8 // width
            xp = np.zeros((x.shape[0], m * len(byte_group)), dtype=np.float32)
            xp[:, : x.shape[1]] = x
            lut = np.empty((x.shape[0], len(byte_group), 256), dtype=np.float32)
            qmatmul.byte_lut(xp, table, width, lut)
            start = np.flatnonzero(np.r_[True, byte_group[1:] != byte_group[:-1]])
            qmatmul.table_matmul_lut(lut, packed, scales, start, byte_group[start], out)
        elif trio is None and d == 8:
            qmatmul.table_matmul8(x, packed, width, table, scales, group, out)
        elif trio is None:
            qmatmul.table_matmul(x, packed, width, table, scales, group, out)
        elif x.shape[0] <= qmatmul.OCTET_BATCH:
            xs = np.empty((x.shape[0], x.shape[1] // 8, 256, 8), dtype=np.float32)
            qmatmul.trio_signed_octets(x, *_trio_octet_maps(), xs)
            b, cb, tab, _, _, _, gen_lo, gen_hi, combos = trio
            rows, tiers = _trio_octet_rows()
            qmatmul.trio_matmul_octets(xs, packed, scales, group, b, cb, rows, tiers, tab.shape[1], gen_lo, gen_hi, out)
        else:
            qmatmul.trio_matmul(x, packed, scales, group, *trio, out)
    return out


def packed_weight(packed, scales, group, *, codebook: str, table=None, width=None, dtype=None, workers=None):
    """The weight ``W`` (``(R, d * blocks)``) of packed codes, as in :func:`packed_matmul`.

    ``dtype``: float32 (default) or float64.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.kernels import packed_weight
    >>> table = np.array([[-1.5], [-0.5], [0.5], [1.5]], dtype=np.float32)
    >>> packed_weight(np.array([[0b11100100]], dtype=np.uint8), np.full((1, 1), 2, dtype=np.float32),
    ...               np.zeros(4, dtype=np.int64), codebook="table", table=table, width=2)
    array([[-3., -1.,  1.,  3.]], dtype=float32)
    """
    import numpy as np

    from ._jit import num_threads
    from ._kernels import qmatmul

    d, width, trio = _codebook_args(codebook, table, width)
    R, nb = _check_packed(packed, scales, group, table if trio is None else None, d, width)
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    out = np.zeros((R, d * nb), dtype=dtype)
    if R == 0 or nb == 0:
        return out
    with num_threads(workers):
        if trio is None:
            qmatmul.table_dequantize(packed, width, table, scales, group, out)
        else:
            qmatmul.trio_dequantize(packed, scales, group, *trio, out)
    return out


def hadamard_rows(x, signs, q, *, inverse: bool = False, workers=None) -> None:
    """The randomized Hadamard transform ``T`` (or ``Tᵀ``) of every row of ``x``, in place.

    ``T = (H_p / sqrt(p) ⊗ q) diag(signs)`` for rows of length ``n = p * m`` (``p`` a
    power of two, ``q`` an ``m × m`` orthogonal matrix): the transform of
    ``torch_ext.quantize.hadamard.RandomizedHadamard``, as one native pass per row.

    Parameters
    ----------
    x : numpy.ndarray
        float32 or float64 ``(N, n)``, C-contiguous; overwritten.
    signs : numpy.ndarray
        ``(n,)`` of ``x``'s dtype.
    q : numpy.ndarray
        ``(m, m)`` of ``x``'s dtype, C-contiguous.
    inverse : bool
        Apply ``Tᵀ = T⁻¹`` instead.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.kernels import hadamard_rows
    >>> x = np.array([[1.0, 0.0, 0.0, 0.0]])
    >>> hadamard_rows(x, np.ones(4), np.ones((1, 1)))
    >>> x
    array([[0.5, 0.5, 0.5, 0.5]])
    >>> hadamard_rows(x, np.ones(4), np.ones((1, 1)), inverse=True)
    >>> x
    array([[1., 0., 0., 0.]])
    """
    import numpy as np

    from ._jit import num_threads
    from ._kernels import hadamard

    for name, a in (("x", x), ("signs", signs), ("q", q)):
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a numpy array of float32 or float64")
        if a.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
    if not x.flags.writeable:
        raise ValueError("x must be writeable (it is transformed in place)")
    if x.ndim != 2 or signs.ndim != 1 or q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"x must be (N, n), signs (n,) and q (m, m), got {x.shape}, {signs.shape}, {q.shape}")
    n, m = x.shape[1], q.shape[0]
    p = n // m if m else 0
    if signs.shape[0] != n or p * m != n or p < 1 or p & (p - 1):
        raise ValueError(f"rows of length {n} must be p * m with p a power of two and m = {m}, and signs "
                         f"of length {n}")
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    if x.shape[0] == 0:
        return
    with num_threads(workers):
        hadamard.hadamard_rows(x, signs, q, p, inverse)


# ---------------------------------------------------------------------------
# the same products on CUDA GPUs (Numba CUDA; the trio code)
# ---------------------------------------------------------------------------


def _cuda_codebook(codebook) -> tuple:
    if codebook != "trio":
        raise ValueError(f"codebook must be 'trio' (the only codebook with CUDA kernels), got {codebook!r}")
    return _trio_args()


def packed_matmul_cuda(x, packed, scales, group, *, codebook: str = "trio", out=None, stream=0,
                       check_group: bool = True):
    """``x @ W.T`` on a CUDA GPU for a weight ``W`` held as packed trio codes (never materialised).

    The GPU counterpart of :func:`packed_matmul` (``codebook="trio"``):
    ``W[r, 24j : 24j+24] = scales[r, group[j]] * decode(code[r, j])``, 48-bit codes
    packed six bytes per block, least significant byte first; the decode is the trio
    code's (:class:`leechlib.trio.TrioCodebook`, integer model).  A Numba CUDA kernel
    decodes every code once per launch (up to 16 rows of ``x``; larger batches are
    launched 16 rows at a time) and accumulates in float32.  The kernel compiles on
    first use (seconds).  **Not measured**: written and tested without a GPU (Numba's
    CUDA simulator); see ``benchmarks/gpu_qmatmul.py`` for the measurement.

    Parameters
    ----------
    x : device array
        float32 or float16 ``(B, 24 * blocks)``, C-contiguous (pad with zeros).
    packed : device array
        uint8 ``(R, bytes)``, at least ``6 * blocks`` bytes per row.
    scales : device array
        float32 ``(R, groups)``.
    group : device array
        int64 ``(blocks,)``: the scale column of each block.
    codebook : str
        ``"trio"`` (the only codebook with CUDA kernels).
    out : device array, optional
        float32 ``(B, R)``, written in place; allocated if None.
    stream : numba stream or 0
        The CUDA stream of the launch (``numba.cuda.external_stream`` wraps torch's).
    check_group : bool
        Copy ``group`` to the host and check that it indexes the scale columns (a
        synchronising copy; False when the caller knows it valid: an index out of
        range reads out of bounds on the GPU).

    Every array is anything with ``__cuda_array_interface__`` (a torch CUDA tensor, a
    CuPy array) or a Numba device array; none is copied.

    Returns
    -------
    device array
        ``out``: float32 ``(B, R)`` (a Numba device array when allocated here).

    Raises
    ------
    TypeError
        An argument that is not a device array or has the wrong dtype (the message
        names it).
    ValueError
        A wrong shape, a non-contiguous array or a ``group`` out of range (named).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.kernels import packed_matmul_cuda
    >>> x = np.ones((1, 24), dtype=np.float32)
    >>> packed_matmul_cuda(x, None, None, None)   # host arrays are refused: no hidden copies
    Traceback (most recent call last):
    ...
    TypeError: x must be a CUDA device array (a numba device array or an object with __cuda_array_interface__, ...
    >>> from numba import cuda                                   # on a machine with a GPU:
    >>> p = cuda.to_device(np.full((1, 6), 255, dtype=np.uint8))  # doctest: +SKIP
    >>> s = cuda.to_device(np.ones((1, 1), dtype=np.float32))     # doctest: +SKIP
    >>> g = cuda.to_device(np.zeros(1, dtype=np.int64))           # doctest: +SKIP
    >>> y = packed_matmul_cuda(cuda.to_device(x), p, s, g)        # doctest: +SKIP
    >>> y.copy_to_host()      # the last codeword: its 24 entries sum to 20  # doctest: +SKIP
    array([[20.]], dtype=float32)
    """
    from ._kernels import cuda_qmatmul

    trio = _cuda_codebook(codebook)
    res = cuda_qmatmul.matmul(x, packed, scales, group, trio, out=out, stream=stream, check_group=check_group)
    return res if out is None else out


def packed_weight_cuda(packed, scales, group, *, codebook: str = "trio", out=None, dtype=None, stream=0,
                       check_group: bool = True):
    """The weight ``W`` (``(R, 24 * blocks)``) of packed trio codes, on a CUDA GPU.

    The GPU counterpart of :func:`packed_weight` (``codebook="trio"``), with the
    arguments of :func:`packed_matmul_cuda`: one thread per block of 24 weights,
    ``float64(scale) * value`` rounded once to the output type, so float32 and float64
    results are bitwise those of :func:`packed_weight`.  **Not measured** (written
    without a GPU; see ``benchmarks/gpu_qmatmul.py``).

    Parameters
    ----------
    packed, scales, group : device arrays
        As in :func:`packed_matmul_cuda`.
    codebook : str
        ``"trio"``.
    out : device array, optional
        float16, float32 or float64 ``(R, 24 * blocks)``, C-contiguous, written in place.
    dtype : numpy dtype, optional
        The dtype of ``out`` when it is allocated here: float16, float32 (default) or float64.
    stream : numba stream or 0
    check_group : bool
        As in :func:`packed_matmul_cuda`.

    Returns
    -------
    device array
        ``out`` (a Numba device array when allocated here).

    Examples
    --------
    >>> import numpy as np
    >>> from numba import cuda
    >>> from leechlib.kernels import packed_weight_cuda
    >>> p = cuda.to_device(np.full((1, 6), 255, dtype=np.uint8))  # doctest: +SKIP
    >>> s = cuda.to_device(np.full((1, 1), 0.5, dtype=np.float32))  # doctest: +SKIP
    >>> g = cuda.to_device(np.zeros(1, dtype=np.int64))           # doctest: +SKIP
    >>> w = packed_weight_cuda(p, s, g, dtype=np.float16)         # doctest: +SKIP
    >>> w.copy_to_host()[0, :4]                                   # doctest: +SKIP
    array([-0.5,  1.5,  1.5, -2.5], dtype=float16)
    """
    import numpy as np

    from ._kernels import cuda_qmatmul

    trio = _cuda_codebook(codebook)
    res = cuda_qmatmul.dequantize(packed, scales, group, trio, out=out,
                                  dtype=np.float32 if dtype is None else dtype, stream=stream,
                                  check_group=check_group)
    return res if out is None else out


__all__ += ["packed_matmul_cuda", "packed_weight_cuda"]
