"""Plain-numpy references for the Numba kernels, clear rather than fast.

The references of the decoders (:mod:`leechlib._kernels.leech`,
:mod:`leechlib._kernels.minvec`) share no algorithm with the kernels and are exact by
exhaustion:

* :func:`leech_nearest_ref` tries all 8192 cosets of 4*D24 in sqrt(8)*Lambda24
  (Golay word u and eps in {0, 1}: eps + 2u + 4*D24 for eps = 0, eps + 2u + 4*(D24 + e1)
  for eps = 1).  In a coset a + 4*Z^24 the nearest point rounds each coordinate; the
  sum-parity condition of D24 (or D24 + e1) is then met, if it fails, by moving the one
  coordinate whose second-nearest value costs least (the classical D_n decoder:
  moving more coordinates, or one coordinate further, never costs less).
* :func:`golay_soft_ref` scores all 4096 codewords.
* :func:`nearest_minvec_ref` takes inner products with all 196 560 minimal vectors.

:func:`constrained_reference`, the reference of the constrained search
(:mod:`leechlib._kernels.constrained`), solves every one of the 8192 cosets by the
search's dynamic programme, vectorised over the codewords, with no bounds and no
pruning (about a second per point).

Slow (milliseconds per point); meant for tests and benchmarks.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from ..golay import GolayCode


@functools.cache
def _golay():
    code = GolayCode()
    return code.codewords().astype(bool), code.octads().astype(np.int64)


def _chunks(n, size):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def leech_nearest_ref(y, *, chunk=8):
    """Brute-force nearest points of sqrt(8)*Lambda24 (integer model).

    Parameters
    ----------
    y : array_like, shape (n, 24)
        Points in the integer frame.

    Returns
    -------
    points : (n, 24) float64
        A nearest lattice point (the first coset in the order eps, codeword index).
    dist : (n,) float64
        Its squared distance, recomputed as ``((y - points)**2).sum(-1)``.
    gap : (n,) float64
        Second-best coset distance minus the best (0 means a tie between cosets).
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1, 24)
    words, _ = _golay()  # (4096, 24) bool
    n = y.shape[0]
    points = np.empty_like(y)
    dist = np.empty(n)
    gap = np.empty(n)
    for lo, hi in _chunks(n, chunk):
        yy = y[lo:hi]  # (c, 24)
        # per residue a mod 4: nearest value, its cost, the parity of its 4Z offset,
        # the second-nearest value and the extra cost of using it
        near = np.empty(yy.shape + (4,))
        cost = np.empty_like(near)
        par = np.empty(near.shape, dtype=np.int64)
        alt = np.empty_like(near)
        pen = np.empty_like(near)
        for a in range(4):
            k = np.rint((yy - a) / 4.0)
            v = a + 4.0 * k
            step = np.where(yy >= v, 4.0, -4.0)
            near[..., a] = v
            cost[..., a] = (yy - v) ** 2
            par[..., a] = k.astype(np.int64) & 1
            alt[..., a] = v + step
            pen[..., a] = (yy - (v + step)) ** 2 - (yy - v) ** 2
        totals = []
        for eps in (0, 1):
            lo_a, hi_a = eps, eps + 2
            sel = words[None, :, :]  # (1, 4096, 24)
            c = np.where(sel, cost[:, None, :, hi_a], cost[:, None, :, lo_a])
            q = np.where(sel, par[:, None, :, hi_a], par[:, None, :, lo_a])
            p = np.where(sel, pen[:, None, :, hi_a], pen[:, None, :, lo_a])
            bad = (q.sum(-1) & 1) != eps
            totals.append(c.sum(-1) + np.where(bad, p.min(-1), 0.0))
        tot = np.concatenate(totals, axis=1)  # (c, 8192)
        best = np.argmin(tot, axis=1)
        srt = np.sort(tot, axis=1)
        gap[lo:hi] = srt[:, 1] - srt[:, 0]
        for r in range(hi - lo):
            eps, u = divmod(int(best[r]), 4096)
            a = eps + 2 * words[u].astype(np.int64)
            idx = np.arange(24)
            pt = near[r, idx, a].copy()
            kpar = par[r, idx, a].sum() & 1
            if kpar != eps:
                i = int(np.argmin(pen[r, idx, a]))
                pt[i] = alt[r, i, a[i]]
            points[lo + r] = pt
    dist[:] = ((y - points) ** 2).sum(-1)
    return points, dist, gap


def golay_soft_ref(r):
    """Brute-force soft decoding: all 4096 codewords scored by sum (-1)^{c_i} r_i.

    Returns
    -------
    words : (n, 24) uint8
        The first best codeword in :meth:`GolayCode.codewords` order.
    score : (n,) float64
        Its score.
    gap : (n,) float64
        Best minus second-best score.
    """
    r = np.asarray(r, dtype=np.float64).reshape(-1, 24)
    words, _ = _golay()
    signs = 1.0 - 2.0 * words.astype(np.float64)
    scores = r @ signs.T
    best = np.argmax(scores, axis=1)
    srt = np.sort(scores, axis=1)
    return (
        words[best].astype(np.uint8),
        scores[np.arange(len(r)), best],
        srt[:, -1] - srt[:, -2],
    )


