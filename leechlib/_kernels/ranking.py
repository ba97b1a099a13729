"""Ranking and unranking of Leech lattice shells (Numba kernels and their references).

A vector of a shell of integer norm ``N`` (integer model) is written
``x = eps + 2u + 4y`` with ``eps`` in {0, 1}, ``u`` a Golay codeword and
``sum(y) ≡ eps (mod 2)``.  Its rank in the shell is, in this order of significance:

1. the block ``(eps, weight class of u)``, blocks in the order eps = 0, 1 and
   weights 0, 8, 12, 16, 24;
2. the position of ``u`` among the codewords of its weight (codeword table order);
3. the lexicographic rank of ``x`` (coordinates 0..23, values ascending) among all
   vectors with the same ``eps`` and ``u``.

Step 3 is enumerative coding with the count table
``T[eps, k1, k0, n, p]``: the number of ways to fill ``k1`` coordinates of class 1
(``u_i = 1``) and ``k0`` of class 0 with total squared norm ``n`` and ``sum(y)``
of parity ``p``.  Nothing is enumerated and no codebook is stored.

The kernels import only :mod:`leechlib._jit`; the tables come from the caller.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit, pjit

__all__ = [
    "unrank_kernel",
    "rank_union_kernel",
    "unrank_reference",
    "rank_reference",
]


@jit
def _unrank_one(r, N, eps, u_bits, T, vals, vpar, nvals, out):
    """Write the vector of lexicographic rank ``r`` for (eps, u) into ``out``."""
    k1 = 0
    for i in range(24):
        k1 += u_bits[i]
    k0 = 24 - k1
    rem = N
    par = 0
    for i in range(24):
        c = u_bits[i]
        if c == 1:
            k1 -= 1
        else:
            k0 -= 1
        chosen = False
        for j in range(nvals[eps, c]):
            v = vals[eps, c, j]
            s = v * v
            if s > rem:
                continue
            need = (eps - par - vpar[eps, c, j]) & 1
            cnt = T[eps, k1, k0, rem - s, need]
            if r < cnt:
                out[i] = v
                rem -= s
                par = (par + vpar[eps, c, j]) & 1
                chosen = True
                break
            r -= cnt
        if not chosen:
            return False
    return rem == 0


@pjit
def unrank_kernel(ranks, N, T, vals, vpar, nvals, block_start, block_eps, block_class,
                  per_u, class_words, out):
    """Unrank ``ranks`` (int64) of the shell of integer norm ``N`` into ``out`` (n, 24)."""
    n = ranks.shape[0]
    nblocks = block_start.shape[0]
    ok = np.ones(n, dtype=np.bool_)
    for t in prange(n):
        r = ranks[t]
        b = 0
        for k in range(nblocks):
            if r >= block_start[k]:
                b = k
        r -= block_start[b]
        eps = block_eps[b]
        cls = block_class[b]
        j = r // per_u[b]
        r = r - j * per_u[b]
        word = class_words[cls, j]
        u_bits = np.empty(24, dtype=np.int64)
        for i in range(24):
            u_bits[i] = (word >> i) & 1
        ok[t] = _unrank_one(r, N, eps, u_bits, T, vals, vpar, nvals, out[t])
    return ok


@jit
def _golay_parts(x, eps, info_set):
    """``(word, weight, message)`` of the binary word ``u`` of ``x = eps + 2u + 4y``
    (bit ``i`` of ``word`` is ``u_i``; ``message`` its bits on ``info_set``), or
    ``(-1, 0, 0)`` if an entry of ``x`` has the wrong parity."""
    word = 0
    k1 = 0
    for i in range(24):
        d = x[i] - eps
        if d & 1:
            return -1, 0, 0
        bit = (d >> 1) & 1
        word |= bit << i
        k1 += bit
    msg = 0
    for k in range(12):
        msg |= ((word >> info_set[k]) & 1) << k
    return word, k1, msg


@jit
def _lex_rank(x, word, eps, k1, nrm, T, vals, vpar, nvals):
    """Lexicographic rank of ``x = eps + 2u + 4y`` among the points of norm ``nrm``
    with the same ``eps`` and Golay word ``u`` (bit ``i`` of ``word``; ``k1`` its
    weight); -1 if the norm or the parity ``sum(y) = eps (mod 2)`` does not hold."""
    k0 = 24 - k1
    rem = nrm
    par = 0
    r = 0
    for i in range(24):
        c = (word >> i) & 1
        if c == 1:
            k1 -= 1
        else:
            k0 -= 1
        for j in range(nvals[eps, c]):
            v = vals[eps, c, j]
            if v >= x[i]:
                break
            s = v * v
            if s > rem:
                continue
            need = (eps - par - vpar[eps, c, j]) & 1
            r += T[eps, k1, k0, rem - s, need]
        rem -= x[i] * x[i]
        yi = (x[i] - eps - 2 * c) // 4
        par = (par + yi) & 1
    if par != eps or rem != 0:
        return -1
    return r


@pjit
def rank_union_kernel(points, T, vals, vpar, nvals, starts, lookup, per_u, offset, info_set,
                      class_of_msg, pos_in_class, class_words, out):
    """Indices of points (n, 24) int64 in a union of shells; -1 if not in it.

    One pass for codebooks made of several shells (a ball, the shapes of a
    shape-gain quantizer; one shell is a union of one): shell ``N = 16 m`` has the
    block starts ``starts[m]``, the block number ``lookup[m, eps, cls]`` of a weight
    class and the points per Golay word ``per_u[m]`` of its block, and its index offset
    ``offset[m]`` (-1: not in the union; ``offset[0]`` is the origin's index or -1).
    Membership is checked in the kernel: the entries have one parity, the Golay
    word ``u`` of ``x = eps + 2u + 4y`` is the codeword of its message, and
    ``sum(y) = eps (mod 2)``.  The caller bounds the entries (no int64 overflow).
    """
    n = points.shape[0]
    nn = offset.shape[0]
    for t in prange(n):
        x = points[t]
        eps = x[0] & 1
        nrm = 0
        for i in range(24):
            nrm += x[i] * x[i]
        m = nrm // 16
        if nrm % 16 != 0 or m >= nn or offset[m] < 0:
            out[t] = -1
            continue
        if nrm == 0:
            out[t] = offset[0]
            continue
        word, k1, msg = _golay_parts(x, eps, info_set)
        if word < 0:
            out[t] = -1
            continue
        cls = class_of_msg[msg]
        if class_words[cls, pos_in_class[msg]] != word:
            out[t] = -1
            continue
        b = lookup[m, eps, cls]
        r = _lex_rank(x, word, eps, k1, nrm, T, vals, vpar, nvals)
        if r < 0 or b < 0:
            out[t] = -1
            continue
        out[t] = offset[m] + starts[m, b] + pos_in_class[msg] * per_u[m, b] + r


# ---------------------------------------------------------------------------
# References: the same orders, computed with Python integers and no shared loops.
# ---------------------------------------------------------------------------


def _vectors_for(eps, u_bits, N, values):
    """All vectors for (eps, u) of norm N in lexicographic order (small N only)."""
    out = []

    def rec(i, prefix, rem, par):
        if i == 24:
            if rem == 0 and par == eps:
                out.append(tuple(prefix))
            return
        for v, p in values[(eps, u_bits[i])]:
            if v * v <= rem:
                rec(i + 1, prefix + [v], rem - v * v, (par + p) % 2)

    rec(0, [], N, 0)
    return out


def _reference_layout(N, codewords, values):
    """Per (eps, u) in rank order: (eps, u, offset); counts from one representative
    per weight (the count depends only on the weight, by symmetry)."""
    weights = codewords.sum(axis=1)
    layout = []
    total = 0
    for eps in (0, 1):
        for w in (0, 8, 12, 16, 24):
            idxs = np.nonzero(weights == w)[0]
            rep = tuple(int(b) for b in codewords[idxs[0]])
            count = len(_vectors_for(eps, rep, N, values))
            for idx in idxs:
                layout.append((eps, tuple(int(b) for b in codewords[idx]), total, count))
                total += count
    return layout, total


def unrank_reference(ranks, N, codewords, values):
    """Reference unranking by explicit enumeration (use only for small norms).

    ``codewords`` is the (4096, 24) codeword table, ``values[(eps, c)]`` the sorted
    (value, y-parity) list of each coordinate class.
    """
    layout, total = _reference_layout(N, codewords, values)
    result = []
    for r in np.asarray(ranks).tolist():
        if not 0 <= r < total:
            raise IndexError("rank beyond the shell")
        for eps, u, start, count in layout:
            if start <= r < start + count:
                result.append(_vectors_for(eps, u, N, values)[r - start])
                break
    return np.array(result, dtype=np.int64)


def rank_reference(points, N, codewords, values):
    """Reference ranking: position in the explicit enumeration order (-1 if absent)."""
    layout, _ = _reference_layout(N, codewords, values)
    where = {(eps, u): start for eps, u, start, _ in layout}
    out = []
    for x in np.asarray(points).tolist():
        eps = x[0] & 1
        u = tuple(((xi - eps) >> 1) & 1 for xi in x)
        vecs = _vectors_for(eps, u, N, values) if (eps, u) in where else []
        try:
            out.append(where[(eps, u)] + vecs.index(tuple(x)))
        except ValueError:
            out.append(-1)
    return np.array(out, dtype=np.int64)
