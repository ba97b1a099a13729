"""The binary min-heap of the constrained search (Numba, compiled inline).

The heap of :func:`leechlib._kernels.constrained.search_one` holds groups and cosets
as entries of two parallel arrays, ``hk`` (float64 keys: lower bounds) and ``hv``
(int64 values: what the entry stands for); ``n`` is the heap's size.  An entry comes
before another if its key is smaller, or its key equal and its value smaller, so the
visiting order of the search is deterministic.  The functions are inlined into the
search (``NUMBA_DISABLE_JIT=1`` runs them as Python).
"""

from __future__ import annotations

from .._jit import jit

__all__ = ["heap_push", "heap_pop", "sift_down"]


@jit(inline="always")
def _before(hk, hv, i, j):
    """Entry i orders before entry j: smaller key, then smaller value."""
    return hk[i] < hk[j] or (hk[i] == hk[j] and hv[i] < hv[j])


@jit(inline="always")
def _swap(hk, hv, i, j):
    tk = hk[i]
    tv = hv[i]
    hk[i] = hk[j]
    hv[i] = hv[j]
    hk[j] = tk
    hv[j] = tv


@jit(inline="always")
def sift_down(hk, hv, n, i):
    """Move entry ``i`` down until neither child comes before it (heap of size ``n``)."""
    while True:
        lft = 2 * i + 1
        if lft >= n:
            return
        sm = lft
        if lft + 1 < n and _before(hk, hv, lft + 1, lft):
            sm = lft + 1
        if _before(hk, hv, i, sm):
            return
        _swap(hk, hv, sm, i)
        i = sm


@jit(inline="always")
def heap_push(hk, hv, n, key, val):
    """Add the entry ``(key, val)`` to a heap of size ``n``; returns the new size."""
    i = n
    hk[i] = key
    hv[i] = val
    while i > 0:
        par = (i - 1) // 2
        if _before(hk, hv, par, i):
            break
        _swap(hk, hv, par, i)
        i = par
    return n + 1


@jit(inline="always")
def heap_pop(hk, hv, n):
    """Remove the root of a heap of size n >= 1; returns the new size."""
    n -= 1
    hk[0] = hk[n]
    hv[0] = hv[n]
    sift_down(hk, hv, n, 0)
    return n
