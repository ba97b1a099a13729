"""The original encoders of :class:`~leechlib.BallQuantizer` and
:class:`~leechlib.ShapeGainQuantizer`, from before the fused kernels: the reference
that ``benchmarks/bench_encode.py`` times beside the library's encoders in the same
run, and that ``tests/test_encode.py`` checks the library's codes against.  Not
part of the library (nothing in ``leechlib`` imports it).

* :func:`constrained_kernel`: the original exact constrained search (the problem,
  the coset structure, the Lagrangian bounds and the exactness argument are those
  of :mod:`leechlib._kernels.constrained`).  Per point it builds every table up
  front (candidate costs and orders of all coordinates and classes, the column
  tables of every multiplier), pushes all 256 groups into one heap, gives each
  expanded group's cosets a full bound, and runs the DP of every coset it visits
  (with no feasible point yet, below the thresholds key + 16, + 64, then none); no
  per-coset dual, no deferred DP, no key window.
* The numpy wrappers around it (:func:`search`, :func:`ball_points`,
  :func:`shell_points`): decode the whole batch, gather the rows outside the norm
  range, bisect on the scale with whole-batch decodes (ball), then search.
* The index maps with the membership test in numpy and the one-shell rank kernel
  (:func:`rank_kernel`), and the two ``encode`` methods written with all of them
  (:func:`ball_encode`, :func:`shape_gain_encode`).

It uses leechlib's private modules (the kernels of the Leech decoder and of the
ranking, the MOG tables, the class tables of the search).  Numba caches its kernels
in ``benchmarks/__pycache__``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from leechlib._jit import jit, num_threads, pjit
from leechlib._kernels.ranking import _golay_parts, _lex_rank
from leechlib._mog import kernel_tables
from leechlib._validation import as_blocks
from leechlib.codebook import _as_points
from leechlib.constrained import _class_tables
from leechlib.decode import nearest_point
from leechlib.lattice import LeechLattice

__all__ = ["constrained_kernel", "rank_kernel", "search", "ball_points", "shell_points",
           "ball_encode", "shape_gain_encode"]

_INF = np.inf


def _mog_tables():
    t = kernel_tables()
    return t["hexa"], t["pat"]


def _nearest_int(y, workers):
    return nearest_point(y, coords="int", workers=workers)


@pjit
def rank_kernel(points, N, T, vals, vpar, nvals, block_start, block_lookup, per_u,
                info_set, class_of_msg, pos_in_class, out):
    """Rank lattice points (n, 24) int64 of the shell of norm ``N``; -1 if not in it.

    ``block_lookup[eps, cls]`` is the block number; ``info_set`` the 12 coordinates
    holding the message of a codeword; ``class_of_msg``/``pos_in_class`` map a
    message index to the weight class and position of its codeword.
    """
    n = points.shape[0]
    for t in prange(n):
        x = points[t]
        eps = x[0] & 1
        nrm = 0
        for i in range(24):
            nrm += x[i] * x[i]
        if nrm != N:
            out[t] = -1
            continue
        word, k1, msg = _golay_parts(x, eps, info_set)
        if word < 0:
            out[t] = -1
            continue
        cls = class_of_msg[msg]
        b = block_lookup[eps, cls]
        r = _lex_rank(x, word, eps, k1, N, T, vals, vpar, nvals)
        if r < 0 or b < 0:
            out[t] = -1
            continue
        out[t] = block_start[b] + pos_in_class[msg] * per_u[b] + r


# ---------------------------------------------------------------------------
# the original constrained search (Numba)
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


# ---------------------------------------------------------------------------
# the numpy wrappers, index maps and encoders
# ---------------------------------------------------------------------------


def search(y, n_lo, n_hi, ts, ub_pt=None, has_ub=None, workers=None):
    """Run the original constrained kernel on rows of ``y``; (points, dist, visited)."""
    n = len(y)
    if ub_pt is None:
        ub_pt = np.zeros((n, 24))
        has_ub = np.zeros(n, dtype=np.bool_)
    vals, nv, step, vpar = _class_tables(int(n_hi))
    out = np.zeros((n, 24))
    dist = np.empty(n)
    visited = np.empty(n, dtype=np.int64)
    if n:
        with num_threads(workers):
            constrained_kernel(np.ascontiguousarray(y, dtype=np.float64), int(n_lo), int(n_hi),
                               np.ascontiguousarray(ts, dtype=np.float64),
                               np.ascontiguousarray(ub_pt, dtype=np.float64),
                               np.ascontiguousarray(has_ub), *_mog_tables(), vals, nv, step,
                               vpar, out, dist, visited)
    return out, dist, visited


def ball_points(y, n_hi, workers=None, *, bisection_steps=3):
    """Nearest points of norm <= n_hi (integer frame) of the rows of ``y`` (original)."""
    p = _nearest_int(y, workers)
    over = (p * p).sum(axis=1) > n_hi
    if over.any():
        yo = y[over]
        m = len(yo)
        yn2 = (yo * yo).sum(axis=1)
        yn = np.sqrt(yn2)
        r = math.sqrt(n_hi)
        lo = np.maximum(r - 4.0, 0.0) / yn
        hi = np.minimum((r + 4.5) / yn, 1.0)
        ub = np.full(m, np.inf)
        ub_pt = np.zeros((m, 24))
        g_best = np.full(m, -np.inf)
        t_best = np.where(lo > 0, lo, hi)

        def visit(t):
            q = _nearest_int(yo * t[:, None], workers)
            nq = (q * q).sum(axis=1)
            feas = nq <= n_hi
            d = ((yo - q) ** 2).sum(axis=1)
            better = feas & (d < ub)
            ub[better] = d[better]
            ub_pt[better] = q[better]
            tt = np.maximum(t, 1e-300)
            lam = 1.0 / tt - 1.0
            g = ((q - yo * t[:, None]) ** 2).sum(axis=1) / tt + (1.0 - t) * yn2 - lam * n_hi
            g = np.where(t > 0, g, -np.inf)
            up = g > g_best
            g_best[up] = g[up]
            t_best[up] = t[up]
            return feas

        visit(lo)
        for _ in range(bisection_steps):
            mid = 0.5 * (lo + hi)
            feas = visit(mid)
            lo = np.where(feas, mid, lo)
            hi = np.where(feas, hi, mid)
        has_ub = np.isfinite(ub)
        pts, _, _ = search(yo, 0, n_hi, t_best[:, None], ub_pt, has_ub, workers)
        p[over] = pts
    return p


def shell_points(y, n_int, workers=None):
    """Nearest points of norm exactly ``n_int`` (integer frame) of the rows of ``y`` (original)."""
    p = _nearest_int(y, workers)
    miss = (p * p).sum(axis=1) != n_int
    if miss.any():
        ym = y[miss]
        ts = np.tile(np.array([0.93, 1.07]), (len(ym), 1))
        pts, dist, _ = search(ym, n_int, n_int, ts, workers=workers)
        if not np.all(np.isfinite(dist)):  # pragma: no cover - every shell used is non-empty
            raise RuntimeError("constrained search found no shell point")
        p[miss] = pts
    return p


def _rank_shell(cb, z, workers=None):
    """Original :meth:`ShellCodebook._rank_int`: membership in numpy, then the rank kernel."""
    out = np.full(z.shape[0], -1, dtype=np.int64)
    if z.shape[0] and cb.size:
        b = math.isqrt(cb._N)
        member = ((z <= b) & (z >= -b)).all(axis=1)
        z = np.where(member[:, None], z, 0)
        member &= LeechLattice._contains_int(z)
        starts, _, _, per_u, lookup, _ = cb._blocks
        t = cb._t
        zz = np.ascontiguousarray(z, dtype=np.int64)
        with num_threads(workers):
            rank_kernel(zz, cb._N, t.T, t.vals, t.vpar, t.nvals, starts, lookup, per_u,
                        t.info_set, t.class_of_msg, t.pos_in_class, out)
        out[~member] = -1
    return out


def _index_shell(cb, points, workers=None):
    z, ok = _as_points(points, cb.coords, math.isqrt(cb._N))
    r = _rank_shell(cb, z.reshape(-1, 24), workers)
    r[~ok.ravel()] = -1
    if r.size and r.min() < 0:
        raise ValueError(f"points are not all vectors of the norm-{cb.norm} shell")
    return r.reshape(z.shape[:-1])


def _index_ball(cb, points, workers=None):
    z, ok = _as_points(points, cb.coords, math.isqrt(8 * cb.max_norm))
    flat = z.reshape(-1, 24)
    ok = ok.ravel()
    norms = np.where(ok, (flat * flat).sum(axis=1), -1)
    out = np.full(flat.shape[0], -1, dtype=np.int64)
    out[norms == 0] = 0
    for k, n in enumerate(cb.shell_norms):
        sel = norms == 8 * n
        if n == 0 or not sel.any():
            continue
        out[sel] = _rank_shell(cb._shells[n], flat[sel], workers)
        out[sel] = np.where(out[sel] >= 0, out[sel] + cb.shell_offsets[k], -1)
    if out.size and out.min() < 0:
        raise ValueError(f"points are not all lattice vectors of norm <= {cb.max_norm}")
    return out.reshape(z.shape[:-1])


def ball_encode(q, x, *, workers=None):
    """``q.encode(x)`` for a fitted :class:`~leechlib.BallQuantizer`, the original way."""
    s = q._scale()
    y, shape = q._frame(x, s)
    p = ball_points(y, 8 * q.max_norm, workers)
    return _index_ball(q._int_codebook, p.astype(np.int64), workers).reshape(shape)


def _shapes(q, y, workers):
    n = len(y)
    amax = np.abs(y).max(axis=1)
    nz = amax > 0
    u = np.zeros_like(y)
    u[nz] = y[nz] / amax[nz, None]
    u[nz] /= np.sqrt((u[nz] * u[nz]).sum(axis=1))[:, None]
    best_c = np.full(n, -np.inf)
    best_k = np.zeros(n, dtype=np.int64)
    best_v = np.zeros((n, 24))
    for k, m in enumerate(q.shells):
        N = 8 * m
        v = np.zeros((n, 24))
        if nz.any():
            v[nz] = shell_points(u[nz] * math.sqrt(N), N, workers)
        if not nz.all():
            v[~nz] = q._codebooks[k].point(np.zeros(int((~nz).sum()), dtype=np.int64),
                                            workers=workers)
        c = (y * v).sum(axis=1) / math.sqrt(N)
        c[~nz] = 0.0
        up = c > best_c
        best_c[up] = c[up]
        best_k[up] = k
        best_v[up] = v[up]
    return best_k, best_v, best_c


def shape_gain_encode(q, x, *, workers=None):
    """``q.encode(x)`` for a fitted :class:`~leechlib.ShapeGainQuantizer`, the original way."""
    q._check_fitted()
    y, shape = as_blocks(x)
    k, v, c = _shapes(q, y, workers)
    out = np.empty((len(y), 2), dtype=np.int64)
    vi = v.astype(np.int64)
    for j, cb in enumerate(q._codebooks):
        sel = k == j
        if sel.any():
            out[sel, 0] = _index_shell(cb, vi[sel], workers) + q._offsets[j]
    out[:, 1] = q._gain_index(c)
    return out.reshape(shape + (2,))
