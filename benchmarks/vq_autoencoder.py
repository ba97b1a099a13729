"""Convolutional VQ autoencoders at equal bits *and* equal latent dimensions:
LeechVQ (ball, sphere, shape-gain, residual) against FSQ, LFQ, BSQ, an E8 ball and
learned product VQ.

Usage::

    python benchmarks/vq_autoencoder.py [--quick] [--datasets digits,natural]
                                        [--rates 0,1,2] [--seeds 0,1,2] [--steps N]
                                        [--arms KEY,KEY,...] [--eval test|val]
                                        [--threads T] [--write-docs]
    python benchmarks/vq_autoencoder.py --costs-only [--write-docs]   # the cost tables alone

Data (:mod:`benchmarks._vq_data`, files shipped inside registry packages; ``pip
install -e ".[examples]"``): scikit-learn's 8x8 digits (shifted noisy copies) and
16x16 grey patches of the photographs and textures bundled with scikit-image, both
split by source image into training, validation and held-out sets.

Model (:class:`ConvAE`): a small convolutional encoder (16 and 32 channels, down to
a 4x4 map) and a linear map to ``B`` blocks of 24 latent numbers (``B = 2`` for
digits, 4 for 16x16 patches), a batch normalisation without parameters (every
latent number of unit variance over the batch, the same for every arm), the
quantizer, and the mirror-image decoder (sub-pixel upsampling).  MSE loss plus the
quantizer's auxiliary loss, Adam (lr 2e-3, chosen on the validation images: 5e-3
and 1e-2 were worse for the quantized arms) with a cosine schedule, batch 128,
``--steps`` steps, seeds 0, 1, 2 (model initialisation and batch order; the data
are fixed).

Every arm codes the same latent dimensions (``24 B``) at (about) the same bits, 1
or 2 bits per latent number (:data:`ARMS`, one line per arm; rate 0 is the
unquantized reference):

* LeechVQ ball: ``codebook="ball"``, ``max_norm=6`` (24.02 bits per 24 numbers) and
  26 (48.00 bits, ``bits=2``), the learned scale initialised to the scale that
  :class:`leechlib.quantizers.BallQuantizer` fits to unit Gaussian blocks; at 2
  bits the four estimators (straight-through, rotation trick, noise, soft) and a
  2-stage ``ResidualLeechVQ`` of balls ``max_norm=6`` (48.03 bits);
* LeechVQ sphere: a shell with the learned scalar gain (the default ``gain``; the
  gradient passes through the block's normalisation, as in BSQ): norm 6 (24.00
  bits) and norm 26 (47.27 bits);
* LeechVQ shape-gain: ``codebook="shape-gain", bits=b`` (the shells and gain levels of
  :class:`leechlib.quantizers.ShapeGainQuantizer`: norm 6 with 1 level, 24.00 bits;
  norm 24 with 3 levels, 47.59 bits);
* FSQ (Mentzer et al. 2023) on all 24 numbers: [4]*24 (48 bits) and [2]*24 (24 bits,
  mid-rise: the reference formula has no 2-level form);
* FSQ [4]*24 on the L2-normalised block (scaled to norm sqrt(24)), a control: the
  normalisation of BSQ and of the LeechVQ spheres without the lattice;
* LFQ (sign of each number) and BSQ (sign of the L2-normalised block, Zhao et al.
  2024), 24 bits, no entropy penalty;
* E8 ball (the 8-dimensional lattice baseline): 3 sub-blocks of 8 per block, each
  quantized to the nearest point of a scaled ball of E8 (norm <= 2: 241 points,
  23.74 bits per 24 numbers; norm <= 10: 56 881 points, 47.39 bits), learned scale
  initialised by ``E8Quantizer.fit`` on unit Gaussian blocks, straight-through; the
  same codewords as ``LeechVQ(codebook="e8")`` (the tests check it);
* learned product VQ: at 48 bits per 24 numbers one codebook (2^48 codes) is
  impossible, so each block is cut into sub-vectors with a learned codebook of
  4096 codes each (12 bits): 2 x 12 numbers at 1 bit/dim, 4 x 6 at 2 bits/dim
  (EMA updates, initialisation from encoder outputs, restarts of dead codes,
  commitment 0.25).

Per arm it reports bits per image and per latent number, the held-out MSE per
pixel and PSNR (peak 1) as mean and standard deviation over the seeds (and the
min-max range), the code usage on the held-out blocks (distinct codes of the
24-number blocks, perplexity, ratio of the most to the least used code among
those used) and the training time per step.  ``--eval val`` reports the
validation split instead (used for every choice made in this file).  Two last tables
time each quantizer's search on Gaussian blocks and the training step of each
gradient estimator of the 2-bit ball, as ratios to a reference in the same run
(``--costs-only``: these two alone, for an otherwise idle machine).

``--threads T`` runs the trainings in ``T`` worker processes of one thread each.
``--write-docs`` rewrites the generated parts of the benchmark section of
``docs/vq.rst``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: latent blocks of 24 numbers per image, by data set
BLOCKS = {"digits": 2, "natural": 4}


# ---------------------------------------------------------------------------
# quantizers: ``forward(z (N, 24 B)) -> (q (N, 24 B), indices (N, B) int64, aux loss)``;
# ``bits`` is per block of 24 numbers, indices are one int64 per 24-number block
# ---------------------------------------------------------------------------


def _ste(x, q):
    return x + (q - x).detach()


def _radial_bound(zb, radius):
    """``zb`` (``(..., n)``) mapped into the open ball of ``radius``:
    ``radius tanh(||z|| / radius) z / ||z||``, the spherical counterpart of FSQ's
    ``tanh`` bound (no block lands outside the codebook's ball, and the encoder can
    fill the ball as FSQ's fills the cube)."""
    n = zb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return zb * (radius * torch.tanh(n / radius) / n)


def _pack(sub_idx, base):
    """One int64 per block from the indices of its sub-blocks ``(..., m)``, base ``base``."""
    out = torch.zeros(sub_idx.shape[:-1], dtype=torch.int64)
    for j in range(sub_idx.shape[-1]):
        out = out * base + sub_idx[..., j]
    return out


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023): ``round(bound(z))`` per number,
    straight-through, codes rescaled to [-1, 1].  The reference bound is
    ``tanh(z + shift) h - offset`` with ``h = (L - 1)(1 - 1e-3) / 2``, offset 0.5 for even
    ``L`` and ``shift = tan(offset / h)`` (as in the paper's code); it has no 2-level
    form (``offset / h > 1``), so ``midrise=True`` uses the symmetric mid-rise grid
    ``floor(tanh(z) L / 2) + 1/2`` instead (for ``L = 2``: the sign, as LFQ, with the
    gradient of ``tanh``).  ``normalise=True`` first scales each block to norm
    ``sqrt(24)`` (the normalisation of BSQ and of LeechVQ's spherical codebooks, as
    a control)."""

    def __init__(self, levels, blocks, midrise=False, normalise=False):
        super().__init__()
        self.register_buffer("L", torch.tensor(levels, dtype=torch.float32))
        self.blocks, self.midrise, self.normalise = blocks, midrise, normalise
        self.bits = float(sum(math.log2(v) for v in levels))
        self.register_buffer("basis", torch.tensor(np.cumprod([1] + list(levels[:-1])),
                                                   dtype=torch.int64))

    def forward(self, z):
        zb = z.reshape(z.shape[0], self.blocks, -1)
        if self.normalise:  # the BSQ control: each block scaled to norm sqrt(24) first
            zb = zb / zb.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(zb.shape[-1])
        if self.midrise:
            half = self.L / 2
            b = torch.tanh(zb) * half
            r = torch.minimum(torch.floor(b), half - 1) + 0.5
            digits = r + half - 0.5
            half = half - 0.5  # the outermost level, rescaled to 1
        else:
            h = (self.L - 1) * (1 - 1e-3) / 2
            offset = torch.where(self.L % 2 == 0, 0.5, 0.0)
            b = torch.tanh(zb + torch.tan(offset / h)) * h - offset
            r = torch.round(b)
            half = torch.floor(self.L / 2)
            digits = r + half
        q = _ste(b, r) / half
        idx = (digits.to(torch.int64) * self.basis).sum(-1)
        return q.reshape(z.shape), idx, z.new_zeros(())


class LFQ(nn.Module):
    """Lookup-free quantization (Yu et al. 2023): the sign of each number,
    straight-through, no entropy penalty; ``normalise=True`` is BSQ (Zhao et al. 2024):
    the block is first divided by its norm, codes ``sign / sqrt(24)`` (here times
    ``sqrt(24)``, so both give +-1)."""

    def __init__(self, blocks, normalise=False):
        super().__init__()
        self.blocks, self.normalise = blocks, normalise
        self.bits = 24.0
        self.register_buffer("basis", 2 ** torch.arange(24, dtype=torch.int64))

    def forward(self, z):
        zb = z.reshape(z.shape[0], self.blocks, 24)
        if self.normalise:
            zb = zb / zb.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(24.0)
        s = torch.where(zb > 0, 1.0, -1.0)
        idx = ((zb > 0).to(torch.int64) * self.basis).sum(-1)
        return _ste(zb, s).reshape(z.shape), idx, z.new_zeros(())


def _e8_nearest(x):
    """Nearest points of E8 = D8 u (D8 + 1/2) (Conway & Sloane), ``(n, 8)``."""

    def d8(y):
        r = torch.round(y)
        err = y - r
        k = err.abs().argmax(-1, keepdim=True)
        step = torch.where(err.gather(-1, k) >= 0, 1.0, -1.0).to(y.dtype)
        r2 = r.scatter_add(-1, k, step)
        odd = (r.sum(-1, keepdim=True) % 2) != 0
        return torch.where(odd, r2, r)

    a = d8(x)
    b = d8(x - 0.5) + 0.5
    da = ((x - a) ** 2).sum(-1, keepdim=True)
    db = ((x - b) ** 2).sum(-1, keepdim=True)
    return torch.where(db < da, b, a)


def _e8_ball_nearest(y, max_norm, relevant):
    """Nearest point of the E8 ball (norm <= ``max_norm``) to each row of ``y`` ``(n, 8)``:
    the nearest lattice point when it is inside; otherwise a local search: from the
    best nearest lattice point of ``t y`` inside the ball (``t y`` of norm ``f
    sqrt(max_norm)``, ``f`` from 1 down to 0.4, and the origin),
    moves by the Voronoi-relevant vectors of E8 (the 240 of norm 2, then also the 2160
    of norm 4) that stay inside and get nearer, until none does (it agreed with a brute-force search of the ball
    on every overloaded Gaussian block of :func:`check_e8`)."""
    p = _e8_nearest(y)
    over = (p * p).sum(-1) > max_norm + 1e-6
    if not bool(over.any()):
        return p
    yo = y[over]
    best, bd = None, None
    ny = yo.norm(dim=-1, keepdim=True)
    for f in (1.0, 0.9, 0.8, 0.7, 0.55, 0.4, 0.0):  # t y of norm f sqrt(max_norm)
        c = _e8_nearest(yo * (f * math.sqrt(max_norm) / ny))
        ok = (c * c).sum(-1) <= max_norm + 1e-6
        d = torch.where(ok, ((c - yo) ** 2).sum(-1), torch.inf)
        if best is None:
            best, bd = c, d
        else:
            take = d < bd
            best, bd = torch.where(take[:, None], c, best), torch.minimum(d, bd)
    for rel in (relevant[:240], relevant):  # minimal vectors first (cheap), then all
        r2 = (rel * rel).sum(-1)
        for _ in range(32):
            d = bd[:, None] + 2.0 * (best - yo) @ rel.t() + r2[None, :]
            n2 = (best * best).sum(-1, keepdim=True) + 2.0 * best @ rel.t() + r2[None, :]
            dm, k = torch.where(n2 <= max_norm + 1e-6, d, torch.inf).min(1)
            move = dm < bd - 1e-9
            if not bool(move.any()):
                break
            best = torch.where(move[:, None], best + rel[k], best)
            bd = torch.where(move, ((best - yo) ** 2).sum(-1), bd)
    p[over] = best
    return p


class E8Ball(nn.Module):
    """A scaled ball of E8 (norm <= ``max_norm``) on each 8-number sub-block
    (:func:`_e8_ball_nearest`), a learned scale per block position (the gradient of
    learned step size quantization, as ``LeechVQ``'s ball), straight-through."""

    def __init__(self, blocks, max_norm, scale, bound=None):
        super().__init__()
        from leechlib.baselines import e8_ball

        self.bound = bound
        pts = torch.from_numpy(e8_ball(max_norm)).float()
        self.register_buffer("relevant", torch.from_numpy(e8_ball(4)[1:]).float())  # 240 + 2160
        self.max_norm, self.blocks, self.size = max_norm, blocks, len(pts)
        self.bits = 3 * math.log2(self.size)
        self.scale = nn.Parameter(torch.full((blocks, 1, 1), float(scale)))
        r = int(math.isqrt(max_norm)) + 1
        self._base = 4 * r + 1
        keys = self._keys(pts)
        order = torch.argsort(keys)
        self.register_buffer("keys", keys[order])
        self.register_buffer("order", order)

    def _keys(self, p):
        d = torch.round(2 * p).to(torch.int64) + (self._base // 2)
        out = torch.zeros(p.shape[:-1], dtype=torch.int64)
        for j in range(8):
            out = out * self._base + d[..., j]
        return out

    def forward(self, z):
        zb = z.reshape(z.shape[0], self.blocks, 3, 8)
        if self.bound:
            zb = _radial_bound(zb, self.bound * math.sqrt(self.max_norm) * self.scale.detach())
        y = zb / self.scale
        with torch.no_grad():
            p = _e8_ball_nearest(y.detach().reshape(-1, 8), self.max_norm,
                                 self.relevant).reshape(y.shape)
            sub = self.order[torch.searchsorted(self.keys, self._keys(p))]
        q = self.scale * _ste(y, p)
        return q.reshape(z.shape), _pack(sub, self.size), z.new_zeros(())


def check_e8(n=4000, seed=0):
    """Agreement of :func:`_e8_ball_nearest` with a brute-force search of the ball, on
    overloaded unit Gaussian blocks at the fitted scale; prints and returns it."""
    from leechlib.baselines import e8_ball

    out = {}
    for M in (2, 10):
        pts = torch.from_numpy(e8_ball(M)).float()
        y = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 8))).float()
        y = y / _e8_scale(M)
        p = _e8_ball_nearest(y, M, torch.from_numpy(e8_ball(4)[1:]).float())
        over = (_e8_nearest(y) ** 2).sum(-1) > M + 1e-6
        bf = pts[torch.cdist(y[over], pts).argmin(1)]
        same = float((p[over] == bf).all(-1).double().mean())
        dp = float(((p[over] - y[over]) ** 2).sum(-1).mean())
        db = float(((bf - y[over]) ** 2).sum(-1).mean())
        print(f"E8 ball norm<={M}: {int(over.sum())} of {n} Gaussian blocks overloaded; local "
              f"search = brute force on {100 * same:.2f} %, mean squared error {dp:.5f} vs "
              f"{db:.5f}")
        out[M] = same
    return out


