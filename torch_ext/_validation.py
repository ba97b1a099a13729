"""Argument checks of torch_ext's modules: leechlib's, through its seam (one copy of each).

torch_ext does not import leechlib's private modules; the helpers it shares with
leechlib come from :mod:`leechlib.kernels` and are re-exported here, so torch_ext's
modules import them from one place.  Errors name the argument: ``TypeError`` for the
wrong kind of object, ``ValueError`` for a value out of range.

Examples
--------
>>> from torch_ext._validation import check_int, subsample
>>> check_int(3, "n", 1)
3
>>> check_int(0, "n", 1, 8)
Traceback (most recent call last):
    ...
ValueError: n must be in [1, 8], got 0
>>> import numpy as np
>>> subsample(np.arange(10), 4).tolist()
[0, 3, 6, 9]
"""

from __future__ import annotations

from leechlib.kernels import check_int, subsample

__all__ = ["check_int", "subsample"]
