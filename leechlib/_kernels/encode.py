r"""Fused exact encoders of the Leech quantizers (Numba kernels).

One parallel pass per batch: every row is decoded by the exact Leech decoder
(:func:`leechlib._kernels.leech._leech_one`); the rows whose nearest lattice point
misses the norm range go through the exact constrained search of
:mod:`leechlib._kernels.constrained` right away, with no masks, gathers or further
passes from Python.

One kernel, :func:`encode_kernel`, in three modes (the search's code is inlined
once, so it compiles once):

* ``SHELL``: nearest points of one shell (the shapes of
  :class:`~leechlib.ShapeGainQuantizer`), or, with ``t0 = 1``, of any norm range
  (:func:`~leechlib.constrained_nearest_point`).  The row is first decoded at a scale
  ``t0``: all shell points have the same norm, so if ``q = nearest(t0 y)`` lies on
  the shell, ``||t0 y - q||^2 <= ||t0 y - v||^2`` gives ``<y, q> >= <y, v>`` for every
  shell point ``v``, and ``q`` is a nearest shell point of ``y`` whatever ``t0 > 0``.
  The caller picks the ``t0`` at which that happens most often (see
  :func:`leechlib.constrained._shell_points`).  Otherwise the search bounds every
  coset at the multipliers ``ts`` (``t = 0.93 t0, 1.07 t0``) and starts with no
  upper bound.
* ``BALL``: nearest points of a ball (:class:`~leechlib.BallQuantizer`).  An
  overloaded row first probes ``q = nearest(t y)`` at ``steps`` scales ``t`` of
  ``[lo, hi]`` (the original numpy wrapper bisected from the midpoint): the first
  where ``||q||^2`` is ``n_hi`` on average (``t^2 ||y||^2 + MSE_INT = n_hi``), then
  bisection midpoints, and ``t = lo`` (feasible) only if no probe was.  The probes
  give the dual scale of the Lagrangian bound and a feasible start for the search,
  and may make it unnecessary: if a probe with ``0 < t <= 1`` has
  ``||q||^2 = n_hi``, then for every lattice point ``v`` with ``||v||^2 <= n_hi``,
  ``||y - v||^2 - ||y - q||^2 >= (1/t - 1) (||q||^2 - ||v||^2) >= 0`` (divide
  ``||t y - v||^2 >= ||t y - q||^2`` by ``t``), so ``q`` is a nearest point of the
  ball: no further probe and no search (``visited`` 0).
* ``SEARCH``: the constrained search alone, row by row (the multipliers and a
  feasible start per row given by the caller).

Every mode gives, for every row, a nearest point of the range (the search is
exact), so the answers agree with those of the original numpy wrappers
(``benchmarks/original_encoders.py``) up to ties.  References in the tests: the
exhaustive DP of :func:`~leechlib._kernels.reference.constrained_reference`, brute
force over explicit codebooks, and the original wrappers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import jit, pjit
from .constrained import hoff4_table, scratch, search_one
from .leech import CHUNK, _leech_one, _leech_scratch

__all__ = ["encode_kernel", "SEARCH", "SHELL", "BALL", "NSM", "MSE_INT"]


#: the normalized second moment of Lambda24 (Conway and Sloane)
NSM = 0.065771
#: the mean of ||Q(z) - z||^2 for z uniform modulo sqrt(8) Lambda24 (24 G V^(1/12),
#: V^(1/12) = 8): for a random point, ||Q(z)||^2 is about ||z||^2 + MSE_INT
MSE_INT = 24 * NSM * 8.0

#: modes of :func:`encode_kernel`
SEARCH = 0
SHELL = 1
BALL = 2


@jit(inline="always")
def _probe(y, t, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp):
    """One probe of the ball bisection: ``q = nearest(t y)``; updates the feasible
    start (``st[0]`` its distance, point in ``ubp``) and the best dual value
    (``st[1]``, its ``t`` in ``st[2]``); returns whether ``q`` is in the ball."""
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
    if feas and nq == n_hi and 0.0 < t <= 1.0:
        st[3] = 1.0  # q is a nearest point of the ball (see the module docstring)
    if t > 0.0:
        tt = max(t, 1e-300)
        lam = 1.0 / tt - 1.0
        g = e / tt + (1.0 - t) * yn2 - lam * n_hi
        if g > st[1]:
            st[1] = g
            st[2] = t
    return feas


@jit(_nrt=False)
def _encode_chunk(mode, y, n_lo, n_hi, steps, t0, ts, ub_pt, has_ub, hexa, pat, hoff, hoff4,
                  vals, nv, step, vpar, out, dist, visited, start, stop, sc, fs, js, buf):
    """Rows ``start:stop`` of :func:`encode_kernel`, with the chunk's scratch.

    Serial, so the compiler's parallel passes do not see the search, and compiled
    without reference counting (``_nrt=False``: it allocates nothing; the scratch
    comes from the caller), which the search's many array views would otherwise pay
    for on every coset.
    """
    r0 = math.sqrt(n_hi)
    ob = buf[0]
    yb = buf[1]
    qb = buf[2]
    ubp = buf[3]
    tsb = buf[4, :1]
    st = buf[5, :4]
    for k in range(start, stop):
        yk = y[k]
        tsr = tsb
        hub = False
        if mode == SEARCH:
            tsr = ts[k]
            hub = has_ub[k]
            for i in range(24):
                ubp[i] = ub_pt[k, i]
        else:
            if t0 != 1.0:  # SHELL: the first decode at t0 y (see encode_kernel)
                for i in range(24):
                    yb[i] = yk[i] * t0
                _leech_one(yb, ob, pat, hexa, hoff, fs, js)
            else:
                _leech_one(yk, ob, pat, hexa, hoff, fs, js)
            nrm = 0.0
            d = 0.0
            for i in range(24):
                nrm += ob[i] * ob[i]
                e = yk[i] - ob[i]
                d += e * e
            if n_lo <= nrm <= n_hi:
                for i in range(24):
                    out[k, i] = ob[i]
                dist[k] = d
                visited[k] = -1
                continue
            if mode == SHELL:
                tsr = ts[0]
            else:
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
                st[3] = 0.0
                # the first probe where the decoded norm is n_hi on average
                t = min(max(math.sqrt(max(n_hi - MSE_INT, 0.0)) / yn, lo), hi)
                for _ in range(steps):
                    if _probe(yk, t, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp):
                        lo = t
                    else:
                        hi = t
                    if st[3] > 0.0:
                        break
                    t = 0.5 * (lo + hi)
                if st[0] == np.inf:  # no probe was feasible: lo is
                    _probe(yk, lo, n_hi, yn2, pat, hexa, hoff, fs, js, yb, qb, st, ubp)
                if st[3] > 0.0:  # a probe on the outer shell: optimal, no search
                    for i in range(24):
                        out[k, i] = ubp[i]
                    dist[k] = st[0]
                    visited[k] = 0
                    continue
                tsb[0] = st[2]
                hub = st[0] < np.inf
        d, v = search_one(yk, n_lo, n_hi, tsr, ubp, hub, hexa, pat, hoff4, vals, nv, step, vpar,
                          out[k], sc)
        dist[k] = d
        visited[k] = v


@pjit
def encode_kernel(mode, y, n_lo, n_hi, steps, t0, ts, ub_pt, has_ub, hexa, pat, hoff, vals, nv,
                  step, vpar, out, dist, visited):
    """Exact nearest points of norm in ``[n_lo, n_hi]`` of the rows of ``y`` (n, 24).

    ``mode``: ``SEARCH`` runs the constrained search on every row with the
    multipliers ``ts[k]`` of ``ts`` (n, T), T >= 1, and the feasible start
    ``ub_pt[k]`` of ``ub_pt`` (n, 24) where ``has_ub[k]`` (``has_ub`` (n,) bool).
    ``SHELL`` and ``BALL`` (``n_lo = 0``) first decode the row and search only if the
    nearest lattice point is outside the range: ``SHELL`` with the multipliers
    ``ts[0]`` and no start (for a shell, ``n_lo = n_hi``, or with ``t0 = 1`` any
    range), ``BALL`` after ``steps`` scale probes (see the module docstring).
    ``hexa``, ``pat``, ``hoff``: the MOG tables of :func:`leechlib._mog.kernel_tables`
    (``hexa``, ``pat``, ``hoff_leech``); ``vals, nv, step, vpar``: the class tables of
    :func:`~leechlib._kernels.coset.class_tables` for ``n_hi``.
    ``t0``: in ``SHELL`` mode the first decode is of ``t0 y``, exact for any
    ``t0 > 0`` on a shell only (a nearest lattice point of ``t0 y`` on the shell is a
    nearest shell point of ``y``); 1 otherwise.  ``out`` (n, 24); ``dist`` (n,) the
    squared distance (inf if the range holds no lattice point); ``visited`` (n,) the
    cosets visited (-1: the decode answered).
    """
    n = y.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    hoff4 = hoff4_table(hexa)
    T = 1 if mode == BALL else ts.shape[1]
    for ch in prange(nch):
        sc = scratch(T, vals.shape[1], n_hi)
        fs, js = _leech_scratch()
        buf = np.zeros((6, 24))
        _encode_chunk(mode, y, n_lo, n_hi, steps, t0, ts, ub_pt, has_ub, hexa, pat, hoff, hoff4,
                      vals, nv, step, vpar, out, dist, visited, ch * CHUNK,
                      min(n, (ch + 1) * CHUNK), sc, fs, js, buf)