class ProductVQ(nn.Module):
    """Learned product VQ: each 24-number block cut into ``m`` sub-vectors, each with
    its own codebook of ``K`` codes (shared by the block positions): VQ-VAE with EMA
    updates (decay 0.99, Laplace smoothing), codes initialised from encoder outputs,
    restart of codes unused over the last 100 steps, commitment 0.25, straight-through."""

    def __init__(self, blocks, m, K, decay=0.99, commitment=0.25, restart_every=100):
        super().__init__()
        self.blocks, self.m, self.K, self.d = blocks, m, K, 24 // m
        self.bits = m * math.log2(K)
        self.decay, self.w, self.restart_every = decay, commitment, restart_every
        self.register_buffer("embed", torch.zeros(m, K, self.d))
        self.register_buffer("cluster", torch.ones(m, K))
        self.register_buffer("embed_sum", torch.zeros(m, K, self.d))
        self.register_buffer("hits", torch.zeros(m, K))
        self.ready, self.steps = False, 0

    def forward(self, z):
        zb = z.reshape(z.shape[0], self.blocks, self.m, self.d)
        f = zb.detach().transpose(0, 2).reshape(self.m, -1, self.d)  # (m, n, d)
        if self.training and not self.ready:
            with torch.no_grad():
                for j in range(self.m):
                    pick = f[j][torch.randint(0, f.shape[1], (self.K,))]
                    self.embed[j] = pick + 0.01 * torch.randn_like(pick)
                self.embed_sum.copy_(self.embed)
            self.ready = True
        with torch.no_grad():
            e2 = (self.embed * self.embed).sum(-1)  # (m, K)
            idx = torch.baddbmm(e2[:, None, :], f, self.embed.transpose(1, 2),
                                alpha=-2.0).argmin(-1)
        q = torch.stack([self.embed[j][idx[j]] for j in range(self.m)])  # (m, n, d)
        if self.training:
            self._ema(f, idx)
        q = q.reshape(self.m, self.blocks, z.shape[0], self.d).transpose(0, 2)  # (N, B, m, d)
        sub = idx.reshape(self.m, self.blocks, z.shape[0]).permute(2, 1, 0)  # (N, B, m)
        loss = self.w * F.mse_loss(zb, q)
        return _ste(zb, q).reshape(z.shape), _pack(sub, self.K), loss

    @torch.no_grad()
    def _ema(self, f, idx):
        for j in range(self.m):
            n = torch.zeros(self.K).index_add_(0, idx[j], torch.ones(idx.shape[1]))
            s = torch.zeros(self.K, self.d).index_add_(0, idx[j], f[j])
            self.cluster[j].mul_(self.decay).add_(n, alpha=1 - self.decay)
            self.embed_sum[j].mul_(self.decay).add_(s, alpha=1 - self.decay)
            tot = self.cluster[j].sum()
            sm = (self.cluster[j] + 1e-5) / (tot + self.K * 1e-5) * tot
            self.embed[j] = self.embed_sum[j] / sm[:, None]
            self.hits[j] += n
        self.steps += 1
        if self.steps % self.restart_every == 0:
            for j in range(self.m):
                dead = self.hits[j] == 0
                nd = int(dead.sum())
                if nd:
                    pick = f[j][torch.randint(0, f.shape[1], (nd,))]
                    self.embed[j][dead] = pick + 0.01 * torch.randn_like(pick)
                    self.embed_sum[j][dead] = self.embed[j][dead]
                    self.cluster[j][dead] = 1.0
            self.hits.zero_()


