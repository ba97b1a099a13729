r"""Baseline quantizers the Leech quantizers are measured against.

* :class:`ScalarQuantizer`: a ``bits``-bit scalar quantizer per coordinate, either
  uniform (the MSE-optimal step for the data) or Lloyd–Max (the MSE-optimal levels
  for the data, by Lloyd's iteration).
* :class:`E8Quantizer`: the :math:`E_8` lattice (Conway & Sloane's fast decoder for
  :math:`E_8 = D_8 \cup (D_8 + \tfrac12)`) with spherical shaping: the codebook is
  the ball of :math:`E_8` vectors of squared norm at most ``max_norm``, scaled, and
  encoding is the exact nearest codeword.

All work on ``(..., d)`` float arrays and report their true rate in bits per
dimension.  The kernel module of the exhaustive search is imported inside the
encoder, so that importing leechlib does not import Numba.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import num_threads, resolve_workers
from ._optimize import golden_min
from ._validation import (
    as_blocks,
    as_codes,
    as_real_points,
    as_real_values,
    check_choice,
    check_int,
    check_positive,
    check_range,
    subsample,
)

__all__ = ["ScalarQuantizer", "E8Quantizer", "e8_nearest_point", "e8_ball"]


class ScalarQuantizer:
    """A ``bits``-bit scalar quantizer with MSE-optimal levels for the data.

    Parameters
    ----------
    bits : int
        Bits per value (1 to 8); ``2**bits`` levels.
    kind : {"uniform", "lloyd-max"}
        ``"uniform"``: levels ``step * (k - (L - 1) / 2)`` with the step minimising
        the MSE on the data passed to :meth:`fit`; ``"lloyd-max"``: Lloyd's
        iteration from the uniform levels.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.baselines import ScalarQuantizer
    >>> x = np.random.default_rng(0).standard_normal(200_000)
    >>> q = ScalarQuantizer(2, kind="lloyd-max").fit(x)
    >>> round(float(np.mean((q.decode(q.encode(x)) - x) ** 2)), 3)
    0.118
    """

    #: numbers per block: every value is a block (the :class:`~leechlib.Quantizer` protocol)
    block_size = 1

    def __init__(self, bits: int = 2, kind: str = "uniform"):
        self.bits = check_int(bits, "bits", 1, 8)
        self.kind = check_choice(kind, "kind", ("uniform", "lloyd-max"))
        self.levels = None

    @property
    def size(self) -> int:
        """Number of levels, ``2**bits``."""
        return 1 << self.bits

    @property
    def bits_per_dim(self) -> float:
        """``bits`` as a float (one value per block)."""
        return float(self.bits)

    def prepare(self) -> ScalarQuantizer:
        """Nothing to build ahead of use; returns ``self`` (the protocol's method)."""
        return self

    def fit(self, x, *, workers=None) -> ScalarQuantizer:
        """Choose the levels for the data ``x`` (any shape); returns ``self``.

        ``workers`` is accepted for the :class:`~leechlib.Quantizer` protocol (and
        checked); the fit runs in numpy.
        """
        resolve_workers(workers)
        v = as_real_values(x).ravel()
        # fit on x / 2**e, with 2**e near the largest |x|, and scale the levels back:
        # exact in binary floating point, so the fit is the same at every scale (no
        # squares that overflow or underflow to zero)
        unit = _pow2_unit(v)
        v = v / unit
        L = 1 << self.bits
        base = np.arange(L) - (L - 1) / 2.0
        # uniform: golden-section search of the step on the MSE (unimodal in practice)
        sd = float(np.std(v)) or 1.0

        def mse(step):
            lv = step * base
            return float(np.mean((lv[self._nearest(v, lv)] - v) ** 2))

        step, _ = golden_min(mse, 1e-3 * sd, 4.0 * sd, 60)
        levels = step * base
        if self.kind == "lloyd-max":
            for _ in range(200):
                idx = self._nearest(v, levels)
                sums = np.bincount(idx, weights=v, minlength=L)
                cnts = np.bincount(idx, minlength=L)
                new = np.where(cnts > 0, sums / np.maximum(cnts, 1), levels)
                if np.allclose(new, levels, rtol=0, atol=1e-12 * sd):
                    levels = new
                    break
                levels = np.sort(new)
        levels = levels * unit
        if not np.isfinite(levels).all():
            raise ValueError(f"x is too large: its levels overflow float64 (largest |x| "
                             f"{float(np.abs(v).max()) * unit:.3g}); rescale x")
        self.levels = levels
        return self

    @staticmethod
    def _nearest(v, levels):
        mids = 0.5 * levels[1:] + 0.5 * levels[:-1]  # no overflow near the largest float
        return np.searchsorted(mids, v)

    def encode(self, x, *, workers=None) -> np.ndarray:
        """Level indices (uint8) of each value, shape ``x.shape``."""
        resolve_workers(workers)
        if self.levels is None:
            raise RuntimeError("call fit() before encode()")
        return self._nearest(as_real_values(x), self.levels).astype(np.uint8)

    def decode(self, codes, *, workers=None) -> np.ndarray:
        """Values (float64) of level indices, shape ``codes.shape``."""
        resolve_workers(workers)
        if self.levels is None:
            raise RuntimeError("call fit() before decode()")
        c = as_codes(codes, "codes", allow_empty=True)
        check_range(c, len(self.levels), "codes")
        return self.levels[c]

    def quantize(self, x, *, workers=None) -> np.ndarray:
        """The nearest levels (float64, shape ``x.shape``): ``decode(encode(x))``."""
        return self.decode(self.encode(x, workers=workers))

    def __repr__(self) -> str:
        return f"ScalarQuantizer(bits={self.bits}, kind={self.kind!r})"


def _pow2_unit(v) -> float:
    """The power of two at most the largest ``|v|``, above half of it (1.0 for empty or
    all-zero ``v``).

    The fits divide their data by it and multiply what they fit (levels, scales) by
    it: exact in binary floating point, so a fit of ``x * 2**k`` is the fit of ``x``
    times ``2**k``, and squares of the data neither overflow nor underflow.
    """
    top = float(np.abs(v).max()) if np.size(v) else 0.0
    return math.ldexp(1.0, math.frexp(top)[1] - 1) if top > 0.0 else 1.0  # <= top


def e8_nearest_point(x) -> np.ndarray:
    r"""Nearest point of :math:`E_8 = D_8 \cup (D_8 + \tfrac12\mathbf 1)` (Conway & Sloane).

    Parameters
    ----------
    x : array_like
        ``(..., 8)`` real points.

    Returns
    -------
    numpy.ndarray
        ``(..., 8)`` float64 lattice points (ties resolved by ``numpy.rint`` and the
        first coset, :math:`D_8`, on equal distance).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.baselines import e8_nearest_point
    >>> e8_nearest_point(np.array([0.4, 0.6, 0.1, 0.2, 0.3, 0.45, 0.4, 0.4])).tolist()
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    """
    x = as_real_points(x, "x", dim=8).astype(np.float64)

    def d8(y):
        r = np.rint(y)
        odd = (r.sum(axis=-1) % 2) != 0
        err = y - r
        k = np.argmax(np.abs(err), axis=-1)
        fix = np.take_along_axis(err, k[..., None], axis=-1)[..., 0]
        step = np.where(fix >= 0, 1.0, -1.0)
        r2 = r.copy()
        np.put_along_axis(r2, k[..., None], (np.take_along_axis(r, k[..., None], -1)[..., 0]
                                             + step)[..., None], axis=-1)
        return np.where(odd[..., None], r2, r)

    a = d8(x)
    b = d8(x - 0.5) + 0.5
    da = ((x - a) ** 2).sum(axis=-1)
    db = ((x - b) ** 2).sum(axis=-1)
    return np.where((db < da)[..., None], b, a)


def e8_ball(max_norm: int) -> np.ndarray:
    """All :math:`E_8` vectors of squared norm at most ``max_norm``, sorted by norm.

    Enumerated from :math:`D_8 \\cup (D_8 + 1/2)` (small norms only).

    Examples
    --------
    >>> from leechlib.baselines import e8_ball
    >>> [int(((e8_ball(n) ** 2).sum(1) == n).sum()) for n in (2, 4, 6)]
    [240, 2160, 6720]
    """
    max_norm = check_int(max_norm, "max_norm", 0, 16)

    def vectors(values, n, budget):
        # all length-n vectors over `values` with squared norm <= budget
        out = [np.zeros((1, 0))]
        norms = [np.zeros(1)]
        vecs, nrm = np.zeros((1, 0)), np.zeros(1)
        for _ in range(n):
            parts, pn = [], []
            for v in values:
                keep = nrm + v * v <= budget
                parts.append(np.hstack([vecs[keep], np.full((keep.sum(), 1), v)]))
                pn.append(nrm[keep] + v * v)
            vecs, nrm = np.vstack(parts), np.concatenate(pn)
        del out, norms
        return vecs

    r = math.isqrt(max_norm)
    ints = vectors(np.arange(-r, r + 1, dtype=np.float64), 8, max_norm)
    ints = ints[ints.sum(axis=1) % 2 == 0]
    halves = vectors(np.arange(-r - 0.5, r + 1.0, 1.0), 8, max_norm)
    halves = halves[halves.sum(axis=1) % 2 == 0]
    allp = np.vstack([ints, halves])
    norms = (allp**2).sum(axis=1)
    order = np.lexsort(tuple(allp.T[::-1]) + (norms,))
    return allp[order]


class E8Quantizer:
    """Spherically shaped :math:`E_8` quantizer: the scaled ball of norm ``<= max_norm``.

    Encoding is the exact nearest codeword (a brute-force search over the ball in
    chunks, so it is a reference, not a fast path); the rate is
    ``log2(size) / 8`` bits per dimension.

    Parameters
    ----------
    max_norm : int
        The default 10 gives 56 881 points: 1.974 bits per dimension.
    scale : float, optional
        Scale of the codebook (1.0 until :meth:`fit` chooses one).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.baselines import E8Quantizer
    >>> q = E8Quantizer()
    >>> q.size, round(q.bits_per_dim, 3)
    (56881, 1.974)
    >>> x = np.random.default_rng(0).standard_normal((500, 8))
    >>> codes = q.fit(x, iters=6).encode(x)
    >>> bool((q.decode(codes) == q.quantize(x)).all())
    True
    """

    #: numbers per block (the :class:`~leechlib.Quantizer` protocol)
    block_size = 8

    def __init__(self, max_norm: int = 10, *, scale=1.0):
        self.max_norm = check_int(max_norm, "max_norm", 2, 16)
        self.codebook = e8_ball(self.max_norm)
        self.size = len(self.codebook)
        self.bits_per_dim = math.log2(self.size) / 8.0
        self.scale = check_positive(scale, "scale")

    @property
    def bits(self) -> float:
        """Bits per block of 8 numbers, ``log2(size)``."""
        return math.log2(self.size)

    def fit(self, x, *, max_points: int = 4000, iters: int = 14, workers=None) -> E8Quantizer:
        """Choose the scale minimising the MSE on (at most ``max_points`` evenly spaced
        blocks of) ``x``; returns ``self``.

        Golden-section search of the scale between 0.3 and 2 times the RMS value.
        """
        max_points = check_int(max_points, "max_points", 1)
        iters = check_int(iters, "iters", 1, 200)
        v, _ = as_blocks(x, "x", 8)
        v = subsample(v, max_points)
        # fit on v / 2**e (2**e near the largest |v|) and scale back: exact, the same
        # fit at every scale (v**2 neither overflows nor underflows)
        unit = _pow2_unit(v)
        v = v / unit
        rms = float(np.sqrt(np.mean(v**2))) or 1.0
        old = self.scale

        def mse(s):
            self.scale = float(s)
            return float(np.mean((self.decode(self.encode(v, workers=workers)) - v) ** 2))

        s, _ = golden_min(mse, 0.3 * rms, 2.0 * rms, iters)
        scale = float(s) * unit
        if not (math.isfinite(scale) and scale > 0.0
                and math.isfinite(scale * float(np.abs(self.codebook).max()))):
            self.scale = old
            raise ValueError(f"x cannot be fitted in float64: the scale for its largest "
                             f"entry {float(np.abs(v).max()) * unit:.3g} would make "
                             f"codewords overflow or vanish; rescale x")
        self.scale = scale
        return self

    def quantize(self, x, *, workers=None) -> np.ndarray:
        """The nearest codewords (float64, shape ``x.shape``): ``decode(encode(x))``."""
        return self.decode(self.encode(x, workers=workers))

    def encode(self, x, *, workers=None) -> np.ndarray:
        """Index of the nearest codeword of each ``(..., 8)`` point (int32)."""
        v = as_real_points(x, "x", dim=8)
        with np.errstate(over="ignore"):
            flat = v.reshape(-1, 8).astype(np.float64) / self.scale
        if not np.isfinite(flat).all():
            raise ValueError(f"x is too large for the scale {self.scale:.3g}: x / scale "
                             f"overflows float64")
        # fast path: the nearest E8 point, when it lies in the ball, is the answer
        p = e8_nearest_point(flat)
        inside = (p**2).sum(axis=1) <= self.max_norm + 1e-9
        out = np.empty(len(flat), dtype=np.int32)
        out[inside] = self._lookup(p[inside])
        # overload: exact nearest codeword by exhaustive search over the ball
        over = np.nonzero(~inside)[0]
        if over.size:
            from ._kernels.bruteforce import nearest_kernel

            res = np.empty(over.size, dtype=np.int64)
            with num_threads(workers):
                nearest_kernel(np.ascontiguousarray(flat[over]), self.codebook, res)
            out[over] = res
        return out.reshape(v.shape[:-1])

    def prepare(self) -> E8Quantizer:
        """Build the point → index table now rather than on first use.

        Returns
        -------
        E8Quantizer
            ``self``.

        Examples
        --------
        >>> from leechlib.baselines import E8Quantizer
        >>> len(E8Quantizer(4).prepare().codebook)
        2401
        """
        self._lookup(self.codebook[:1])
        return self

    def _lookup(self, pts: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_keys"):
            keys = np.rint(self.codebook * 2).astype(np.int64)
            self._keys = {k.tobytes(): i for i, k in enumerate(keys)}
        k2 = np.rint(pts * 2).astype(np.int64)
        return np.array([self._keys[k.tobytes()] for k in k2], dtype=np.int32)

    def decode(self, codes, *, workers=None) -> np.ndarray:
        """Points (float64, shape ``codes.shape + (8,)``) of codeword indices."""
        resolve_workers(workers)
        c = as_codes(codes, "codes", allow_empty=True)
        check_range(c, self.size, "codes")
        return self.codebook[c] * self.scale

    def __repr__(self) -> str:
        return f"E8Quantizer(max_norm={self.max_norm}, size={self.size}, scale={self.scale:.4g})"
