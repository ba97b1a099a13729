"""A small VQ autoencoder on scikit-learn's digits: LeechVQ against FSQ, LFQ and a learned codebook.

Usage::

    python benchmarks/vq_autoencoder.py [--quick] [--blocks 2] [--epochs N]
                                        [--vq-sizes 1024,4096,16384] [--threads T]
                                        [--write-docs]

Data: the 1797 8x8 digits of :func:`sklearn.datasets.load_digits` (they ship with
scikit-learn: ``pip install -e ".[examples]"``), scaled to [0, 1] and split *by
original image* into a training set (80 %) and a held-out set (20 %), each then
augmented by random shifts of up to one pixel and Gaussian noise (sigma 0.05,
clipped to [0, 1]).  Nothing of a held-out image is seen in training.

Model: an MLP encoder 64 -> 256 -> 256 -> ``B`` blocks of ``d`` numbers followed by a
batch normalisation without affine parameters (the same for every quantizer), a
quantizer per block, an MLP decoder back to 64 pixels; MSE loss plus the
quantizer's auxiliary loss, Adam (lr 5e-3) with a cosine schedule, batch 256, one
seed.  Every quantizer codes a block with (about) the same number of bits, so the
images get the same bits:

* ``LeechVQ`` on the minimal vectors, ``d = 24``, ``log2 196560 = 17.5846`` bits,
  and on the norm-6 shell, ``log2 16773120 = 23.9996`` bits (a learned gain per
  block position, straight-through; the full run adds the rotation trick);
* FSQ (Mentzer et al. 2023): per dimension the bounded ``tanh`` and rounding to
  ``L_i`` levels, straight-through; levels ``[8, 8, 8, 8, 8, 6]`` (17.5850 bits),
  ``[8] * 8`` (24 bits) and, in the full run, ``[7, 6, 6, 6, 5, 5, 5]`` (17.5280);
* LFQ (Yu et al. 2023, MAGVIT-v2): the sign of each of ``d`` dimensions, ``d = 18``
  (18 bits, more than the Leech shell), ``d = 24`` and, in the full run, ``d = 17``;
  straight-through, without the entropy penalty (it sums over all 2^d codes; the
  batch normalisation balances the signs instead) and without a commitment loss
  (with weight 0.25 it used a sixth of the codes and lost 40 % in MSE);
* a learned codebook of ``K`` codes in 24 dimensions (VQ-VAE with EMA codebook
  updates, Laplace smoothing, initialisation from encoder outputs, random restarts
  of codes unused over the last 100 steps, commitment 0.25), ``K`` from 1024 to
  16384 (``--vq-sizes``): larger codebooks than the number of training blocks
  cannot all be trained, and the brute-force search grows with ``K``.

It prints, per quantizer: bits per block, held-out reconstruction MSE per pixel
(with the standard error over held-out images), codebook usage on the held-out set
(distinct codes, their fraction of the codebook, perplexity), training time per
batch (forward, backward, step) and the quantizer's own forward time per block.  A
second table measures the search cost per block on Gaussian blocks: leechlib's
``nearest_minimal_vector`` kernel, the torch op, ``LeechVQ`` forward (minimal
vectors, norm-6 shell) and a brute-force search of a 196 608-code learned codebook,
as ratios to the kernel in the same run.  ``--write-docs`` writes the tables into
``docs/vq.rst``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def _augment(images, copies, rng, *, keep_original):
    """``copies`` shifted and noisy versions of each 8x8 image (values in [0, 1])."""
    out = [images] if keep_original else []
    n = len(images)
    for _ in range(copies):
        shifted = np.zeros_like(images)
        dx = rng.integers(-1, 2, n)
        dy = rng.integers(-1, 2, n)
        for i in range(n):
            img = np.roll(images[i], (dy[i], dx[i]), axis=(0, 1))
            if dy[i] == 1:
                img[0, :] = 0
            elif dy[i] == -1:
                img[-1, :] = 0
            if dx[i] == 1:
                img[:, 0] = 0
            elif dx[i] == -1:
                img[:, -1] = 0
            shifted[i] = img
        noisy = np.clip(shifted + 0.05 * rng.standard_normal(shifted.shape), 0.0, 1.0)
        out.append(noisy)
    return np.concatenate(out).reshape(-1, 64).astype(np.float32)


def load_data(train_copies, test_copies, seed=0):
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float64) / 16.0
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(images))
    n_train = int(0.8 * len(images))
    tr, te = images[perm[:n_train]], images[perm[n_train:]]
    x_train = _augment(tr, train_copies, rng, keep_original=True)
    x_test = _augment(te, test_copies, np.random.default_rng(seed + 1), keep_original=True)
    return torch.from_numpy(x_train), torch.from_numpy(x_test), n_train, len(te)


# ---------------------------------------------------------------------------
# baseline quantizers (minimal, from the papers' definitions)
# ---------------------------------------------------------------------------


class FSQ(nn.Module):
    """Finite scalar quantization: ``round(bound(z))`` per dimension, straight-through.

    ``bound(z) = tanh(z + shift) * h - offset`` with ``h = (L - 1)(1 - eps) / 2``,
    ``offset = 0.5`` for even ``L`` (else 0) and ``shift = atanh(offset / h)``, so
    that ``round`` gives ``L`` integer levels; codes are rescaled to [-1, 1].
    """

    def __init__(self, levels, blocks):
        super().__init__()
        self.levels_list = list(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("L", lv)
        self.block_dim = len(levels)
        self.blocks = blocks
        self.size = int(np.prod(levels))
        self.bits = math.log2(self.size)
        basis = np.cumprod([1] + list(levels[:-1]))
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.int64))
        self.name = f"FSQ {levels}"

    def forward(self, z):
        z = z.reshape(z.shape[0], self.blocks, self.block_dim)
        eps = 1e-3
        h = (self.L - 1) * (1 - eps) / 2
        offset = torch.where(self.L % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / h)
        b = torch.tanh(z + shift) * h - offset
        r = b + (torch.round(b) - b).detach()
        half = torch.floor(self.L / 2)
        q = r / half
        digits = (torch.round(b) + half).to(torch.int64)
        idx = (digits * self.basis).sum(-1)
        return q.reshape(z.shape[0], -1), idx, z.new_zeros(())


class LFQ(nn.Module):
    """Lookup-free quantization: the sign of each dimension (+-1), straight-through,
    with an optional commitment loss; the index is the bit pattern."""

    def __init__(self, bits, blocks, commitment_weight=0.0):
        super().__init__()
        self.block_dim = bits
        self.blocks = blocks
        self.size = 2**bits
        self.bits = float(bits)
        self.w = commitment_weight
        self.register_buffer("basis", 2 ** torch.arange(bits, dtype=torch.int64))
        self.name = f"LFQ {bits} bits"

    def forward(self, z):
        z = z.reshape(z.shape[0], self.blocks, self.block_dim)
        q = torch.where(z > 0, 1.0, -1.0)
        out = z + (q - z).detach()
        idx = ((z > 0).to(torch.int64) * self.basis).sum(-1)
        loss = self.w * F.mse_loss(z, q)
        return out.reshape(z.shape[0], -1), idx, loss


class EMAVQ(nn.Module):
    """VQ-VAE with an EMA codebook (decay 0.99, Laplace smoothing), codes initialised
    from encoder outputs, random restart of codes unused in the last ``restart_every``
    steps, commitment loss 0.25, straight-through."""

    def __init__(self, size, blocks, dim=24, decay=0.99, commitment_weight=0.25,
                 restart_every=100):
        super().__init__()
        self.size, self.block_dim, self.blocks = size, dim, blocks
        self.bits = math.log2(size)
        self.decay, self.w, self.restart_every = decay, commitment_weight, restart_every
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("cluster", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("hits", torch.zeros(size))
        self.ready = False
        self.steps = 0
        self.name = f"learned codebook K={size}"

    def _nearest(self, f):
        out = []
        e2 = (self.embed * self.embed).sum(1)
        for chunk in f.split(1024):
            d = e2[None, :] - 2.0 * chunk @ self.embed.t()
            out.append(d.argmin(1))
        return torch.cat(out)

    @torch.no_grad()
    def _init(self, f):
        reps = math.ceil(self.size / len(f))
        src = f.repeat(reps, 1)[torch.randperm(len(f) * reps)[: self.size]]
        self.embed.copy_(src + 0.01 * f.std() * torch.randn_like(src))
        self.embed_sum.copy_(self.embed)
        self.cluster.fill_(1.0)
        self.ready = True

    def forward(self, z):
        z = z.reshape(z.shape[0], self.blocks, self.block_dim)
        f = z.detach().reshape(-1, self.block_dim)
        if self.training and not self.ready:
            self._init(f)
        idx = self._nearest(f)
        q = self.embed[idx].reshape(z.shape)
        if self.training:
            with torch.no_grad():
                onehot_n = torch.zeros(self.size).index_add_(0, idx, torch.ones(len(idx)))
                sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, f)
                self.cluster.mul_(self.decay).add_(onehot_n, alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
                n = self.cluster.sum()
                smoothed = (self.cluster + 1e-5) / (n + self.size * 1e-5) * n
                self.embed.copy_(self.embed_sum / smoothed[:, None])
                self.hits.add_(onehot_n)
                self.steps += 1
                if self.steps % self.restart_every == 0:
                    dead = self.hits == 0
                    nd = int(dead.sum())
                    if nd:
                        pick = f[torch.randint(0, len(f), (nd,))]
                        self.embed[dead] = pick + 0.01 * f.std() * torch.randn_like(pick)
                        self.embed_sum[dead] = self.embed[dead]
                        self.cluster[dead] = 1.0
                    self.hits.zero_()
        loss = self.w * F.mse_loss(z, q.detach())
        out = z + (q - z).detach()
        return out.reshape(z.shape[0], -1), idx.reshape(z.shape[0], self.blocks), loss


class LeechBlockQuantizer(nn.Module):
    """``torch_ext.LeechVQ`` in the benchmark's interface."""

    def __init__(self, blocks, **kwargs):
        super().__init__()
        from torch_ext import LeechVQ

        self.vq = LeechVQ(24 * blocks, **kwargs)
        self.block_dim, self.blocks = 24, blocks
        self.size = self.vq.codebook_size
        self.bits = self.vq.bits
        cb = kwargs.get("codebook", "minimal")
        extra = ", rotation trick" if kwargs.get("rotation_trick") else ""
        g = kwargs.get("gain", "learned")
        extra += "" if g == "learned" else f", gain={g}"
        self.name = (f"LeechVQ minimal vectors{extra}" if cb == "minimal"
                     else f"LeechVQ shell norm {cb}{extra}")

    def forward(self, z):
        return self.vq(z)


