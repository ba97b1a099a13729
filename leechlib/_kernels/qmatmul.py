r"""Products with quantized weights computed from their codes (Numba kernels, numpy references).

A quantized weight matrix ``W`` (``R`` rows of ``P`` columns, ``P`` a multiple of the
block length ``d``) is stored as codes, one per block of ``d`` consecutive weights of
a row, bit-packed row by row (``width`` bits each, least significant bit first, as
``torch_ext.quantize`` packs them), and one scale per (row, group of blocks):

    W[r, d*j : d*(j+1)] = scales[r, group[j]] * U(code[r, j]),

where ``U`` is the codebook's decode: a row of a ``table`` (the E8 ball, the scalar
levels of round-to-nearest) or the trio code's :func:`~leechlib._kernels.trio.decode_block`.
The kernels compute ``out = x @ W.T`` (``x`` of shape ``(B, P)``) and ``W`` itself
without ever holding ``W``: each block is decoded once into 24 floats on the stack of
the thread and used for the ``B`` rows of ``x`` at once.  Rows of ``W`` are split
among the threads (``prange`` over chunks of rows); accumulation is in float32 per
block and float64 per row.

References: the ``*_ref`` functions decode every code with numpy and multiply.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit, pjit
from .trio import decode_block

#: rows of W per parallel task
ROW_CHUNK = 16


@jit
def read_code(packed, r, j, width):
    """The ``j``-th ``width``-bit code of row ``r`` of ``packed`` (uint8, LSB first), width <= 56."""
    if width == 48:  # the Leech codes: six bytes
        a = 6 * j
        return (np.int64(packed[r, a]) | (np.int64(packed[r, a + 1]) << 8) | (np.int64(packed[r, a + 2]) << 16)
                | (np.int64(packed[r, a + 3]) << 24) | (np.int64(packed[r, a + 4]) << 32)
                | (np.int64(packed[r, a + 5]) << 40))
    if width == 16:  # E8: two bytes
        return np.int64(packed[r, 2 * j]) | (np.int64(packed[r, 2 * j + 1]) << 8)
    if width == 2:  # 2-bit scalar codes: four to a byte (shifts, no division)
        return np.int64((packed[r, j >> 2] >> ((j & 3) << 1)) & 3)
    if width == 8:
        return np.int64(packed[r, j])
    if width == 4:
        return np.int64((packed[r, j >> 1] >> ((j & 1) << 2)) & 15)
    if width == 1:
        return np.int64((packed[r, j >> 3] >> (j & 7)) & 1)
    o = j * width
    byte = o >> 3
    shift = o & 7
    need = (shift + width + 7) >> 3
    v = np.uint64(0)
    for k in range(need):
        v |= np.uint64(packed[r, byte + k]) << np.uint64(8 * k)
    v >>= np.uint64(shift)
    if width < 64:
        v &= (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    return np.int64(v)


def read_codes_ref(packed: np.ndarray, n: int, width: int) -> np.ndarray:
    """All ``n`` codes of every row (int64 ``(R, n)``): the bitstream unpacked with numpy."""
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : n * width]
    bits = bits.reshape(packed.shape[0], n, width).astype(np.int64)
    return (bits << np.arange(width, dtype=np.int64)).sum(-1)


# ---------------------------------------------------------------------------
# table codebooks (E8 ball, scalar levels): U(code) = table[code]
# ---------------------------------------------------------------------------


@pjit
def table_matmul(x, packed, width, table, scales, group, out):
    """``out[b, r] = sum_j scales[r, group[j]] * <table[code[r, j]], x[b, block j]>``."""
    B = x.shape[0]
    R = packed.shape[0]
    nb = group.shape[0]
    d = table.shape[1]
    for c in prange((R + ROW_CHUNK - 1) // ROW_CHUNK):
        acc = np.empty(B)
        for r in range(c * ROW_CHUNK, min(R, (c + 1) * ROW_CHUNK)):
            if B == 1:  # the matrix-vector product: scalar accumulators
                a = 0.0
                for j in range(nb):
                    code = read_code(packed, r, j, width)
                    s = np.float32(0.0)
                    for i in range(d):
                        s += table[code, i] * x[0, d * j + i]
                    a += scales[r, group[j]] * s
                out[0, r] = a
                continue
            for b in range(B):
                acc[b] = 0.0
            for j in range(nb):
                code = read_code(packed, r, j, width)
                sc = scales[r, group[j]]
                for b in range(B):
                    s = np.float32(0.0)
                    for i in range(d):
                        s += table[code, i] * x[b, d * j + i]
                    acc[b] += sc * s
            for b in range(B):
                out[b, r] = acc[b]


@pjit
def table_dequantize(packed, width, table, scales, group, out):
    """``out[r, block j] = scales[r, group[j]] * table[code[r, j]]`` (``out`` of shape (R, P))."""
    R = packed.shape[0]
    nb = group.shape[0]
    d = table.shape[1]
    for r in prange(R):
        for j in range(nb):
            code = read_code(packed, r, j, width)
            sc = np.float64(scales[r, group[j]])  # exact product, one rounding to out's dtype
            for i in range(d):
                out[r, d * j + i] = sc * table[code, i]


def table_weight_ref(packed, width, table, scales, group):
    """``W`` with numpy (float64)."""
    codes = read_codes_ref(packed, len(group), width)
    U = np.asarray(table, dtype=np.float64)[codes]  # (R, nb, d)
    return (U * np.asarray(scales, dtype=np.float64)[:, group][:, :, None]).reshape(len(codes), -1)


# ---------------------------------------------------------------------------
# the trio code (48-bit codes of 24 weights)
# ---------------------------------------------------------------------------


@pjit
def trio_matmul(x, packed, scales, group, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, out):
    """``out[b, r] = sum_j scales[r, group[j]] * <decode(code[r, j]), x[b, block j]>``."""
    B = x.shape[0]
    R = packed.shape[0]
    nb = group.shape[0]
    for c in prange((R + ROW_CHUNK - 1) // ROW_CHUNK):
        w = np.empty(24, dtype=np.float32)
        acc = np.empty(B)
        for r in range(c * ROW_CHUNK, min(R, (c + 1) * ROW_CHUNK)):
            for bb in range(B):
                acc[bb] = 0.0
            for j in range(nb):
                decode_block(read_code(packed, r, j, 48), b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi,
                             combos, w, 0)
                sc = scales[r, group[j]]
                if B == 1:
                    s = np.float32(0.0)
                    for i in range(24):
                        s += w[i] * x[0, 24 * j + i]
                    acc[0] += sc * s
                    continue
                for bb in range(B):
                    s = np.float32(0.0)
                    for i in range(24):
                        s += w[i] * x[bb, 24 * j + i]
                    acc[bb] += sc * s
            for bb in range(B):
                out[bb, r] = acc[bb]


@pjit
def trio_dequantize(packed, scales, group, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, out):
    """``out[r, block j] = scales[r, group[j]] * decode(code[r, j])`` (``out`` of shape (R, 24 nb))."""
    R = packed.shape[0]
    nb = group.shape[0]
    for r in prange(R):
        w = np.empty(24, dtype=out.dtype)
        for j in range(nb):
            decode_block(read_code(packed, r, j, 48), b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi,
                         combos, w, 0)
            sc = np.float64(scales[r, group[j]])  # exact product, one rounding to out's dtype
            for i in range(24):
                out[r, 24 * j + i] = sc * w[i]


def trio_weight_ref(packed, scales, group, points_of):
    """``W`` with numpy (float64); ``points_of(codes)`` is the codebook's decode (integer model)."""
    codes = read_codes_ref(packed, len(group), 48)
    U = np.asarray(points_of(codes.reshape(-1)), dtype=np.float64).reshape(codes.shape + (24,))
    return (U * np.asarray(scales, dtype=np.float64)[:, group][:, :, None]).reshape(len(codes), -1)
