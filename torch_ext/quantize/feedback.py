r"""Hessian-aware error feedback (block LDLQ) for the block codecs of :mod:`torch_ext.quantize`.

For a linear layer ``y = W x`` whose inputs have the second moment
``H = E[x xᵀ]``, the mean squared output error of a quantized weight ``Ŵ`` is the
proxy loss :func:`proxy_loss`, ``tr((W − Ŵ) H (W − Ŵ)ᵀ)``.  :func:`ldlq` quantizes
the input columns block by block, left to right, and pushes the error of each
block onto the columns not yet quantized, so that later blocks compensate for it:
GPTQ for blocks of one column, QuIP#'s BlockLDLQ for blocks of eight; here blocks
of the codec's length (24 for the Leech codecs, 8 for E8, 1 for RTN), so that every
method gets the same treatment.

With the damped Hessian ``H_λ = H + λ I`` and the upper Cholesky factor ``U`` of
its inverse, ``H_λ⁻¹ = Uᵀ U``, block ``j`` quantized jointly to ``Q_j`` updates the
later columns by

.. math::

    W_{:,\,>j} \mathrel{-}= (W_j - Q_j)\, U_{jj}^{-1}\, U_{j,\,>j},

which is the exact block LDL feedback (the LDL decomposition of ``H_λ`` read from
``U``): each column block is quantized after the errors of all earlier blocks have
been projected onto it.

Damping and degenerate ``H``
----------------------------
``λ`` is ``damp`` times the mean diagonal of ``H`` over the live inputs (GPTQ's
rule; default 1 %).  Inputs whose diagonal is zero (*dead* inputs, never active in
the calibration data, and the zero padding of a row) are decoupled: their rows and
columns of ``H`` are zeroed and their diagonal set to that mean, so they are
quantized as without feedback and take no error from other columns.  If the
factorization fails (an ``H`` that is not positive semi-definite up to rounding)
(or leaves a pivot that is rounding noise) the damping is raised ten-fold, up
to :data:`MAX_TRIES` times; the damping used and
the number of raises are returned in :class:`FeedbackInfo`.  Everything runs in
float64.

Examples
--------
>>> import numpy as np
>>> from torch_ext.quantize.feedback import ldlq, proxy_loss
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((2000, 16)) @ rng.standard_normal((16, 16))   # correlated inputs
>>> H = X.T @ X / len(X)
>>> W = rng.standard_normal((8, 16))
>>> rtn = lambda j, Wj: np.round(Wj * 2) / 2                               # step 0.5
>>> Q, info = ldlq(W, H, rtn, block=1)
>>> bool(proxy_loss(W, Q, H) < proxy_loss(W, rtn(0, W), H))
True
>>> info.damp, info.raised, info.dead
(0.01, 0, 0)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

import numpy as np
import scipy.linalg

__all__ = ["FeedbackInfo", "act_order", "damped_hessian", "inverse_cholesky_upper", "ldlq", "proxy_loss",
           "MAX_TRIES"]

#: ten-fold raises of the damping tried before giving up on a factorization
MAX_TRIES = 12
#: smallest squared Cholesky pivot accepted, relative to the mean diagonal (smaller
#: pivots are rounding noise of a singular matrix, and would blow the feedback up)
_MIN_PIVOT = 1e-10
#: columns of a lazy-update chunk (rounded down to whole blocks)
_LAZY_COLUMNS = 128
#: damping tried after a failure with ``damp=0``
_FIRST_NONZERO = 1e-6


@dataclasses.dataclass(frozen=True)
class FeedbackInfo:
    """What :func:`ldlq` did to factor ``H``.

    Attributes
    ----------
    damp : float
        The relative damping used (``λ / mean live diagonal``).
    raised : int
        How many times the requested damping was raised ten-fold (0: as requested).
    dead : int
        Inputs with a zero diagonal (decoupled).
    """

    damp: float
    raised: int
    dead: int


def _check_damp(damp) -> float:
    if isinstance(damp, bool) or not isinstance(damp, numbers.Real):
        raise TypeError(f"damp must be a real number, got {type(damp).__name__}")
    d = float(damp)
    if not (math.isfinite(d) and d >= 0):
        raise ValueError(f"damp must be finite and >= 0, got {damp!r}")
    return d


def _check_hessian(H, n: int | None = None) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or (n is not None and H.shape[0] != n):
        want = "square" if n is None else f"({n}, {n})"
        raise ValueError(f"H must be a {want} matrix, got shape {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError("H contains NaN or inf")
    return H


def damped_hessian(H, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``H`` symmetrised, dead inputs decoupled, plus ``damp`` times its mean live diagonal.

    Parameters
    ----------
    H : array_like, shape (n, n)
        A second-moment matrix (finite).
    damp : float
        Relative damping (>= 0).

    Returns
    -------
    Hd : numpy.ndarray, shape (n, n)
        float64.
    dead : numpy.ndarray of bool, shape (n,)
        The inputs whose diagonal is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize.feedback import damped_hessian
    >>> Hd, dead = damped_hessian(np.diag([2.0, 0.0, 4.0]), 0.5)   # mean live diagonal 3
    >>> np.diag(Hd).tolist(), dead.tolist()
    ([3.5, 4.5, 5.5], [False, True, False])
    """
    H = _check_hessian(H)
    damp = _check_damp(damp)
    H = H + H.T  # a new array, then in place: one n x n temporary, not two
    H *= 0.5
    dead = _decouple_and_damp(H, np.diag(H).copy(), damp)
    return H, dead


