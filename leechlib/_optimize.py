"""Small scalar optimisation helpers shared by the quantizers."""

from __future__ import annotations

import math

__all__ = ["golden_min"]


def golden_min(f, lo: float, hi: float, iters: int):
    """Golden-section search for a minimum of a unimodal ``f`` on ``[lo, hi]``.

    Returns ``(x, f(x))`` for the best of the evaluated points after ``iters``
    shrinking steps (``iters + 2`` evaluations of ``f``).
    """
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return (a, fa) if fa < fb else (b, fb)