class AE(nn.Module):
    def __init__(self, quantizer, hidden=256, latent_norm=True):
        super().__init__()
        d = quantizer.block_dim * quantizer.blocks
        layers = [nn.Linear(64, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                  nn.Linear(hidden, d)]
        if latent_norm:  # standardise each latent number over the batch
            layers.append(nn.BatchNorm1d(d, affine=False))
        self.enc = nn.Sequential(*layers)
        self.dec = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, 64))
        self.q = quantizer

    def forward(self, x):
        q, idx, aux = self.q(self.enc(x))
        return self.dec(q), idx, aux


# ---------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------


def usage(idx, size):
    flat = idx.reshape(-1)
    _, counts = torch.unique(flat, return_counts=True)
    p = counts.double() / flat.numel()
    return int(counts.numel()), float(torch.exp(-(p * p.log()).sum()))


def train_one(make_quantizer, x_train, x_test, *, epochs, batch, lr, seed, latent_norm=True):
    torch.manual_seed(seed)
    quant = make_quantizer()
    model = AE(quant, latent_norm=latent_norm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x_train) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    t_train, n_batches, t_quant = 0.0, 0, 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(x_train), batch):
            xb = x_train[perm[i : i + batch]]
            t0 = time.perf_counter()
            z = model.enc(xb)
            t1 = time.perf_counter()
            q, _, aux = model.q(z)
            t2 = time.perf_counter()
            loss = F.mse_loss(model.dec(q), xb) + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            t_train += time.perf_counter() - t0
            t_quant += t2 - t1
            n_batches += 1
    model.eval()
    with torch.no_grad():
        recon, idx, _ = model(x_test)
        mse = float(F.mse_loss(recon, x_test))
        err = ((recon - x_test) ** 2).mean(dim=1)
        se = float(err.std() / math.sqrt(len(err)))
    distinct, ppl = usage(idx, quant.size)
    n_blocks = n_batches * batch * quant.blocks
    return {
        "name": quant.name + ("" if latent_norm else ", no latent norm"), "bits": quant.bits,
        "size": quant.size, "mse": mse, "se": se,
        "distinct": distinct, "usage": distinct / quant.size, "perplexity": ppl,
        "blocks_test": idx.numel(), "ms_batch": 1e3 * t_train / n_batches,
        "us_block": 1e6 * t_quant / n_blocks,
    }


