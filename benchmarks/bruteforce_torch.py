"""The naive exact Leech decoder in torch: every one of the 8192 cosets of 4·D24.

The reference that the fast decoders are measured against on any torch device.
√8·Λ24 (integer model) is the union over Golay codewords ``u`` and ``eps in {0, 1}``
of ``eps + 2u + 4·Z^24`` restricted to the points whose ``4Z`` offsets have parity
``eps`` (see docs/decoding.rst).  For one coset, the best point takes each coordinate
to its nearest value in ``a + 8Z`` or ``a + 4 + 8Z`` (residue ``a = eps + 2 u_i``) and,
if the parity of the offsets is wrong, moves the cheapest coordinate one step of 4.
This module evaluates that for all 8192 cosets (a ``(points, 4096, 24)`` tensor per
``eps``) and keeps the least squared distance: about 600 000 operations per point,
the cost the structured decoders avoid.

Usage::

    python benchmarks/bruteforce_torch.py --n 4096            # CPU: agreement + points/s
    python benchmarks/bruteforce_torch.py --n 65536 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

_WORDS: dict = {}


def _words(device) -> torch.Tensor:
    key = str(device)
    if key not in _WORDS:
        from leechlib import GolayCode

        w = np.asarray(GolayCode().codewords(), dtype=bool)
        _WORDS[key] = torch.from_numpy(w).to(device)
    return _WORDS[key]


def brute_force_distance(y: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """Least squared distance from each row of ``y`` (integer frame) to √8·Λ24.

    Parameters
    ----------
    y : torch.Tensor, shape (n, 24)
        float32 or float64 points in the integer frame (computed in float64).
    chunk : int
        Rows per pass; memory is about ``chunk * 4096 * 24 * 8`` bytes per temporary.

    Returns
    -------
    torch.Tensor, shape (n,)
        float64 squared distances.
    """
    y = y.to(torch.float64).reshape(-1, 24)
    words = _words(y.device)  # (4096, 24) bool
    out = torch.empty(y.shape[0], dtype=torch.float64, device=y.device)
    for lo in range(0, y.shape[0], chunk):
        yy = y[lo:lo + chunk]
        a = torch.arange(4, device=y.device, dtype=torch.float64)
        k = torch.round((yy[..., None] - a) / 4.0)  # (c, 24, 4)
        v = a + 4.0 * k
        cost = (yy[..., None] - v) ** 2
        par = torch.remainder(k, 2.0)
        step = torch.where(yy[..., None] >= v, 4.0, -4.0)
        pen = (yy[..., None] - (v + step)) ** 2 - cost
        best = None
        for eps in (0, 1):
            sel = words[None]  # (1, 4096, 24)
            c = torch.where(sel, cost[:, None, :, eps + 2], cost[:, None, :, eps]).sum(-1)
            q = torch.where(sel, par[:, None, :, eps + 2], par[:, None, :, eps]).sum(-1)
            p = torch.where(sel, pen[:, None, :, eps + 2], pen[:, None, :, eps]).amin(-1)
            tot = c + torch.where(torch.remainder(q, 2.0) != eps, p, torch.zeros_like(p))
            m = tot.amin(-1)
            best = m if best is None else torch.minimum(best, m)
        out[lo:lo + chunk] = best
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048, help="points")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=None)
    args = p.parse_args(argv)
    import torch_ext

    dev = torch.device(args.device)
    chunk = args.chunk or (2048 if dev.type == "cuda" else 64)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.n, 24, generator=g) * 1.5).to(dev)
    y = x.double() * np.sqrt(8.0)
    brute_force_distance(y[:chunk], chunk=chunk)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    d_ref = brute_force_distance(y, chunk=chunk)
    _sync(dev)
    t_ref = time.perf_counter() - t0
    torch_ext.nearest_point(y, coords="int")  # warm-up (compile, tables)
    _sync(dev)
    t0 = time.perf_counter()
    q = torch_ext.nearest_point(y, coords="int")
    _sync(dev)
    t_fast = time.perf_counter() - t0
    d_fast = ((y - q) ** 2).sum(-1)
    err = float(((d_fast - d_ref).abs() / d_ref.clamp_min(1e-300)).max())
    print("float64 input, integer frame\n\n| path | device | points | points/s |\n|---|---|---:|---:|")
    print(f"| brute force, 8192 cosets (torch) | {dev} | {args.n:,} | {args.n / t_ref:,.0f} |")
    print(f"| torch_ext.nearest_point | {dev} | {args.n:,} | {args.n / t_fast:,.0f} |")
    print(f"\nspeed-up {t_ref / t_fast:,.0f}x; max relative distance difference {err:.1e}")
    return 0 if err < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
