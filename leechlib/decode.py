r"""Exact decoding of the Leech lattice: nearest points, quantization, minimal vectors.

Conventions
-----------
* ``coords="unit"`` (the default) is :math:`\Lambda_{24}` itself (minimal norm 4,
  covering radius :math:`\sqrt 2`); ``coords="int"`` is the integer model
  :math:`\sqrt 8\,\Lambda_{24} \subset \mathbb{Z}^{24}` (minimal norm 32).  Both use
  MOG coordinates (coordinate ``4*column + row``).
* Internally everything is computed in float64 in the integer frame (``x*sqrt(8)``
  for unit coordinates); float32 input is converted exactly and the results are cast
  back.  Squared distances are returned in the coordinates of the input.

Algorithm
---------
Maximum-likelihood (exact) decoding through the MOG, in the spirit of Vardy and
Be'ery (1993): after a translation by :math:`8\mathbb{Z}^{24}` the lattice splits into
the cosets E and O, each a Golay code lifted by :math:`4\,\mathbb{Z}^{24}` with a sum
parity.  Per coordinate, coset and Golay bit the best residue mod 8 is chosen; per
MOG column and bit pattern the costs are tabulated; every (coset, hexacode word,
parity) -- 256 in all -- then needs a choice of top bits and residue parities per
column with two parity constraints in :math:`\mathbb{Z}_2^2`, solved exactly by the
best choice per column plus the cheapest one- or two-column repair.  Candidates
whose lower bound cannot win are pruned.  See :mod:`leechlib._kernels.leech`.

Tie-breaking
------------
All kernels are deterministic and take every minimum with a strict ``<`` in a fixed
enumeration order, identically with and without ``NUMBA_DISABLE_JIT``.  For
:func:`nearest_point`: coset E before O, hexacode words in index order ``16a + 4b + c``,
parity 0 before 1 -- the first candidate of least cost wins; inside it the cheaper
top bit (0 on ties), the cheaper residue (the one nearer to the input, the smaller
residue class on ties), the one-column repair before the two-column one, columns in
index order.  Inputs are first reduced modulo :math:`8\mathbb{Z}^{24}` with
``n = floor(y/8 + 1/2)``, so ``nearest_point(x + 8v) == nearest_point(x) + 8v`` exactly
(integer frame) for every integer vector ``v``.  The decoded point is a nearest
lattice point up to floating-point rounding of the squared distances (about
``1e-15`` relative); for integer inputs in the integer frame it is exact.

Inputs with entries of magnitude ``2**50`` or more in the integer frame are
rejected: the lattice spacing is then near the float64 resolution.

The kernel modules are imported inside the functions that call them, so that
importing leechlib does not import Numba.
"""

from __future__ import annotations

import numpy as np

from ._jit import num_threads
from ._mog import kernel_tables as _tables
from ._validation import SQRT8 as _SQRT8
from ._validation import as_codes, as_real_points, check_coords, check_positive

__all__ = [
    "nearest_point",
    "quantize",
    "LeechQuantizer",
    "nearest_minimal_vector",
]

def _kernels():
    from ._kernels import leech

    return leech


def _minvec_kernels():
    from ._kernels import minvec

    return minvec


def _frame(x, name):
    """Validated input -> (float64 (n, 24) C-contiguous copy, batch shape, dtype)."""
    arr = as_real_points(x, name, 24)
    y = np.array(arr, dtype=np.float64, order="C", copy=True).reshape(-1, 24)
    return y, arr.shape[:-1], arr.dtype


def _decode(x, name, factor, mul, div, dmul, ddiv, workers):
    """Validated, fused decode of ``x`` (see :func:`leechlib._kernels.leech.leech_nearest`).

    Returns float64 points ``z * mul / div`` of shape ``(n, 24)``, squared distances
    ``d * dmul / ddiv`` of shape ``(n,)`` (``z``, ``d`` in the integer frame, where the
    input is ``x * factor``), the batch shape and the input dtype.  The kernel
    scales, checks and decodes in one pass over the input.
    """
    arr = as_real_points(x, name, 24, check_finite=False)
    dtype = arr.dtype
    shape = arr.shape[:-1]
    a = np.ascontiguousarray(arr).reshape(-1, 24)
    t = _tables()
    out = np.empty(a.shape)
    dist = np.empty(a.shape[0])
    with num_threads(workers):
        bad = _kernels().leech_nearest(
            a, factor, mul, div, dmul, ddiv, t["pat"], t["hexa"], t["hoff_leech"], out, dist
        )
    if bad:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
        raise ValueError(
            f"{name} is too large to decode exactly: entries must be below 2**50 in the "
            "integer frame (after dividing by scale)"
        )
    return out, dist, shape, dtype