def makers(blocks, quick, vq_sizes):
    """The quantizers compared, as (name, constructor) in table order."""
    B = blocks
    out = [
        lambda: LeechBlockQuantizer(B, codebook="minimal"),
        lambda: FSQ([8, 8, 8, 8, 8, 6], B),
        lambda: LFQ(18, B),
        lambda: LeechBlockQuantizer(B, codebook=6),
        lambda: FSQ([8] * 8, B),
        lambda: LFQ(24, B),
    ]
    if not quick:
        out += [
            lambda: LeechBlockQuantizer(B, codebook="minimal", rotation_trick=True),
            lambda: FSQ([7, 6, 6, 6, 5, 5, 5], B),
            lambda: LFQ(17, B),
        ]
    out += [(lambda K=K: EMAVQ(K, B)) for K in vq_sizes]
    return out


def autoencoder_rows(args, blocks, x_train, x_test):
    sizes = [4096] if args.quick else args.vq_sizes
    rows = []
    for make in makers(blocks, args.quick, sizes):
        r = train_one(make, x_train, x_test, epochs=args.epochs, batch=args.batch, lr=args.lr,
                      seed=args.seed)
        rows.append(r)
        print(f"  {r['name']:<44} bits {r['bits']:7.4f}  MSE {r['mse']:.5f} ± {r['se']:.5f}  "
              f"distinct {r['distinct']:6d}  ppl {r['perplexity']:9.1f}  "
              f"{r['ms_batch']:6.1f} ms/batch", flush=True)
    return rows