class Continuous(nn.Module):
    """No quantizer (the reference row): the batch-normalised latent, unquantized;
    ``bits`` is nominal (float32)."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks, self.bits = blocks, 24 * 32.0

    def forward(self, z):
        idx = torch.zeros(z.shape[0], self.blocks, dtype=torch.int64)
        return z, idx, z.new_zeros(())


class Leech(nn.Module):
    """``torch_ext.LeechVQ`` on ``24 B`` numbers (``B`` blocks).  ``bound=rho`` (ball
    only): each block first goes through :func:`_radial_bound` with the radius ``rho``
    times that of the ball (``sqrt(max_norm)`` times the detached learned scale)."""

    def __init__(self, blocks, bound=None, **kwargs):
        super().__init__()
        from torch_ext import LeechVQ

        self.vq = LeechVQ(24 * blocks, **kwargs)
        self.bits = self.vq.bits
        self.blocks, self.bound = blocks, bound
        self.max_norm = kwargs.get("max_norm")

    def forward(self, z):
        if self.bound:
            zb = z.reshape(z.shape[0], self.blocks, 24)
            r = self.bound * math.sqrt(self.max_norm) * self.vq.scale.detach()[:, None]
            z = _radial_bound(zb, r).reshape(z.shape)
        q, idx, aux = self.vq(z)
        return q, idx.reshape(z.shape[0], -1), aux


class ResidualLeech(nn.Module):
    """``torch_ext.ResidualLeechVQ`` on ``24 B`` numbers;
    the stages' indices of a block packed into one int64."""

    def __init__(self, blocks, **kwargs):
        super().__init__()
        from torch_ext import ResidualLeechVQ

        self.vq = ResidualLeechVQ(24 * blocks, **kwargs)
        self.blocks = blocks
        self.bits = float(self.vq.bits)

    def forward(self, z):
        q, idx, aux = self.vq(z)  # idx (N, B, stages)
        return q, _pack(idx, int(self.vq.codebook_size)), aux


