"""Scale fitting of :mod:`torch_ext.quantize`: numpy, one weight matrix at a time.

:class:`_Layout` cuts an ``(out, in)`` weight into blocks and scale groups;
:func:`_quantize_array` fits the scales and encodes (the recipe of the package
docstring, "Blocks, padding and scales"): RMS start, codebook fit, exact encoding,
then least-squares refits of the scales (:func:`_ls_scales`, weighted by the input
second moment ``H`` when given) that are kept only where they lower the error.
Scales are rounded to their storage dtype (:func:`_round_scales`) before use.

Examples
--------
>>> import numpy as np
>>> from torch_ext.quantize.scales import _Layout
>>> L = _Layout(4, 50, 24, "row")              # 50 inputs: 3 blocks of 24, padded to 72
>>> L.padded, L.nblocks, L.scale_shape
(72, 3, (4, 1))
>>> L.real.sum(1).tolist()                     # real weights per block
[24, 24, 2]
>>> _Layout(4, 50, 24, 48).scale_shape         # groups of 48 inputs: 2 scales a row
(4, 2)
"""

from __future__ import annotations

import numpy as np
import torch

from .feedback import act_order as _act_order
from .feedback import damped_hessian, ldlq


def _round_scales(s: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, torch.dtype]:
    """Scales rounded to ``dtype`` (float32 if some non-zero scale does not fit it)."""
    t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))
    r = t.to(dtype)
    bad = ~torch.isfinite(r) | ((r == 0) & (t != 0))
    if bool(bad.any()) and dtype != torch.float32:
        return _round_scales(s, torch.float32)
    return r.to(torch.float64).numpy(), dtype