def search_rows(n, reps, threads):
    """Search cost per block on Gaussian blocks, same run, interleaved, medians."""
    import leechlib
    import torch_ext
    from torch_ext import LeechVQ

    rng = np.random.default_rng(7)
    xn = rng.standard_normal((n, 24))
    xt = torch.from_numpy(xn).float()
    vq_min = LeechVQ(24, codebook="minimal").eval()
    vq_sh6 = LeechVQ(24, codebook=6).eval()
    emb = torch.randn(196608, 24)
    e2 = (emb * emb).sum(1)

    def brute():
        for c in xt.split(1024):
            (e2[None, :] - 2.0 * c @ emb.t()).argmin(1)

    cases = [
        ("leechlib.nearest_minimal_vector (kernel, reference)",
         lambda: leechlib.nearest_minimal_vector(xn, return_index=True)),
        ("torch_ext.nearest_minimal_vector (op)",
         lambda: torch_ext.nearest_minimal_vector(xt, coords="unit", return_index=True)),
        ("LeechVQ minimal vectors, forward", lambda: vq_min(xt)),
        ("LeechVQ norm-6 shell, forward", lambda: vq_sh6(xt)),
        ("learned codebook K=196608, brute-force argmin", brute),
    ]
    for _, fn in cases:  # warm up (compilation, tables)
        with torch.no_grad():
            fn()
        torch.set_num_threads(threads)
    times = {name: [] for name, _ in cases}
    for _ in range(reps):
        for name, fn in cases:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            times[name].append((time.perf_counter() - t0) / n)
            # a leechlib call can reset torch's OpenMP thread count: keep ours
            torch.set_num_threads(threads)
    ref = float(np.median(times[cases[0][0]]))
    return [(name, 1e6 * float(np.median(times[name])), float(np.median(times[name])) / ref)
            for name, _ in cases]


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


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