# Gaussian-fitted ball scales: BallQuantizer(max_norm=M).fit(standard normal blocks).scale
# and E8Quantizer(max_norm=M).fit(...).scale (leechlib), for latents of unit variance
_LEECH_BALL_SCALE = {6: 1.699, 12: 1.337, 26: 0.9834}
_E8_BALL_SCALE = {2: None, 10: None}


def _e8_scale(max_norm):
    if _E8_BALL_SCALE.get(max_norm) is None:
        from leechlib.baselines import E8Quantizer

        g = np.random.default_rng(0).standard_normal((2000, 8))
        _E8_BALL_SCALE[max_norm] = E8Quantizer(max_norm).fit(g, iters=10).scale
    return _E8_BALL_SCALE[max_norm]


#: the arms: key, label, rate (bits per latent number, nominal) and constructor of the
#: quantizer for ``B`` blocks.  One line an arm.
ARMS = [
    ("float", "no quantizer (continuous latent)", 0, lambda B: Continuous(B)),
    # ---- ~1 bit per latent number (24 bits per 24 numbers)
    ("leech-ball-1", "LeechVQ ball M=6", 1,
     lambda B: Leech(B, codebook="ball", max_norm=6, scale=_LEECH_BALL_SCALE[6])),
    ("leech-sg-1", "LeechVQ shape-gain 1 bit (shell 6, K=1)", 1,
     lambda B: Leech(B, codebook="shape-gain", bits=1)),
    ("leech-sph-1", "LeechVQ shell 6, learned scalar gain", 1,
     lambda B: Leech(B, codebook=6)),
    ("fsq-1", "FSQ [2]*24 (mid-rise)", 1, lambda B: FSQ([2] * 24, B, midrise=True)),
    ("lfq-1", "LFQ 24", 1, lambda B: LFQ(B)),
    ("bsq-1", "BSQ 24", 1, lambda B: LFQ(B, normalise=True)),
    ("e8-1", "E8 ball norm<=2 (x3)", 1, lambda B: E8Ball(B, 2, _e8_scale(2))),
    ("pvq-1", "learned product VQ 2x(12 dims, 4096)", 1, lambda B: ProductVQ(B, 2, 4096)),
    # ---- 2 bits per latent number (48 bits per 24 numbers)
    ("leech-ball-2", "LeechVQ ball M=26", 2,
     lambda B: Leech(B, codebook="ball", max_norm=26, scale=_LEECH_BALL_SCALE[26])),
    ("leech-ball-2-rot", "LeechVQ ball M=26, rotation trick", 2,
     lambda B: Leech(B, codebook="ball", max_norm=26, scale=_LEECH_BALL_SCALE[26],
                     rotation_trick=True)),
    ("leech-ball-2-noise", "LeechVQ ball M=26, noise estimator", 2,
     lambda B: Leech(B, codebook="ball", bits=2, scale=_LEECH_BALL_SCALE[26],
                     estimator="noise")),
    ("leech-ball-2-soft", "LeechVQ ball M=26, soft estimator", 2,
     lambda B: Leech(B, codebook="ball", bits=2, scale=_LEECH_BALL_SCALE[26],
                     estimator="soft")),
    ("leech-rvq-2", "ResidualLeechVQ 2 x ball M=6", 2,
     lambda B: ResidualLeech(B, num_quantizers=2, codebook="ball", max_norm=6,
                             scale=_LEECH_BALL_SCALE[6])),
    ("leech-sph-2", "LeechVQ shell 26, learned scalar gain", 2,
     lambda B: Leech(B, codebook=26)),
    ("leech-sg-2", "LeechVQ shape-gain 2 bits (shell 24, K=3)", 2,
     lambda B: Leech(B, codebook="shape-gain", bits=2)),
    ("fsq-2", "FSQ [4]*24", 2, lambda B: FSQ([4] * 24, B)),
    ("fsqn-2", "FSQ [4]*24 on the L2-normalised block", 2,
     lambda B: FSQ([4] * 24, B, normalise=True)),
    ("e8-2", "E8 ball norm<=10 (x3)", 2, lambda B: E8Ball(B, 10, _e8_scale(10))),
    ("pvq-2", "learned product VQ 4x(6 dims, 4096)", 2, lambda B: ProductVQ(B, 4, 4096)),
]
#: arms of ``--quick``
QUICK_ARMS = ["leech-ball-2", "leech-sph-2", "fsq-2", "leech-ball-1", "fsq-1"]


