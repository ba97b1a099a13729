r"""The MOG tables: GF(4), the hexacode, column patterns, the Golay codewords and octads.

This is the one place where the tables of the Miracle Octad Generator are built; the
Golay code (:mod:`leechlib.golay`), the exact decoders (:mod:`leechlib.decode`), the
constrained search of the quantizers, the CUDA kernels and the extension seam
(:mod:`leechlib.kernels`) all take them from here, so that :mod:`leechlib.golay` and
:mod:`leechlib.decode` do not import each other.

A leaf: it imports numpy and nothing of leechlib.  Every table is built on first use
by a ``functools.lru_cache``'d function and returned read-only; nothing is built at
import.

Conventions (Conway & Sloane, *SPLAG*, Fig. 4.12): coordinate ``i = 4*column + row``
(6 columns, 4 rows); rows are labelled by :math:`\mathrm{GF}(4) = \{0, 1, \omega,
\bar\omega\}`, encoded ``0, 1, 2, 3`` (addition is XOR, :math:`\omega^2 = \bar\omega`);
a 24-bit word is a Golay codeword iff every column has the parity of the top row and
the column *scores* (XOR of the labels of the set rows) form a hexacode word.  Words
are packed into integers with bit ``i`` = coordinate ``i``.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

__all__ = [
    "GF4_MUL",
    "hexacode_words",
    "column_pattern",
    "codeword_ints_mog",
    "generator",
    "codewords",
    "codeword_ints",
    "octads",
    "kernel_tables",
]

#: Multiplication table of GF(4) in the encoding 0, 1, ω = 2, ω̄ = 3 (addition is XOR).
GF4_MUL = np.array(
    [[0, 0, 0, 0], [0, 1, 2, 3], [0, 2, 3, 1], [0, 3, 1, 2]], dtype=np.uint8
)
GF4_MUL.flags.writeable = False

_WEIGHTS = np.unpackbits(
    np.arange(1 << 12, dtype=">u2").view(np.uint8).reshape(-1, 2), axis=1
).sum(axis=1, dtype=np.uint8)  # popcount of 0..4095


def popcount(a) -> np.ndarray:
    """Number of set bits of each integer (< 2**24) of ``a``, as int64."""
    a = np.asarray(a, dtype=np.int64)
    return (_WEIGHTS[a & 0xFFF] + _WEIGHTS[(a >> 12) & 0xFFF]).astype(np.int64)


def pack(words: np.ndarray) -> np.ndarray:
    """(..., n) 0/1 array -> (...,) int64 with bit i = coordinate i."""
    n = words.shape[-1]
    return (words.astype(np.int64) << np.arange(n, dtype=np.int64)).sum(axis=-1)


def unpack(ints, n: int = 24) -> np.ndarray:
    """(...,) integers -> (..., n) uint8 bits, bit i = coordinate i."""
    ints = np.asarray(ints, dtype=np.int64)
    return ((ints[..., None] >> np.arange(n, dtype=np.int64)) & 1).astype(np.uint8)


def readonly(a: np.ndarray) -> np.ndarray:
    """``a``, marked read-only (returned for chaining)."""
    a.flags.writeable = False
    return a


def rref_gf2(rows: np.ndarray):
    """Reduced row-echelon form over GF(2); returns (matrix, pivot columns)."""
    m = rows.copy() % 2
    pivots = []
    r = 0
    for c in range(m.shape[1]):
        nz = np.nonzero(m[r:, c])[0]
        if nz.size == 0:
            continue
        k = r + nz[0]
        m[[r, k]] = m[[k, r]]
        others = np.nonzero(m[:, c])[0]
        others = others[others != r]
        m[others] ^= m[r]
        pivots.append(c)
        r += 1
        if r == m.shape[0]:
            break
    return m[:r], pivots


@functools.cache
def hexacode_words() -> np.ndarray:
    r"""The 64 words of the hexacode, a [6, 3, 4] code over GF(4).

    Word number ``16*a + 4*b + c`` is
    :math:`(a, b, c, \varphi(1), \varphi(\omega), \varphi(\bar\omega))` with
    :math:`\varphi(x) = a x^2 + b x + c`, symbols encoded 0, 1, ω = 2, ω̄ = 3.

    Returns
    -------
    numpy.ndarray
        Read-only ``(64, 6)`` uint8 array.

    Examples
    --------
    >>> from leechlib.golay import hexacode_words
    >>> H = hexacode_words()
    >>> H.shape
    (64, 6)
    >>> H[1]          # a = b = 0, c = 1: the constant polynomial 1
    array([0, 0, 1, 1, 1, 1], dtype=uint8)
    >>> import numpy as np
    >>> np.bincount((H != 0).sum(axis=1), minlength=7).tolist()
    [1, 0, 0, 0, 45, 0, 18]
    """
    words = np.zeros((64, 6), dtype=np.uint8)
    for a, b, c in itertools.product(range(4), repeat=3):
        row = [a, b, c]
        for x in (1, 2, 3):
            x2 = GF4_MUL[x, x]
            row.append(int(GF4_MUL[a, x2]) ^ int(GF4_MUL[b, x]) ^ c)
        words[16 * a + 4 * b + c] = row
    return readonly(words)


@functools.cache
def column_pattern() -> np.ndarray:
    """The unique MOG column pattern with a given score, parity and top bit.

    ``column_pattern()[s, p, t]`` is the 4-bit pattern (bit ``r`` = row ``r``) whose
    score (XOR of the labels of its set rows) is ``s``, whose parity is ``p`` and
    whose top bit (row 0) is ``t``.  This is the fact behind the structured Golay
    and Leech decoders: a codeword is a hexacode word, a parity and six top bits
    whose sum has that parity.

    Returns
    -------
    numpy.ndarray
        Read-only ``(4, 2, 2)`` uint8 array.

    Examples
    --------
    >>> from leechlib.golay import column_pattern
    >>> int(column_pattern()[0, 0, 0]), int(column_pattern()[0, 1, 1])
    (0, 1)
    """
    table = np.full((4, 2, 2), 255, dtype=np.uint8)
    for pat in range(16):
        s = 0
        for r in range(4):
            if pat >> r & 1:
                s ^= r
        table[s, bin(pat).count("1") & 1, pat & 1] = pat
    if (table == 255).any():  # pragma: no cover - a property of GF(4)
        raise RuntimeError("column patterns are not unique")
    return readonly(table)


@functools.cache
def codeword_ints_mog() -> np.ndarray:
    """All 4096 codewords as packed ints, built from the MOG rule, sorted."""
    pat = column_pattern()
    hexa = hexacode_words()
    out = []
    for h in hexa:
        for p in (0, 1):
            for tops in itertools.product((0, 1), repeat=6):
                if sum(tops) % 2 != p:
                    continue
                w = 0
                for j in range(6):
                    w |= int(pat[h[j], p, tops[j]]) << (4 * j)
                out.append(w)
    return readonly(np.array(sorted(out), dtype=np.int64))


@functools.cache
def generator() -> tuple:
    """``(G, information_set)``: the (12, 24) uint8 generator matrix in reduced
    row-echelon form and its 12 pivot coordinates (intp), both read-only."""
    g, pivots = rref_gf2(unpack(codeword_ints_mog()))
    if g.shape[0] != 12:  # pragma: no cover - guarded by tests
        raise RuntimeError("codeword set does not span a 12-dimensional code")
    return readonly(g.astype(np.uint8)), readonly(np.array(pivots, dtype=np.intp))


@functools.cache
def codewords() -> np.ndarray:
    """All 4096 codewords, (4096, 24) uint8, row ``i`` = the message with bits of ``i``
    times :func:`generator` (bit ``k`` of ``i`` = message symbol ``k``)."""
    g, _ = generator()
    msgs = unpack(np.arange(4096), 12).astype(np.int32)
    return readonly(((msgs @ g.astype(np.int32)) & 1).astype(np.uint8))


@functools.cache
def codeword_ints() -> np.ndarray:
    """The rows of :func:`codewords` packed as ints (bit ``i`` = coordinate ``i``)."""
    return readonly(pack(codewords()))


@functools.cache
def octads() -> np.ndarray:
    """The 759 octads as sorted 8-sets, (759, 8) int8, rows in lexicographic order."""
    cw = codewords()
    oct_words = cw[cw.sum(axis=1) == 8]
    sets = np.array([np.nonzero(w)[0] for w in oct_words], dtype=np.int8)
    order = np.lexsort(sets.T[::-1])
    return readonly(sets[order])


@functools.cache
def kernel_tables() -> dict:
    """The tables of the Numba kernels, raveled int64 (read-only).

    ``pat``: :func:`column_pattern` (index ``4s + 2pi + t``); ``hexa``:
    :func:`hexacode_words` (index ``6w + j``); ``hoff_leech[6w + j] = 16j + 4 h_j``
    and ``hoff_golay[6w + j] = 8j + 2 h_j``: the column-table offsets of the Leech
    and the Golay decoders; ``octads`` (759 * 8); ``info``: the information set;
    ``codeword_ints``: all codewords packed, sorted (for membership by search).
    """
    hexa = hexacode_words().astype(np.int64)
    cols = np.arange(6, dtype=np.int64)
    g, info = generator()
    t = {
        "pat": column_pattern().astype(np.int64).ravel(),
        "hexa": hexa.ravel().copy(),
        "hoff_leech": (16 * cols + 4 * hexa).ravel(),
        "hoff_golay": (8 * cols + 2 * hexa).ravel(),
        "octads": octads().astype(np.int64).ravel(),
        "info": np.asarray(info, dtype=np.int64),
        "codeword_ints": codeword_ints_mog().copy(),
    }
    for v in t.values():
        v.flags.writeable = False
    return t
