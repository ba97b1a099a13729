r"""Shell and ball codebooks of the Leech lattice: counting and index ↔ point maps.

A *shell* is the set of lattice vectors of one squared norm; a *ball* is the union
of the shells up to a maximal norm.  The ball of norm at most 26 (shells
:math:`m \le 13`, squared norm :math:`2m` in unit coordinates) has
280 974 212 784 721 points, just under :math:`2^{48}`: 48 bits index a block of 24
numbers, 2 bits per dimension, the codebook of Leech lattice vector quantization
(LLVQ, arXiv:2603.11021).

Indices are computed from the structure ``x = eps + 2u + 4y`` of the integer model
(see :mod:`leechlib._kernels.ranking` for the order): no codebook is stored, and
index ↔ point is exact in 64-bit integers.

The kernel modules are imported inside the functions that call them, so that
importing leechlib does not import Numba.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._jit import num_threads
from ._validation import SQRT8, as_codes, as_real_points, check_coords, check_int, check_range
from .golay import _code
from .shells import _class_values, shell_count

__all__ = ["ShellCodebook", "BallCodebook"]

_CLASSES = (0, 8, 12, 16, 24)


class _Tables:
    """Count tables and codeword maps shared by the codebooks (cached per norm)."""

    def __init__(self, max_int_norm: int):
        n = max_int_norm
        self.max_int_norm = n
        K = max(len(_class_values(e, c, n)) for e in (0, 1) for c in (0, 1))
        self.vals = np.zeros((2, 2, K), dtype=np.int64)
        self.vpar = np.zeros((2, 2, K), dtype=np.int64)
        self.nvals = np.zeros((2, 2), dtype=np.int64)
        self.values = {}
        for e in (0, 1):
            for c in (0, 1):
                v = _class_values(e, c, n)
                self.values[(e, c)] = v
                self.nvals[e, c] = len(v)
                for j, (x, p) in enumerate(v):
                    self.vals[e, c, j] = x
                    self.vpar[e, c, j] = p
        # T[eps, k1, k0, norm, parity] with Python-int checks against overflow
        T = np.zeros((2, 25, 25, n + 1, 2), dtype=np.int64)
        for e in (0, 1):
            T[e, 0, 0, 0, 0] = 1
            for k1 in range(25):
                for k0 in range(25 - k1):
                    if k1 == 0 and k0 == 0:
                        continue
                    c, prev = (1, (k1 - 1, k0)) if k1 > 0 else (0, (k1, k0 - 1))
                    src = T[e, prev[0], prev[1]]
                    dst = np.zeros((n + 1, 2), dtype=np.int64)
                    for x, p in self.values[(e, c)]:
                        s = x * x
                        dst[s:, 0] += src[: n + 1 - s, p]
                        dst[s:, 1] += src[: n + 1 - s, 1 - p]
                    T[e, k1, k0] = dst
        if T.min() < 0:  # pragma: no cover - guarded by the norm limit
            raise OverflowError("count table overflowed int64")
        self.T = T
        code = _code()
        cw = code.codewords()
        weights = cw.sum(axis=1)
        ints = code.codeword_ints()
        self.class_of_msg = np.array([_CLASSES.index(int(w)) for w in weights], dtype=np.int64)
        self.pos_in_class = np.zeros(4096, dtype=np.int64)
        self.class_sizes = np.zeros(5, dtype=np.int64)
        self.class_words = np.zeros((5, 2576), dtype=np.int64)
        for idx in range(4096):
            k = self.class_of_msg[idx]
            self.pos_in_class[idx] = self.class_sizes[k]
            self.class_words[k, self.class_sizes[k]] = ints[idx]
            self.class_sizes[k] += 1
        self.info_set = np.asarray(code.information_set, dtype=np.int64)

    def blocks(self, N: int):
        """Block starts, eps, class, per-u counts and lookup for the shell of norm N."""
        starts, eps_l, cls_l, per_u = [], [], [], []
        lookup = np.full((2, 5), -1, dtype=np.int64)
        total = 0
        for e in (0, 1):
            for k, w in enumerate(_CLASSES):
                cnt = int(self.T[e, w, 24 - w, N, e])
                if cnt == 0:
                    continue
                lookup[e, k] = len(starts)
                starts.append(total)
                eps_l.append(e)
                cls_l.append(k)
                per_u.append(cnt)
                total += cnt * int(self.class_sizes[k])
        return (
            np.array(starts, dtype=np.int64),
            np.array(eps_l, dtype=np.int64),
            np.array(cls_l, dtype=np.int64),
            np.array(per_u, dtype=np.int64),
            lookup,
            total,
        )


@functools.lru_cache(maxsize=32)
def _tables(max_int_norm: int) -> _Tables:
    return _Tables(max_int_norm)


@functools.lru_cache(maxsize=32)
def _union_tables(norms: tuple, offsets: tuple):
    """Tables of :func:`~leechlib._kernels.ranking.rank_union_kernel` for the shells of
    unit norms ``norms`` (0: the origin) at index ``offsets``."""
    top = max(8 * max(norms), 8 * 26)
    t = _tables(top)
    nn = top // 16 + 1
    starts = np.zeros((nn, 10), dtype=np.int64)
    lookup = np.full((nn, 2, 5), -1, dtype=np.int64)
    per_u = np.zeros((nn, 10), dtype=np.int64)
    offset = np.full(nn, -1, dtype=np.int64)
    for n, off in zip(norms, offsets, strict=True):
        offset[n // 2] = off
        if n:
            st, _, _, pu, lk, _ = t.blocks(8 * n)
            starts[n // 2, : len(st)] = st
            per_u[n // 2, : len(pu)] = pu
            lookup[n // 2] = lk
    # cached: read-only; the shared _Tables arrays are left as they are (torch_ext
    # turns them into tensors, which warns on read-only arrays)
    for a in (starts, lookup, per_u, offset):
        a.flags.writeable = False
    return (t.T, t.vals, t.vpar, t.nvals, starts, lookup, per_u, offset, t.info_set,
            t.class_of_msg, t.pos_in_class, t.class_words)


def _rank_union(z: np.ndarray, norms: tuple, offsets: tuple, workers=None) -> np.ndarray:
    """Indices of the int64 points ``z`` (n, 24) in the union of the shells ``norms``
    (entries bounded by the caller); -1 for a point not in it.  One kernel pass,
    membership included."""
    from ._kernels.ranking import rank_union_kernel

    out = np.full(z.shape[0], -1, dtype=np.int64)
    if z.shape[0]:
        with num_threads(workers):
            rank_union_kernel(np.ascontiguousarray(z, dtype=np.int64),
                              *_union_tables(norms, offsets), out)
    return out


def _as_indices(indices, size: int, name: str = "indices") -> np.ndarray:
    arr = as_codes(indices, name, allow_empty=True)
    check_range(arr, size, name)
    return arr


def _as_points(points, coords: str, max_abs: int, name: str = "points"):
    """Lattice points to exact int64 integer-model coordinates.

    Returns ``(z, ok)``: ``z`` (..., 24) int64 and ``ok`` (...) bool, False for a point
    with an entry beyond ``max_abs`` in the integer model (no codebook point has one;
    such entries are zeroed in ``z``, so no int64 norm or cast can overflow on them).
    ``ValueError`` if an in-range point is not integral in the integer model.
    """
    arr = as_real_points(points, name, allow_empty=True)
    if coords == "int" and arr.dtype.kind in "iu":  # integers: exact as they are
        small = (arr <= max_abs) & (arr >= -max_abs)
        return np.where(small, arr, 0).astype(np.int64), small.all(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries may become inf
        z = arr.astype(np.float64) * (SQRT8 if coords == "unit" else 1.0)
        zi = np.rint(z)
        small = np.abs(zi) <= max_abs  # False for inf
        err = np.where(small, np.abs(z - zi), 0.0)
    tol = 1e-6 * SQRT8 if coords == "unit" else 0.0
    if arr.size and err.max() > tol:
        raise ValueError(f"{name} are not lattice points in {coords!r} coordinates")
    return np.where(small, zi, 0.0).astype(np.int64), small.all(axis=-1)


class ShellCodebook:
    r"""The vectors of one shell of :math:`\Lambda_{24}` as an indexed codebook.

    Parameters
    ----------
    norm : int
        Squared norm in unit coordinates (4, 6, 8, …).
    coords : {"unit", "int"}
        Coordinates of the points returned by :meth:`point` and accepted by
        :meth:`index`.

    Attributes
    ----------
    size : int
        Number of vectors (equals ``theta_series`` coefficient ``norm // 2``).
    bits : int
        ``ceil(log2(size))``.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import ShellCodebook
    >>> cb = ShellCodebook(4, coords="int")
    >>> cb.size
    196560
    >>> p = cb.point(np.array([0, 1103, 1104, 196559]))
    >>> p[0, :3].tolist()
    [-4, -4, 0]
    >>> cb.index(p).tolist()
    [0, 1103, 1104, 196559]
    """

    def __init__(self, norm: int, coords: str = "unit"):
        self.norm = check_int(norm, "norm", 0, 64)
        self.coords = check_coords(coords)
        self._N = 8 * self.norm
        # one shared table serves every shell up to the 2-bit ball (norm 26, int 208):
        # a table for a larger norm contains those of all smaller ones
        self._t = _tables(max(self._N, 8 * 26))
        self._blocks = self._t.blocks(self._N) if self.norm % 2 == 0 else None
        self.size = int(self._blocks[-1]) if self._blocks else 0
        if self.size != shell_count(self.norm):  # pragma: no cover - an invariant
            raise RuntimeError("shell size disagrees with the structural count")
        self.bits = max(1, math.ceil(math.log2(self.size))) if self.size else 0

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"ShellCodebook(norm={self.norm}, coords={self.coords!r}, size={self.size})"

    def _out(self, z: np.ndarray) -> np.ndarray:
        if self.coords == "int":
            return z.astype(np.int8 if np.abs(z).max(initial=0) <= 127 else np.int16)
        return z / SQRT8

    def point(self, indices, *, workers=None) -> np.ndarray:
        """Points of the given indices, shape ``indices.shape + (24,)``.

        Raises ``ValueError`` for an index outside ``[0, size)``.  ``workers`` as in
        scipy (``None``: one thread, ``-1``: all cores).
        """
        from ._kernels.ranking import unrank_kernel

        idx = _as_indices(indices, self.size)
        flat = np.ascontiguousarray(idx.ravel())
        out = np.zeros((flat.size, 24), dtype=np.int64)
        if flat.size:
            starts, eps, cls, per_u, _, _ = self._blocks
            t = self._t
            with num_threads(workers):
                unrank_kernel(flat, self._N, t.T, t.vals, t.vpar, t.nvals, starts, eps, cls,
                              per_u, t.class_words, out)
        return self._out(out.reshape(idx.shape + (24,)))

    def index(self, points, *, workers=None) -> np.ndarray:
        """Indices of lattice points of this shell, shape ``points.shape[:-1]``.

        Raises ``ValueError`` if a point is not a vector of this shell.
        """
        z, ok = _as_points(points, self.coords, math.isqrt(self._N))
        r = self._rank_int(z.reshape(-1, 24), workers)
        r[~ok.ravel()] = -1
        if r.size and r.min() < 0:
            raise ValueError(f"points are not all vectors of the norm-{self.norm} shell")
        return r.reshape(z.shape[:-1])

    def _rank_int(self, z: np.ndarray, workers=None) -> np.ndarray:
        out = np.full(z.shape[0], -1, dtype=np.int64)
        if z.shape[0] and self.size:
            # no vector of the shell has an entry beyond sqrt(N): leave such rows
            # out, so that the kernel's int64 norm cannot wrap around
            b = math.isqrt(self._N)
            member = ((z <= b) & (z >= -b)).all(axis=1)
            out = _rank_union(np.where(member[:, None], z, 0), (self.norm,), (0,), workers)
            out[~member] = -1
        return out


class BallCodebook:
    r"""The lattice vectors of squared norm at most ``max_norm`` as an indexed codebook.

    Indices run through the shells by increasing norm (the origin is index 0), each
    shell in :class:`ShellCodebook` order.  The default ``max_norm=26`` is the 2-bit
    codebook of LLVQ: 280 974 212 784 721 points, 48 bits per 24 numbers.

    Parameters
    ----------
    max_norm : int
        Largest squared norm (unit coordinates) in the ball, at most 56 (beyond
        that the counts leave 62-bit integers).
    coords : {"unit", "int"}

    Attributes
    ----------
    size, bits : int
        Number of points and ``ceil(log2(size))``.
    shell_norms, shell_sizes, shell_offsets : tuple of int

    Examples
    --------
    >>> from leechlib import BallCodebook
    >>> cb = BallCodebook()
    >>> cb.size, cb.bits
    (280974212784721, 48)
    >>> x = cb.point(cb.size - 1)
    >>> float((x * x).sum())
    26.0
    >>> int(cb.index(x)) == cb.size - 1
    True
    """

    def __init__(self, max_norm: int = 26, coords: str = "unit"):
        self.max_norm = check_int(max_norm, "max_norm", 0, 56)
        self.coords = check_coords(coords)
        norms = [0] + list(range(4, self.max_norm + 1, 2))
        self._shells = {n: ShellCodebook(n, coords="int") for n in norms if n}
        self.shell_norms = tuple(norms)
        self.shell_sizes = tuple(1 if n == 0 else self._shells[n].size for n in norms)
        offs, tot = [], 0
        for s in self.shell_sizes:
            offs.append(tot)
            tot += s
        self.shell_offsets = tuple(offs)
        self.size = tot
        self.bits = max(1, math.ceil(math.log2(self.size)))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"BallCodebook(max_norm={self.max_norm}, coords={self.coords!r}, "
                f"size={self.size}, bits={self.bits})")

    def point(self, indices, *, workers=None) -> np.ndarray:
        """Points of the given indices, shape ``indices.shape + (24,)``.

        ``workers`` as in scipy (``None``: one thread, ``-1``: all cores).
        """
        idx = _as_indices(indices, self.size)
        flat = idx.ravel()
        out = np.zeros((flat.size, 24), dtype=np.int64)
        offs = np.array(self.shell_offsets, dtype=np.int64)
        which = np.searchsorted(offs, flat, side="right") - 1
        for k, n in enumerate(self.shell_norms):
            sel = which == k
            if n == 0 or not sel.any():
                continue
            out[sel] = self._shells[n].point(flat[sel] - offs[k], workers=workers).astype(np.int64)
        out = out.reshape(idx.shape + (24,))
        if self.coords == "int":
            return out.astype(np.int8)
        return out / SQRT8

    def index(self, points, *, workers=None) -> np.ndarray:
        """Indices of lattice points of norm at most ``max_norm`` (``ValueError`` otherwise)."""
        z, ok = _as_points(points, self.coords, math.isqrt(8 * self.max_norm))
        flat = z.reshape(-1, 24)
        ok = ok.ravel()
        out = _rank_union(flat, self.shell_norms, self.shell_offsets, workers)  # bounded entries
        out[~ok] = -1
        if out.size and out.min() < 0:
            raise ValueError(f"points are not all lattice vectors of norm <= {self.max_norm}")
        return out.reshape(z.shape[:-1])