# ---------------------------------------------------------------------------
# model, training, evaluation
# ---------------------------------------------------------------------------


class ConvAE(nn.Module):
    """Conv encoder -> linear to ``24 B`` numbers -> batch norm (no parameters) ->
    quantizer -> linear -> conv decoder.  ``size`` 8 or 16: convolutions down to a
    4x4 map of ``2 c`` channels (one or two stride-2 4x4 convolutions and a 3x3
    one); the decoder mirrors it with 3x3 convolutions and pixel shuffles (sub-pixel
    upsampling)."""

    def __init__(self, quantizer, blocks, size, c=16):
        super().__init__()
        d = 24 * blocks
        if size == 16:
            down = [nn.Conv2d(1, c, 4, 2, 1), nn.GELU(), nn.Conv2d(c, 2 * c, 4, 2, 1)]
            up = [nn.Conv2d(2 * c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), nn.GELU(),
                  nn.Conv2d(c, 4, 3, 1, 1), nn.PixelShuffle(2)]
        elif size == 8:
            down = [nn.Conv2d(1, c, 3, 1, 1), nn.GELU(), nn.Conv2d(c, 2 * c, 4, 2, 1)]
            up = [nn.Conv2d(2 * c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), nn.GELU(),
                  nn.Conv2d(c, 1, 3, 1, 1)]
        else:
            raise ValueError(f"image size 8 or 16, got {size}")

        def mid():
            return [nn.GELU(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.GELU()]

        self.enc = nn.Sequential(*down, *mid(), nn.Flatten(), nn.Linear(2 * c * 16, d),
                                 nn.BatchNorm1d(d, affine=False))
        self.dec = nn.Sequential(nn.Linear(d, 2 * c * 16), nn.Unflatten(1, (2 * c, 4, 4)),
                                 *mid(), *up)
        self.q = quantizer

    def forward(self, x):
        q, idx, aux = self.q(self.enc(x))
        return self.dec(q), idx, aux


def usage(idx):
    """Distinct codes, perplexity, most/least-used ratio among the codes used."""
    _, counts = torch.unique(idx.reshape(-1), return_counts=True)
    p = counts.double() / counts.sum()
    return (int(counts.numel()), float(torch.exp(-(p * p.log()).sum())),
            float(counts.max()) / float(counts.min()))


_DATA = {}


def get_data(name, quick):
    key = (name, quick)
    if key not in _DATA:
        from _vq_data import DATASETS

        kw = {}
        if quick:
            kw = ({"train_copies": 1, "eval_copies": 1} if name == "digits"
                  else {"n_train": 2000, "n_eval": 500})
        sets, desc = DATASETS[name](**kw)
        _DATA[key] = ({k: torch.from_numpy(v) for k, v in sets.items()}, desc)
    return _DATA[key]


def run_job(job):
    """Train one arm on one data set with one seed; the figures of the run (a dict)."""
    torch.set_num_threads(job["threads"])
    arm = {a[0]: a for a in ARMS}[job["arm"]]
    sets, _ = get_data(job["dataset"], job["quick"])
    x_train, x_eval = sets["train"], sets[job["eval"]]
    B = BLOCKS[job["dataset"]]
    torch.manual_seed(job["seed"])
    model = ConvAE(arm[3](B), B, x_train.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=job["lr"])
    steps, batch = job["steps"], job["batch"]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(job["seed"])
    perm, pos = torch.randperm(len(x_train), generator=g), 0
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch > len(perm):
            perm, pos = torch.randperm(len(x_train), generator=g), 0
        xb = x_train[perm[pos:pos + batch]]
        pos += batch
        recon, _, aux = model(xb)
        loss = F.mse_loss(recon, xb) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    t_train = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        outs = [model(xe) for xe in x_eval.split(1000)]
    recon = torch.cat([o[0] for o in outs])
    idx = torch.cat([o[1] for o in outs])
    mse = float(F.mse_loss(recon, x_eval))
    distinct, ppl, ratio = usage(idx)
    return {**job, "label": arm[1], "rate": arm[2], "bits_block": float(model.q.bits),
            "blocks": B, "mse": mse, "psnr": 10 * math.log10(1.0 / mse), "distinct": distinct,
            "n_blocks": idx.numel(), "perplexity": ppl, "ratio": ratio,
            "ms_step": 1e3 * t_train / steps}


def _worker_init():
    os.environ["NUMBA_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def run_jobs(jobs, workers):
    """Results in job order; ``workers`` processes of one thread (in-process if 1)."""
    if workers <= 1:
        out = []
        for j in jobs:
            out.append(run_job(j))
            _print_run(out[-1])
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    res = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as ex:
        futs = {ex.submit(run_job, j): i for i, j in enumerate(jobs)}
        for f in as_completed(futs):
            res[futs[f]] = f.result()
            _print_run(res[futs[f]])
    return [res[i] for i in range(len(jobs))]


def _print_run(r):
    print(f"  {r['dataset']:<8} {r['label']:<40} seed {r['seed']}  MSE {r['mse']:.5f}  "
          f"PSNR {r['psnr']:6.2f}  distinct {r['distinct']}/{r['n_blocks']}  "
          f"ppl {r['perplexity']:.0f}  {r['ms_step']:.1f} ms/step", flush=True)


# ---------------------------------------------------------------------------
# aggregation and output
# ---------------------------------------------------------------------------


def aggregate(results):
    """One row per (data set, arm): means and spreads over the seeds."""
    rows = {}
    for r in results:
        rows.setdefault((r["dataset"], r["arm"]), []).append(r)
    out = []
    for (ds, arm), rs in rows.items():
        m = np.array([r["mse"] for r in rs])
        p = np.array([r["psnr"] for r in rs])
        r0 = rs[0]
        out.append({
            "dataset": ds, "arm": arm, "label": r0["label"], "rate": r0["rate"],
            "bits_block": r0["bits_block"], "bits_image": r0["bits_block"] * r0["blocks"],
            "bits_dim": r0["bits_block"] / 24, "dims": 24 * r0["blocks"], "seeds": len(rs),
            "mse": m.mean(), "mse_std": m.std(ddof=1) if len(m) > 1 else 0.0,
            "mse_min": m.min(), "mse_max": m.max(), "psnr": p.mean(),
            "psnr_std": p.std(ddof=1) if len(p) > 1 else 0.0,
            "distinct": np.mean([r["distinct"] for r in rs]), "n_blocks": r0["n_blocks"],
            "perplexity": np.mean([r["perplexity"] for r in rs]),
            "ratio": np.mean([r["ratio"] for r in rs]),
            "ms_step": np.mean([r["ms_step"] for r in rs]),
        })
    return out


def rst_table(header, rows):
    cols = list(zip(header, *rows, strict=True))
    w = [max(len(str(c)) for c in col) for col in cols]
    line = "+" + "+".join("-" * (x + 2) for x in w) + "+"
    head = "+" + "+".join("=" * (x + 2) for x in w) + "+"

    def fmt(r):
        return "|" + "|".join(f" {str(c):<{x}} " for c, x in zip(r, w, strict=True)) + "|"

    out = [line, fmt(header), head]
    for r in rows:
        out += [fmt(r), line]
    return "\n".join(out)


def results_table(rows):
    header = ["arm", "bits/image", "bits/dim", "held-out MSE/pixel (mean ± std)",
              "MSE min-max", "PSNR dB (mean ± std)", "distinct codes", "perplexity",
              "most/least used", "ms/step"]
    body = [(r["label"], f"{r['bits_image']:.2f}" if r["rate"] else "(float32)",
             f"{r['bits_dim']:.3f}" if r["rate"] else "(32)",
             f"{r['mse']:.5f} ± {r['mse_std']:.5f}", f"{r['mse_min']:.5f}-{r['mse_max']:.5f}",
             f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}",
             f"{r['distinct']:.0f} / {r['n_blocks']}", f"{r['perplexity']:.0f}",
             f"{r['ratio']:.0f}", f"{r['ms_step']:.1f}") for r in rows]
    return rst_table(header, body)


def _beyond(a, b):
    """``a`` lower than ``b`` beyond the seed spread: the worst seed of ``a`` is better
    than the best seed of ``b``."""
    return a["mse_max"] < b["mse_min"]


#: the LeechVQ arms each verdict line compares with FSQ, by rate: first the one chosen
#: on the validation images (the sphere), then the ball and the shape-gain code
VERDICT_ARMS = {1: ["leech-sph-1", "leech-ball-1", "leech-sg-1"],
                2: ["leech-sph-2", "leech-ball-2", "leech-ball-2-rot", "leech-sg-2"]}


def _cmp(a, b):
    d = 100 * (a["mse"] / b["mse"] - 1)
    if min(a["seeds"], b["seeds"]) < 2:
        how = "one seed, no spread"
    elif _beyond(a, b):
        how = "lower beyond the seed spread"
    elif _beyond(b, a):
        how = "higher beyond the seed spread"
    else:
        how = "within the seed spread"
    return f"{d:+.1f} %, {how}"


def verdicts(rows):
    """Per data set and rate: LeechVQ's arms against FSQ, and the best arm that is not
    LeechVQ against the first LeechVQ arm (held-out MSE, means over the seeds)."""
    lines = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["arm"]: r for r in rows if r["dataset"] == ds}
        for rate, keys in VERDICT_ARMS.items():
            fsq = by.get(f"fsq-{rate}")
            leech = [by[k] for k in keys if k in by]
            if fsq is None or not leech:
                continue
            parts = [f"{r['label']} {r['mse']:.5f} ({_cmp(r, fsq)})" for r in leech]
            others = [r for r in by.values() if r["rate"] == rate
                      and not r["arm"].startswith("leech")]
            best = min(others, key=lambda r: r["mse"])
            line = (f"* **{ds}, {rate} bit{'s' if rate > 1 else ''}/dim**, against "
                    f"{fsq['label']} {fsq['mse']:.5f}: " + "; ".join(parts) + ".")
            if best is not fsq:
                line += (f"  Best other arm: {best['label']} {best['mse']:.5f} "
                         f"({leech[0]['label']}: {_cmp(leech[0], best)}).")
            lines.append(line)
    return "\n".join(lines)


