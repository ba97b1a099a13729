"""Argument checks shared by torch_ext's modules (private; one copy of each).

torch_ext does not import leechlib's private modules, so the few helpers it needs
live here.  Errors name the argument: ``TypeError`` for the wrong kind of object,
``ValueError`` for a value out of range.

Examples
--------
>>> from torch_ext._validation import check_int, subsample
>>> check_int(3, "n", 1)
3
>>> check_int(0, "n", 1, 8)
Traceback (most recent call last):
    ...
ValueError: n must be >= 1 and <= 8, got 0
>>> import numpy as np
>>> subsample(np.arange(10), 4).tolist()
[0, 3, 6, 9]
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_int", "subsample"]


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (bounds optional); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "" if low is None else f">= {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{name} must be {' and '.join(b for b in (lo, hi) if b)}, got {v}")
    return v


def subsample(x: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` rows of ``x``, evenly spaced (deterministic).

    The rows that leechlib's quantizers fit on when given ``max_points=n``.
    """
    if len(x) <= n:
        return x
    idx = np.linspace(0, len(x) - 1, n).round().astype(np.int64)
    return x[idx]