def nearest_point(x, *, coords="unit", workers=None, return_distance=False):
    r"""Nearest point of the Leech lattice (exact maximum-likelihood decoding).

    Parameters
    ----------
    x : array_like
        Points, shape ``(24,)`` or ``(..., 24)``.  float32 and float64 are kept;
        other real dtypes are converted to float64.
    coords : {"unit", "int"}, optional
        ``"unit"``: :math:`\Lambda_{24}` (minimal norm 4); ``"int"``: the integer model
        :math:`\sqrt 8\,\Lambda_{24}` (minimal norm 32).
    workers : int, optional
        Threads as in scipy: ``None`` or 1 one thread, -1 all cores.
    return_distance : bool, optional
        Also return the squared distances.

    Returns
    -------
    points : numpy.ndarray
        Same shape and float dtype as ``x``: a nearest lattice point of each input.
    dist : numpy.ndarray
        Only if ``return_distance``: squared distances, shape ``x.shape[:-1]``, same
        dtype, in the coordinates of ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not a real array, ``coords`` not a string or ``workers`` not an int.
    ValueError
        If ``x`` has the wrong shape, is empty, holds NaN/inf or too large entries,
        or ``coords``/``workers`` have bad values.

    Notes
    -----
    Ties (points equidistant from several lattice points, such as the deep hole
    :math:`(4, 0^{23})/\sqrt 8` with 48 nearest points) are broken deterministically;
    see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.decode import nearest_point
    >>> v = np.zeros(24); v[[0, 5]] = 4.0          # a minimal vector, integer model
    >>> x = v + 0.3 * np.random.default_rng(0).standard_normal(24)
    >>> bool((nearest_point(x, coords="int") == v).all())
    True
    >>> p, d = nearest_point(np.full(24, 0.1), return_distance=True)
    >>> p.shape, float(d) <= 2.0                     # covering radius sqrt(2)
    ((24,), True)
    """
    check_coords(coords)
    if coords == "unit":
        out, dist, shape, dtype = _decode(x, "x", _SQRT8, 1.0, _SQRT8, 1.0, 8.0, workers)
    else:
        out, dist, shape, dtype = _decode(x, "x", 1.0, 1.0, 1.0, 1.0, 1.0, workers)
    pts = out.reshape(shape + (24,)).astype(dtype, copy=False)
    if return_distance:
        return pts, dist.reshape(shape).astype(dtype, copy=False)
    return pts


def quantize(x, *, scale=1.0, coords="unit", workers=None, return_distance=False):
    r"""Nearest point of the scaled lattice ``scale * L`` (``L`` as chosen by ``coords``).

    Parameters
    ----------
    x : array_like
        Points, shape ``(..., 24)``.
    scale : float, optional
        Positive finite scale of the lattice.
    coords : {"unit", "int"}, optional
        ``L`` is :math:`\Lambda_{24}` (``"unit"``) or :math:`\sqrt 8\,\Lambda_{24}`
        (``"int"``).
    workers : int, optional
        Threads as in scipy (``None``/1: one, -1: all cores).
    return_distance : bool, optional
        Also return the squared distances ``||x - q||**2``.

    Returns
    -------
    q : numpy.ndarray
        Same shape and float dtype as ``x``.
    dist : numpy.ndarray
        Only if ``return_distance``; shape ``x.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.decode import quantize
    >>> x = np.random.default_rng(1).standard_normal((1000, 24))
    >>> q, d = quantize(x, scale=0.5, return_distance=True)
    >>> q.shape, bool(d.max() <= 2.0 * 0.5**2 + 1e-12)
    ((1000, 24), True)
    """
    s = check_positive(scale, "scale")
    check_coords(coords)
    factor = (_SQRT8 if coords == "unit" else 1.0) / s
    inv = 1.0 / factor
    out, dist, shape, dtype = _decode(x, "x", factor, inv, 1.0, inv**2, 1.0, workers)
    q = out.reshape(shape + (24,)).astype(dtype, copy=False)
    if return_distance:
        return q, dist.reshape(shape).astype(dtype, copy=False)
    return q


def _is_lattice_int(z: np.ndarray) -> np.ndarray:
    """Membership of integer vectors (n, 24) int64 in sqrt(8)*Lambda24."""
    par = z & 1
    same = (par == par[:, :1]).all(axis=1)
    m = par[:, 0]
    sums = (z.sum(axis=1) - 4 * m) % 8 == 0
    # positions with z = 2 (mod 4) for even z, z = 3 (mod 4) for odd z: bit 1 of z
    bits = ((z >> 1) & 1).astype(np.int64)
    packed = (bits << np.arange(24, dtype=np.int64)).sum(axis=1)
    cw = _tables()["codeword_ints"]
    pos = np.searchsorted(cw, packed)
    golay = cw[np.minimum(pos, cw.size - 1)] == packed
    return same & sums & golay


