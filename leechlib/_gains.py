"""The shape-gain model: Lloyd-Max gain levels and the default shell of
:class:`~leechlib.ShapeGainQuantizer`.

The default configuration for a rate is the single shell and number of gain levels
that minimise a model of the mean squared error of an i.i.d. Gaussian source (see
the notes of :class:`~leechlib.ShapeGainQuantizer`): the measured angle error of
each shell (:data:`SHELL_ANGLE_ERROR`) plus the Lloyd-Max distortion of the gains.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from ._validation import check_int
from .shells import shell_count

__all__ = ["SHELL_ANGLE_ERROR", "MAX_GAIN_LEVELS", "lloyd_max", "as_shells", "best_shell"]

#: largest number of gain levels considered
MAX_GAIN_LEVELS = 1 << 16


def lloyd_max(c, K, iters=300):
    """Lloyd-Max levels (ascending, K of them) for the samples ``c`` (1-D)."""
    c = np.sort(np.asarray(c, dtype=np.float64))
    if K == 1:
        return np.array([c.mean()])
    levels = np.quantile(c, (np.arange(K) + 0.5) / K)
    levels = np.maximum.accumulate(levels)
    tol = 1e-12 * max(float(np.abs(c).max()), 1e-300)
    for _ in range(iters):
        mids = 0.5 * (levels[1:] + levels[:-1])
        idx = np.searchsorted(mids, c)
        sums = np.bincount(idx, weights=c, minlength=K)
        cnts = np.bincount(idx, minlength=K)
        new = np.where(cnts > 0, sums / np.maximum(cnts, 1), levels)
        new = np.sort(new)
        if np.max(np.abs(new - levels)) <= tol:
            levels = new
            break
        levels = new
    return levels


def as_shells(shells) -> tuple:
    if isinstance(shells, (numbers.Integral, np.integer)) and not isinstance(shells, bool):
        shells = (shells,)
    try:
        lst = list(shells)
    except TypeError:
        raise TypeError(f"shells must be an int or a sequence of ints, got "
                        f"{type(shells).__name__}") from None
    if not lst:
        raise ValueError("shells must not be empty")
    out = []
    for m in lst:
        m = check_int(m, "shells", 4, 56)
        if m % 2:
            raise ValueError(f"shells must be even norms (4, 6, 8, ...), got {m}")
        if m in out:
            raise ValueError(f"shells holds {m} twice")
        out.append(m)
    return tuple(out)


#: Mean of sin^2 of the angle between a uniformly random direction and the nearest
#: direction of the shell of each norm (unit coordinates): exact shell search on 4000
#: random directions per shell, standard errors 0.00006-0.0006
#: (``benchmarks/bench_quantizers.py --shell-table``).
SHELL_ANGLE_ERROR: dict = {
    4: 0.396040,
    6: 0.271653,
    8: 0.207476,
    10: 0.167869,
    12: 0.141590,
    14: 0.122428,
    16: 0.107795,
    18: 0.096396,
    20: 0.087405,
    22: 0.079736,
    24: 0.073419,
    26: 0.068157,
    28: 0.063489,
    30: 0.059337,
    32: 0.056046,
    34: 0.052881,
    36: 0.049797,
    38: 0.047473,
    40: 0.045217,
    42: 0.043248,
    44: 0.041065,
    46: 0.039619,
    48: 0.037952,
    50: 0.036468,
    52: 0.035239,
    54: 0.033997,
    56: 0.032742,
}


def _gain_distortion(K: int, s: float) -> float:
    """Lloyd-Max MSE of K levels for the gain r * sqrt(1 - s), r ~ chi(24) (per block)."""
    return (1.0 - s) * _chi_gain_distortion(int(K))


@functools.cache
def _chi_gain_distortion(K: int) -> float:
    """Lloyd-Max MSE of K levels for r ~ chi(24).

    Up to 32 levels: Lloyd's iteration on 4000 quantiles of the distribution;
    beyond: the Panter-Dite approximation ``(int p^(1/3))^3 / (12 K^2)``.
    """
    from scipy.stats import chi  # on first use: ``import leechlib`` imports numpy only

    if K > 32:
        r = np.linspace(1e-6, 12.0, 24001)
        f = chi.pdf(r, 24) ** (1.0 / 3.0)
        integral = float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(r)))
        return integral**3 / (12.0 * K * K)
    c = chi.ppf((np.arange(4000) + 0.5) / 4000, 24)
    lv = lloyd_max(c, K)
    mids = 0.5 * (lv[1:] + lv[:-1])
    return float(np.mean((lv[np.searchsorted(mids, c)] - c) ** 2))


def best_shell(budget: float, K: int | None = None) -> int:
    best, arg = math.inf, None
    for m, s in SHELL_ANGLE_ERROR.items():
        size = shell_count(m)
        if math.log2(size) > budget + 1e-12:
            continue
        k = K if K is not None else min(int(2.0 ** (budget - math.log2(size)) + 1e-9),
                                        MAX_GAIN_LEVELS)
        if k < 1 or math.log2(size) + math.log2(k) > budget + 1e-9:
            continue
        d = 24.0 * s + _gain_distortion(k, s)
        if d < best:
            best, arg = d, m
    if arg is None:
        raise ValueError(f"no shell fits {budget / 24:.4f} bits per dimension")
    return arg