class _Layout:
    """Blocks and scale groups of an (out, in) weight for a method and a group setting."""

    def __init__(self, out_f: int, in_f: int, block: int, group):
        self.out_f, self.in_f, self.block = out_f, in_f, block
        self.padded = -(-in_f // block) * block
        self.nblocks = self.padded // block
        if group == "row" or group == "tensor":
            self.gblocks = self.nblocks
        else:
            self.gblocks = min(group // block, self.nblocks)
        self.ngroups = -(-self.nblocks // self.gblocks)
        self.tensor = group == "tensor"
        self.scale_shape = (1, 1) if self.tensor else (out_f, self.ngroups)
        # group of each block, and the real-weight mask of the padded row
        self.block_group = np.arange(self.nblocks) // self.gblocks
        self._group_starts = np.arange(0, self.nblocks, self.gblocks)
        self.real = (np.arange(self.padded) < in_f).reshape(self.nblocks, block)

    def expand(self, s: np.ndarray) -> np.ndarray:
        """Per-block scales (out, nblocks) from group scales ``scale_shape``."""
        if self.tensor:
            return np.broadcast_to(s.reshape(1, 1), (self.out_f, self.nblocks))
        return s[:, self.block_group]

    def group_sum(self, v: np.ndarray) -> np.ndarray:
        """Sums of per-block values (out, nblocks) over each scale group -> scale_shape."""
        # groups are runs of gblocks consecutive blocks (the last one maybe shorter)
        out = np.add.reduceat(np.asarray(v, dtype=np.float64), self._group_starts, axis=1)
        if self.tensor:
            return out.sum().reshape(1, 1)
        return out


def _quantize_array(W: np.ndarray, codec, group, *, scale_iters: int, scale_dtype,
                    H: np.ndarray | None, max_points, workers, feedback: bool = False,
                    damp: float = 0.01, act_order: bool = False) -> dict:
    """Codes, scales and gains of an (out, in) float64 weight; see the module docstring.

    With ``feedback`` (needs ``H``), the blocks are encoded by :func:`_encode_ldlq`
    (error feedback across the input dimension) and the scales are then refitted
    once in the ``H`` metric, the codes kept.  ``H`` is damped by ``damp`` (raised
    if LDLQ had to) and weights the scale refit.  ``act_order``: the blocks are fed
    back in decreasing order of input energy (the codes stay in column order).
    """
    out_f, in_f = W.shape
    if feedback and H is None:
        raise ValueError("feedback needs the input second moment H")
    if H is not None and not feedback:
        H = damped_hessian(H, damp)[0]
    L = _Layout(out_f, in_f, codec.block, group)
    P = np.zeros((out_f, L.padded))
    P[:, :in_f] = W
    blocks = P.reshape(out_f, L.nblocks, codec.block)
    real = L.real[None, :, :]
    sq = (blocks * blocks * real).sum(-1)  # (out, nblocks)
    cnt = np.broadcast_to(L.real.sum(-1)[None, :], sq.shape).astype(np.float64)
    rms = np.sqrt(L.group_sum(sq) / np.maximum(L.group_sum(cnt), 1.0))
    zero = rms == 0

    def normalise(S):
        Sb = L.expand(np.where(S > 0, S, 1.0))
        return (blocks / Sb[:, :, None]).reshape(-1, codec.block)

    # 1. initial scales and the codebook fit on the normalised blocks
    gains = None
    S = codec.initial_scales(blocks, L, rms)
    if S is not None:
        S, dt = _round_scales(S, scale_dtype)
    else:
        S0, dt = _round_scales(np.where(zero, 1.0, rms), scale_dtype)
        x0 = normalise(S0)
        if not np.any(x0):  # an all-zero weight: fit the codebook to a unit Gaussian
            x0 = np.random.default_rng(0).standard_normal((256, codec.block))
        alpha, gains = codec.fit(x0, max_points, workers)
        S, dt = _round_scales(S0 * alpha, scale_dtype)
    S = np.where(zero, 0.0, S)

    # 2. encode
    def encode(S):
        c = codec.encode(normalise(S), gains, workers).reshape(out_f, L.nblocks)
        return c, codec.decode(c.reshape(-1), gains).reshape(out_f, L.nblocks, codec.block)

    def errors(S, U):
        """Per-block squared errors (Euclidean) or per-row weighted errors (H)."""
        E = (blocks - L.expand(S)[:, :, None] * U) * real
        if H is None:
            return (E * E).sum(-1)
        e = E.reshape(out_f, L.padded)[:, :in_f]
        return ((e @ H) * e).sum(1)[:, None] * np.ones((1, L.nblocks)) / L.nblocks

    info = None
    if feedback:
        codes, U, info = _encode_ldlq(P, H, codec, L, S, gains, damp, workers, act_order)
        H = damped_hessian(H, info.damp)[0]
    else:
        codes, U = encode(S)
    err = errors(S, U)
    # 3. least-squares scales, then encode again (with feedback: refit only, once)
    for _ in range(min(scale_iters, 1) if feedback else scale_iters):
        S_ls = _ls_scales(blocks, U, L, H, real, S)
        S_new, dt2 = _round_scales(np.where(zero, 0.0, S_ls), dt)
        if dt2 != dt:  # the refit left float16: keep the old scales
            break
        err_new = errors(S_new, U)
        unit = _accept_unit(L, H)
        better = unit(err_new) < unit(err)
        S = np.where(better, S_new, S)
        err = errors(S, U)
        if feedback:
            break
        c2, U2 = encode(S)
        err2 = errors(S, U2)
        if H is None:
            pick = err2 < err  # per block: same scales, errors add up over blocks
        else:
            pick = np.broadcast_to((err2.sum(1) < err.sum(1))[:, None], err.shape)
        codes = np.where(pick, c2, codes)
        U = np.where(pick[:, :, None], U2, U)
        err = np.where(pick, err2, err)
    What = (L.expand(S)[:, :, None] * U).reshape(out_f, L.padded)[:, :in_f]
    return {"codes": codes, "scales": S.reshape(L.scale_shape), "scale_dtype": dt, "gains": gains,
            "mse": float(np.mean((What - W) ** 2)), "layout": L, "feedback": info}


def _encode_ldlq(P: np.ndarray, H: np.ndarray, codec, L: _Layout, S: np.ndarray, gains, damp,
                 workers, act_order: bool = False):
    """Codes and decoded normalised blocks of the padded weight ``P`` with LDLQ feedback.

    The scales ``S`` are fixed; block ``j`` of every row is normalised by its scale,
    encoded by the codec and decoded, and its error is fed back onto the later
    columns (:func:`~torch_ext.quantize.feedback.ldlq`).  The padding columns are
    dead inputs of the padded ``H``.  Returns ``(codes, U, info)``.
    """
    out_f, in_f = L.out_f, L.in_f
    Hp = np.zeros((L.padded, L.padded))
    Hp[:in_f, :in_f] = H
    Sb = L.expand(S)  # (out, nblocks)
    codes = np.zeros((out_f, L.nblocks), dtype=np.int64)
    U = np.zeros((out_f, L.nblocks, codec.block))

    def quantize_block(j, Wj):
        s = Sb[:, j][:, None]
        x = Wj / np.where(s > 0, s, 1.0)
        c = codec.encode(np.ascontiguousarray(x), gains, workers)
        u = codec.decode(c, gains).reshape(out_f, codec.block)
        codes[:, j], U[:, j] = c, u
        return s * u

    order = _act_order(Hp, codec.block) if act_order else None
    _, info = ldlq(P, Hp, quantize_block, block=codec.block, damp=damp, order=order)
    return codes, U, info


def _accept_unit(L: _Layout, H):
    """Reduce per-block errors to the units whose scales are chosen independently."""
    if L.tensor:
        return lambda e: np.full((1, 1), e.sum())
    if H is not None:  # weighted errors couple the groups of a row
        return lambda e: np.broadcast_to(e.sum(1, keepdims=True), (L.out_f, L.ngroups))
    return L.group_sum


def _ls_scales(blocks, U, L: _Layout, H, real, S_old) -> np.ndarray:
    """Least-squares scales (scale_shape) of the weights for fixed decoded blocks ``U``."""
    Ur = U * real
    if H is None:
        num = L.group_sum((blocks * Ur).sum(-1))
        den = L.group_sum((Ur * Ur).sum(-1))
        ok = den > 0
        s = np.where(ok, num / np.where(ok, den, 1.0), S_old)
        return np.where(s > 0, s, S_old)
    in_f = L.in_f
    w = blocks.reshape(L.out_f, L.padded)[:, :in_f]
    u = Ur.reshape(L.out_f, L.padded)[:, :in_f]
    if L.tensor:
        uH = u @ H
        num, den = float((uH * w).sum()), float((uH * u).sum())
        s = num / den if den > 0 else float(S_old.ravel()[0])
        return np.full((1, 1), s if s > 0 else float(S_old.ravel()[0]))
    # per row: the G x G normal equations of the group scales (rows in chunks)
    gidx = np.repeat(L.block_group, L.block)[:in_f]
    G = L.ngroups
    s = S_old.copy()
    chunk = max(1, (1 << 24) // max(1, G * in_f))
    for a in range(0, L.out_f, chunk):
        uu, ww = u[a:a + chunk], w[a:a + chunk]
        M = np.zeros((len(uu), G, in_f))
        M[:, gidx, np.arange(in_f)] = uu
        MH = (M.reshape(-1, in_f) @ H).reshape(M.shape)  # (rows, G, in), one product
        A = MH @ M.transpose(0, 2, 1)  # (rows, G, G)
        b = (MH @ ww[:, :, None])[:, :, 0]
        for i in range(len(uu)):
            try:
                sol = np.linalg.solve(A[i] + 1e-12 * np.trace(A[i]) * np.eye(G), b[i])
            except np.linalg.LinAlgError:
                continue
            if np.all(np.isfinite(sol)) and np.all(sol > 0):
                s[a + i] = sol
    return s
