r"""Noise banks of the ``"noise"`` estimator of :class:`~torch_ext.LeechVQ`.

Noise substitution replaces quantization in training by ``x + e`` with ``e``
uniform over the Voronoi cell of the (scaled) lattice.  A point uniform on the cell
is sampled exactly as ``e = u - Q(u)`` with ``u = r B`` (``r`` uniform in
``[0, 1)^n``, ``B`` a basis of the lattice) and ``Q`` the exact nearest-point
decoder: ``u`` is uniform on the fundamental parallelepiped, and ``u - Q(u)`` maps it
piecewise by lattice translations onto the Voronoi cell, preserving volume.

Decoding per training step would cost one lattice decode per block, so a bank of
:data:`BANK_SIZE` cell points is drawn once per process (seeded, so the same bank
every run), kept as a non-persistent buffer of the layer (it follows ``.to(device)``
and is not saved), and each step draws rows of it at random with a random sign
(the cell is centrally symmetric, so ``-e`` is uniform on it too).

* Leech (unit coordinates, volume 1): :meth:`leechlib.LeechLattice.generator_matrix`
  and :func:`leechlib.nearest_point`; the second moment per dimension is
  :data:`LEECH_G` (the normalized second moment :math:`G(\Lambda_{24})`).
* :math:`E_8` (unit coordinates, volume 1): the basis of Conway and Sloane (SPLAG
  ch. 4, eq. (100)) and :func:`leechlib.baselines.e8_nearest_point`, three
  independent 8-blocks per row of 24; second moment :data:`E8_G` per dimension.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

import leechlib
from leechlib import LeechLattice
from leechlib.baselines import e8_nearest_point

__all__ = ["BANK_SIZE", "LEECH_G", "E8_G", "voronoi_bank", "draw"]

#: rows of a noise bank (2**16 x 24 float32: 6 MiB)
BANK_SIZE = 1 << 16
#: normalized second moments G (Conway & Sloane, SPLAG table 2.3)
LEECH_G = 0.065771
E8_G = 0.071682


def e8_basis() -> np.ndarray:
    """A basis of :math:`E_8` (rows; determinant 1), Conway and Sloane's."""
    b = np.zeros((8, 8))
    b[0, 0] = 2.0
    for i in range(1, 7):
        b[i, i - 1], b[i, i] = -1.0, 1.0
    b[7] = 0.5
    return b


@functools.cache
def _bank_np(lattice: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if lattice == "leech":
        u = rng.random((size, 24)) @ LeechLattice().generator_matrix("unit")
        return u - leechlib.nearest_point(u, coords="unit")
    u = rng.random((size * 3, 8)) @ e8_basis()
    return (u - e8_nearest_point(u)).reshape(size, 24)


def voronoi_bank(lattice: str, size: int = BANK_SIZE, seed: int = 0) -> Tensor:
    """``(size, 24)`` float32 points uniform on the Voronoi cell of ``lattice``
    (``"leech"`` or ``"e8"``, unit coordinates, cell volume 1; seeded, cached)."""
    return torch.from_numpy(_bank_np(lattice, size, seed).astype(np.float32))


def draw(bank: Tensor, shape, dtype) -> Tensor:
    """Rows of ``bank`` at random, each with a random sign: ``shape + (24,)``."""
    n = 1
    for s in shape:
        n *= s
    i = torch.randint(0, bank.shape[0], (n,), device=bank.device)
    sign = torch.randint(0, 2, (n, 1), device=bank.device).to(dtype) * 2.0 - 1.0
    return (bank[i].to(dtype) * sign).reshape(tuple(shape) + (24,))
