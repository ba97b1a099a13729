"""Index <-> vector maps of the 196 560 minimal vectors, in pure torch (any device).

The order is that of :meth:`leechlib.LeechLattice.minimal_vectors` and of the
index returned by :func:`torch_ext.nearest_minimal_vector` (integer model, norm 32):

* rows ``0 .. 1103``: ``(±4, ±4, 0²²)`` on the pairs ``i < j`` in lexicographic
  order, row ``4 * pair + s`` with bit 0 of ``s`` the minus sign on ``i`` and bit 1
  the minus sign on ``j``;
* rows ``1104 + 128 k + b``: ``±2`` on octad ``k`` (the rows of
  :meth:`leechlib.GolayCode.octads`), bits 0-6 of ``b`` the minus signs on its first
  seven positions, the eighth sign making their number even;
* rows ``98256 + 24 c + k``: ``(-1)^{c_i}`` with ``-3 (-1)^{c_k}`` at ``k``, ``c``
  codeword ``c`` of :meth:`leechlib.GolayCode.codewords`.

Only the code's structure is kept (276 pairs, 759 octads, 4096 codewords: about
110 kB); the 196 560 × 24 table is never built.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

import leechlib
from leechlib import kernels

N_TYPE1 = 1104
N_TYPE2 = 759 * 128
START3 = N_TYPE1 + N_TYPE2  # 98256
SIZE = START3 + 4096 * 24  # 196560


@functools.cache
def _numpy_tables():
    pairs = np.array([(i, j) for i in range(24) for j in range(i + 1, 24)], dtype=np.int64)
    octads = np.asarray(kernels.mog_tables()["octads"], dtype=np.int64)
    words = np.asarray(leechlib.GolayCode().codewords(), dtype=np.int64)
    weights = np.int64(1) << np.arange(24, dtype=np.int64)
    omask = np.zeros(759, dtype=np.int64)
    for k in range(759):
        omask[k] = int(weights[octads[k]].sum())
    wmask = (words * weights).sum(axis=1)
    oorder = np.argsort(omask, kind="stable")
    worder = np.argsort(wmask, kind="stable")
    return {
        "pairs": pairs,
        "octads": octads,
        "words": words,
        "weights": weights,
        "omask_sorted": omask[oorder],
        "oorder": oorder,
        "wmask_sorted": wmask[worder],
        "worder": worder,
    }


_DEVICE_TABLES: dict = {}


def _tables(device: torch.device) -> dict:
    key = str(device)
    t = _DEVICE_TABLES.get(key)
    if t is None:
        t = {k: torch.from_numpy(v).to(device) for k, v in _numpy_tables().items()}
        _DEVICE_TABLES[key] = t
    return t


def unrank(idx: Tensor) -> Tensor:
    """Minimal vectors (integer model, float64, shape ``idx.shape + (24,)``) of indices.

    ``idx`` must be int64 in ``[0, 196560)`` (the caller checks).
    """
    t = _tables(idx.device)
    flat = idx.reshape(-1)
    n = flat.shape[0]
    out = torch.zeros((n, 24), dtype=torch.float64, device=idx.device)
    # type 1: (±4, ±4, 0^22)
    m1 = flat < N_TYPE1
    i1 = torch.where(m1, flat, 0)
    pos = t["pairs"][i1 // 4]  # (n, 2)
    s = i1 % 4
    sign = torch.stack([1 - 2 * (s & 1), 1 - 2 * ((s >> 1) & 1)], dim=1).to(torch.float64)
    v1 = torch.zeros_like(out).scatter_(1, pos, 4.0 * sign)
    # type 2: ±2 on an octad, an even number of minus signs
    m2 = (flat >= N_TYPE1) & (flat < START3)
    j2 = torch.where(m2, flat - N_TYPE1, 0)
    k2, b2 = j2 // 128, j2 % 128
    bits = (b2[:, None] >> torch.arange(7, device=idx.device)) & 1  # (n, 7)
    last = bits.sum(dim=1, keepdim=True) & 1
    neg = torch.cat([bits, last], dim=1).to(torch.float64)
    v2 = torch.zeros_like(out).scatter_(1, t["octads"][k2], 2.0 * (1.0 - 2.0 * neg))
    # type 3: (∓3, ±1^23), signs from a Golay codeword
    j3 = torch.where(flat >= START3, flat - START3, 0)
    c3, k3 = j3 // 24, j3 % 24
    v3 = (1.0 - 2.0 * t["words"][c3].to(torch.float64))
    v3 = v3 * torch.where(
        torch.arange(24, device=idx.device)[None, :] == k3[:, None], -3.0, 1.0
    ).to(torch.float64)
    out = torch.where(m1[:, None], v1, torch.where(m2[:, None], v2, v3))
    return out.reshape(idx.shape + (24,))


def _lookup(sorted_masks: Tensor, order: Tensor, masks: Tensor) -> Tensor:
    """Position in the original order of each mask, -1 where it is not in the table."""
    pos = torch.searchsorted(sorted_masks, masks).clamp(max=sorted_masks.shape[0] - 1)
    found = sorted_masks[pos] == masks
    return torch.where(found, order[pos], -1)


def rank(points: Tensor) -> Tensor:
    """Indices (int64, shape ``points.shape[:-1]``) of integer-model minimal vectors.

    ``points`` holds integers (any dtype) of shape ``(..., 24)``; rows that are not
    minimal vectors get ``-1``.
    """
    t = _tables(points.device)
    p = points.reshape(-1, 24).to(torch.int64)
    n = p.shape[0]
    ar = torch.arange(24, device=p.device)
    a = p.abs()
    nz = a != 0
    cnt = nz.sum(dim=1)
    out = torch.full((n,), -1, dtype=torch.int64, device=p.device)
    # type 1: two coordinates ±4
    first = torch.argmax(nz.to(torch.int64), dim=1)
    lastp = 23 - torch.argmax(nz.flip(1).to(torch.int64), dim=1)
    pair = first * 23 - first * (first - 1) // 2 + (lastp - first - 1)
    pf = p.gather(1, first[:, None])[:, 0]
    pl = p.gather(1, lastp[:, None])[:, 0]
    r1 = 4 * pair + (pf < 0).to(torch.int64) + 2 * (pl < 0).to(torch.int64)
    out = torch.where(cnt == 2, r1, out)
    # type 2: ±2 on an octad
    mask = (nz.to(torch.int64) * t["weights"]).sum(dim=1)
    k2 = _lookup(t["omask_sorted"], t["oorder"], mask)
    negs = (p.gather(1, t["octads"][k2.clamp(min=0)]) < 0).to(torch.int64)  # (n, 8)
    b2 = (negs[:, :7] << torch.arange(7, device=p.device)).sum(dim=1)
    r2 = torch.where(k2 >= 0, N_TYPE1 + 128 * k2 + b2, -1)
    out = torch.where(cnt == 8, r2, out)
    # type 3: one ∓3, 23 ±1
    k3 = torch.argmax(a, dim=1)
    c_bits = torch.where(ar[None, :] == k3[:, None], (p > 0), (p < 0)).to(torch.int64)
    c3 = _lookup(t["wmask_sorted"], t["worder"], (c_bits * t["weights"]).sum(dim=1))
    r3 = torch.where(c3 >= 0, START3 + 24 * c3 + k3, -1)
    out = torch.where(cnt == 24, r3, out)
    # every row must map back to itself (norms, the sign parity, the codeword)
    ok = out >= 0
    back = unrank(out.clamp(min=0))
    ok &= (back == p.to(torch.float64)).all(dim=1)
    return torch.where(ok, out, -1).reshape(points.shape[:-1])
