"""The torch side of every Leech index map: unrank, rank and search, shared by
:mod:`torch_ext.quantize` and :mod:`torch_ext.vq`.

* the vectorised torch port of the enumerative shell unranking of
  :class:`~leechlib.BallCodebook` / :class:`~leechlib.ShellCodebook` ``point``
  (:func:`ball_points`, :func:`shell_union_points`), built on the counting tables of
  :func:`leechlib.kernels.count_tables` copied to each device once;
* the :math:`E_8` ball as a per-device table (:func:`e8_table`);
* bit packing of codes into ``uint8`` rows, least significant bit first
  (:func:`pack_bits`, :func:`unpack_bits`).

These are torch operations only (any device, no Numba).

* the custom ops ``torch.ops.leech.codebook_search``, ``codebook_rank`` and
  ``codebook_unrank`` of the shell and ball codebooks of :class:`torch_ext.LeechVQ`
  (fake kernels, so ``torch.compile`` traces them).  Search and rank run on the CPU
  (leechlib's exact Numba kernels; a tensor on another device is copied there and
  back); unrank runs on the tensor's device through :func:`ball_points` /
  :func:`shell_union_points`, and on the CPU through leechlib's numpy unranking
  (the same indices, faster there).  Numba's thread count never leaks into torch's:
  leechlib's calls give torch its count back (:class:`leechlib.kernels.num_threads`
  is not needed here).

Examples
--------
>>> import numpy as np, torch
>>> from leechlib import BallCodebook
>>> from torch_ext.ops.codebook import ball_points, pack_bits, unpack_bits
>>> idx = torch.tensor([0, 1, 196560, 280974212784720])
>>> bool((ball_points(idx, 26).numpy() == BallCodebook(26, coords="int").point(idx.numpy())).all())
True
>>> codes = torch.tensor([[5, 0, 7]])
>>> pack_bits(codes, 3)                      # 5 + 0 * 8 + 7 * 64 = 453 = 0b1_11000101
tensor([[197,   1]], dtype=torch.uint8)
>>> unpack_bits(pack_bits(codes, 3), 3, 3)
tensor([[5, 0, 7]])
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import leechlib
from leechlib import BallCodebook, ShellCodebook, shell_count
from leechlib.baselines import e8_ball
from leechlib.kernels import SQRT8, count_tables
from leechlib.trio import TrioCodebook

from . import minimal
from .nearest import nearest_minimal_vector

__all__ = ["ball_points", "shell_union_points", "e8_table", "e8_ball_size", "e8_norm_for_bits",
           "trio_points", "pack_bits", "unpack_bits", "codebook_search", "codebook_rank",
           "codebook_unrank"]

UNRANK_CHUNK = 1 << 18  # blocks unranked at once

# ---------------------------------------------------------------------------
# per-device tables: E8 ball, Leech counting tables
# ---------------------------------------------------------------------------

_CACHE: dict = {}


#: the largest E8 ball served here (squared norm 16: 340 321 points) and its bits per number
#: (codes of 19 bits per 8 numbers)
E8_MAX_NORM = 16
E8_MAX_BITS = 19 / 8


def e8_ball_size(max_norm: int) -> int:
    """Points of :math:`E_8` of squared norm ``<= max_norm``: ``1 + sum_k 240 sigma_3(k)``,
    ``2k <= max_norm`` (the theta series, no enumeration)."""
    total = 1
    for k in range(1, max_norm // 2 + 1):
        total += 240 * sum(d**3 for d in range(1, k + 1) if k % d == 0)
    return total


def e8_norm_for_bits(bits: float) -> int:
    """The largest even norm (at most :data:`E8_MAX_NORM`) whose E8 ball fits ``8 * bits``
    bits, or 0 if not even the ball of norm 2 does."""
    m = 0
    for n in range(2, E8_MAX_NORM + 1, 2):
        if math.log2(e8_ball_size(n)) <= 8.0 * float(bits) + 1e-12:
            m = n
    return m


def e8_table(max_norm: int, device, dtype) -> Tensor:
    """The points of :func:`leechlib.baselines.e8_ball` as a ``(size, 8)`` tensor (cached)."""
    key = ("e8", max_norm, str(device), dtype)
    t = _CACHE.get(key)
    if t is None:
        t = torch.from_numpy(np.ascontiguousarray(e8_ball(max_norm))).to(device=device, dtype=dtype)
        _CACHE[key] = t
    return t


class LeechTables:
    """The counting tables of :func:`leechlib.kernels.count_tables` as torch tensors (one device).

    Built from leechlib's numpy tables for the largest integer norm needed; the
    tables of a larger norm contain those of every smaller one (values whose square
    exceeds the remaining norm are skipped), so one set serves every shell.
    """

    def __init__(self, max_int_norm: int, shell_norms: tuple, device):
        t = count_tables(max_int_norm)
        self.NN = max_int_norm
        self.T = torch.from_numpy(np.ascontiguousarray(t.T)).reshape(-1).to(device)
        self.vals = torch.from_numpy(t.vals.reshape(4, -1).copy()).to(device)
        self.vpar = torch.from_numpy(t.vpar.reshape(4, -1).copy()).to(device)
        self.nvals = torch.from_numpy(t.nvals.reshape(4).copy()).to(device)
        self.K = int(t.vals.shape[-1])
        self.class_words = torch.from_numpy(t.class_words.copy()).to(device)
        S = len(shell_norms)
        B = 10
        starts = np.full((S, B), np.iinfo(np.int64).max, dtype=np.int64)
        eps = np.zeros((S, B), dtype=np.int64)
        cls = np.zeros((S, B), dtype=np.int64)
        per_u = np.ones((S, B), dtype=np.int64)
        N = np.zeros(S, dtype=np.int64)
        for k, m in enumerate(shell_norms):
            st, e, c, pu, _, _ = t.blocks(8 * m)
            starts[k, : len(st)] = st
            eps[k, : len(st)] = e
            cls[k, : len(st)] = c
            per_u[k, : len(st)] = pu
            N[k] = 8 * m
        self.starts = torch.from_numpy(starts).to(device)
        self.eps = torch.from_numpy(eps).to(device)
        self.cls = torch.from_numpy(cls).to(device)
        self.per_u = torch.from_numpy(per_u).to(device)
        self.N = torch.from_numpy(N).to(device)
        self.bit = torch.arange(24, device=device, dtype=torch.int64)


def leech_tables(shell_norms: tuple, device) -> LeechTables:
    """The :class:`LeechTables` of ``shell_norms`` (unit norms) on ``device`` (cached)."""
    key = ("leech", shell_norms, str(device))
    t = _CACHE.get(key)
    if t is None:
        t = LeechTables(8 * max(shell_norms), shell_norms, device)
        _CACHE[key] = t
    return t


def unrank(r: Tensor, k: Tensor, tb: LeechTables) -> Tensor:
    """Integer-frame points (n, 24) int64 of ranks ``r`` within shells ``k`` (indices of tb).

    The vectorised form of the unranking behind :meth:`leechlib.ShellCodebook.point`:
    block, Golay word, then coordinate by coordinate the value whose count range
    holds the rank.
    """
    n = r.shape[0]
    out = torch.zeros((n, 24), dtype=torch.int64, device=r.device)
    if n == 0:
        return out
    N = tb.N[k]
    starts = tb.starts[k]  # (n, B)
    b = (r.unsqueeze(1) >= starts).sum(1) - 1
    r = r - starts.gather(1, b.unsqueeze(1)).squeeze(1)
    eps = tb.eps[k, b]
    cls = tb.cls[k, b]
    per_u = tb.per_u[k, b]
    j = torch.div(r, per_u, rounding_mode="floor")
    r = r - j * per_u
    word = tb.class_words[cls, j]
    u = (word.unsqueeze(1) >> tb.bit) & 1  # (n, 24)
    k1 = u.sum(1)
    k0 = 24 - k1
    rem = N.clone()
    par = torch.zeros_like(r)
    stride_n = tb.NN + 1
    for i in range(24):
        c = u[:, i]
        k1 = k1 - c
        k0 = k0 - (1 - c)
        ec = eps * 2 + c
        nv = tb.nvals[ec]
        base = ((eps * 25 + k1) * 25 + k0) * stride_n
        chosen = torch.zeros(n, dtype=torch.bool, device=r.device)
        val = torch.zeros_like(r)
        new_rem, new_par = rem, par
        for jj in range(tb.K):
            v = tb.vals[ec, jj]
            p = tb.vpar[ec, jj]
            s = v * v
            ok = (nv > jj) & (s <= rem) & ~chosen
            need = (eps - par - p) & 1
            idx = (base + (rem - s).clamp_min(0)) * 2 + need
            cnt = torch.where(ok, tb.T[idx], torch.zeros_like(r))
            take = ok & (r < cnt)
            val = torch.where(take, v, val)
            new_rem = torch.where(take, rem - s, new_rem)
            new_par = torch.where(take, (par + p) & 1, new_par)
            r = torch.where(ok & ~take, r - cnt, r)
            chosen = chosen | take
        out[:, i] = val
        rem, par = new_rem, new_par
    return out


def ball_points(codes: Tensor, max_norm: int) -> Tensor:
    """Integer-frame points of :class:`~leechlib.BallCodebook` indices (torch only)."""
    norms = tuple(range(4, max_norm + 1, 2))
    tb = leech_tables(norms, codes.device)
    offs, tot = [], 1
    for m in norms:
        offs.append(tot)
        tot += shell_count(m)
    offs_t = torch.tensor(offs, dtype=torch.int64, device=codes.device)
    out = torch.zeros((codes.shape[0], 24), dtype=torch.int64, device=codes.device)
    for a in range(0, codes.shape[0], UNRANK_CHUNK):
        c = codes[a:a + UNRANK_CHUNK]
        k = torch.searchsorted(offs_t, c, right=True) - 1  # -1: the origin
        nz = k >= 0
        if bool(nz.any()):
            kk = k[nz]
            out[a:a + UNRANK_CHUNK][nz] = unrank(c[nz] - offs_t[kk], kk, tb)
    return out


def shell_union_points(idx: Tensor, shells: tuple) -> tuple[Tensor, Tensor]:
    """Integer-frame points and their unit norms of shape indices over ``shells``."""
    tb = leech_tables(tuple(sorted(shells)), idx.device)
    order = {m: i for i, m in enumerate(sorted(shells))}
    offs, tot = [], 0
    for m in shells:
        offs.append(tot)
        tot += shell_count(m)
    offs_t = torch.tensor(offs, dtype=torch.int64, device=idx.device)
    tab_k = torch.tensor([order[m] for m in shells], dtype=torch.int64, device=idx.device)
    norm_t = torch.tensor(list(shells), dtype=torch.int64, device=idx.device)
    out = torch.zeros((idx.shape[0], 24), dtype=torch.int64, device=idx.device)
    norms = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
    for a in range(0, idx.shape[0], UNRANK_CHUNK):
        c = idx[a:a + UNRANK_CHUNK]
        k = torch.searchsorted(offs_t, c, right=True) - 1
        out[a:a + UNRANK_CHUNK] = unrank(c - offs_t[k], tab_k[k], tb)
        norms[a:a + UNRANK_CHUNK] = norm_t[k]
    return out, norms


# ---------------------------------------------------------------------------
# bit packing
# ---------------------------------------------------------------------------


def pack_bits(codes: Tensor, width: int) -> Tensor:
    """Pack int64 codes (R, n) of ``width`` bits into uint8 (R, ceil(n * width / 8)), LSB first.

    A few rows at a time (:data:`_UNPACK_BYTES` packed bytes), so that the bits in
    between (one int64 each) stay a few MB whatever the size of the layer.
    """
    R, n = codes.shape
    nb = -(-n * width // 8)
    out = torch.empty((R, nb), dtype=torch.uint8, device=codes.device)
    sh = torch.arange(width, device=codes.device, dtype=torch.int64)
    w8 = torch.arange(8, device=codes.device, dtype=torch.int64)
    step = max(1, _UNPACK_BYTES // max(1, nb))
    for a in range(0, R, step):
        c = codes[a:a + step]
        bits = ((c.unsqueeze(-1) >> sh) & 1).reshape(c.shape[0], n * width)
        bits = F.pad(bits, (0, nb * 8 - n * width)).reshape(c.shape[0], nb, 8)
        out[a:a + c.shape[0]] = (bits << w8).sum(-1).to(torch.uint8)
    return out


#: packed bytes that :func:`unpack_bits` unpacks at once (its int64 bits take 64 times as many)
_UNPACK_BYTES = 1 << 17


def unpack_bits(packed: Tensor, n: int, width: int) -> Tensor:
    """Inverse of :func:`pack_bits`: int64 codes (R, n).

    A few rows at a time (:data:`_UNPACK_BYTES` packed bytes), so that the bits in
    between (one int64 each) stay a few MB whatever the size of the layer.
    """
    R = packed.shape[0]
    out = torch.empty((R, n), dtype=torch.int64, device=packed.device)
    w8 = torch.arange(8, device=packed.device, dtype=torch.int64)
    sh = torch.arange(width, device=packed.device, dtype=torch.int64)
    step = max(1, _UNPACK_BYTES // max(1, packed.shape[1]))
    for a in range(0, R, step):
        p = packed[a:a + step]
        bits = ((p.to(torch.int64).unsqueeze(-1) >> w8) & 1).reshape(p.shape[0], -1)[:, : n * width]
        out[a:a + p.shape[0]] = (bits.reshape(p.shape[0], n, width) << sh).sum(-1)
    return out


# ---------------------------------------------------------------------------
# the shell and ball codebooks of LeechVQ: search, rank, unrank (custom ops)
# ---------------------------------------------------------------------------


@functools.cache
def _shell_codebook(norm: int):
    return ShellCodebook(norm, coords="int")


@functools.cache
def _ball_codebook(max_norm: int):
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


@torch.library.custom_op("leech::codebook_search", mutates_args=())
def _search_op(x: Tensor, kind: str, norm: int) -> tuple[Tensor, Tensor]:
    """Nearest codeword of a shell (by direction) or a ball: (integer points, indices)."""
    if kind == "minimal" and x.device.type != "cpu":  # the GPU path of torch_ext
        v, idx = nearest_minimal_vector(x.detach(), coords="int", return_index=True)
        return v.to(torch.float64), idx
    p, idx = _search_cpu(_cpu_rows(x, "x"), kind, norm)
    shape = x.shape[:-1]
    return (torch.from_numpy(p).to(x.device).reshape(shape + (24,)),
            torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(x.device).reshape(shape))


def _search_cpu(y: np.ndarray, kind: str, norm: int):
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


@torch.library.custom_op("leech::codebook_unrank", mutates_args=())
def _unrank_op(idx: Tensor, kind: str, norm: int) -> Tensor:
    """Integer-model points (float64) of shell or ball indices (checked by the caller)."""
    flat = idx.detach().reshape(-1)
    if flat.device.type != "cpu":  # torch unranking on the device, no round trip
        if kind == "shell":
            pts = shell_union_points(flat, (norm,))[0]
        else:
            pts = ball_points(flat, norm)
        return pts.to(torch.float64).reshape(idx.shape + (24,))
    cb = _shell_codebook(norm) if kind == "shell" else _ball_codebook(norm)
    flat = flat.numpy()
    pts = cb.point(flat, workers=_workers()).astype(np.float64) if flat.size else np.zeros((0, 24))
    return torch.from_numpy(pts).reshape(idx.shape + (24,))


@_unrank_op.register_fake
def _(idx, kind, norm):
    return idx.new_empty(idx.shape + (24,), dtype=torch.float64)


@torch.library.custom_op("leech::codebook_rank", mutates_args=())
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


def codebook_search(x: Tensor, kind: str, norm: int) -> tuple[Tensor, Tensor]:
    """Nearest codewords of the rows of ``x`` (unit coordinates) in a Leech codebook.

    ``kind`` is ``"minimal"``, ``"shell"`` (the vector of largest inner product: the
    scale of ``x`` does not matter) or ``"ball"`` (the nearest point of norm at most
    ``norm``); ``norm`` is the unit squared norm of the shell or the ball's largest.
    Returns integer-model points (float64, ``x.shape``) and int64 indices
    (``x.shape[:-1]``) of :meth:`leechlib.LeechLattice.minimal_vectors`,
    :class:`leechlib.ShellCodebook` or :class:`leechlib.BallCodebook`.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.ops.codebook import codebook_search, codebook_unrank
    >>> p, i = codebook_search(torch.randn(3, 24), "ball", 8)
    >>> torch.equal(codebook_unrank(i, "ball", 8), p)
    True
    """
    return torch.ops.leech.codebook_search(x, kind, norm)


def codebook_unrank(idx: Tensor, kind: str, norm: int) -> Tensor:
    """Integer-model points (float64, ``idx.shape + (24,)``) of in-range codebook indices."""
    if kind == "minimal":
        return minimal.unrank(idx)
    return torch.ops.leech.codebook_unrank(idx, kind, norm)


def codebook_rank(points: Tensor, kind: str, norm: int) -> Tensor:
    """Indices of integer-model points (rounded first); -1 for a row that is no codeword."""
    z = points.to(torch.float64)
    if kind == "minimal":
        zi = torch.round(z)
        return torch.where((zi == z).all(dim=-1), minimal.rank(zi), -1)
    return torch.ops.leech.codebook_rank(z, kind, norm)


# ---------------------------------------------------------------------------
# the trio code: index -> point by table lookups (any device)
# ---------------------------------------------------------------------------


def _trio_tables(device) -> dict:
    key = ("trio", str(device))
    t = _CACHE.get(key)
    if t is None:
        cb = TrioCodebook()
        T = cb.tables
        t = {k: torch.from_numpy(np.ascontiguousarray(T[k]).astype(np.int64)).to(device)
             for k in ("tab", "perm", "sign", "cls_of", "gen_lo", "gen_hi", "combos")}
        t["b"], t["cb"] = cb.row_bits, cb.combo_bits
        _CACHE[key] = t
    return t


def trio_points(codes: Tensor) -> Tensor:
    """Integer-frame points ``(n, 24)`` int64 of trio-code indices (torch only, any device).

    The torch form of :meth:`leechlib.trio.TrioCodebook.point` (the same tables).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from leechlib.trio import TrioCodebook
    >>> from torch_ext.ops.codebook import trio_points
    >>> idx = torch.tensor([0, 12345678901234, (1 << 48) - 1])
    >>> bool((trio_points(idx).numpy() == TrioCodebook().point(idx.numpy())).all())
    True
    """
    t = _trio_tables(codes.device)
    b, cb = t["b"], t["cb"]
    x = codes.to(torch.int64)
    mask = (1 << b) - 1
    rows_in = ((x >> (2 * b)) & mask, (x >> b) & mask, x & mask)
    q = x >> (3 * b)
    c = q & ((1 << cb) - 1)
    q = q >> cb
    pi1, pi2 = (q >> 1) & 1, q & 1
    m = (q >> 2) & 4095
    eps = q >> 14
    pis = (pi1, pi2, eps ^ pi1 ^ pi2)
    word = t["gen_lo"][m & 63] ^ t["gen_hi"][m >> 6]
    out = torch.zeros((x.shape[0], 24), dtype=torch.int64, device=x.device)
    for j in range(3):
        p = (word >> (8 * j)) & 255
        row = t["combos"][c, j] * (1 << b) + rows_in[j]
        v = t["tab"][t["cls_of"][eps, p, pis[j]], row] * t["sign"][eps, p]  # (n, 8), canonical order
        out.scatter_(1, 8 * j + t["perm"][eps, p], v)
    return out
