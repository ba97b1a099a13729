r"""Fused exact encoders of the Leech quantizers (Numba kernels).

One parallel pass per batch: every row is decoded by the exact Leech decoder
(:func:`leechlib._kernels.leech._leech_one`); the rows whose nearest lattice point
misses the norm range go through the exact constrained search of
:mod:`leechlib._kernels.fastsearch` right away, with no masks, gathers or further
passes from Python.

* :func:`shell_kernel`: nearest points of one shell (the shapes of
  :class:`~leechlib.ShapeGainQuantizer`); the search bounds every coset at the
  multipliers ``ts`` (the original wrapper's ``t = 0.93, 1.07``) and starts with
  no upper bound.
* :func:`ball_kernel`: nearest points of a ball (:class:`~leechlib.BallQuantizer`);
  an overloaded row first runs the original wrapper's bisection: the dual scale
  ``t`` of the Lagrangian bound and a feasible start from the norms and distances of
  ``nearest(t y)`` at ``t = lo`` and ``steps`` midpoints, then the search.

Both give, for every row, a nearest point of the range (the search is exact), so
their answers agree with those of the original numpy wrappers up to ties.  The
plain references are the original wrappers (``leechlib.constrained._ball_points``
and ``_shell_points`` of earlier releases, kept as ``leechlib._legacy_encode``) and
brute force over explicit codebooks (``tests/test_fastsearch.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import jit, pjit
from .fastsearch import hoff4_table, scratch, search_one
from .leech import CHUNK, _leech_one, _leech_scratch

__all__ = ["ball_kernel", "shell_kernel"]


@pjit
def shell_kernel(z, N, ts, hexa, pat, hoff, vals, nv, step, vpar, out, visited):
    """Nearest points of norm ``N`` of the rows of ``z`` (n, 24), integer frame.

    ``out`` (n, 24) float64; ``visited[k]``: -1 when the nearest lattice point was
    on the shell, else the cosets the search visited.  Returns the number of rows
    for which no shell point was found (0 for every non-empty shell).
    """
    n = z.shape[0]
    T = ts.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    hoff4 = hoff4_table(hexa)
    ub = np.zeros(24)
    bad = 0
    for ch in prange(nch):
        fs, js = _leech_scratch()
        sc = scratch(T, vals.shape[1], N)
        ob = np.empty(24)
        nb = 0
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            _leech_one(z[k], ob, pat, hexa, hoff, fs, js)
            nrm = 0.0
            for i in range(24):
                nrm += ob[i] * ob[i]
            if nrm == N:
                for i in range(24):
                    out[k, i] = ob[i]
                visited[k] = -1
                continue
            d, v = search_one(z[k], N, N, ts, ub, False, hexa, pat, hoff4, vals, nv, step, vpar,
                              out[k], sc)
            visited[k] = v
            if not d < np.inf:
                nb += 1
        bad += nb
    return bad


@jit(inline="always")
def _visit(y, t, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp):
    """One probe of the bisection: ``q = nearest(t y)``; updates the feasible start
    (``st[0]`` its distance, point in ``ubp``) and the best dual value (``st[1]``,
    its ``t`` in ``st[2]``); returns whether ``q`` is in the ball."""
    for i in range(24):
        yb[i] = y[i] * t
    _leech_one(yb, qb, pat, hexa, hoff, fs, js)
    nq = 0.0
    d = 0.0
    e = 0.0
    for i in range(24):
        nq += qb[i] * qb[i]
        a = y[i] - qb[i]
        d += a * a
        b = qb[i] - yb[i]
        e += b * b
    feas = nq <= n_hi
    if feas and d < st[0]:
        st[0] = d
        for i in range(24):
            ubp[i] = qb[i]
    if t > 0.0:
        tt = max(t, 1e-300)
        lam = 1.0 / tt - 1.0
        g = e / tt + (1.0 - t) * yn2 - lam * n_hi
        if g > st[1]:
            st[1] = g
            st[2] = t
    return feas


@pjit
def ball_kernel(y, n_hi, steps, hexa, pat, hoff, vals, nv, step, vpar, out, visited):
    """Nearest points of norm at most ``n_hi`` of the rows of ``y`` (n, 24), integer frame.

    ``out`` (n, 24) float64; ``visited[k]``: -1 when the nearest lattice point was
    in the ball, else the cosets the search visited.
    """
    n = y.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    hoff4 = hoff4_table(hexa)
    r0 = math.sqrt(n_hi)
    for ch in prange(nch):
        fs, js = _leech_scratch()
        sc = scratch(1, vals.shape[1], n_hi)
        ob = np.empty(24)
        yb = np.empty(24)
        qb = np.empty(24)
        ubp = np.zeros(24)
        ts = np.empty(1)
        st = np.empty(3)
        for k in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            yk = y[k]
            _leech_one(yk, ob, pat, hexa, hoff, fs, js)
            nrm = 0.0
            for i in range(24):
                nrm += ob[i] * ob[i]
            if nrm <= n_hi:
                for i in range(24):
                    out[k, i] = ob[i]
                visited[k] = -1
                continue
            yn2 = 0.0
            for i in range(24):
                yn2 += yk[i] * yk[i]
            yn = math.sqrt(yn2)
            # ||nearest(z)|| <= ||z|| + 4 (covering radius 4): feasible below lo
            lo = max(r0 - 4.0, 0.0) / yn
            hi = min((r0 + 4.5) / yn, 1.0)
            st[0] = np.inf
            st[1] = -np.inf
            st[2] = lo if lo > 0 else hi
            _visit(yk, lo, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp)
            for _ in range(steps):
                mid = 0.5 * (lo + hi)
                if _visit(yk, mid, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp):
                    lo = mid
                else:
                    hi = mid
            ts[0] = st[2]
            _, v = search_one(yk, 0, n_hi, ts, ubp, st[0] < np.inf, hexa, pat, hoff4, vals, nv,
                              step, vpar, out[k], sc)
            visited[k] = v