class LeechQuantizer:
    r"""Lattice quantizer on ``scale * L`` with integer codes.

    ``L`` is :math:`\Lambda_{24}` (``coords="unit"``) or :math:`\sqrt 8\,\Lambda_{24}`
    (``coords="int"``).  :meth:`encode` returns the integer-model coordinates of the
    nearest lattice point (a vector of :math:`\sqrt 8\,\Lambda_{24}\subset\mathbb{Z}^{24}`
    whatever ``coords``); :meth:`decode` maps codes back to points.

    Parameters
    ----------
    scale : float, optional
        Positive finite scale.
    coords : {"unit", "int"}, optional
        Which model ``L`` is.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.decode import LeechQuantizer
    >>> qz = LeechQuantizer(scale=0.25)
    >>> x = np.random.default_rng(0).standard_normal((4, 24))
    >>> codes = qz.encode(x)
    >>> codes.dtype
    dtype('int8')
    >>> xh = qz.decode(codes)
    >>> bool(((x - xh) ** 2).sum(axis=1).max() <= 2 * 0.25**2)
    True
    >>> qz
    LeechQuantizer(scale=0.25, coords='unit')
    """

    def __init__(self, scale=1.0, coords="unit"):
        self.scale = check_positive(scale, "scale")
        self.coords = check_coords(coords)

    def __repr__(self) -> str:
        return f"LeechQuantizer(scale={self.scale!r}, coords={self.coords!r})"

    @property
    def _factor(self) -> float:
        return (_SQRT8 if self.coords == "unit" else 1.0) / self.scale

    def encode(self, x, *, workers=None) -> np.ndarray:
        """Integer-model coordinates of the nearest points, shape ``x.shape``.

        The dtype is the smallest of int8, int16, int32, int64 that holds every
        code of the batch (int8 whenever the points lie within about ``16 * scale``
        of the origin in unit coordinates).
        """
        out, _, shape, _ = _decode(x, "x", self._factor, 1.0, 1.0, 1.0, 1.0, workers)
        z = out.astype(np.int64)
        hi = int(np.abs(z).max())
        for dt in (np.int8, np.int16, np.int32):
            if hi <= np.iinfo(dt).max:
                return z.astype(dt).reshape(shape + (24,))
        return z.reshape(shape + (24,))

    def decode(self, codes) -> np.ndarray:
        """Points (float64) of integer codes, shape ``codes.shape``.

        Raises
        ------
        TypeError
            If ``codes`` is not an integer array.
        ValueError
            If ``codes`` has a wrong shape, is empty, or holds vectors that are not
            points of the integer model.
        """
        arr = as_codes(codes, "codes", last=24)
        z = arr.reshape(-1, 24)
        if not _is_lattice_int(z).all():
            raise ValueError("codes holds vectors that are not points of sqrt(8)*Lambda24")
        return (z.astype(np.float64) / self._factor).reshape(arr.shape)


def nearest_minimal_vector(x, *, coords="unit", workers=None, return_index=False):
    r"""The minimal vector of the Leech lattice with the largest inner product with ``x``.

    Exact and structured (no 196 560-row product): shape :math:`(\pm4^2, 0^{22})` from
    the two largest :math:`|x_i|`; shape :math:`(\pm2^8, 0^{16})` per octad with a sign
    parity fix; shape :math:`(\mp3, \pm1^{23})` from 24 soft-decision Golay decodes of
    ``x`` with :math:`x_k` replaced by :math:`-3x_k`, pruned by upper bounds.

    Parameters
    ----------
    x : array_like
        Directions, shape ``(..., 24)``.
    coords : {"unit", "int"}, optional
        Coordinates of the returned vectors (norm 4 in ``"unit"``, 32 in ``"int"``).
    workers : int, optional
        Threads as in scipy.
    return_index : bool, optional
        Also return the index (int64) of each vector in the order of
        ``LeechLattice().minimal_vectors()``.

    Returns
    -------
    v : numpy.ndarray
        Same shape and float dtype as ``x``.
    index : numpy.ndarray
        Only if ``return_index``: int64, shape ``x.shape[:-1]``.

    Notes
    -----
    Ties are broken deterministically: candidates are compared with a strict
    ``>`` in the order shape 1 (the two largest :math:`|x_i|`, first indices on
    ties, sign + for :math:`x_i = 0`), shape 2 (octads in order), shape 3
    (:math:`k = 0, \dots, 23`; per :math:`k` the soft Golay tie rule).  For
    ``x = 0`` the answer is :math:`(4, 4, 0, \dots, 0)` (index 0).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.decode import nearest_minimal_vector
    >>> x = np.zeros(24); x[[3, 7]] = [2.0, -1.0]
    >>> v, i = nearest_minimal_vector(x, coords="int", return_index=True)
    >>> v[[3, 7]].tolist(), int(i)
    ([4.0, -4.0], 278)
    """
    check_coords(coords)
    y, shape, dtype = _frame(x, "x")
    t = _tables()
    out = np.empty_like(y)
    idx = np.empty(y.shape[0], dtype=np.int64)
    with num_threads(workers):
        _minvec_kernels().nearest_minvec(
            y, t["pat"], t["hoff_golay"], t["octads"], t["info"], out, idx
        )
    if coords == "unit":
        out /= _SQRT8
    v = out.reshape(shape + (24,)).astype(dtype, copy=False)
    if return_index:
        return v, idx.reshape(shape)
    return v
