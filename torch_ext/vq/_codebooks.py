"""The codebooks of :class:`torch_ext.LeechVQ`: exact search and index <-> point maps.

Every codebook works in the integer model :math:`\\sqrt8\\Lambda_{24}\\subset\\mathbb
Z^{24}` (points are float64 tensors holding exact integers) and keeps no table of
its points:

* ``minimal`` (the shell of squared norm 4, 196 560 vectors): the search is
  :func:`leechlib.nearest_minimal_vector` on the CPU and the GPU path of
  :func:`torch_ext.nearest_minimal_vector` (Numba CUDA or pure torch) on CUDA,
  without a round trip; indices follow
  :meth:`leechlib.LeechLattice.minimal_vectors`, mapped both ways in pure torch on
  any device (:mod:`torch_ext.vq._minimal`);
* ``shell`` (squared norm ``m >= 6``): the shell vector of largest inner product,
  :func:`leechlib.constrained_nearest_point` with ``min_norm = max_norm = m`` applied
  to the direction scaled to norm ``sqrt(m)``; indices of
  :class:`leechlib.ShellCodebook`;
* ``ball`` (squared norm ``<= M``): :func:`leechlib.constrained_nearest_point` with
  ``max_norm = M``; indices of :class:`leechlib.BallCodebook`.

The searches are the custom op ``torch.ops.leech_vq.search`` and the shell and ball
index maps the custom ops ``torch.ops.leech_vq.unrank`` and ``.rank`` (fake kernels,
so ``torch.compile`` traces them).  The shell and ball run on the CPU (leechlib's
Numba kernels): a tensor on another device is copied to the CPU, processed there
and copied back (the *device round trip*).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from .. import ops as _ops
from . import _minimal

SQRT8 = math.sqrt(8.0)


@functools.cache
def _shell_codebook(norm: int):
    from leechlib import ShellCodebook

    return ShellCodebook(norm, coords="int")


@functools.cache
def _ball_codebook(max_norm: int):
    from leechlib import BallCodebook

    return BallCodebook(max_norm, coords="int")


def _workers() -> int:
    return max(1, torch.get_num_threads())


def _cpu_rows(x: Tensor, name: str) -> np.ndarray:
    y = x.detach().to("cpu", torch.float64).reshape(-1, 24).contiguous().numpy()
    if y.size and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or inf")
    return y


# ---------------------------------------------------------------------------
# custom ops (CPU implementation, device round trip elsewhere)
# ---------------------------------------------------------------------------


class _keep_torch_threads:
    """Restore torch's intra-op thread count after a call into leechlib's kernels.

    Numba's OpenMP threading layer and torch share the OpenMP runtime: a call into
    leechlib's parallel kernels (seen on the first one of a process) can set the
    thread count to Numba's default, which torch then uses too (measured: a
    one-thread torch process switched to two threads, and elementwise ops ran
    hundreds of times slower on a loaded 2-core machine).
    """

    def __enter__(self):
        self.n = torch.get_num_threads()
        return self

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.n:
            torch.set_num_threads(self.n)
        return False


@torch.library.custom_op("leech_vq::search", mutates_args=())
def _search_op(x: Tensor, kind: str, norm: int) -> tuple[Tensor, Tensor]:
    """Nearest codeword of a shell (by direction) or a ball: (integer points, indices)."""
    if kind == "minimal" and x.device.type != "cpu":  # the GPU path of torch_ext
        v, idx = _ops.nearest_minimal_vector(x.detach(), coords="int", return_index=True)
        return v.to(torch.float64), idx
    with _keep_torch_threads():
        p, idx = _search_cpu(_cpu_rows(x, "x"), kind, norm)
    shape = x.shape[:-1]
    return (torch.from_numpy(p).to(x.device).reshape(shape + (24,)),
            torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(x.device).reshape(shape))


def _search_cpu(y: np.ndarray, kind: str, norm: int):
    import leechlib

    n = y.shape[0]
    if n == 0:
        return np.zeros((0, 24)), np.zeros(0, dtype=np.int64)
    if kind == "minimal":
        p, idx = leechlib.nearest_minimal_vector(y, coords="int", workers=_workers(),
                                                 return_index=True)
        return p, idx
    if kind == "shell":
        p = np.zeros((n, 24))
        r = np.sqrt((y * y).sum(axis=1))
        nz = r > 0
        if nz.any():
            z = y[nz] * (math.sqrt(8.0 * norm) / r[nz, None])
            p[nz] = leechlib.constrained_nearest_point(
                z, min_norm=8 * norm, max_norm=8 * norm, coords="int", workers=_workers())
        if not nz.all():  # no direction: the codeword of index 0
            p[~nz] = _shell_codebook(norm).point(np.zeros(1, dtype=np.int64))[0]
        return p, _shell_codebook(norm).index(p.astype(np.int64), workers=_workers())
    p = leechlib.constrained_nearest_point(y * SQRT8, max_norm=8 * norm, coords="int",
                                           workers=_workers())
    return p, _ball_codebook(norm).index(p.astype(np.int64), workers=_workers())


@_search_op.register_fake
def _(x, kind, norm):
    return (x.new_empty(x.shape, dtype=torch.float64),
            x.new_empty(x.shape[:-1], dtype=torch.int64))


def _no_grad_backward(ctx, grad_p, grad_idx):
    return torch.zeros_like(grad_p), None, None


def _setup_none(ctx, inputs, output):
    return None


_search_op.register_autograd(_no_grad_backward, setup_context=_setup_none)


@torch.library.custom_op("leech_vq::unrank", mutates_args=())
def _unrank_op(idx: Tensor, kind: str, norm: int) -> Tensor:
    """Integer-model points (float64) of shell or ball indices (checked by the caller)."""
    cb = _shell_codebook(norm) if kind == "shell" else _ball_codebook(norm)
    flat = idx.detach().to("cpu").reshape(-1).numpy()
    with _keep_torch_threads():
        pts = (cb.point(flat, workers=_workers()).astype(np.float64) if flat.size
               else np.zeros((0, 24)))
    return torch.from_numpy(pts).to(idx.device).reshape(idx.shape + (24,))


@_unrank_op.register_fake
def _(idx, kind, norm):
    return idx.new_empty(idx.shape + (24,), dtype=torch.float64)


@torch.library.custom_op("leech_vq::rank", mutates_args=())
def _rank_op(points: Tensor, kind: str, norm: int) -> Tensor:
    """Indices of integer-model points of a shell or ball; -1 where a row is not one."""
    cb = _shell_codebook(norm) if kind == "shell" else _ball_codebook(norm)
    z = points.detach().to("cpu", torch.float64).reshape(-1, 24).numpy()
    zi = np.rint(z).astype(np.int64)
    out = np.full(len(zi), -1, dtype=np.int64)
    ok = np.all(zi == z, axis=1)
    if ok.any():
        _rank_rows(cb, zi, ok, out)
    return torch.from_numpy(out).to(points.device).reshape(points.shape[:-1])


def _rank_rows(cb, zi, ok, out):
    with _keep_torch_threads():
        # the public index() raises on a non-member: rank row by row only then
        try:
            out[ok] = cb.index(zi[ok], workers=_workers())
        except ValueError:
            for r in np.flatnonzero(ok):
                try:
                    out[r] = int(cb.index(zi[r : r + 1])[0])
                except ValueError:
                    out[r] = -1


@_rank_op.register_fake
def _(points, kind, norm):
    return points.new_empty(points.shape[:-1], dtype=torch.int64)


# ---------------------------------------------------------------------------
# the codebook object used by LeechVQ
# ---------------------------------------------------------------------------


class Codebook:
    """One Leech codebook: ``kind`` in {"minimal", "shell", "ball"} and its norm.

    ``norm`` is the squared norm of the shell, or the largest squared norm of the
    ball, in unit coordinates (minimal norm 4).
    """

    def __init__(self, kind: str, norm: int):
        from leechlib import shell_count

        self.kind = kind
        self.norm = norm
        if kind == "ball":
            self.size = 1 + sum(shell_count(m) for m in range(4, norm + 1, 2))
        else:
            self.size = shell_count(norm)
        self.spherical = kind != "ball"

    def __repr__(self) -> str:
        return f"Codebook(kind={self.kind!r}, norm={self.norm}, size={self.size})"

    @property
    def int_norm(self) -> int:
        return 8 * self.norm

    def search(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codewords of the rows of ``y`` (``(n, 24)``, float, unit coordinates).

        Spherical codebooks: the vector of largest inner product (``y``'s scale does
        not matter); ball: the nearest point to ``y``.  Returns integer-model points
        (float64) and int64 indices.
        """
        return torch.ops.leech_vq.search(y, self.kind, self.norm)

    def points(self, idx: Tensor) -> Tensor:
        """Integer-model points (float64, ``idx.shape + (24,)``) of in-range indices."""
        if self.kind == "minimal":
            return _minimal.unrank(idx)
        return torch.ops.leech_vq.unrank(idx, self.kind, self.norm)

    def indices(self, points: Tensor) -> Tensor:
        """Indices of integer-model points (rounded first); -1 for a non-codeword."""
        if self.kind == "minimal":
            z = points.to(torch.float64)
            zi = torch.round(z)
            return torch.where((zi == z).all(dim=-1), _minimal.rank(zi), -1)
        return torch.ops.leech_vq.rank(points.to(torch.float64), self.kind, self.norm)
