r"""The nearest Leech lattice point under a norm constraint (exact): the encoder of the
quantizers whenever the nearest lattice point lies outside their codebook.

:func:`constrained_nearest_point` finds, for points ``x``, the nearest lattice
vector with squared norm in ``[min_norm, max_norm]``; ``min_norm = 0`` is a ball
(:class:`~leechlib.BallQuantizer`), ``min_norm = max_norm`` a shell (the shapes of
:class:`~leechlib.ShapeGainQuantizer`).  The nearest lattice point
(:func:`~leechlib.nearest_point`) answers whenever it satisfies the constraint;
otherwise the exact search of :mod:`leechlib._kernels.constrained` (Lagrangian
lower bounds for the 8192 cosets of :math:`4D_{24}`, best-first, a dynamic
programme over the coordinates per coset) finds the nearest point.  For a ball the
search starts from the feasible points ``nearest_point(t x)``, ``t < 1``, and the
Lagrangian dual scale found by bisection (:func:`_ball_points`); for a shell from
multipliers of both signs (:func:`_shell_points`), on the input moved onto the
shell's sphere (the nearest shell point depends on the direction only, and the
search is fast there at every magnitude); for a range ``0 < min_norm < max_norm``
from the ball's answer, or the nearest of the shells' answers where that lies inside
``min_norm`` (:func:`_range_points`).

Everything here works in the integer frame (``coords="int"``).  The kernel modules
are imported inside the functions that call them, so that importing leechlib does
not import Numba.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._jit import num_threads
from ._mog import kernel_tables
from ._validation import SQRT8 as _SQRT8
from ._validation import as_blocks, check_coords, check_int
from .shells import shell_count

__all__ = ["constrained_nearest_point", "MAX_ABS"]

#: inputs are rejected when |x| (|x| / scale for the quantizers) exceeds this in the
#: integer frame, where float64 distances could no longer separate neighbouring points
MAX_ABS = 2.0**30


@functools.lru_cache(maxsize=16)
def _class_tables(n_hi: int):
    from ._kernels.coset import class_tables

    out = class_tables(n_hi)
    for a in out:
        a.flags.writeable = False
    return out


def _search(y, n_lo, n_hi, ts, ub_pt=None, has_ub=None, workers=None):
    """Run the constrained search on rows of ``y`` (integer frame); (points, dist, visited).

    ``ts`` (n, T): the multipliers of the Lagrangian bounds per row; ``ub_pt`` (n, 24)
    with ``has_ub`` (n,): a feasible start per row, if any.
    """
    from ._kernels.encode import SEARCH

    n = len(y)
    if ub_pt is None:
        ub_pt = np.zeros((n, 24))
        has_ub = np.zeros(n, dtype=np.bool_)
    return _encode(SEARCH, y, n_lo, n_hi, 0, ts, ub_pt, has_ub, workers)


def _encode(mode, y, n_lo, n_hi, steps, ts, ub_pt, has_ub, workers, t0=1.0):
    """Call :func:`leechlib._kernels.encode.encode_kernel`; (points, dist, visited)."""
    from ._kernels.encode import encode_kernel

    if t0 != 1.0 and n_lo != n_hi:  # pragma: no cover - internal misuse
        raise ValueError("a first decode at t0 != 1 is exact for a shell only")

    y = np.ascontiguousarray(y, dtype=np.float64)
    n = len(y)
    out = np.zeros((n, 24))
    dist = np.empty(n)
    visited = np.empty(n, dtype=np.int64)
    if n:
        t = kernel_tables()
        with num_threads(workers):
            encode_kernel(mode, y, int(n_lo), int(n_hi), int(steps), float(t0),
                          np.ascontiguousarray(ts, dtype=np.float64),
                          np.ascontiguousarray(ub_pt, dtype=np.float64),
                          np.ascontiguousarray(has_ub, dtype=np.bool_), t["hexa"], t["pat"],
                          t["hoff_leech"], *_class_tables(int(n_hi)), out, dist, visited)
    return out, dist, visited


_NO_UB = (np.zeros((1, 24)), np.zeros(1, dtype=np.bool_))


def _ball_points(y, n_hi, workers=None, *, bisection_steps=2, return_stats=False):
    """Nearest points of norm <= n_hi (integer frame) of the rows of ``y`` (integer frame).

    One fused kernel pass (:func:`leechlib._kernels.encode.encode_kernel`): the
    nearest lattice point when its norm is <= n_hi; otherwise (overload) the dual
    scale t of the Lagrangian bound by bisection on the norm of Q(t y), from the t
    at which that norm is n_hi on average (the feasible Q(t y) give the starting
    upper bound; one on the outer shell is the answer), then the exact search.  Two
    probes by default: a third answers a few more rows without a search but costs a
    decode on every overloaded row.  With ``return_stats`` also the
    overload mask and the cosets visited per row (0 for the rows a probe answered).
    """
    from ._kernels.encode import BALL

    p, _, visited = _encode(BALL, y, 0, n_hi, bisection_steps, np.ones((1, 1)), *_NO_UB,
                            workers)
    if return_stats:
        return p, visited >= 0, np.maximum(visited, 0)
    return p


#: the multipliers t of the shell search's Lagrangian bounds, relative to the probe
#: scale t0 of :func:`_shell_probe_scale` (lambda = 1/t - 1 of both signs, both valid
#: for an equality constraint), centred on t0, where the dual is largest on average
_SHELL_TS = np.array([[0.93, 1.07]])


def _shell_probe_scale(n_int):
    r"""The scale ``t0`` of the first decode of a row ``y`` with ``||y||^2 = n_int`` in
    the shell encoder: ``t0^2 = 1 - 24 G V^(1/12) / n_int``.

    For a point uniform modulo the lattice, ``||Q(z)||^2 = ||z||^2 + 2 <z, e> + ||e||^2``
    with ``e = Q(z) - z``, whose mean square is ``24 G V^(1/12)`` (``G`` = 0.065771,
    the normalized second moment of Lambda24; ``V^(1/12) = 8`` in the integer frame,
    so 12.6); the cross term averages out.  At ``t0`` the expected norm of the
    decoded point is the shell's, so the decode lands on the shell more often than
    at ``t0 = 1`` (``tests/test_encode.py`` checks it; ``python
    benchmarks/bench_encode.py --stats`` prints the share of blocks still searched).
    Only the speed depends on ``t0``, never the answer.  Clipped to ``[0.5, 1]``.
    """
    from ._kernels.encode import MSE_INT

    return math.sqrt(min(max(1.0 - MSE_INT / n_int, 0.25), 1.0))


def _onto_sphere(y, n_int):
    """The rows of ``y`` scaled to norm ``sqrt(n_int)`` (zero rows stay zero).

    All points of a shell have the same norm, so a nearest shell point of ``y`` is
    one of largest inner product with ``y``, the same for every positive multiple of
    ``y``.  The search is fast for rows near the shell's sphere (the probe decode
    usually lands on the shell, and the Lagrangian bounds are tight) and slow far
    off it (every coset visited at ``|y| = 100``), so rows are moved onto it first.
    Divided by the largest entry first: no overflow or underflow.
    """
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return y
    m = np.abs(y).max(axis=1)
    nz = m > 0
    z = y / np.where(nz, m, 1.0)[:, None]
    r = np.sqrt((z * z).sum(axis=1))
    return z * (math.sqrt(n_int) / np.where(nz, r, 1.0))[:, None]


def _shell_points(y, n_int, workers=None, *, return_stats=False):
    """Nearest points of norm exactly ``n_int`` (integer frame) of the rows of ``y``.

    One fused kernel pass (:func:`leechlib._kernels.encode.encode_kernel`) on the rows
    moved onto the shell's sphere (:func:`_onto_sphere`, which does not change the
    answer): the nearest lattice point of ``t0 y`` when it lies on the shell (then it
    is a nearest shell point of ``y``, for any ``t0 > 0``), else the exact search.
    ``t0`` is :func:`_shell_probe_scale` of the shell.  With ``return_stats`` also
    the mask of the rows searched and the cosets visited per row.
    """
    from ._kernels.encode import SHELL

    t0 = _shell_probe_scale(n_int)
    p, dist, visited = _encode(SHELL, _onto_sphere(y, n_int), n_int, n_int, 0, t0 * _SHELL_TS,
                               *_NO_UB, workers, t0=t0)
    if not np.all(np.isfinite(dist)):  # pragma: no cover - every shell used is non-empty
        raise RuntimeError("constrained search found no shell point")
    if return_stats:
        return p, visited >= 0, np.maximum(visited, 0)
    return p


def _range_points(y, n_lo, n_hi, workers=None, *, return_stats=False):
    """Nearest points of norm in ``[n_lo, n_hi]``, ``0 < n_lo < n_hi`` (integer frame).

    The nearest point of the ball of norm ``n_hi`` (:func:`_ball_points`) answers
    every row where it has norm ``>= n_lo`` (it is in the range, which lies in the
    ball).  The other rows, near the origin, take the nearest of the nearest points
    of each non-empty shell of the range (:func:`_shell_points`, fast at any
    ``|y|``): the range is the union of its shells.  (A search over the whole range
    from no start visited thousands of cosets per row away from the shells.)  With
    ``return_stats`` also the cosets visited per row, all searches counted.
    """
    p, _, visited = _ball_points(y, n_hi, workers, return_stats=True)
    visited = visited.copy()
    inner = np.nonzero((p * p).sum(axis=1) < n_lo)[0]
    if inner.size:
        yi = y[inner]
        best = np.full(inner.size, np.inf)
        bp = np.zeros((inner.size, 24))
        for n in range(n_lo + (-n_lo) % 16, n_hi + 1, 16):
            if not shell_count(n // 8):
                continue
            q, _, v = _shell_points(yi, n, workers, return_stats=True)
            visited[inner] += v
            d = ((yi - q) ** 2).sum(axis=1)
            up = d < best
            best[up] = d[up]
            bp[up] = q[up]
        p[inner] = bp
    if return_stats:
        return p, visited
    return p


def constrained_nearest_point(x, *, min_norm=0, max_norm, coords="unit", workers=None,
                              return_distance=False):
    r"""Nearest Leech lattice point with squared norm in ``[min_norm, max_norm]`` (exact).

    Parameters
    ----------
    x : array_like
        Points, shape ``(..., 24)``.
    min_norm, max_norm : int
        Squared norms in the coordinates ``coords`` (unit: even integers such as 4,
        6, 26; int: multiples of 16).  ``min_norm = 0`` is a ball,
        ``min_norm = max_norm`` one shell.
    coords : {"unit", "int"}, optional
        :math:`\Lambda_{24}` or :math:`\sqrt8\,\Lambda_{24}`, as in
        :func:`~leechlib.nearest_point`.
    workers : int, optional
        Threads as in scipy (``None``/1: one, -1: all cores).
    return_distance : bool, optional
        Also return the squared distances.

    Returns
    -------
    points : numpy.ndarray
        float64, shape ``x.shape``.
    dist : numpy.ndarray
        Only if ``return_distance``.

    Raises
    ------
    ValueError
        If no lattice vector has a norm in the range, or for bad arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.quantizers import constrained_nearest_point
    >>> x = np.zeros(24); x[0] = 10.0                  # far outside the ball of norm 4
    >>> p = constrained_nearest_point(x, max_norm=4)
    >>> float((p * p).sum()), float(np.round(p[0] * np.sqrt(8)))
    (4.0, 4.0)
    """
    check_coords(coords)
    f = 8 if coords == "unit" else 1
    lo = check_int(min_norm, "min_norm", 0)
    hi = check_int(max_norm, "max_norm", 0, 56 * 8 // f)
    if lo > hi:
        raise ValueError(f"min_norm must be <= max_norm, got {lo} > {hi}")
    lo_i, hi_i = lo * f, hi * f
    if not any(lo_i <= n <= hi_i for n in range(0, hi_i + 1, 16)
               if n == 0 or shell_count(n // 8)):
        raise ValueError(f"no lattice vector has a squared norm in [{lo}, {hi}]")
    y, shape = as_blocks(x)
    if coords == "unit":
        y *= _SQRT8
    if np.abs(y).max() >= MAX_ABS:
        raise ValueError("x is too large: entries must be below 2**30 in the integer frame")
    if lo_i == 0:
        p = _ball_points(y, hi_i, workers)
    elif lo_i == hi_i:
        p = _shell_points(y, hi_i, workers)
    else:
        p = _range_points(y, lo_i, hi_i, workers)
    d = ((y - p) ** 2).sum(axis=1)
    if coords == "unit":
        p /= _SQRT8
        d /= 8.0
    p = p.reshape(shape + (24,))
    if return_distance:
        return p, d.reshape(shape)
    return p