def write_docs(sections):
    path = os.path.join(ROOT, "docs", "vq.rst")
    text = open(path, encoding="utf-8").read()
    for key, body in sections.items():
        pat = re.compile(rf"(\.\. BEGIN GENERATED {key}\n)(.*?)(\n\.\. END GENERATED {key})",
                         re.S)
        if not pat.search(text):
            raise SystemExit(f"docs/vq.rst has no BEGIN/END GENERATED {key} markers")
        text = pat.sub(lambda mt, t=body: mt.group(1) + "\n" + t + "\n" + mt.group(3), text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def search_rows(n, reps):
    """Search cost per 24-number block on unit Gaussian blocks (quantizer forward in eval
    mode, one thread, interleaved repetitions, medians), as ratios to leechlib's
    nearest-minimal-vector kernel in the same run."""
    import leechlib
    from torch_ext import LeechVQ

    rng = np.random.default_rng(7)
    xn = rng.standard_normal((n, 24))
    xt = torch.from_numpy(xn).float()
    arms = {a[0]: a for a in ARMS}
    keys = ("leech-ball-1", "leech-ball-2", "leech-sph-1", "leech-sph-2", "leech-sg-2", "fsq-2",
            "e8-2", "pvq-2")
    mods = {k: arms[k][3](1).eval() for k in keys if k in arms}
    mods["pvq-2"].train()(xt[:4096])  # initialise its codebooks from data
    mods["pvq-2"].eval()
    vq_min = LeechVQ(24, codebook="minimal").eval()
    cases = [("leechlib.nearest_minimal_vector (kernel, reference)",
              lambda: leechlib.nearest_minimal_vector(xn, return_index=True)),
             ("LeechVQ minimal vectors", lambda: vq_min(xt))]
    cases += [(arms[k][1], (lambda m=m: m(xt))) for k, m in mods.items()]
    for _, fn in cases:  # warm up (compilation, tables)
        with torch.no_grad():
            fn()
        torch.set_num_threads(1)
    times = {name: [] for name, _ in cases}
    for _ in range(reps):
        for name, fn in cases:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            times[name].append((time.perf_counter() - t0) / n)
            torch.set_num_threads(1)  # a leechlib call can reset torch's thread count
    ref = float(np.median(times[cases[0][0]]))
    return [(name, 1e6 * float(np.median(times[name])), float(np.median(times[name])) / ref)
            for name, _ in cases]


def estimator_rows(n, reps):
    """Training cost per 24-number block of each gradient estimator of the LeechVQ ball at
    2 bits per number (forward and backward in training mode, one thread, interleaved
    repetitions, medians), as ratios to straight-through in the same run."""
    from torch_ext import LeechVQ

    x = torch.from_numpy(np.random.default_rng(11).standard_normal((n, 24))).float()
    cases = []
    for est in ("ste", "rotation", "noise", "soft"):
        vq = LeechVQ(24, codebook="ball", bits=2, scale=_LEECH_BALL_SCALE[26], estimator=est).train()

        def step(vq=vq):
            xg = x.clone().requires_grad_(True)
            q, _, aux = vq(xg)
            (q.square().sum() + aux).backward()

        cases.append((f"LeechVQ ball M=26, estimator={est!r}", step))
    for _, fn in cases:  # warm up (compilation, noise bank)
        fn()
        torch.set_num_threads(1)
    times = {name: [] for name, _ in cases}
    for _ in range(reps):
        for name, fn in cases:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / n)
            torch.set_num_threads(1)
    ref = float(np.median(times[cases[0][0]]))
    return [(name, 1e6 * float(np.median(times[name])), float(np.median(times[name])) / ref)
            for name, _ in cases]


