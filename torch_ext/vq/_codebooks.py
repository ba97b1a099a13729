"""The codebooks of :class:`torch_ext.LeechVQ`: exact search and index <-> point maps.

Every codebook works in the integer model :math:`\\sqrt8\\Lambda_{24}\\subset\\mathbb
Z^{24}` (points are float64 tensors holding exact integers) and keeps no table of
its points:

* ``minimal`` (the shell of squared norm 4, 196 560 vectors): the search is
  :func:`leechlib.nearest_minimal_vector` on the CPU and the GPU path of
  :func:`torch_ext.nearest_minimal_vector` (Numba CUDA or pure torch) on CUDA,
  without a round trip; indices follow
  :meth:`leechlib.LeechLattice.minimal_vectors`, mapped both ways in pure torch on
  any device (:mod:`torch_ext.ops.minimal`);
* ``shell`` (squared norm ``m >= 6``): the shell vector of largest inner product,
  :func:`leechlib.constrained_nearest_point` with ``min_norm = max_norm = m`` applied
  to the direction scaled to norm ``sqrt(m)``; indices of
  :class:`leechlib.ShellCodebook`;
* ``ball`` (squared norm ``<= M``): :func:`leechlib.constrained_nearest_point` with
  ``max_norm = M``; indices of :class:`leechlib.BallCodebook`;
* ``union`` (the shapes of ``codebook="shape-gain"``: a union of shells): per shell
  the vector of largest inner product, then the one of largest ``<y, v> / ||v||``;
  the index of a vector of ``shells[k]`` is its :class:`leechlib.ShellCodebook`
  index plus the sizes of the shells before it (as
  :class:`leechlib.ShapeGainQuantizer`);
* ``e8`` (three :math:`E_8` balls of squared norm ``<= M`` per block of 24, unit
  coordinates, minimal norm 2): :class:`leechlib.baselines.E8Quantizer`'s exact
  encoder (nearest point, brute force over the ball on overload) per 8 numbers;
  the index of a block is ``(a * S + b) * S + c`` with ``a, b, c`` the indices in
  :func:`leechlib.baselines.e8_ball` order of its three 8-blocks and ``S`` the
  ball's size.

Search, rank and unrank are :mod:`torch_ext.ops.codebook`'s, the one torch-side path
of the Leech index maps (shared with :mod:`torch_ext.quantize`): search and rank run
on the CPU (a tensor on another device makes the *device round trip*), unrank on the
tensor's device.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import Tensor

from leechlib import shell_count
from leechlib.baselines import E8Quantizer
from leechlib.kernels import SQRT8
from leechlib.quantizers import MAX_BITS_PER_DIM, MIN_BITS_PER_DIM, BallQuantizer, ShapeGainQuantizer

from .._validation import check_int
from ..ops.codebook import (
    E8_MAX_BITS,
    codebook_rank,
    codebook_search,
    codebook_unrank,
    e8_ball_size,
    e8_norm_for_bits,
    e8_table,
)

__all__ = ["Codebook", "parse_codebook"]


# ---------------------------------------------------------------------------
# the E8 ball: exact search (custom op, leechlib's encoder on the CPU), rank by lookup
# ---------------------------------------------------------------------------


@functools.cache
def _e8_quantizer(max_norm: int) -> E8Quantizer:
    return E8Quantizer(max_norm).prepare()


@torch.library.custom_op("leech::e8_search", mutates_args=())
def _e8_search_op(x: Tensor, max_norm: int) -> Tensor:
    """Indices (int64, ``x.shape[:-1]``) of the nearest points of the E8 ball to rows of 8."""
    y = x.detach().to("cpu", torch.float64).reshape(-1, 8).contiguous().numpy()
    if y.size and not np.isfinite(y).all():
        raise ValueError("x contains NaN or inf")
    idx = _e8_quantizer(max_norm).encode(y).astype(np.int64) if len(y) else np.zeros(0, np.int64)
    return torch.from_numpy(idx).to(x.device).reshape(x.shape[:-1])


@_e8_search_op.register_fake
def _(x, max_norm):
    return x.new_empty(x.shape[:-1], dtype=torch.int64)


_KEY_BASE = 64  # 2 * coordinate + 32 in [0, 64): |coordinate| <= 4 for max_norm <= 16


def _e8_keys(p2: Tensor) -> Tensor:
    """A sortable int64 key of points given as ``2 * p`` (int64, ``(..., 8)``)."""
    k = torch.zeros(p2.shape[:-1], dtype=torch.int64, device=p2.device)
    for j in range(8):
        k = k * _KEY_BASE + (p2[..., j] + _KEY_BASE // 2)
    return k


@functools.lru_cache(maxsize=16)
def _e8_key_table_cached(max_norm: int, device: str):
    t = e8_table(max_norm, device, torch.float64)
    keys = _e8_keys(torch.round(2.0 * t).to(torch.int64))
    return torch.sort(keys)


def _e8_key_table(max_norm: int, device):
    """Sorted keys of the E8 ball and the ball index of each (built once per device)."""
    return _e8_key_table_cached(max_norm, str(torch.device(device)))


class Codebook:
    """One codebook of :class:`~torch_ext.LeechVQ`: ``kind`` and its norm.

    ``kind`` in {"minimal", "shell", "ball", "union", "e8"}; ``norm`` is the squared
    norm of the shell, or the largest squared norm of the ball, in unit coordinates
    (Leech minimal norm 4, E8 minimal norm 2); ``shells`` the shells of ``"union"``.
    ``int_scale``: integer-model points over ``int_scale`` are unit coordinates.
    """

    def __init__(self, kind: str, norm: int, shells: tuple = ()):
        self.kind = kind
        self.norm = norm
        self.shells = tuple(shells) if kind == "union" else ((norm,) if kind != "ball" else ())
        self.int_scale = 1.0 if kind == "e8" else SQRT8
        if kind == "ball":
            self.size = 1 + sum(shell_count(m) for m in range(4, norm + 1, 2))
        elif kind == "e8":
            self.e8_size = e8_ball_size(norm)
            self.size = self.e8_size**3
        else:
            self.size = sum(shell_count(m) for m in self.shells)
        offs, tot = [], 0
        for m in self.shells:
            offs.append(tot)
            tot += shell_count(m)
        self.offsets = tuple(offs)
        self.spherical = kind not in ("ball", "e8")

    def __repr__(self) -> str:
        return f"Codebook(kind={self.kind!r}, norm={self.norm}, size={self.size})"

    @property
    def int_norm(self) -> int:
        return 8 * self.norm

    def unit(self, p_int: Tensor) -> Tensor:
        """Unit directions of integer-model shell points (exact norms: integer sums)."""
        if self.kind != "union":
            return p_int / math.sqrt(self.int_norm)
        return p_int / torch.sqrt((p_int * p_int).sum(-1, keepdim=True))

    def search(self, y: Tensor, table: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Nearest codewords of the rows of ``y`` (``(n, 24)``, float, unit coordinates).

        Spherical codebooks: the vector of largest inner product (``y``'s scale does
        not matter: each row is divided by its largest absolute entry first, so the
        norms taken by the search neither overflow, beyond 1e150 in float64, nor
        underflow to zero for tiny rows); ball and E8: the nearest point to ``y``.
        Returns integer-model points (float64; unit coordinates for E8) and int64
        indices.  ``table``: the E8 ball's points (:func:`~torch_ext.ops.codebook.e8_table`
        on ``y``'s device; a module buffer, so that ``torch.compile`` sees no numpy).
        """
        if self.kind == "e8":
            i8 = torch.ops.leech.e8_search(y.reshape(y.shape[:-1] + (3, 8)), self.norm)
            return self.points(self._combine(i8), table), self._combine(i8)
        if self.spherical and y.numel():
            m = y.abs().amax(dim=-1, keepdim=True)
            y = y / torch.where(m > 0, m, torch.ones_like(m))
        if self.kind != "union":
            return codebook_search(y, self.kind, self.norm)
        # every shell of a union, 4 included, is numbered as ShellCodebook (the order of
        # ShapeGainQuantizer), not as LeechLattice.minimal_vectors
        best_p = best_i = best_c = None
        for m, off in zip(self.shells, self.offsets, strict=True):
            p, i = codebook_search(y, "shell", m)
            c = (y.to(torch.float64) * p).sum(-1) / math.sqrt(8.0 * m)
            i = i + off
            if best_p is None:
                best_p, best_i, best_c = p, i, c
            else:
                up = c > best_c
                best_p = torch.where(up[..., None], p, best_p)
                best_i = torch.where(up, i, best_i)
                best_c = torch.where(up, c, best_c)
        return best_p, best_i

    def _combine(self, i8: Tensor) -> Tensor:
        S = self.e8_size
        return (i8[..., 0] * S + i8[..., 1]) * S + i8[..., 2]

    def points(self, idx: Tensor, table: Tensor | None = None) -> Tensor:
        """Integer-model points (float64, ``idx.shape + (24,)``) of in-range indices.

        Unranked on ``idx``'s device (torch operations; the CPU may take leechlib's
        numpy unranking), never through numpy for a CUDA tensor.
        """
        if self.kind == "e8":
            S = self.e8_size
            parts = torch.stack([idx // (S * S), (idx // S) % S, idx % S], dim=-1)
            t = e8_table(self.norm, idx.device, torch.float64) if table is None else table
            return t.to(device=idx.device, dtype=torch.float64)[parts].reshape(idx.shape + (24,))
        if self.kind != "union":
            return codebook_unrank(idx, self.kind, self.norm)
        out = None
        for m, off in zip(self.shells, self.offsets, strict=True):
            n = shell_count(m)
            sel = (idx >= off) & (idx < off + n)
            p = codebook_unrank((idx - off).clamp(0, n - 1), "shell", m)
            out = p if out is None else torch.where(sel[..., None], p, out)
        return out

    def indices(self, points: Tensor) -> Tensor:
        """Indices of integer-model points (rounded first); -1 for a non-codeword."""
        if self.kind == "e8":
            z = points.to(torch.float64).reshape(points.shape[:-1] + (3, 8))
            z2 = torch.round(2.0 * z)
            ok = (z2 == 2.0 * z).all(-1) & (z2.abs() <= 2 * math.isqrt(self.norm) + 1).all(-1)
            keys = _e8_keys(torch.where(ok[..., None], z2, 0.0).to(torch.int64))
            skeys, order = _e8_key_table(self.norm, points.device)
            pos = torch.searchsorted(skeys, keys).clamp_max(skeys.numel() - 1)
            hit = ok & (skeys[pos] == keys)
            i8 = torch.where(hit, order[pos], -1)
            return torch.where((i8 >= 0).all(-1), self._combine(i8.clamp_min(0)), -1)
        if self.kind != "union":
            return codebook_rank(points, self.kind, self.norm)
        z = points.to(torch.float64)
        nrm = torch.round((z * z).sum(-1))
        out = torch.full(points.shape[:-1], -1, dtype=torch.int64, device=points.device)
        for m, off in zip(self.shells, self.offsets, strict=True):
            r = codebook_rank(z, "shell", m)
            out = torch.where((nrm == 8 * m) & (r >= 0), r + off, out)
        return out


# ---------------------------------------------------------------------------
# the codebook arguments of LeechVQ
# ---------------------------------------------------------------------------


def _check_real(value, name, lo, hi, *, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return v


def _check_bits(bits, hi: float) -> float:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Real):
        raise TypeError(f"bits must be a real number, got {type(bits).__name__}")
    b = float(bits)
    if not (math.isfinite(b) and MIN_BITS_PER_DIM - 1e-12 <= b <= hi + 1e-12):
        raise ValueError(f"bits must be in [{MIN_BITS_PER_DIM:.4f}, {hi}] (bits per dimension), "
                         f"got {bits!r}")
    return b


def parse_codebook(codebook, max_norm, bits) -> tuple[Codebook, int | None]:
    """The codebook and, for ``"shape-gain"``, its number of gain levels."""
    if bits is not None and codebook not in ("ball", "shape-gain", "e8"):
        raise ValueError(f"bits only applies to codebook='ball', 'shape-gain' or 'e8', "
                         f"got codebook={codebook!r}")
    if bits is not None and max_norm is not None:
        raise ValueError("give max_norm or bits, not both (bits chooses max_norm)")
    if isinstance(codebook, str):
        if codebook == "minimal":
            kind, norm = "minimal", 4
        elif codebook == "ball":
            kind = "ball"
            if bits is not None:
                norm = BallQuantizer(_check_bits(bits, MAX_BITS_PER_DIM)).max_norm
            else:
                norm = 4 if max_norm is None else check_int(max_norm, "max_norm", 4, 56)
            if norm % 2:
                raise ValueError(f"max_norm must be even (Leech norms are even), got {norm}")
        elif codebook == "shape-gain":
            if max_norm is not None:
                raise ValueError("max_norm only applies to codebook='ball' or 'e8'")
            q = ShapeGainQuantizer(_check_bits(2.0 if bits is None else bits, MAX_BITS_PER_DIM))
            return Codebook("union", max(q.shells), shells=q.shells), int(q.gain_levels)
        elif codebook == "e8":
            if bits is not None:
                norm = e8_norm_for_bits(_check_bits(bits, E8_MAX_BITS))
                if norm == 0:
                    raise ValueError(f"bits={bits!r} is too small for the E8 ball of norm 2 "
                                     f"({math.log2(241) / 8:.3f} bits per dimension)")
            else:
                norm = 10 if max_norm is None else check_int(max_norm, "max_norm", 2, 16)
                if norm % 2:
                    raise ValueError(f"max_norm must be even (E8 norms are even), got {norm}")
            return Codebook("e8", norm), None
        else:
            raise ValueError(
                f"codebook must be 'minimal', 'ball', 'shape-gain', 'e8' or the squared norm of "
                f"a shell (an even int from 4 to 56), got {codebook!r}"
            )
    elif isinstance(codebook, numbers.Integral) and not isinstance(codebook, bool):
        norm = check_int(codebook, "codebook", 4, 56)
        if norm % 2 or shell_count(norm) == 0:
            raise ValueError(f"codebook={norm}: Leech shells have even squared norms 4, 6, 8, ... "
                             f"(unit coordinates)")
        kind = "minimal" if norm == 4 else "shell"
    else:
        raise TypeError(f"codebook must be 'minimal', 'ball', 'shape-gain', 'e8' or an int, got "
                        f"{type(codebook).__name__}")
    if kind != "ball" and max_norm is not None:
        raise ValueError("max_norm only applies to codebook='ball' or 'e8'")
    return Codebook(kind, norm), None