def _decouple_and_damp(A: np.ndarray, d: np.ndarray, damp: float, *, flipped: bool = False
                       ) -> np.ndarray:
    """The dead inputs and damping of :func:`damped_hessian`, in place on the symmetrised
    ``A`` whose diagonal, in the inputs' order, is ``d``; ``flipped``: ``A`` is in reversed
    order (``J A J``).  Returns the dead inputs (inputs' order)."""
    dead = ~(d > 0)
    mean = float(d[~dead].mean()) if np.any(~dead) else 1.0
    if np.any(dead):
        da = dead[::-1] if flipped else dead
        A[da, :] = 0.0
        A[:, da] = 0.0
        A[da, da] = mean
    A[np.diag_indices(A.shape[0])] += damp * mean
    return dead


def inverse_cholesky_upper(H, damp: float = 0.01, *, size: int | None = None
                           ) -> tuple[np.ndarray, FeedbackInfo]:
    """Upper triangular ``U`` with ``damped_hessian(H, λ)⁻¹ = Uᵀ U``.

    The damping starts at ``damp`` and is raised ten-fold while the factorization
    fails (at most :data:`MAX_TRIES` times).

    ``size`` (default ``n``): factor ``H`` zero-padded to ``size x size`` (the padding
    is dead inputs), without making the padded copy.

    Returns
    -------
    U : numpy.ndarray, shape (size, size)
    info : FeedbackInfo

    Raises
    ------
    numpy.linalg.LinAlgError
        If no damping up to ``damp * 10**MAX_TRIES`` makes ``H`` factor (not seen for
        finite second-moment matrices: their damped form is positive definite).

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize.feedback import inverse_cholesky_upper
    >>> U, info = inverse_cholesky_upper(np.ones((3, 3)), 0.01)   # singular: rank 1
    >>> Hd = np.ones((3, 3)) + 0.01 * np.eye(3)
    >>> bool(np.allclose(U.T @ U @ Hd, np.eye(3))), info.raised
    (True, 0)
    """
    H = _check_hessian(H)
    d = _check_damp(damp)
    size = H.shape[0] if size is None else int(size)
    if size < H.shape[0]:
        raise ValueError(f"size must be at least the size of H ({H.shape[0]}), got {size}")
    potrf, trtri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "trtri"), (np.empty(1),))
    for raised in range(MAX_TRIES + 1):
        # H = R R^T with R upper: R = J Lr J, Lr the lower Cholesky factor of J H J (J reverses
        # the order); then H^-1 = R^-T R^-1, and U = R^-1 = J Lr^-1 J is upper with a positive
        # diagonal: the (unique) upper Cholesky factor of H^-1.  LAPACK in place on one
        # Fortran-ordered array holding J damped_hessian(H) J, built and turned into the
        # C-ordered U in place: one n x n array besides H (n = 5632 is 254 MB)
        A, dead, mean_diag = _reversed_damped(H, d, size)
        A, info = potrf(A, lower=1, clean=1, overwrite_a=1)
        if info == 0 and np.min(np.diag(A)) ** 2 > _MIN_PIVOT * mean_diag:
            A, info = trtri(A, lower=1, overwrite_c=1)
            if info == 0:
                U = _flip_fortran_in_place(A)
                del A
                if np.all(np.isfinite(U)) and np.all(np.diag(U) > 0):
                    return U, FeedbackInfo(damp=d, raised=raised, dead=int(dead.sum()))
        d = d * 10.0 if d > 0 else _FIRST_NONZERO
    raise np.linalg.LinAlgError(f"H does not factor even with damping {d / 10:g}")