@functools.cache
def minimal_vectors_int() -> np.ndarray:
    """The 196 560 minimal vectors of sqrt(8)*Lambda24 in the order of ``LeechLattice``.

    * index ``4*pair + s`` (0..1103): (+-4, +-4) on the pair ``i < j`` (lexicographic
      pair order); bit 0 of ``s`` = minus on ``i``, bit 1 = minus on ``j``;
    * ``1104 + 128*k + b``: +-2 on octad ``k``; bits 0..6 of ``b`` = minus on the first
      seven positions, the eighth makes the number of minus signs even;
    * ``1104 + 97152 + 24*c + k``: codeword ``c``; v_i = (-1)^{c_i}, v_k = -3 (-1)^{c_k}.
    """
    words, octads = _golay()
    out = np.zeros((196560, 24), dtype=np.int8)
    row = 0
    for i, j in itertools.combinations(range(24), 2):
        for s in range(4):
            out[row, i] = -4 if s & 1 else 4
            out[row, j] = -4 if s & 2 else 4
            row += 1
    b = np.arange(128)
    bits = (b[:, None] >> np.arange(7)) & 1  # (128, 7)
    last = bits.sum(1) & 1
    minus = np.concatenate([bits, last[:, None]], axis=1)  # (128, 8)
    vals = np.where(minus == 1, -2, 2).astype(np.int8)
    for k in range(octads.shape[0]):
        out[row : row + 128][:, octads[k]] = vals
        row += 128
    signs = np.where(words, -1, 1).astype(np.int8)  # (4096, 24)
    blk = np.repeat(signs, 24, axis=0)  # (98304, 24)
    kk = np.tile(np.arange(24), 4096)
    blk[np.arange(blk.shape[0]), kk] *= -3
    out[row:] = blk
    out.flags.writeable = False
    return out


def nearest_minvec_ref(x, *, chunk=32):
    """Brute force over all minimal vectors: the largest inner product with ``x``.

    Returns
    -------
    index : (n,) int64
        The first maximising index in :func:`minimal_vectors_int` order.
    ip : (n,) float64
        The largest inner product (integer-model vectors).
    gap : (n,) float64
        Largest minus second-largest inner product.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1, 24)
    vt = minimal_vectors_int().astype(np.float64).T  # (24, 196560)
    n = x.shape[0]
    index = np.empty(n, dtype=np.int64)
    ip = np.empty(n)
    gap = np.empty(n)
    for lo, hi in _chunks(n, chunk):
        s = x[lo:hi] @ vt
        best = np.argmax(s, axis=1)
        index[lo:hi] = best
        ip[lo:hi] = s[np.arange(hi - lo), best]
        part = np.partition(s, -2, axis=1)[:, -2:]
        gap[lo:hi] = part[:, 1] - part[:, 0]
    return index, ip, gap


def constrained_reference(y, n_lo, n_hi, codewords):
    """Exhaustive constrained nearest point of one point ``y`` (24,) (integer frame).

    ``codewords``: (4096, 24) 0/1 array of the Golay code.  Returns ``(v, dist)``
    with ``v`` an int64 (24,) lattice vector of norm in ``[n_lo, n_hi]`` (``None``
    and ``inf`` if there is none).  Plain numpy, no bounds or pruning.
    """
    # the class tables live beside the Numba DP; imported here so that importing this
    # module does not import Numba
    from .coset import class_tables

    y = np.asarray(y, dtype=np.float64)
    U = np.asarray(codewords, dtype=np.int64)
    vals, nv, step, vpar = class_tables(n_hi)
    best, best_v = np.inf, None
    for eps in (0, 1):
        if eps == 0:
            S, s_lo = n_hi // 4, -(-n_lo // 4)
        else:
            if n_hi < 24:
                continue
            S, s_lo = (n_hi - 24) // 8, max(0, -(-(n_lo - 24) // 8))
        cost = np.full((4096, S + 1, 2), np.inf)
        cost[:, 0, 0] = 0.0
        choice = np.zeros((24, 4096, S + 1, 2), dtype=np.int64)
        for i in range(24):
            cls = eps + 2 * U[:, i]
            new = np.full_like(cost, np.inf)
            newch = np.zeros((4096, S + 1, 2), dtype=np.int64)
            for c in (eps, eps + 2):
                rows = np.nonzero(cls == c)[0]
                for k in range(nv[c]):
                    d, v, p = int(step[c, k]), int(vals[c, k]), int(vpar[c, k])
                    if d > S:
                        continue
                    cand = cost[rows, : S + 1 - d, :] + (y[i] - v) ** 2
                    for q in (0, 1):
                        tgt = new[rows, d:, q ^ p]
                        better = cand[:, :, q] < tgt
                        tgt = np.where(better, cand[:, :, q], tgt)
                        new[rows, d:, q ^ p] = tgt
                        ch = newch[rows, d:, q ^ p]
                        newch[rows, d:, q ^ p] = np.where(better, k, ch)
            cost = new
            choice[i] = newch
        fin = cost[:, s_lo:, eps] if s_lo <= S else np.full((4096, 1), np.inf)
        q, s = np.unravel_index(np.argmin(fin), fin.shape)
        if fin[q, s] < best:
            best = float(fin[q, s])
            s += s_lo
            p = eps
            v = np.zeros(24, dtype=np.int64)
            for i in range(23, -1, -1):
                c = eps + 2 * int(U[q, i])
                k = choice[i, q, s, p]
                v[i] = vals[c, k]
                s -= int(step[c, k])
                p ^= int(vpar[c, k])
            best_v = v
    return best_v, best
