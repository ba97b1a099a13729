r"""Shells of the Leech lattice: the theta series, shell counts, shell enumeration and
the minimal vectors, all from the structure of the integer model.

In the integer model :math:`\sqrt8\,\Lambda_{24}` (see :mod:`leechlib.lattice`) a
vector is ``x = eps + 2u + 4y`` with ``eps`` in {0, 1}, ``u`` a Golay codeword and
``sum(y)`` congruent to ``eps`` modulo 2.  :func:`shell_count` counts the vectors of
each norm from that description with generating functions over the Golay weight
enumerator; :func:`theta_series` computes the same numbers independently from
modular forms; the shells are enumerated (in chunks) and the minimal vectors built
from the same description.  :mod:`leechlib.lattice` and :mod:`leechlib.codebook`
build on this module; ``theta_series`` and ``shell_count`` are also importable from
both :mod:`leechlib` and :mod:`leechlib.lattice`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from ._mog import readonly as _readonly
from ._validation import check_int
from .golay import _code

__all__ = ["theta_series", "shell_count", "minimal_vectors_int"]


def _sigma(k: int, n: int) -> int:
    return sum(d**k for d in range(1, n + 1) if n % d == 0)


@functools.cache
def _tau(n_terms: int) -> tuple:
    """Ramanujan tau(0..n_terms-1) from Δ = q Π (1 - q^n)^24, exact ints."""
    poly = [0] * n_terms
    if n_terms > 1:
        poly[1] = 1
    for n in range(1, n_terms):
        for _ in range(24):
            for i in range(n_terms - 1, n - 1, -1):
                poly[i] -= poly[i - n]
    return tuple(poly)


def theta_series(n: int) -> list[int]:
    r"""The first ``n`` coefficients of the theta series of :math:`\Lambda_{24}`.

    Coefficient ``k`` is the number of lattice vectors of squared norm ``2k``
    (unit coordinates), from the modular form identity

    .. math:: \Theta_{\Lambda_{24}} = E_{12} - \tfrac{65520}{691}\,\Delta,

    computed exactly with Python integers.  :func:`shell_count` computes the same
    numbers independently from the Golay code.

    Parameters
    ----------
    n : int
        Number of coefficients, ``n >= 0``.

    Returns
    -------
    list of int

    Examples
    --------
    >>> from leechlib import theta_series
    >>> theta_series(5)
    [1, 0, 196560, 16773120, 398034000]
    """
    n = check_int(n, "n", 0)
    tau = _tau(max(n, 1))
    out = []
    for k in range(n):
        if k == 0:
            out.append(1)
            continue
        num = 65520 * (_sigma(11, k) - tau[k])
        q, r = divmod(num, 691)
        if r:  # pragma: no cover - Ramanujan's congruence
            raise ArithmeticError("691 does not divide the Eisenstein correction")
        out.append(q)
    return out


def _class_values(eps: int, u_bit: int, max_norm: int) -> list[tuple[int, int]]:
    """Values of one coordinate class, ``x = eps + 2*u_bit + 4*y`` with ``x*x <= max_norm``.

    Returns ``(x, y mod 2)`` pairs, ascending in ``x`` (Python ints).  Shared by the
    structural counts, the shell enumeration and the codebooks.
    """
    off = eps + 2 * u_bit
    bound = math.isqrt(max_norm) + 8
    out = []
    for y in range(-bound, bound + 1):
        x = off + 4 * y
        if x * x <= max_norm:
            out.append((x, y & 1))
    return out


def _coordinate_series(eps: int, u_bit: int, max_norm: int):
    """Per-coordinate generating polynomials in q^(x^2), split by parity of y.

    Returns (even, odd): lists of length max_norm+1 with the numbers of values x in
    the residue class eps + 2*u_bit (mod 4) of each square, split by y mod 2 where
    x = eps + 2*u_bit + 4*y.
    """
    even = [0] * (max_norm + 1)
    odd = [0] * (max_norm + 1)
    for x, p in _class_values(eps, u_bit, max_norm):
        (odd if p else even)[x * x] += 1
    return even, odd


def _mul(a, b, n):
    out = [0] * (n + 1)
    for i, ai in enumerate(a):
        if ai:
            for j in range(0, n + 1 - i):
                if b[j]:
                    out[i + j] += ai * b[j]
    return out


def _power(p, e, n):
    result = [1] + [0] * n
    base = p
    while e:
        if e & 1:
            result = _mul(result, base, n)
        base = _mul(base, base, n)
        e >>= 1
    return result


@functools.cache
def _shell_counts_int(max_int_norm: int) -> tuple:
    """Counts of vectors of √8Λ24 of each integer norm 0..max_int_norm, by structure."""
    weights = _code().weight_enumerator()
    n = max_int_norm
    total = [0] * (n + 1)
    for eps in (0, 1):
        e0, o0 = _coordinate_series(eps, 0, n)
        e1, o1 = _coordinate_series(eps, 1, n)
        plus0 = [a + b for a, b in zip(e0, o0, strict=True)]
        minus0 = [a - b for a, b in zip(e0, o0, strict=True)]
        plus1 = [a + b for a, b in zip(e1, o1, strict=True)]
        minus1 = [a - b for a, b in zip(e1, o1, strict=True)]
        for w, count in enumerate(weights):
            if not count:
                continue
            ap = _mul(_power(plus1, w, n), _power(plus0, 24 - w, n), n)
            am = _mul(_power(minus1, w, n), _power(minus0, 24 - w, n), n)
            sign = -1 if eps else 1
            for k in range(n + 1):
                both = ap[k] + sign * am[k]
                total[k] += int(count) * (both // 2)
    return tuple(total)


def shell_count(norm: int) -> int:
    r"""Number of vectors of :math:`\Lambda_{24}` of squared norm ``norm`` (unit coords).

    Counted from the structure ``x = eps + 2u + 4y`` of the integer model with
    generating functions over the Golay weight enumerator: an independent check
    of :func:`theta_series` (nothing is enumerated).

    Examples
    --------
    >>> from leechlib import shell_count
    >>> shell_count(4), shell_count(6), shell_count(2)
    (196560, 16773120, 0)
    """
    norm = check_int(norm, "norm", 0)
    if norm % 2:
        return 0
    return _shell_counts_int(8 * norm)[8 * norm]


# ---------------------------------------------------------------------------
# Shell enumeration
# ---------------------------------------------------------------------------


def _vectors_of_norm(values: np.ndarray, n: int, norm: int) -> dict:
    """All length-n vectors with entries in ``values`` and squared norm <= norm.

    Returns {total_norm: (vectors (m, n) int16, y-parities (m,))} for every total.
    ``values`` is a 2-column array (value, y-parity).
    """
    parts = {0: (np.zeros((1, 0), dtype=np.int16), np.zeros(1, dtype=np.int8))}
    for _ in range(n):
        nxt: dict = {}
        for nrm, (vecs, par) in parts.items():
            for v, p in values:
                s = nrm + int(v) * int(v)
                if s > norm:
                    continue
                col = np.full((vecs.shape[0], 1), v, dtype=np.int16)
                add = (np.hstack([vecs, col]), (par + p) % 2)
                nxt.setdefault(s, []).append(add)
        parts = {
            s: (np.vstack([a for a, _ in lst]), np.concatenate([b for _, b in lst]))
            for s, lst in nxt.items()
        }
    return parts


def _templates(eps: int, w: int, norm: int):
    """Pairs (support part, complement part) of norm `norm` in coset half eps."""
    sup = _vectors_of_norm(np.array(_class_values(eps, 1, norm)), w, norm)
    com = _vectors_of_norm(np.array(_class_values(eps, 0, norm)), 24 - w, norm)
    out = []
    for na, (va, pa) in sup.items():
        nb = norm - na
        if nb not in com:
            continue
        vb, pb = com[nb]
        for parity_a in (0, 1):
            a = va[pa == parity_a]
            b = vb[pb == (eps - parity_a) % 2]
            if len(a) and len(b):
                out.append((a, b))
    return out


def _iter_shell_int(norm_int: int, chunk_size: int) -> Iterator[np.ndarray]:
    code = _code()
    cw = code.codewords()
    weights = cw.sum(axis=1)
    buf = []
    size = 0
    for eps in (0, 1):
        templates = {w: _templates(eps, w, norm_int) for w in (0, 8, 12, 16, 24)}
        for idx in range(4096):
            u = cw[idx].astype(bool)
            pairs = templates[int(weights[idx])]
            for a, b in pairs:
                block = np.empty((len(a) * len(b), 24), dtype=np.int8)
                block[:, u] = np.repeat(a, len(b), axis=0)
                block[:, ~u] = np.tile(b, (len(a), 1))
                buf.append(block)
                size += len(block)
            while size >= chunk_size:
                allv = np.vstack(buf)
                yield allv[:chunk_size]
                rest = allv[chunk_size:]
                buf = [rest] if len(rest) else []
                size = len(rest)
    if size:
        yield np.vstack(buf)


# ---------------------------------------------------------------------------
# Minimal vectors
# ---------------------------------------------------------------------------


@functools.cache
def minimal_vectors_int() -> np.ndarray:
    """The 196 560 minimal vectors (integer model, read-only int8), in the order of
    :meth:`LeechLattice.minimal_vectors`."""
    code = _code()
    out = np.zeros((196560, 24), dtype=np.int8)
    # shape 1: (±4, ±4) on pairs i < j, idx = 4*pair + s
    ii, jj = np.triu_indices(24, k=1)
    s = np.arange(4)
    rows = np.arange(1104)
    pair = rows // 4
    sgn = s[rows % 4]
    out[rows, ii[pair]] = np.where(sgn & 1, -4, 4)
    out[rows, jj[pair]] = np.where(sgn & 2, -4, 4)
    # shape 2: ±2 on octads, even number of minus signs
    octs = code.octads().astype(np.intp)
    b = np.arange(128)
    bits = ((b[:, None] >> np.arange(7)) & 1).astype(np.int8)
    bits = np.hstack([bits, bits.sum(axis=1, keepdims=True) % 2])  # (128, 8)
    signs = (2 - 4 * bits).astype(np.int8)
    block = np.zeros((759, 128, 24), dtype=np.int8)
    block[np.arange(759)[:, None, None], np.arange(128)[None, :, None], octs[:, None, :]] = (
        signs[None, :, :]
    )
    out[1104 : 1104 + 97152] = block.reshape(-1, 24)
    # shape 3: v_i = (-1)^c_i, v_k = -3 (-1)^c_k
    pm = (1 - 2 * code.codewords().astype(np.int8))  # (4096, 24)
    blk = np.repeat(pm[:, None, :], 24, axis=1)
    k = np.arange(24)
    blk[:, k, k] = -3 * pm[:, k]
    out[1104 + 97152 :] = blk.reshape(-1, 24)
    return _readonly(out)
