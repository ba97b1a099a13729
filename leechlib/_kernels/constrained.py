r"""Exact nearest Leech lattice point under a norm constraint (Numba kernel + numpy reference).

Problem
-------
Given ``y`` in R^24 in the integer frame (the lattice is sqrt(8)*Lambda24, MOG
coordinates) and integers ``n_lo <= n_hi``, find

    v* = argmin { ||y - v||^2 : v in sqrt(8)*Lambda24, n_lo <= ||v||^2 <= n_hi }.

``n_lo = 0`` is a ball (spherical shaping), ``n_lo = n_hi`` a shell (the shape
codebook of a shape-gain quantizer: for points of one norm, the nearest one is the
one of largest inner product).

Structure
---------
The lattice is the union of 8192 cosets (eps, u) of 4*D24, eps in {0, 1}, u a Golay
codeword: ``v_i = eps + 2 u_i + 4 k_i`` with ``sum(k) = eps (mod 2)``.  Inside one
coset the coordinates are independent except for two *additive* couplings: the
parity of ``sum(k)`` and the norm ``sum(v_i^2)``.  So a coset's constrained problem
is solved exactly by a dynamic programme over the coordinates whose state is
(partial norm, partial parity).  Norm steps are multiples of 4 (eps = 0: every
``v_i`` is even) or ``v_i^2 = 1 (mod 8)`` (eps = 1); the state index is ``norm / 4``
(eps = 0) or ``(norm - i) / 8`` after ``i`` coordinates (eps = 1), so the state space
has at most ``n_hi / 4 + 1`` norms times 2 parities.  Each coordinate only takes the
values of its residue class ``c = eps + 2 u_i (mod 4)`` with ``v^2 <= n_hi``.

Search (``constrained_kernel``), for one point
----------------------------------------------
1. *Lower bound per coset* (Lagrangian relaxation).  For ``t > 0`` put
   ``lam = 1/t - 1`` and ``n_ref = n_hi`` if ``lam >= 0``, ``n_lo`` otherwise.  Every
   feasible ``v`` satisfies ``lam * (||v||^2 - n_ref) <= 0``, hence

       ||y - v||^2 >= ||y - v||^2 + lam (||v||^2 - n_ref)
                   = (1/t) ||v - t y||^2 + (1 - t) ||y||^2 - lam n_ref,

   and the minimum of the right side over the whole coset (the norm constraint
   dropped, only ``v_i^2 <= n_hi`` per coordinate kept, which every feasible ``v``
   satisfies) is a lower bound ``LB_c(t)`` of the coset's constrained optimum.  The
   unconstrained minimum over a coset is per-coordinate nearest values of the class
   plus, if the parity of ``sum(k)`` is wrong, the cheapest single change of parity
   (changing three or more is never cheaper: penalties are >= 0).  Through the
   MOG (a codeword is a hexacode word h, a parity pi and six top bits of parity
   pi; see ``docs/decoding.rst``, section "The derivation") it is six lookups in
   column tables: per (eps, column, 4-bit pattern) the sum, parity and cheapest
   parity change.  The wrapper
   passes one or more values of ``t``; the bound used is the maximum over them
   (for a ball the ``t`` where the dual ``min_c LB_c(t)`` is largest, found by
   bisection; for a shell ``t = 0.93`` and ``1.07``, multipliers of both signs).
2. *Group bound*: the 32 cosets (eps, h, pi, *) share a bound, the sum over the
   columns of the cheaper of the two top bits (parities ignored), <= every
   coset bound of the group.
3. *Upper bound*: a feasible candidate from the wrapper (for a ball the nearest
   lattice points of ``t y``, ``t < 1``, that fall in the ball), or none.
4. *Best first*: one heap holds the 256 groups and the cosets of the groups
   expanded so far, keyed by their bounds.  Popping a group pushes its cosets;
   popping a coset runs its DP; the search stops when the smallest key is
   ``>= best`` (everything left is no better).  Without a starting point the
   first DPs use the thresholds ``key + 16``, ``key + 64`` and then none (a DP
   below a threshold is exact among the points below it).
5. *Coset DP*: exact over the coordinates; a partial state is dropped when its cost
   plus the sum of the smallest per-coordinate costs of the remaining coordinates
   (a lower bound of any completion) is ``>= best``: it cannot lead to a strictly
   better point.  Per coordinate, candidate values are visited in increasing cost
   and the loop stops at the first that exceeds the threshold.

Exactness: every coset whose constrained optimum is strictly below the final
``best`` is visited (its lower bound is below ``best``), and the DP of a visited
coset finds every completion strictly better than the ``best`` current when it
runs; so the result is a constrained nearest point.  Floating point: bounds and
partial sums are compared with a slack of ``1e-9 (1 + ||y||^2 + n_hi)``, far above
the rounding error, so rounding can only make the search visit more, never skip.
Final distances are sums of ``(y_i - v_i)^2`` in coordinate order, the same for
every candidate.

Ties: the first coset (in visiting order) reaching the minimum wins, and within a
coset the DP keeps the first partial solution of least cost (values in increasing
cost, ties to the smaller value).  Deterministic, but not a documented order.

``constrained_reference`` solves the same problem by the same DP over *all* 8192
cosets with numpy (no bounds, no pruning): slow (~1 s per point), for tests.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import jit, pjit

__all__ = ["class_tables", "constrained_kernel", "constrained_reference"]

_INF = np.inf


def class_tables(n_hi: int):
    """Values of each residue class ``c`` mod 4 with ``v^2 <= n_hi`` and their data.

    Returns ``(vals, nv, step, vpar)``: int64 arrays of shape (4, K), (4,), (4, K),
    (4, K): the values ascending, their count, the norm step (``v^2 / 4`` for even
    classes, ``(v^2 - 1) / 8`` for odd ones) and the parity of ``k = (v - c) / 4``.
    """
    b = math.isqrt(max(int(n_hi), 0))
    lists = [[v for v in range(-b, b + 1) if v % 4 == c and v * v <= n_hi] for c in range(4)]
    K = max(1, max(len(lst) for lst in lists))
    vals = np.zeros((4, K), dtype=np.int64)
    nv = np.zeros(4, dtype=np.int64)
    step = np.zeros((4, K), dtype=np.int64)
    vpar = np.zeros((4, K), dtype=np.int64)
    for c, lst in enumerate(lists):
        nv[c] = len(lst)
        for k, v in enumerate(lst):
            vals[c, k] = v
            step[c, k] = v * v // 4 if c % 2 == 0 else (v * v - 1) // 8
            vpar[c, k] = ((v - c) // 4) & 1
    return vals, nv, step, vpar


# ---------------------------------------------------------------------------
# Numba kernel
# ---------------------------------------------------------------------------


@jit
def _point_tables(y, vals, nv, cst, order, mincost):
    """Per (coordinate i, class c): candidate costs, their order by cost, the minimum.

    The values of a class are an arithmetic progression (step 4), so the order by
    distance to ``y_i`` is a zig-zag from the nearest value (ties: the smaller value).
    """
    for i in range(24):
        yi = y[i]
        for c in range(4):
            n = nv[c]
            if n == 0:
                mincost[i, c] = _INF
                continue
            for k in range(n):
                d = yi - vals[c, k]
                cst[i, c, k] = d * d
            k0 = int(np.floor((yi - vals[c, 0]) / 4.0))
            if k0 < 0:
                k0 = 0
            if k0 > n - 1:
                k0 = n - 1
            # left pointer l (next smaller value), right pointer rr (next larger)
            lo = k0
            hi = k0 + 1
            for r in range(n):
                if hi >= n or (lo >= 0 and cst[i, c, lo] <= cst[i, c, hi]):
                    order[i, c, r] = lo
                    lo -= 1
                else:
                    order[i, c, r] = hi
                    hi += 1
            mincost[i, c] = cst[i, c, order[i, c, 0]]


@jit
def _column_tables(y, t, vals, nv, vpar, m, col, cpar):
    """Column tables of the unconstrained coset minimum at ``t * y``.

    ``col[eps, 0, 16 j + P]``: sum over the column-j coordinates of the least
    ``(t y_i - v)^2`` over the class values (pattern P: bit r is u at row r);
    ``cpar[eps, 16 j + P]``: the parity of the sum of k at those minima;
    ``col[eps, 1, 16 j + P]``: the cheapest change of that parity (inf if none).
    ``m`` (24, 4, 3) scratch: per (i, c) the least cost, its parity, the parity
    change penalty.  Consecutive values of a class alternate the parity of k, so
    the best value of the other parity is a neighbour of the nearest one.
    """
    for i in range(24):
        z = t * y[i]
        for c in range(4):
            n = nv[c]
            if n == 0:
                m[i, c, 0] = _INF
                m[i, c, 1] = 0.0
                m[i, c, 2] = _INF
                continue
            k0 = int(np.floor((z - vals[c, 0]) * 0.25 + 0.5))
            if k0 < 0:
                k0 = 0
            elif k0 > n - 1:
                k0 = n - 1
            d = z - vals[c, k0]
            d0 = d * d
            d1 = _INF
            if k0 > 0:
                d = z - vals[c, k0 - 1]
                d1 = d * d
            if k0 < n - 1:
                d = z - vals[c, k0 + 1]
                d = d * d
                if d < d1:
                    d1 = d
            m[i, c, 0] = d0
            m[i, c, 1] = vpar[c, k0]
            m[i, c, 2] = d1 - d0 if d1 < _INF else _INF
    for eps in range(2):
        for j in range(6):
            for pat in range(16):
                s = 0.0
                par = 0
                fl = _INF
                for r in range(4):
                    i = 4 * j + r
                    c = eps + 2 * ((pat >> r) & 1)
                    s += m[i, c, 0]
                    par ^= int(m[i, c, 1])
                    f = m[i, c, 2]
                    if f < fl:
                        fl = f
                col[eps, 0, 16 * j + pat] = s
                col[eps, 1, 16 * j + pat] = fl
                cpar[eps, 16 * j + pat] = par


@jit
def _coset_dp(y, eps, w, n_lo, n_hi, vals, nv, step, vpar, cst, order, mincost, thr0,
              buf, choice, suf, vout):
    """Exact constrained optimum of coset (eps, w) if it is below ``thr0``; else inf.

    ``w`` is the Golay codeword as a 24-bit int.  On success writes the point into
    ``vout`` and returns its distance (the sum of (y_i - v_i)^2 in coordinate order).
    """
    if eps == 0:
        S = n_hi // 4
        s_lo = (n_lo + 3) // 4
    else:
        if n_hi < 24:
            return _INF
        S = (n_hi - 24) // 8
        s_lo = (n_lo - 24 + 7) // 8 if n_lo > 24 else 0
    if s_lo > S:
        return _INF
    suf[24] = 0.0
    for i in range(23, -1, -1):
        c = eps + 2 * ((w >> i) & 1)
        suf[i] = suf[i + 1] + mincost[i, c]
    if suf[0] >= thr0:
        return _INF
    for s in range(S + 1):
        buf[0, s, 0] = _INF
        buf[0, s, 1] = _INF
    buf[0, 0, 0] = 0.0
    lo = 0
    hi = 0
    cur = 0
    for i in range(24):
        c = eps + 2 * ((w >> i) & 1)
        nx = 1 - cur
        for s in range(S + 1):
            buf[nx, s, 0] = _INF
            buf[nx, s, 1] = _INF
        thr = thr0 - suf[i + 1]
        mc = mincost[i, c]
        nlo = S + 1
        nhi = -1
        for s in range(lo, hi + 1):
            for p in range(2):
                base = buf[cur, s, p]
                if base + mc >= thr:
                    continue
                for r in range(nv[c]):
                    k = order[i, c, r]
                    cc = base + cst[i, c, k]
                    if cc >= thr:
                        break
                    s2 = s + step[c, k]
                    if s2 > S:
                        continue
                    p2 = p ^ vpar[c, k]
                    if cc < buf[nx, s2, p2]:
                        buf[nx, s2, p2] = cc
                        choice[i, s2, p2] = k
                        if s2 < nlo:
                            nlo = s2
                        if s2 > nhi:
                            nhi = s2
        cur = nx
        lo = nlo
        hi = nhi
        if hi < lo:
            return _INF
    best = _INF
    bs = -1
    for s in range(max(lo, s_lo), hi + 1):
        if buf[cur, s, eps] < best:
            best = buf[cur, s, eps]
            bs = s
    if bs < 0:
        return _INF
    s = bs
    p = eps
    for i in range(23, -1, -1):
        c = eps + 2 * ((w >> i) & 1)
        k = choice[i, s, p]
        vout[i] = vals[c, k]
        s -= step[c, k]
        p ^= vpar[c, k]
    return best


@jit
def _heap_before(hk, hv, i, j):
    """Entry i orders before entry j: smaller key, then smaller value."""
    return hk[i] < hk[j] or (hk[i] == hk[j] and hv[i] < hv[j])


@jit
def _heap_swap(hk, hv, i, j):
    tk = hk[i]
    tv = hv[i]
    hk[i] = hk[j]
    hv[i] = hv[j]
    hk[j] = tk
    hv[j] = tv


@jit
def _heap_push(hk, hv, n, key, val):
    i = n
    hk[i] = key
    hv[i] = val
    while i > 0:
        par = (i - 1) // 2
        if _heap_before(hk, hv, par, i):
            break
        _heap_swap(hk, hv, par, i)
        i = par
    return n + 1


@jit
def _heap_pop(hk, hv, n):
    """Remove the root of a heap of size n >= 1; returns the new size."""
    n -= 1
    hk[0] = hk[n]
    hv[0] = hv[n]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        sm = lft
        rgt = lft + 1
        if rgt < n and _heap_before(hk, hv, rgt, lft):
            sm = rgt
        if _heap_before(hk, hv, i, sm):
            break
        _heap_swap(hk, hv, sm, i)
        i = sm
    return n


@jit
def _solve_one(y, n_lo, n_hi, ts, ub_pt, has_ub, hexa, pat, vals, nv, step, vpar, out):
    """Constrained nearest point of one point; returns (distance, cosets visited).

    Cosets are (eps, hexacode word h, Golay parity pi, top bits) and are numbered
    ``g * 64 + tops`` with the group ``g = (eps * 64 + h) * 2 + pi``; the pattern of
    column j is ``pat[(hexa[6 h + j] * 2 + pi) * 2 + (bit j of tops)]`` and
    ``popcount(tops) = pi``.  One heap holds groups (value ``-1 - g``, key: the
    group bound, the sum over columns of the cheaper top bit, parities ignored) and
    cosets (value ``g * 64 + tops``, key: the coset bound); popping a group pushes
    its cosets, popping a coset runs its DP.  Every key is a lower bound of the
    distances it stands for, so stopping at the first key ``>= best`` is exact.
    """
    K = vals.shape[1]
    T = ts.shape[0]
    cst = np.empty((24, 4, K))
    order = np.zeros((24, 4, K), dtype=np.int64)
    mincost = np.empty((24, 4))
    _point_tables(y, vals, nv, cst, order, mincost)
    ynorm = 0.0
    for i in range(24):
        ynorm += y[i] * y[i]
    slack = 1e-9 * (1.0 + ynorm + n_hi)
    # Lagrangian column tables for each t
    m = np.empty((24, 4, 3))
    col = np.empty((T, 2, 2, 96))
    cpar = np.empty((T, 2, 96), dtype=np.int64)
    cmin = np.empty((T, 2, 6, 4, 2))
    amul = np.empty(T)
    acon = np.empty(T)
    for r in range(T):
        t = ts[r]
        lam = 1.0 / t - 1.0
        n_ref = n_hi if lam >= 0.0 else n_lo
        amul[r] = 1.0 / t
        acon[r] = (1.0 - t) * ynorm - lam * n_ref
        _column_tables(y, t, vals, nv, vpar, m, col[r], cpar[r])
        for eps in range(2):
            for j in range(6):
                for sym in range(4):
                    for pi in range(2):
                        e0 = col[r, eps, 0, 16 * j + pat[(sym * 2 + pi) * 2]]
                        e1 = col[r, eps, 0, 16 * j + pat[(sym * 2 + pi) * 2 + 1]]
                        cmin[r, eps, j, sym, pi] = e0 if e0 < e1 else e1
    best = _INF
    if has_ub:
        d = 0.0
        for i in range(24):
            e = y[i] - ub_pt[i]
            d += e * e
            out[i] = ub_pt[i]
        best = d
    hk = np.empty(8192 + 256)
    hv = np.empty(8192 + 256, dtype=np.int64)
    nh = 0
    n_eps = 2 if n_hi >= 24 else 1
    for g in range(128 * n_eps):
        eps = g // 128
        h = (g % 128) // 2
        pi = g % 2
        val = -_INF
        for r in range(T):
            sg = 0.0
            for j in range(6):
                sg += cmin[r, eps, j, hexa[6 * h + j], pi]
            v = amul[r] * sg + acon[r]
            if v > val:
                val = v
        if val < best + slack:
            nh = _heap_push(hk, hv, nh, val, -1 - g)
    S = n_hi // 4 + 1
    buf = np.empty((2, S + 1, 2))
    choice = np.zeros((24, S + 1, 2), dtype=np.int64)
    suf = np.empty(25)
    vout = np.empty(24, dtype=np.int64)
    colpat = np.empty(12, dtype=np.int64)
    visited = 0
    while nh > 0:
        key = hk[0]
        item = hv[0]
        if key >= best + slack:
            break
        nh = _heap_pop(hk, hv, nh)
        if item < 0:
            # expand a group: push its cosets whose bound may beat best
            g = -1 - item
            eps = g // 128
            h = (g % 128) // 2
            pi = g % 2
            for j in range(6):
                base = (hexa[6 * h + j] * 2 + pi) * 2
                colpat[2 * j] = 16 * j + pat[base]
                colpat[2 * j + 1] = 16 * j + pat[base + 1]
            for tops in range(64):
                pc = 0
                for j in range(6):
                    pc += (tops >> j) & 1
                if pc % 2 != pi:
                    continue
                val = -_INF
                for r in range(T):
                    sc = 0.0
                    par = eps
                    fl = _INF
                    for j in range(6):
                        o = colpat[2 * j + ((tops >> j) & 1)]
                        sc += col[r, eps, 0, o]
                        par ^= cpar[r, eps, o]
                        f = col[r, eps, 1, o]
                        if f < fl:
                            fl = f
                    if par != 0:
                        sc += fl
                    v = amul[r] * sc + acon[r]
                    if v > val:
                        val = v
                if val < best + slack:
                    nh = _heap_push(hk, hv, nh, val, g * 64 + tops)
            continue
        visited += 1
        g = item // 64
        tops = item % 64
        eps = g // 128
        h = (g % 128) // 2
        pi = g % 2
        w = 0
        for j in range(6):
            w |= pat[(hexa[6 * h + j] * 2 + pi) * 2 + ((tops >> j) & 1)] << (4 * j)
        if best < _INF:
            d = _coset_dp(y, eps, w, n_lo, n_hi, vals, nv, step, vpar, cst, order, mincost,
                          best + slack, buf, choice, suf, vout)
        else:
            # no upper bound yet: an unpruned DP is slow, so try the thresholds
            # bound + 16, + 64 first (a DP below a threshold is exact among the
            # points below it), then none
            delta = 16.0
            d = _INF
            while True:
                thr = key + delta if delta < 100.0 else _INF
                d = _coset_dp(y, eps, w, n_lo, n_hi, vals, nv, step, vpar, cst, order,
                              mincost, thr, buf, choice, suf, vout)
                if d < _INF or thr == _INF:
                    break
                delta *= 4.0
        if d < best:
            best = d
            for i in range(24):
                out[i] = vout[i]
    return best, visited


@pjit
def constrained_kernel(y, n_lo, n_hi, ts, ub_pt, has_ub, hexa, pat, vals, nv, step, vpar, out,
                       dist, visited):
    """Rows of ``y`` (n, 24): constrained nearest points into ``out``, distances, cosets visited.

    ``ts`` (n, T): the values of t of the Lagrangian bounds (T >= 1; t = 1 is the
    unconstrained bound).  ``ub_pt`` (n, 24) with ``has_ub`` (n,) bool: a feasible
    starting point per row, if any.  ``hexa``: the 64 hexacode words, flat (64 * 6);
    ``pat``: the MOG column patterns ``pattern[score, parity, top]``, flat (16).  A
    row with no feasible point gets ``dist = inf``.
    """
    n = y.shape[0]
    for r in prange(n):
        d, v = _solve_one(y[r], n_lo, n_hi, ts[r], ub_pt[r], has_ub[r], hexa, pat, vals, nv,
                          step, vpar, out[r])
        dist[r] = d
        visited[r] = v


def constrained_reference(y, n_lo, n_hi, codewords):
    """Exhaustive constrained nearest point of one point ``y`` (24,) (integer frame).

    ``codewords``: (4096, 24) 0/1 array of the Golay code.  Returns ``(v, dist)``
    with ``v`` an int64 (24,) lattice vector of norm in ``[n_lo, n_hi]`` (``None``
    and ``inf`` if there is none).  Plain numpy, no bounds or pruning.
    """
    y = np.asarray(y, dtype=np.float64)
    U = np.asarray(codewords, dtype=np.int64)
    vals, nv, step, vpar = class_tables(n_hi)
    best, best_v = _INF, None
    for eps in (0, 1):
        if eps == 0:
            S, s_lo = n_hi // 4, -(-n_lo // 4)
        else:
            if n_hi < 24:
                continue
            S, s_lo = (n_hi - 24) // 8, max(0, -(-(n_lo - 24) // 8))
        cost = np.full((4096, S + 1, 2), _INF)
        cost[:, 0, 0] = 0.0
        choice = np.zeros((24, 4096, S + 1, 2), dtype=np.int64)
        for i in range(24):
            cls = eps + 2 * U[:, i]
            new = np.full_like(cost, _INF)
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
        fin = cost[:, s_lo:, eps] if s_lo <= S else np.full((4096, 1), _INF)
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