def cost_sections(quick: bool) -> dict:
    """The generated blocks of the two cost tables (search; estimators)."""
    srows = search_rows(1000 if quick else 10000, 2 if quick else 5)
    erows = estimator_rows(512 if quick else 4096, 2 if quick else 5)
    return {
        "SEARCH": rst_table(["quantizer (eval forward)", "µs/block of 24", "ratio to the kernel"],
                            [(nm, f"{t:.1f}", f"{r:.2f}") for nm, t, r in srows]),
        "ESTIMATORS": rst_table(["estimator (training forward + backward)", "µs/block of 24",
                                 "ratio to straight-through"],
                                [(nm, f"{t:.1f}", f"{r:.2f}") for nm, t, r in erows]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: fewer samples, steps and arms, one seed (about a minute)")
    ap.add_argument("--datasets", default="digits,natural")
    ap.add_argument("--rates", default="0,1,2",
                    help="bits per latent number (the arms' nominal rate; 0: the unquantized "
                         "reference)")
    ap.add_argument("--arms", default=None, help="arm keys, comma-separated (default: all)")
    ap.add_argument("--seeds", default=None, help="default 0,1,2 (--quick: 0)")
    ap.add_argument("--steps", type=int, default=None, help="default 300 (--quick: 40)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval", choices=("test", "val"), default="test",
                    help="report the held-out (test) or the validation images")
    ap.add_argument("--threads", type=int, default=1,
                    help="worker processes of one thread each (1: in this process)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--costs-only", action="store_true",
                    help="only the two cost tables (search, estimators): no training; run it "
                         "on an otherwise idle machine")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    torch.set_num_threads(1)
    if args.costs_only:
        sections = cost_sections(args.quick)
        for body in sections.values():
            print("\n" + body)
        if args.write_docs:
            write_docs(sections)
        return 0
    steps = args.steps or (40 if args.quick else 300)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    datasets = args.datasets.split(",")
    rates = {int(r) for r in args.rates.split(",")}
    keys = args.arms.split(",") if args.arms else (QUICK_ARMS if args.quick else
                                                   [a[0] for a in ARMS])
    arms = [a for a in ARMS if a[0] in keys and a[2] in rates]
    t0 = time.time()
    descs = {ds: get_data(ds, args.quick)[1] for ds in datasets}
    for ds, d in descs.items():
        print(f"{ds}: {d}")
    print(f"{len(arms)} arms x {len(seeds)} seeds x {len(datasets)} data sets, {steps} steps, "
          f"batch {args.batch}, lr {args.lr}, {args.threads} worker(s), eval on {args.eval}",
          flush=True)
    jobs = [{"dataset": ds, "arm": a[0], "seed": s, "steps": steps, "batch": args.batch,
             "lr": args.lr, "eval": args.eval, "quick": args.quick, "threads": 1}
            for ds in datasets for a in arms for s in seeds]
    results = run_jobs(jobs, args.threads)
    rows = aggregate(results)
    total = time.time() - t0
    sections = {}
    for ds in datasets:
        table = results_table([r for r in rows if r["dataset"] == ds])
        sections[f"VQAE {ds.upper()}"] = table
        print(f"\n{ds} ({BLOCKS[ds]} blocks of 24 latent numbers per image, "
              f"{args.eval} split)\n{table}")
    v = verdicts(rows)
    print("\n" + v)
    cpu = platform.processor() or platform.machine()
    run = (f"``python benchmarks/vq_autoencoder.py{' --quick' if args.quick else ''} "
           f"--threads {args.threads} --write-docs``: {len(arms)} arms, seeds "
           f"{', '.join(map(str, seeds))}, {steps} steps of batch {args.batch}; "
           f"{total / 60:.1f} minutes on {os.cpu_count()} cores ({cpu}, "
           f"{args.threads} worker process(es) of one thread), torch {torch.__version__}.")
    sections["VQAE RUN"] = run + "\n\n" + "\n".join(f"* {ds}: {d}." for ds, d in descs.items())
    sections["VQAE VERDICT"] = v
    costs = cost_sections(args.quick)
    sections.update(costs)
    for body in costs.values():
        print("\n" + body)
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.write_docs:
        write_docs(sections)
    return 0


if __name__ == "__main__":
    main()