def write_docs(sections):
    path = os.path.join(ROOT, "docs", "vq.rst")
    text = open(path, encoding="utf-8").read()
    for key, table in sections.items():
        pat = re.compile(rf"(\.\. BEGIN GENERATED {key}\n)(.*?)(\n\.\. END GENERATED {key})",
                         re.S)
        if not pat.search(text):
            raise SystemExit(f"docs/vq.rst has no BEGIN/END GENERATED {key} markers")
        text = pat.sub(lambda mt, t=table: mt.group(1) + "\n" + t + "\n" + mt.group(3), text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, epochs and baselines (~1-2 min)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--blocks", default="2",
                    help="24-number latent blocks per image, comma-separated (default 2)")
    ap.add_argument("--vq-sizes", default="1024,4096,16384",
                    help="learned codebook sizes (--quick: 4096)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch (and Numba) threads")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args.epochs is None:
        args.epochs = 6 if args.quick else 20
    blocks = [int(b) for b in args.blocks.split(",")]
    args.vq_sizes = [int(k) for k in args.vq_sizes.split(",")]
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_copies, test_copies = (6, 4) if args.quick else (10, 4)
    x_train, x_test, n_tr, n_te = load_data(train_copies, test_copies, args.seed)
    print(f"digits: {n_tr} training images x {train_copies + 1} = {len(x_train)} samples, "
          f"{n_te} held-out images x {test_copies + 1} = {len(x_test)} samples; "
          f"{args.epochs} epochs, batch {args.batch}, lr {args.lr}, {args.threads} thread(s)",
          flush=True)
    header = ["quantizer", "bits/block", "held-out MSE/pixel (± s.e.)", "distinct codes",
              "usage", "perplexity", "ms/batch", "quantizer µs/block"]
    sections = {}
    for B in blocks:
        print(f"{B} block(s) of 24 latent numbers per image", flush=True)
        rows = autoencoder_rows(args, B, x_train, x_test)
        sections[f"AUTOENCODER B{B}"] = rst_table(header, [
            (r["name"], f"{r['bits']:.4f}", f"{r['mse']:.5f} ± {r['se']:.5f}",
             f"{r['distinct']} / {r['blocks_test']}", f"{100 * r['usage']:.3g} %",
             f"{r['perplexity']:.0f}", f"{r['ms_batch']:.1f}", f"{r['us_block']:.1f}")
            for r in rows])
    s_rows = search_rows(2000 if args.quick else 20000, 3 if args.quick else 5, args.threads)
    sections["SEARCH"] = rst_table(["search", "µs/block", "ratio to the kernel"],
                                   [(n, f"{t:.1f}", f"{r:.2f}") for n, t, r in s_rows])
    for key, table in sections.items():
        print(f"\n{key}\n{table}")
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.write_docs:
        write_docs(sections)


if __name__ == "__main__":
    main()