def _reversed_damped(H: np.ndarray, damp: float, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``damped_hessian(Hp, damp)[0][::-1, ::-1]`` as a new Fortran-ordered array, ``Hp`` the
    ``size x size`` zero padding of ``H`` (the same values, written once: no n x n
    temporary), its dead inputs and mean diagonal."""
    n, p = H.shape[0], size - H.shape[0]
    A = np.zeros((size, size), order="F") if p else np.empty((n, n), order="F")
    np.add(H[::-1, ::-1], H.T[::-1, ::-1], out=A[p:, p:])
    A[p:, p:] *= 0.5
    dead = _decouple_and_damp(A, np.diag(A)[::-1].copy(), damp, flipped=True)
    return A, dead, float(np.mean(np.diag(A)[::-1]))


#: entries of the n x n arrays moved at once when flipped or transposed in place
_TILE = 256


def _flip_fortran_in_place(A: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(A[::-1, ::-1])`` of a square Fortran-ordered ``A``, in A's memory.

    Reversing the flat memory of a Fortran array gives the Fortran array of
    ``A[::-1, ::-1]``, whose C-ordered reading is its transpose: the memory is
    reversed, then transposed, a tile at a time (temporaries of one tile or one
    chunk).  ``A`` is consumed.
    """
    n = A.shape[0]
    v = A.reshape(-1, order="F")  # a view: A is Fortran-contiguous
    m = v.size
    step = _TILE * _TILE
    for a in range(0, m // 2, step):
        b = min(a + step, m // 2)
        t = v[a:b].copy()
        v[a:b] = v[m - b:m - a][::-1]
        v[m - b:m - a] = t[::-1]
    M = v.reshape(n, n)  # C order: the transpose of the flipped array
    transpose_in_place(M)
    return M


def transpose_in_place(M: np.ndarray) -> None:
    """Transpose the square C-contiguous ``M`` in its own memory, a tile at a time."""
    n = M.shape[0]
    for i in range(0, n, _TILE):
        i1 = min(i + _TILE, n)
        M[i:i1, i:i1] = M[i:i1, i:i1].T.copy()
        for j in range(i1, n, _TILE):
            j1 = min(j + _TILE, n)
            t = M[i:i1, j:j1].copy()
            M[i:i1, j:j1] = M[j:j1, i:i1].T
            M[j:j1, i:i1] = t.T


def act_order(H, block: int) -> np.ndarray:
    """Column blocks in decreasing order of their inputs' energy (GPTQ's act-order).

    Block ``j``'s energy is the sum of the diagonal of ``H`` over its ``block``
    columns; ties keep their natural order.  Pass the result as ``ldlq(order=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize.feedback import act_order
    >>> act_order(np.diag([1.0, 1.0, 5.0, 0.0, 2.0, 2.0]), 2).tolist()
    [1, 2, 0]
    """
    return order_of_diagonal(np.diagonal(np.asarray(H, dtype=np.float64)), block)


def order_of_diagonal(d, block: int) -> np.ndarray:
    """:func:`act_order` of a Hessian given by its diagonal ``d`` alone (all it reads)."""
    d = np.asarray(d, dtype=np.float64)
    if isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1 or len(d) % block:
        raise ValueError(f"block must be a positive int dividing {len(d)}, got {block!r}")
    return np.argsort(-d.reshape(-1, block).sum(1), kind="stable")


def ldlq(W, H, quantize_block: Callable[[int, np.ndarray], np.ndarray], *, block: int,
         damp: float = 0.01, order=None) -> tuple[np.ndarray, FeedbackInfo]:
    """Quantize ``W`` column block by column block with block LDL error feedback.

    Parameters
    ----------
    W : array_like, shape (out, n)
        The weight; ``n`` a multiple of ``block`` (pad with zero columns, and ``H``
        with zero rows and columns: padding is then a dead input).
    H : array_like, shape (m, m), m <= n
        Second moment of the inputs; if ``m < n``, of the first ``m`` inputs, the
        others being padding (zero rows and columns of ``H``: dead inputs).
    quantize_block : callable
        ``quantize_block(j, Wj)`` returns the quantized values ``(out, block)`` of
        column block ``j`` given its current (feedback-corrected) values ``Wj``.
        It is called once per block, in the order of ``order``.
    block : int
        Columns quantized jointly.
    damp : float
        Relative damping (see the module docstring).
    order : array_like of int, optional
        The order in which the column blocks are quantized (a permutation of
        ``range(n // block)``, e.g. :func:`act_order`); default left to right.
        Errors are fed forward in that order; ``quantize_block`` still receives each
        block's own index, and ``Q`` is in the original column order.

    Returns
    -------
    Q : numpy.ndarray, shape (out, n)
        The quantized weight (float64): the blocks ``quantize_block`` returned.
    info : FeedbackInfo

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize.feedback import ldlq
    >>> W = np.array([[0.3, 0.3]])
    >>> H = np.array([[1.0, 0.9], [0.9, 1.0]])       # strongly correlated inputs
    >>> Q, _ = ldlq(W, H, lambda j, Wj: np.round(Wj), block=1, damp=0.0)
    >>> Q.tolist()                                  # the second weight absorbs the first's error
    [[0.0, 1.0]]
    """
    return _ldlq(W, H, quantize_block, block=block, damp=damp, order=order, keep=True)


def _ldlq(W, H, quantize_block, *, block, damp, order, keep: bool):
    """:func:`ldlq`; ``keep=False`` returns ``(None, info)`` without storing ``Q`` (a caller
    that keeps what ``quantize_block`` returns saves an array the size of ``W``)."""
    W = np.array(W, dtype=np.float64, copy=True)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix, got shape {W.shape}")
    if isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    out_f, n = W.shape
    if n % block:
        raise ValueError(f"the columns of W ({n}) must be a multiple of block ({block})")
    H = _check_hessian(H)
    if H.shape[0] > n:
        raise ValueError(f"H must be at most ({n}, {n}) (the columns of W), got shape {H.shape}")
    if order is not None:
        if H.shape[0] < n:  # permuted with the padding: the padded copy
            Hp = np.zeros((n, n))
            Hp[:H.shape[0], :H.shape[0]] = H
            H = Hp
        nb = n // block
        order = np.asarray(order)
        if (order.shape != (nb,) or order.dtype.kind not in "iu"
                or not np.array_equal(np.sort(order), np.arange(nb))):
            raise ValueError(f"order must be a permutation of range({nb}) (the column blocks)")
        cols = (order[:, None] * block + np.arange(block)).reshape(-1)
        inner = quantize_block
        Qp, info = _ldlq(W[:, cols], H[np.ix_(cols, cols)], lambda j, Wj: inner(int(order[j]), Wj),
                         block=block, damp=damp, order=None, keep=keep)
        if not keep:
            return None, info
        Q = np.empty_like(Qp)
        Q[:, cols] = Qp
        return Q, info
    U, info = inverse_cholesky_upper(H, damp, size=n)
    Q = np.empty_like(W) if keep else None
    # lazy batch updates (GPTQ): the error of a block moves the columns of its chunk at
    # once, and the columns after the chunk once per chunk, by one matrix product
    chunk = block * max(1, _LAZY_COLUMNS // block)
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        Err = np.empty((out_f, c1 - c0))
        for a in range(c0, c1, block):
            b = a + block
            Qj = np.asarray(quantize_block(a // block, W[:, a:b].copy()), dtype=np.float64)
            if Qj.shape != (out_f, block):
                raise ValueError(f"quantize_block returned shape {Qj.shape} for block {a // block}, "
                                 f"expected {(out_f, block)}")
            if keep:
                Q[:, a:b] = Qj
            # E = (W_j - Q_j) U_jj^{-1}
            Ujj_inv = scipy.linalg.solve_triangular(U[a:b, a:b], np.eye(block), lower=False,
                                                    check_finite=False)
            E = (W[:, a:b] - Qj) @ Ujj_inv
            Err[:, a - c0:b - c0] = E
            if b < c1:
                W[:, b:c1] -= E @ U[a:b, b:c1]
        if c1 < n:
            W[:, c1:] -= Err @ U[c0:c1, c1:]
    return Q, info


def proxy_loss(W, Q, H) -> float:
    """``tr((W − Q) H (W − Q)ᵀ)``: the summed squared output error over inputs of second moment ``H``.

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize.feedback import proxy_loss
    >>> proxy_loss(np.ones((2, 3)), np.zeros((2, 3)), np.eye(3))
    6.0
    """
    D = np.asarray(W, dtype=np.float64) - np.asarray(Q, dtype=np.float64)
    H = _check_hessian(H, D.shape[1])
    return float(((D @ H) * D).sum())
