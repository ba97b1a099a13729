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
  ``max_norm = M``; indices of :class:`leechlib.BallCodebook`.

Search, rank and unrank are :mod:`torch_ext.ops.codebook`'s, the one torch-side path
of the Leech index maps (shared with :mod:`torch_ext.quantize`): search and rank run
on the CPU (a tensor on another device makes the *device round trip*), unrank on the
tensor's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leechlib import shell_count

from ..ops.codebook import codebook_rank, codebook_search, codebook_unrank

__all__ = ["Codebook"]


# ---------------------------------------------------------------------------
# the codebook object used by LeechVQ
# ---------------------------------------------------------------------------


class Codebook:
    """One Leech codebook: ``kind`` in {"minimal", "shell", "ball"} and its norm.

    ``norm`` is the squared norm of the shell, or the largest squared norm of the
    ball, in unit coordinates (minimal norm 4).
    """

    def __init__(self, kind: str, norm: int):
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
        not matter: each row is divided by its largest absolute entry first, so the
        norms taken by the search neither overflow, beyond 1e150 in float64, nor
        underflow to zero for tiny rows); ball: the nearest point to ``y``.  Returns
        integer-model points (float64) and int64 indices.
        """
        if self.spherical and y.numel():
            m = y.abs().amax(dim=-1, keepdim=True)
            y = y / torch.where(m > 0, m, torch.ones_like(m))
        return codebook_search(y, self.kind, self.norm)

    def points(self, idx: Tensor) -> Tensor:
        """Integer-model points (float64, ``idx.shape + (24,)``) of in-range indices."""
        return codebook_unrank(idx, self.kind, self.norm)

    def indices(self, points: Tensor) -> Tensor:
        """Indices of integer-model points (rounded first); -1 for a non-codeword."""
        return codebook_rank(points, self.kind, self.norm)
