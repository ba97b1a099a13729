r"""Baseline quantizers the Leech quantizers are measured against.

* :class:`ScalarQuantizer`: a ``bits``-bit scalar quantizer per coordinate, either
  uniform (the MSE-optimal step for the data) or Lloyd–Max (the MSE-optimal levels
  for the data, by Lloyd's iteration).
* :class:`E8Quantizer`: the :math:`E_8` lattice (Conway & Sloane's fast decoder for
  :math:`E_8 = D_8 \cup (D_8 + \tfrac12)`) with spherical shaping: the codebook is
  the ball of :math:`E_8` vectors of squared norm at most ``max_norm``, scaled, and
  encoding is the exact nearest codeword.

All work on ``(..., d)`` float arrays and report their true rate in bits per
dimension.
"""

from __future__ import annotations

import math

import numpy as np

from ._optimize import golden_min
from ._validation import (as_codes, as_real_points, as_real_values, check_choice, check_int,
                          check_range)

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

    def __init__(self, bits: int = 2, kind: str = "uniform"):
        self.bits = check_int(bits, "bits", 1, 8)
        self.kind = check_choice(kind, "kind", ("uniform", "lloyd-max"))
        self.levels = None

    @property
    def bits_per_dim(self) -> float:
        return float(self.bits)

    def fit(self, x) -> "ScalarQuantizer":
        """Choose the levels for the data ``x`` (any shape); returns ``self``."""
        v = as_real_values(x).ravel()
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
        self.levels = levels
        return self

    @staticmethod
    def _nearest(v, levels):
        mids = (levels[1:] + levels[:-1]) / 2
        return np.searchsorted(mids, v)

    def encode(self, x) -> np.ndarray:
        """Level indices (uint8) of each value."""
        if self.levels is None:
            raise RuntimeError("call fit() before encode()")
        return self._nearest(as_real_values(x), self.levels).astype(np.uint8)

    def decode(self, codes) -> np.ndarray:
        """Values of level indices."""
        if self.levels is None:
            raise RuntimeError("call fit() before decode()")
        c = as_codes(codes, "codes", allow_empty=True)
        check_range(c, len(self.levels), "codes")
        return self.levels[c]

    def __repr__(self) -> str:
        return f"ScalarQuantizer(bits={self.bits}, kind={self.kind!r})"


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

    Examples
    --------
    >>> from leechlib.baselines import E8Quantizer
    >>> q = E8Quantizer()
    >>> q.size, round(q.bits_per_dim, 3)
    (56881, 1.974)
    """

    def __init__(self, max_norm: int = 10):
        self.max_norm = check_int(max_norm, "max_norm", 2, 16)
        self.codebook = e8_ball(self.max_norm)
        self.size = len(self.codebook)
        self.bits_per_dim = math.log2(self.size) / 8.0
        self.scale = 1.0

    def fit(self, x, *, max_points: int = 4000, iters: int = 14) -> "E8Quantizer":
        """Choose the scale minimising the MSE on (up to ``max_points`` of) ``x``.

        Golden-section search of the scale between 0.3 and 2 times the RMS value.
        """
        v = as_real_points(x, "x", dim=8).reshape(-1, 8)[:max_points]
        rms = float(np.sqrt(np.mean(v**2))) or 1.0

        def mse(s):
            self.scale = float(s)
            return float(np.mean((self.decode(self.encode(v)) - v) ** 2))

        s, _ = golden_min(mse, 0.3 * rms, 2.0 * rms, iters)
        self.scale = float(s)
        return self

    def encode(self, x) -> np.ndarray:
        """Index of the nearest codeword of each ``(..., 8)`` point (int32)."""
        v = as_real_points(x, "x", dim=8)
        flat = v.reshape(-1, 8).astype(np.float64) / self.scale
        # fast path: the nearest E8 point, when it lies in the ball, is the answer
        p = e8_nearest_point(flat)
        inside = (p**2).sum(axis=1) <= self.max_norm + 1e-9
        out = np.empty(len(flat), dtype=np.int32)
        out[inside] = self._lookup(p[inside])
        # overload: exact nearest codeword by exhaustive search over the ball
        over = np.nonzero(~inside)[0]
        if over.size:
            from ._kernels.search import nearest_kernel

            res = np.empty(over.size, dtype=np.int64)
            nearest_kernel(np.ascontiguousarray(flat[over]), self.codebook, res)
            out[over] = res
        return out.reshape(v.shape[:-1])

    def prepare(self) -> "E8Quantizer":
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

    def decode(self, codes) -> np.ndarray:
        """Points ``(..., 8)`` of codeword indices."""
        c = as_codes(codes, "codes", allow_empty=True)
        check_range(c, self.size, "codes")
        return self.codebook[c] * self.scale

    def __repr__(self) -> str:
        return f"E8Quantizer(max_norm={self.max_norm}, size={self.size}, scale={self.scale:.4g})"
