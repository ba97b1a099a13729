"""Exhaustive nearest-codeword search over a small explicit codebook.

Used by the baseline quantizers (the E8 ball) and as the brute-force reference of
the structured Leech encoders.  ``nearest_kernel`` is the fused Numba loop,
``nearest_reference`` the numpy matrix-product version; ties go to the lowest
index in both.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import pjit

__all__ = ["nearest_kernel", "nearest_reference"]


@pjit
def nearest_kernel(x, codebook, out):
    """out[t] = argmin_k ||x[t] - codebook[k]||^2 (lowest k on ties)."""
    n, d = x.shape
    m = codebook.shape[0]
    for t in prange(n):
        best = np.inf
        arg = 0
        for k in range(m):
            s = 0.0
            for j in range(d):
                diff = x[t, j] - codebook[k, j]
                s += diff * diff
                if s >= best:
                    break
            if s < best:
                best = s
                arg = k
        out[t] = arg


def nearest_reference(x, codebook, chunk=256):
    """Numpy reference of :func:`nearest_kernel` (distances by direct differences)."""
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        blk = x[s : s + chunk]
        d = ((blk[:, None, :] - codebook[None, :, :]) ** 2).sum(axis=-1)
        out[s : s + chunk] = np.argmin(d, axis=1)
    return out
