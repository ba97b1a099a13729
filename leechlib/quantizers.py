r"""Leech lattice vector quantizers at a given rate (bits per dimension).

Two quantizers of 24-dimensional blocks, both with exact encoders and codebooks
indexed without storing them (:class:`~leechlib.ShellCodebook`,
:class:`~leechlib.BallCodebook`):

:class:`BallQuantizer` (spherical shaping)
    Codebook ``scale * {v in Lambda24 : ||v||^2 <= max_norm}``; a block is encoded as
    the index of its nearest codeword.  At 2 bits per dimension the ball of norm 26
    has 280 974 212 784 721 < 2^48 points.
:class:`ShapeGainQuantizer` (shape--gain)
    A direction from one or more shells of :math:`\Lambda_{24}` (the vector ``v``
    maximising ``<x, v> / ||v||``) and a gain from a scalar codebook of
    ``gain_levels`` values, so that ``x_hat = g * v / ||v||``.  At 2 bits per
    dimension: the norm-24 shell (70 486 236 999 360 points, 46.00 bits) and 3 gain
    levels, 47.58 bits per block (see :class:`ShapeGainQuantizer` and the user
    guide for the configurations measured).

Both encoders are exact for their codebook (up to floating-point rounding of
squared distances): the nearest lattice point (:func:`~leechlib.nearest_point`)
answers whenever it lies in the codebook, and otherwise an exact constrained
search (:mod:`leechlib.constrained`: Lagrangian lower bounds for the 8192
cosets of :math:`4D_{24}`, best-first, a dynamic programme over the coordinates
per coset) finds the nearest codeword.  Both follow the :class:`~leechlib.Quantizer`
protocol (:mod:`leechlib.protocol`), as do the baselines of :mod:`leechlib.baselines`.

Blocks
------
Inputs have shape ``(..., 24)``.  A vector whose length is not a multiple of 24
is padded first, e.g. for a weight vector ``w``::

    blocks = np.pad(w, (0, -len(w) % 24)).reshape(-1, 24)

(and ``x_hat.ravel()[:len(w)]`` undoes it).  Any other last dimension is a
``ValueError`` that names the argument.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from ._gains import MAX_GAIN_LEVELS as _MAX_GAIN_LEVELS
from ._gains import SHELL_ANGLE_ERROR, as_shells, best_shell, lloyd_max
from ._optimize import golden_min
from ._validation import SQRT8 as _SQRT8
from ._validation import as_blocks, as_codes, check_int, check_positive, check_range, subsample
from .baselines import _pow2_unit
from .codebook import BallCodebook, ShellCodebook, _rank_union
from .constrained import MAX_ABS as _MAX_ABS
from .constrained import _ball_points, _shell_points, constrained_nearest_point
from .protocol import Quantizer
from .shells import shell_count

__all__ = ["Quantizer", "BallQuantizer", "ShapeGainQuantizer", "constrained_nearest_point",
           "SHELL_ANGLE_ERROR", "MIN_BITS_PER_DIM", "MAX_BITS_PER_DIM"]

#: the smallest and largest rates supported (bits per dimension)
MIN_BITS_PER_DIM = math.log2(196561) / 24.0
MAX_BITS_PER_DIM = 2.5


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------


def _check_rate(bits_per_dim) -> float:
    if isinstance(bits_per_dim, (bool, np.bool_)) or not isinstance(bits_per_dim, numbers.Real):
        raise TypeError(
            f"bits_per_dim must be a real number, got {type(bits_per_dim).__name__}"
        )
    b = float(bits_per_dim)
    if not math.isfinite(b):
        raise ValueError(f"bits_per_dim must be finite, got {bits_per_dim!r}")
    if b < MIN_BITS_PER_DIM - 1e-12:
        raise ValueError(
            f"bits_per_dim={b!r} is too small: the smallest Leech codebook (the 196 560 "
            f"minimal vectors and the origin) needs {MIN_BITS_PER_DIM:.4f} bits per dimension"
        )
    if b > MAX_BITS_PER_DIM + 1e-12:
        raise ValueError(
            f"bits_per_dim={b!r} is too large: at most {MAX_BITS_PER_DIM} bits per dimension "
            "are supported (indices must fit 62-bit integers)"
        )
    return b


# ---------------------------------------------------------------------------
# spherical shaping
# ---------------------------------------------------------------------------


def _rank_encoded(z, norms, offsets, workers):
    """Indices of the int64 points ``z`` (n, 24) that an encoder produced, in the
    union of the shells ``norms`` at ``offsets``: the index kernel without the input
    checks of ``index`` (the encoders return codebook points, exact integers)."""
    out = _rank_union(z, tuple(norms), tuple(offsets), workers)
    if out.size and out.min() < 0:  # pragma: no cover - the encoders only return codebook points
        raise RuntimeError("internal error: an encoded point is not in the codebook")
    return out


@functools.cache
def _ball_size(max_norm: int) -> int:
    return 1 + sum(shell_count(n) for n in range(4, max_norm + 1, 2))





class BallQuantizer:
    r"""Spherically shaped Leech lattice quantizer with an exact encoder.

    The codebook is ``scale * B`` with ``B`` the lattice vectors of
    :math:`\Lambda_{24}` of squared norm at most ``max_norm``; ``max_norm`` is the
    largest whose ball fits the rate: ``log2(len(B)) <= 24 * bits_per_dim``.  A block
    ``x`` is encoded as the index (in :class:`~leechlib.BallCodebook` order) of the
    codeword nearest to it in Euclidean distance.

    Parameters
    ----------
    bits_per_dim : float, optional
        Requested rate, between 0.7325 (the minimal vectors and the origin) and 2.5.
    scale : float, optional
        Scale of the codebook.  ``None`` (the default) until :meth:`fit`.
    max_norm : int, optional
        Use this ball instead of the largest that fits (it must fit the rate).

    Attributes
    ----------
    max_norm : int
        Squared norm (unit coordinates) of the outermost shell.
    size : int
        Number of codewords.
    bits_per_dim : float
        The true rate ``log2(size) / 24`` (at most the request).
    codebook : BallCodebook
        Index <-> point map (unit coordinates).
    scale : float or None

    Notes
    -----
    Encoding: ``p = nearest_point(x / scale)``; if ``||p||^2 <= max_norm`` it is the
    answer (the nearest lattice point is a codeword).  Otherwise (*overload*) the
    nearest codeword lies on or near the boundary; it is found by an exact
    constrained search (module :mod:`leechlib._kernels.constrained`) that starts
    from the feasible points ``nearest_point(t x / scale)``, ``t < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.quantizers import BallQuantizer
    >>> x = np.random.default_rng(0).standard_normal((2000, 24))
    >>> q = BallQuantizer(bits_per_dim=2.0).fit(x)
    >>> q.max_norm, q.size, round(q.bits_per_dim, 5)
    (26, 280974212784721, 1.99988)
    >>> codes = q.encode(x[:3])
    >>> codes.dtype, codes.shape
    (dtype('int64'), (3,))
    >>> xh = q.decode(codes)
    >>> bool(np.allclose(xh, q.quantize(x[:3])))
    True
    >>> round(float(np.mean((q.quantize(x) - x) ** 2)), 2)
    0.08
    """

    #: numbers per block (the :class:`Quantizer` protocol)
    block_size = 24

    def __init__(self, bits_per_dim=2.0, *, scale=None, max_norm=None):
        b = _check_rate(bits_per_dim)
        budget = 24.0 * b
        if max_norm is None:
            m = 4
            while m + 2 <= 56 and math.log2(_ball_size(m + 2)) <= budget + 1e-12:
                m += 2
        else:
            m = check_int(max_norm, "max_norm", 4, 56)
            if m % 2:
                raise ValueError(f"max_norm must be even (Leech norms are even), got {m}")
            if math.log2(_ball_size(m)) > budget + 1e-12:
                raise ValueError(
                    f"max_norm={m} needs {math.log2(_ball_size(m)) / 24:.4f} bits per dimension, "
                    f"more than bits_per_dim={b!r}"
                )
        self.max_norm = m
        self.size = _ball_size(m)
        self.bits_per_dim = math.log2(self.size) / 24.0
        self.requested_bits_per_dim = b
        self.scale = None if scale is None else check_positive(scale, "scale")

    @property
    def bits(self) -> float:
        """Bits per block of 24 numbers, ``log2(size)``."""
        return math.log2(self.size)

    @functools.cached_property
    def codebook(self) -> BallCodebook:
        return BallCodebook(self.max_norm, coords="unit")

    @functools.cached_property
    def _int_codebook(self) -> BallCodebook:
        return BallCodebook(self.max_norm, coords="int")

    def prepare(self) -> BallQuantizer:
        """Build the index tables of the codebook now rather than on first use.

        Returns
        -------
        BallQuantizer
            ``self``.

        Examples
        --------
        >>> from leechlib import BallQuantizer
        >>> BallQuantizer(max_norm=6).prepare().size
        16969681
        """
        self._int_codebook  # noqa: B018 - a cached property
        return self

    def __repr__(self) -> str:
        return (f"BallQuantizer(bits_per_dim={self.bits_per_dim:.4f}, max_norm={self.max_norm}, "
                f"scale={self.scale!r})")

    def _scale(self) -> float:
        if self.scale is None:
            raise RuntimeError("call fit() or pass scale= before encoding or decoding")
        return self.scale

    def _frame(self, x, scale):
        y, shape = as_blocks(x)
        y *= _SQRT8 / scale
        if np.abs(y).max() >= _MAX_ABS:
            raise ValueError("x is too large for the scale: |x| / scale must stay below 3.7e8")
        return y, shape

    # ------------------------------------------------------------------ fit
    def fit(self, x, *, max_points=4000, iters=16, workers=None) -> BallQuantizer:
        """Choose the MSE-optimal scale for the blocks ``x`` (..., 24); returns ``self``.

        Golden-section search of the scale (the MSE of the exact encoder on at most
        ``max_points`` evenly spaced blocks), then one Lloyd step
        ``scale = sum <x, v> / sum ||v||^2`` (optimal for the codewords found), kept
        if it does not raise the MSE.
        """
        max_points = check_int(max_points, "max_points", 1)
        iters = check_int(iters, "iters", 1, 200)
        y, _ = as_blocks(x)
        y = subsample(y, max_points)
        top = float(np.abs(y).max())
        if top == 0.0:
            raise ValueError("x is all zeros: no scale fits it")
        # fit on y / 2**e (2**e near the largest |y|) and scale back: exact in binary
        # floating point, so the fit is the same at every scale (squared errors
        # neither overflow nor underflow to zero)
        unit = _pow2_unit(y)
        y = y / unit
        rms = float(np.sqrt(np.mean(y**2)))
        if np.abs(y).max() / rms >= _MAX_ABS / 64:
            raise ValueError("x has entries too large to fit a scale")
        n_hi = 8 * self.max_norm

        def points(s):
            return _ball_points(y * (_SQRT8 / s), n_hi, workers) / _SQRT8

        def mse(s):
            return float(np.mean((points(s) * s - y) ** 2))

        s0 = rms * math.sqrt(24.0 / self.max_norm)
        s, f = golden_min(mse, 0.4 * s0, 2.0 * s0, iters)
        v = points(s)
        vv = float((v * v).sum())
        if vv > 0:
            s2 = float((v * y).sum()) / vv
            if s2 > 0 and mse(s2) < f:
                s = s2
        scale = float(s) * unit
        if not (math.isfinite(scale * math.sqrt(self.max_norm)) and scale > 0.0):
            raise ValueError(f"x cannot be fitted in float64: the scale for its largest entry "
                             f"{top:.3g} would make codewords overflow or vanish; rescale x")
        self.scale = scale
        return self

    # --------------------------------------------------------------- coding
    def quantize(self, x, *, workers=None) -> np.ndarray:
        """The nearest codewords (float64, shape ``x.shape``): ``decode(encode(x))``."""
        s = self._scale()
        y, shape = self._frame(x, s)
        p = _ball_points(y, 8 * self.max_norm, workers)
        return (p * (s / _SQRT8)).reshape(shape + (24,))

    def encode(self, x, *, workers=None) -> np.ndarray:
        """Indices (int64, shape ``x.shape[:-1]``) of the nearest codewords.

        Indices are in ``[0, size)``, in :class:`~leechlib.BallCodebook` order.
        """
        s = self._scale()
        y, shape = self._frame(x, s)
        p = _ball_points(y, 8 * self.max_norm, workers)
        cb = self._int_codebook
        idx = _rank_encoded(p.astype(np.int64), cb.shell_norms, cb.shell_offsets, workers)
        return idx.reshape(shape)

    def decode(self, codes, *, workers=None) -> np.ndarray:
        """Codewords (float64, shape ``codes.shape + (24,)``) of indices in ``[0, size)``."""
        s = self._scale()
        c = as_codes(codes, "codes")
        check_range(c, self.size, "codes")
        pts = self._int_codebook.point(c, workers=workers)
        return pts.astype(np.float64) * (s / _SQRT8)




class ShapeGainQuantizer:
    r"""Shape--gain Leech lattice quantizer with an exact shape encoder.

    A block ``x`` is coded as a direction ``v / ||v||``, ``v`` a vector of the chosen
    shells of :math:`\Lambda_{24}` with the largest ``<x, v> / ||v||``, and a gain: the
    level nearest to that largest projection ``c = <x, v> / ||v||`` among
    ``gain_levels`` levels; ``x_hat = g * v / ||v||``.  For positive levels this
    pair is the nearest codeword of the product codebook (``||x - g u||^2 = ||x||^2 -
    2 g <x, u> + g^2`` decreases in ``<x, u>``), so the encoder is exact.

    Parameters
    ----------
    bits_per_dim : float, optional
        Requested rate (gain levels counted), between 0.7325 and 2.5.
    shells : int or sequence of int, optional
        Squared norms (unit coordinates) of the shells forming the shape codebook.
        Default: chosen for the rate (below).
    gain_levels : int, optional
        Number of gain levels.  Default: as many as fit the rate,
        ``floor(2**(24 * bits_per_dim) / shape_size)`` (at most 65536).

    Attributes
    ----------
    shells : tuple of int
    shape_size : int
        Number of directions (sum of the shell sizes).
    gain_levels : int
    bits_per_dim : float
        ``log2(shape_size * gain_levels) / 24``, at most the request.
    gains : numpy.ndarray or None
        The gain levels (ascending), set by :meth:`fit`.

    Notes
    -----
    Default configuration: the single shell ``m`` and ``gain_levels =
    floor(2**(24 b) / N(m))`` minimising a model of the MSE of an i.i.d. Gaussian
    source, ``D(m, K) = 24 * s_m + D_gain(K)`` per block, where ``s_m`` is the
    measured mean of ``sin^2`` of the angle between a random direction and its
    nearest direction of shell ``m`` (:data:`SHELL_ANGLE_ERROR`) and ``D_gain(K)``
    the Lloyd--Max distortion of ``K`` levels for the gains ``r sqrt(1 - s_m)``,
    ``r`` chi-distributed with 24 degrees of freedom.  At 2 bits per dimension it
    selects the norm-24 shell with 3 gain levels (1.9828 bits per dimension).  The
    configurations measured on Gaussian data at 2 bits per dimension
    (``benchmarks/bench_quantizers.py --sweep``) are listed in the user guide:
    unions of shells were no better than this single shell within the
    measurement error, and cost one exact shell search per shell.

    The shape index of a vector of shell ``shells[k]`` is its
    :class:`~leechlib.ShellCodebook` index plus the sizes of the shells before it.
    Codes are int64 arrays of shape ``(..., 2)``: ``codes[..., 0]`` the shape index
    in ``[0, shape_size)``, ``codes[..., 1]`` the gain index in
    ``[0, gain_levels)``; :meth:`pack` makes one integer
    ``shape * gain_levels + gain`` below ``2**(24 * bits_per_dim)``.

    A zero block has no direction: it gets shape index 0 and the smallest gain.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.quantizers import ShapeGainQuantizer
    >>> x = np.random.default_rng(0).standard_normal((2000, 24))
    >>> q = ShapeGainQuantizer(bits_per_dim=2.0).fit(x)
    >>> q.shells, q.gain_levels, round(q.bits_per_dim, 4)
    ((24,), 3, 1.9828)
    >>> codes = q.encode(x[:3])
    >>> codes.shape, codes.dtype
    ((3, 2), dtype('int64'))
    >>> bool(np.allclose(q.decode(codes), q.quantize(x[:3])))
    True
    >>> int(q.pack(codes).max()) < 2**48
    True
    >>> round(float(np.mean((q.quantize(x) - x) ** 2)), 2)
    0.08
    """

    #: numbers per block (the :class:`Quantizer` protocol)
    block_size = 24

    def __init__(self, bits_per_dim=2.0, *, shells=None, gain_levels=None):
        b = _check_rate(bits_per_dim)
        budget = 24.0 * b
        if shells is None:
            if gain_levels is not None:
                K = check_int(gain_levels, "gain_levels", 1, _MAX_GAIN_LEVELS)
                shells = (best_shell(budget, K),)
            else:
                shells = (best_shell(budget),)
        shells = as_shells(shells)
        size = sum(shell_count(m) for m in shells)
        if gain_levels is None:
            K = min(int(2.0 ** (budget - math.log2(size)) + 1e-9), _MAX_GAIN_LEVELS)
            K = max(K, 1) if math.log2(size) <= budget + 1e-12 else 0
        else:
            K = check_int(gain_levels, "gain_levels", 1, _MAX_GAIN_LEVELS)
        if K < 1 or math.log2(size) + math.log2(K) > budget + 1e-9:
            raise ValueError(
                f"shells {shells} with {max(K, 1)} gain levels need "
                f"{(math.log2(size) + math.log2(max(K, 1))) / 24:.4f} bits per dimension, "
                f"more than bits_per_dim={b!r}"
            )
        self.shells = shells
        self.shape_size = size
        self.gain_levels = K
        self.bits_per_dim = (math.log2(size) + math.log2(K)) / 24.0
        self.requested_bits_per_dim = b
        self.gains = None
        offs, tot = [], 0
        for m in shells:
            offs.append(tot)
            tot += shell_count(m)
        self._offsets = tuple(offs)

    @property
    def size(self) -> int:
        """Number of codewords, ``shape_size * gain_levels``."""
        return self.shape_size * self.gain_levels

    @property
    def bits(self) -> float:
        """Bits per block of 24 numbers, ``log2(size)``."""
        return math.log2(self.size)

    def __repr__(self) -> str:
        return (f"ShapeGainQuantizer(bits_per_dim={self.bits_per_dim:.4f}, shells={self.shells}, "
                f"gain_levels={self.gain_levels})")

    def prepare(self) -> ShapeGainQuantizer:
        """Build the index tables of the shells now rather than on first use.

        Returns
        -------
        ShapeGainQuantizer
            ``self``.

        Examples
        --------
        >>> from leechlib import ShapeGainQuantizer
        >>> ShapeGainQuantizer(shells=(4,)).prepare().shells
        (4,)
        """
        self._codebooks  # noqa: B018 - a cached property
        return self

    @functools.cached_property
    def _codebooks(self):
        return tuple(ShellCodebook(m, coords="int") for m in self.shells)

    # -------------------------------------------------------------- shapes
    def _shapes(self, y, workers):
        """Best direction per row: (shell number, int-frame vector, projection c)."""
        n = len(y)
        # directions u = y / ||y||, computed without under/overflow
        amax = np.abs(y).max(axis=1)
        nz = amax > 0
        every = bool(nz.all())
        u = y / np.where(nz, amax, 1.0)[:, None]  # zero rows stay zero
        u /= np.where(nz, np.sqrt((u * u).sum(axis=1)), 1.0)[:, None]
        best_c = np.full(n, -np.inf)
        best_k = np.zeros(n, dtype=np.int64)
        best_v = np.zeros((n, 24))
        for k, m in enumerate(self.shells):
            N = 8 * m
            if every:
                v = _shell_points(u * math.sqrt(N), N, workers)
            else:
                v = np.zeros((n, 24))
                if nz.any():
                    v[nz] = _shell_points(u[nz] * math.sqrt(N), N, workers)
                v[~nz] = self._codebooks[k].point(
                    np.zeros(int((~nz).sum()), dtype=np.int64), workers=workers
                )
            c = (y * v).sum(axis=1) / math.sqrt(N)
            c[~nz] = 0.0
            if len(self.shells) == 1:  # c is finite: every row takes this shell
                return best_k, v, c
            up = c > best_c
            best_c[up] = c[up]
            best_k[up] = k
            best_v[up] = v[up]
        return best_k, best_v, best_c

    def fit(self, x, *, max_points=20000, workers=None) -> ShapeGainQuantizer:
        """Fit the gain levels to the blocks ``x`` (..., 24); returns ``self``.

        The shape encoder does not depend on the gains, so the MSE-optimal levels
        are the Lloyd--Max quantizer of the projections ``c`` of (at most
        ``max_points`` evenly spaced) blocks: the MSE is
        ``||x||^2 - c^2 + (c - g)^2`` per block.
        """
        max_points = check_int(max_points, "max_points", 1)
        y, _ = as_blocks(x)
        y = subsample(y, max_points)
        if not np.any(y):
            raise ValueError("x is all zeros: no gain levels fit it")
        _, _, c = self._shapes(y, workers)
        self.gains = lloyd_max(c, self.gain_levels)
        return self

    def _check_fitted(self):
        if self.gains is None:
            raise RuntimeError("call fit() before encoding or decoding")

    def _gain_index(self, c):
        mids = 0.5 * (self.gains[1:] + self.gains[:-1])
        return np.searchsorted(mids, c)

    def quantize(self, x, *, workers=None) -> np.ndarray:
        """The nearest codewords (float64, shape ``x.shape``): ``decode(encode(x))``."""
        self._check_fitted()
        y, shape = as_blocks(x)
        k, v, c = self._shapes(y, workers)
        g = self.gains[self._gain_index(c)]
        norms = np.sqrt(8.0 * np.asarray(self.shells, dtype=np.float64))[k]
        return (v * (g / norms)[:, None]).reshape(shape + (24,))

    def encode(self, x, *, workers=None) -> np.ndarray:
        """Codes (int64, shape ``x.shape[:-1] + (2,)``): shape index, gain index."""
        self._check_fitted()
        y, shape = as_blocks(x)
        k, v, c = self._shapes(y, workers)
        out = np.empty((len(y), 2), dtype=np.int64)
        out[:, 0] = _rank_encoded(v.astype(np.int64), self.shells, self._offsets, workers)
        out[:, 1] = self._gain_index(c)
        return out.reshape(shape + (2,))

    def decode(self, codes, *, workers=None) -> np.ndarray:
        """Codewords (float64, shape ``codes.shape[:-1] + (24,)``) of ``(..., 2)`` codes."""
        self._check_fitted()
        c = as_codes(codes, "codes", last=2)
        flat = c.reshape(-1, 2)
        check_range(flat[:, 0], self.shape_size, "codes[..., 0]")
        check_range(flat[:, 1], self.gain_levels, "codes[..., 1]")
        offs = np.asarray(self._offsets, dtype=np.int64)
        k = np.searchsorted(offs, flat[:, 0], side="right") - 1
        out = np.empty((len(flat), 24))
        for j, cb in enumerate(self._codebooks):
            sel = k == j
            if sel.any():
                v = cb.point(flat[sel, 0] - offs[j], workers=workers).astype(np.float64)
                out[sel] = v * (self.gains[flat[sel, 1]] / math.sqrt(8.0 * self.shells[j]))[:, None]
        return out.reshape(c.shape[:-1] + (24,))

    def pack(self, codes) -> np.ndarray:
        """One int64 per block: ``shape * gain_levels + gain`` (below ``2**(24 * bits_per_dim)``)."""
        c = as_codes(codes, "codes", last=2)
        check_range(c[..., 0], self.shape_size, "codes[..., 0]")
        check_range(c[..., 1], self.gain_levels, "codes[..., 1]")
        return c[..., 0] * self.gain_levels + c[..., 1]

    def unpack(self, packed) -> np.ndarray:
        """Inverse of :meth:`pack`: ``(..., 2)`` int64 codes."""
        p = as_codes(packed, "packed")
        check_range(p, self.shape_size * self.gain_levels, "packed")
        return np.stack([p // self.gain_levels, p % self.gain_levels], axis=-1)
