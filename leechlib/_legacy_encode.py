"""The encoders of :class:`~leechlib.BallQuantizer` and :class:`~leechlib.ShapeGainQuantizer`
as they were before the fused kernels (kept for benchmarks and tests).

The numpy wrappers around :func:`leechlib._kernels.constrained.constrained_kernel`
(decode everything, gather the rows outside the norm range, bisect on the scale
with whole-batch decodes, search), the index maps with the membership test in
numpy and the one-shell rank kernel, and the two ``encode`` methods written with
them.  ``benchmarks/bench_encode.py`` times them beside the current encoders in the
same run, and the tests check that both give the same codes.  Not used by the
library itself.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import num_threads, pjit
from ._kernels.shells import _golay_parts, _lex_rank
from ._mog import kernel_tables
from ._validation import as_blocks
from .constrained import _class_tables


def _mog_tables():
    t = kernel_tables()
    return t["hexa"], t["pat"]


def _nearest_int(y, workers):
    from .decode import nearest_point

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



__all__ = ["search", "ball_points", "shell_points", "ball_encode", "shape_gain_encode"]


def search(y, n_lo, n_hi, ts, ub_pt=None, has_ub=None, workers=None):
    """Run the original constrained kernel on rows of ``y``; (points, dist, visited)."""
    from ._kernels.constrained import constrained_kernel

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
    from .lattice import LeechLattice

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
    from .codebook import _as_points

    z, ok = _as_points(points, cb.coords, math.isqrt(cb._N))
    r = _rank_shell(cb, z.reshape(-1, 24), workers)
    r[~ok.ravel()] = -1
    if r.size and r.min() < 0:
        raise ValueError(f"points are not all vectors of the norm-{cb.norm} shell")
    return r.reshape(z.shape[:-1])


def _index_ball(cb, points, workers=None):
    from .codebook import _as_points

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
