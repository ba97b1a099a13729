r"""The randomized Hadamard transform of rows, in place (Numba kernel, numpy reference).

For ``n = p * m`` (``p`` a power of two, ``m`` odd) the transform of a row ``x`` is
``T x = (H_p / sqrt(p) ⊗ Q) (s ∘ x)``: random signs ``s``, then, viewing the row as a
``p × m`` array (row-major), a fast Walsh–Hadamard transform along the first axis
and the ``m × m`` orthogonal ``Q`` along the second.  ``T`` is orthogonal; the
inverse applies ``Qᵀ``, the (self-inverse) Walsh–Hadamard transform and the signs, in
that order.  One pass per row, rows split among the threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import jit, pjit


@jit
def _slices(row, q, tmp, p, transpose):
    """Each length-m slice z of ``row`` -> ``z Q^T`` (``z Q`` with ``transpose``), in place."""
    m = q.shape[0]
    for a in range(p):
        for j in range(m):
            s = 0.0
            for k in range(m):
                s += row[a * m + k] * (q[k, j] if transpose else q[j, k])
            tmp[j] = s
        for j in range(m):
            row[a * m + j] = tmp[j]


@pjit
def hadamard_rows(x, signs, q, p, inverse):
    """``T x`` (or ``Tᵀ x`` with ``inverse``) of every row of ``x`` (N, p * m), in place."""
    N = x.shape[0]
    m = q.shape[0]
    norm = 1.0 / math.sqrt(p)
    dense = m > 1 or q[0, 0] != 1.0  # Q = [1] is the identity
    for r in prange(N):
        row = x[r]
        tmp = np.empty(m, dtype=x.dtype)
        if not inverse:
            for i in range(p * m):
                row[i] *= signs[i]
        elif dense:  # Q^T first: each length-m slice z -> z Q
            _slices(row, q, tmp, p, True)
        h = 1
        while h < p:  # butterflies along the power-of-two axis: contiguous runs of h * m values
            L = h * m
            for base in range(0, p * m, 2 * L):
                for t in range(base, base + L):
                    u = row[t]
                    v = row[t + L]
                    row[t] = u + v
                    row[t + L] = u - v
            h *= 2
        if p > 1:
            for i in range(p * m):
                row[i] *= norm
        if not inverse:
            if dense:  # each slice z -> z Q^T
                _slices(row, q, tmp, p, False)
        else:
            for i in range(p * m):
                row[i] *= signs[i]


def hadamard_rows_ref(x, signs, q, p, inverse):
    """Plain numpy with the dense Sylvester–Hadamard matrix (small sizes)."""
    x = np.asarray(x, dtype=np.float64)
    H = np.ones((1, 1))
    while H.shape[0] < p:
        H = np.block([[H, H], [H, -H]])
    T = np.kron(H / math.sqrt(p), q) * signs[None, :]
    return x @ (T if inverse else T.T)
