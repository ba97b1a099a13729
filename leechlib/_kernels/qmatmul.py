r"""Products with quantized weights computed from their codes (Numba kernels, numpy references).

A quantized weight matrix ``W`` (``R`` rows of ``P`` columns, ``P`` a multiple of the
block length ``d``) is stored as codes, one per block of ``d`` consecutive weights of
a row, bit-packed row by row (``width`` bits each, least significant bit first, as
``torch_ext.quantize`` packs them), and one scale per (row, group of blocks):

    W[r, d*j : d*(j+1)] = scales[r, group[j]] * U(code[r, j]),

where ``U`` is the codebook's decode: a row of a ``table`` (the E8 ball, the scalar
levels of round-to-nearest) or the trio code's :func:`~leechlib._kernels.trio.decode_block`.
The kernels compute ``out = x @ W.T`` (``x`` of shape ``(B, P)``) and ``W`` itself
without ever holding ``W``: each block is decoded once into ``d`` floats on the stack
of the thread and used for the ``B`` rows of ``x`` at once.  Small batches of the trio
code take another route, :func:`trio_matmul_octets`: the signs and permutation of an
octet move from the weight to ``x`` (a table of the 256 signed permutations of every
octet of ``x``, built once per product), so that an octet of the product is one
8-wide dot product of a class-table row with a row of that table.  Rows of ``W`` are split
among the threads (``prange`` over chunks of rows); accumulation is in float32 per
block and float64 per row.

The kernels compile with LLVM's SLP vectorizer (:func:`leechlib._jit.jit`, ``slp``):
an octet's eight products and sums become vector instructions.

References: the ``*_ref`` functions decode every code with numpy and multiply.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit, pjit
from .trio import decode_block, split_index

#: rows of W per parallel task
ROW_CHUNK = 16


@jit
def dot8(a, t):
    """``sum_i a[i] * t[i]`` over 8 entries as a balanced tree (independent products:
    no chain of eight dependent additions); ``t`` of any numeric dtype."""
    f = np.float32
    return (((a[0] * f(t[0]) + a[1] * f(t[1])) + (a[2] * f(t[2]) + a[3] * f(t[3])))
            + ((a[4] * f(t[4]) + a[5] * f(t[5])) + (a[6] * f(t[6]) + a[7] * f(t[7]))))


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


@pjit(slp=True)
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


@pjit(slp=True)
def byte_lut(x, table, width, lut):
    """``lut[b, k, v]``: the dot product of the codes packed in byte value ``v`` with
    the ``m = 8 // width`` entries ``x[b, m k : m (k + 1)]`` (scalar tables, ``d = 1``).

    ``lut`` has shape ``(B, P // m, 256)``; ``sum_t table[(v >> width t) & mask, 0] * x[b, m k + t]``.
    """
    B, nk = lut.shape[0], lut.shape[1]
    m = 8 // width
    mask = (1 << width) - 1
    for t in prange(B * nk):
        bb = t // nk
        k = t - bb * nk
        for v in range(256):
            s = np.float32(0.0)
            for u in range(m):
                s += table[(v >> (width * u)) & mask, 0] * x[bb, m * k + u]
            lut[bb, k, v] = s


def byte_lut_ref(x, table, width):
    """numpy: the same table."""
    m = 8 // width
    v = np.arange(256)
    codes = (v[:, None] >> (width * np.arange(m))) & ((1 << width) - 1)  # (256, m)
    vals = np.asarray(table, dtype=np.float64)[codes, 0]  # (256, m)
    B, P = x.shape
    return np.einsum("bkm,vm->bkv", np.asarray(x, dtype=np.float64).reshape(B, P // m, m), vals)


@pjit(slp=True)
def table_matmul_lut(lut, packed, scales, run_start, run_group, out):
    """``x @ W.T`` for scalar codes of ``width`` in {1, 2, 4, 8} through :func:`byte_lut`:
    one lookup per byte of codes and row of ``x``.  Bytes ``run_start[i]`` to
    ``run_start[i + 1]`` (the last run ends with the row) share the scale column
    ``run_group[i]`` (the layout keeps a scale group whole within a byte); four
    partial sums per run keep the additions independent.
    """
    B = lut.shape[0]
    R = packed.shape[0]
    nk = lut.shape[1]
    nr = run_start.shape[0]
    for c in prange((R + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(R, (c + 1) * ROW_CHUNK)):
            for bb in range(B):
                acc = 0.0
                for i in range(nr):
                    k = run_start[i]
                    end = run_start[i + 1] if i + 1 < nr else nk
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    s2 = np.float32(0.0)
                    s3 = np.float32(0.0)
                    while k + 4 <= end:
                        s0 += lut[bb, k, packed[r, k]]
                        s1 += lut[bb, k + 1, packed[r, k + 1]]
                        s2 += lut[bb, k + 2, packed[r, k + 2]]
                        s3 += lut[bb, k + 3, packed[r, k + 3]]
                        k += 4
                    while k < end:
                        s0 += lut[bb, k, packed[r, k]]
                        k += 1
                    acc += scales[r, run_group[i]] * ((s0 + s1) + (s2 + s3))
                out[bb, r] = acc


@pjit(slp=True)
def table_matmul8(x, packed, width, table, scales, group, out):
    """:func:`table_matmul` for tables of 8-dimensional rows (E8): each code's row and
    the block of every row of ``x`` in one tree-summed dot product (:func:`dot8`)."""
    B = x.shape[0]
    R = packed.shape[0]
    nb = group.shape[0]
    for c in prange((R + ROW_CHUNK - 1) // ROW_CHUNK):
        acc = np.empty(B)
        for r in range(c * ROW_CHUNK, min(R, (c + 1) * ROW_CHUNK)):
            for bb in range(B):
                acc[bb] = 0.0
            for j in range(nb):
                t = table[read_code(packed, r, j, width)]
                sc = scales[r, group[j]]
                for bb in range(B):
                    acc[bb] += sc * dot8(x[bb, 8 * j: 8 * j + 8], t)
            for bb in range(B):
                out[bb, r] = acc[bb]


@pjit(slp=True)
def table_dequantize(packed, width, table, scales, group, out):
    """``out[r, block j] = scales[r, group[j]] * table[code[r, j]]`` (``out`` of shape (R, P)).

    Scalar codes of width 1, 2, 4 or 8 are read a byte at a time (the byte's ``8 //
    width`` codes at once, no per-code bit arithmetic).
    """
    R = packed.shape[0]
    nb = group.shape[0]
    d = table.shape[1]
    bytewise = d == 1 and (width == 1 or width == 2 or width == 4 or width == 8)
    m = 8 // width if bytewise else 1
    mask = (1 << width) - 1
    for r in prange(R):
        if bytewise:
            for k in range((nb + m - 1) // m):
                v = np.int64(packed[r, k])
                for u in range(min(m, nb - m * k)):
                    j = m * k + u
                    out[r, j] = np.float64(scales[r, group[j]]) * table[(v >> (width * u)) & mask, 0]
            continue
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


@pjit(slp=True)
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


#: batches up to this size of scalar codes (width 1, 2, 4 or 8) take
#: :func:`table_matmul_lut` (one lookup per byte of codes; the table has 1 KiB per
#: byte of a row's codes and row of x)
LUT_BATCH = 4

#: batches up to this size take :func:`trio_matmul_octets`: its table of signed octets
#: (1 KiB per weight column and batch row) outgrows the caches beyond one row of x,
#: where decoding each block once for the whole batch is faster (measured in
#: ``benchmarks/bench_qmatmul.py``)
OCTET_BATCH = 1


def trio_octet_maps(perm, sign):
    """``(prm, sgn)`` of shape ``(256, 8)``: the signed permutation of octet slot ``q``.

    ``q = 128 eps + (p & 127)`` for the even-weight pattern byte ``p`` (its low seven
    bits determine it); ``sgn[q, i] * y[prm[q, i]]`` is the coefficient of canonical
    coordinate ``i`` of an octet ``y`` of ``x``.
    """
    q = np.arange(256)
    eps, p7 = q >> 7, q & 127
    parity = np.array([bin(v).count("1") & 1 for v in range(128)])[p7]
    p = p7 | (parity << 7)
    return (np.ascontiguousarray(perm[eps, p], dtype=np.int64),
            np.ascontiguousarray(sign[eps, p], dtype=np.float32))


@pjit(slp=True)
def trio_signed_octets(x, prm, sgn, xs):
    """``xs[b, o, q, i] = sgn[q, i] * x[b, 8 o + prm[q, i]]`` (``xs`` of shape (B, P/8, 256, 8))."""
    B, n_oct = xs.shape[0], xs.shape[1]
    for t in prange(B * n_oct):
        bb = t // n_oct
        o = t - bb * n_oct
        for q in range(256):
            for i in range(8):
                xs[bb, o, q, i] = sgn[q, i] * x[bb, 8 * o + prm[q, i]]


def trio_signed_octets_ref(x, prm, sgn):
    """numpy: the same table."""
    B, P = x.shape
    y = x.reshape(B, P // 8, 8)
    return (sgn[None, None] * y[:, :, prm]).astype(np.float32)


#: rows of W per tile of :func:`trio_matmul_octets`: the tile's rows are taken a block
#: column at a time, so the 24 KiB of ``xs`` that a column reads stay in the caches
OCTET_TILE = 256


def trio_octet_args(tab, combos, b):
    """``(rows, tiers)``: the class tables as one ``(12 R, 8)`` array of rows and each
    allowed tier triple packed in one int64 (8 bits a tier), for :func:`trio_matmul_octets`."""
    rows = np.ascontiguousarray(tab.reshape(-1, tab.shape[-1]))
    c = np.asarray(combos, dtype=np.int64)
    tiers = np.ascontiguousarray(c[:, 0] | (c[:, 1] << 8) | (c[:, 2] << 16))
    return rows, tiers


@jit
def octet_class_bytes(word, eps):
    """The octet classes' offsets ``(1 - eps) (2 + |p_j|)`` of the three pattern bytes
    of ``word``, one per byte (a byte-wise popcount); the class of octet ``j`` is its
    byte plus its class bit (``leechlib.trio``'s numbering: ``pi`` for ``eps = 1``,
    ``2 + w + pi`` for ``eps = 0``)."""
    v = word - ((word >> 1) & 0x555555)
    v = (v & 0x333333) + ((v >> 2) & 0x333333)
    v = (v + (v >> 4)) & 0x0F0F0F
    return (eps ^ 1) * (0x020202 + v)


@pjit(slp=True)
def trio_matmul_octets(xs, packed, scales, group, b, cb, rows, tiers, n_rows, gen_lo, gen_hi, out):
    """:func:`trio_matmul` through the signed octets ``xs`` of ``x`` (:func:`trio_signed_octets`).

    Per block: the index fields, three class-table rows (``rows``, ``n_rows`` per
    class; the class from a popcount, :func:`octet_class_bytes`) and three rows of
    ``xs``; no weight is written anywhere.  Tiles of :data:`OCTET_TILE` rows of
    ``W`` run a block column at a time.
    """
    B = xs.shape[0]
    R = packed.shape[0]
    nb = group.shape[0]
    T = OCTET_TILE
    for c in prange((R + T - 1) // T):
        r0 = c * T
        r1 = min(R, r0 + T)
        acc = np.zeros((B, r1 - r0))
        for j in range(nb):
            for r in range(r0, r1):
                eps, pi1, pi2, cm, word, i1, i2, i3 = split_index(read_code(packed, r, j, 48), b, cb, gen_lo, gen_hi)
                e = octet_class_bytes(word, eps)
                tr = tiers[cm]
                o0 = ((e & 255) + pi1) * n_rows + ((tr & 255) << b) + i1
                o1 = (((e >> 8) & 255) + pi2) * n_rows + (((tr >> 8) & 255) << b) + i2
                o2 = (((e >> 16) & 255) + (eps ^ pi1 ^ pi2)) * n_rows + (((tr >> 16) & 255) << b) + i3
                k = eps << 7
                q0 = k + (word & 127)
                q1 = k + ((word >> 8) & 127)
                q2 = k + ((word >> 16) & 127)
                sc = scales[r, group[j]]
                for bb in range(B):
                    acc[bb, r - r0] += sc * (dot8(xs[bb, 3 * j, q0], rows[o0]) + dot8(xs[bb, 3 * j + 1, q1], rows[o1])
                                             + dot8(xs[bb, 3 * j + 2, q2], rows[o2]))
        for bb in range(B):
            for r in range(r0, r1):
                out[bb, r] = acc[bb, r - r0]


@pjit(slp=True)
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
