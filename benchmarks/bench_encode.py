"""Encoding speed of the Leech quantizers: the current encoders against the original ones.

Usage::

    python benchmarks/bench_encode.py [--blocks 20000] [--rates 2.0 1.5] [--reps 3]
                                      [--workers 1] [--stats]

For :class:`leechlib.ShapeGainQuantizer` and :class:`leechlib.BallQuantizer` at each
rate, on two sources,

* ``gaussian``: i.i.d. N(0, 1) blocks of 24;
* ``t-hadamard``: "real-ish" weights, rows of Student-t entries (3 degrees of
  freedom, a random scale per row) rotated by a randomized Hadamard transform
  (random signs, then the orthonormal Walsh--Hadamard matrix of size 2048), cut
  into blocks of 24,

it times ``q.encode`` (the fused kernels of :mod:`leechlib._kernels.encode`)
and the original encoders kept in ``benchmarks/original_encoders.py``, in the same run,
interleaved, ``--reps`` times each (the minimum is reported), with ``workers``
threads (default one), and prints a markdown table: microseconds per block for
both, their ratio and whether the codes are identical.  Each quantizer is fitted
on the first 2000 blocks of its source; both encoders are warmed up (compiled)
before timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# original_encoders.py lies beside this script (on the path when it runs as one, not
# when the tests load it)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import original_encoders as original  # noqa: E402

from leechlib.quantizers import BallQuantizer, ShapeGainQuantizer  # noqa: E402


def hadamard_rows(w: np.ndarray, rng) -> np.ndarray:
    """Rows of ``w`` (m, 2**k) times ``diag(signs) H / sqrt(2**k)`` (fast Walsh--Hadamard)."""
    m, n = w.shape
    if n & (n - 1):
        raise ValueError(f"the row length must be a power of two, got {n}")
    x = w * rng.choice([-1.0, 1.0], size=n)
    h = 1
    while h < n:
        x = x.reshape(m, n // (2 * h), 2, h)
        a = x[:, :, 0, :] + x[:, :, 1, :]
        b = x[:, :, 0, :] - x[:, :, 1, :]
        x = np.stack([a, b], axis=2)
        h *= 2
    return x.reshape(m, n) / np.sqrt(n)


def sources(n_blocks: int, seed: int = 0) -> dict:
    """The two block sources (each ``(n_blocks, 24)`` float64)."""
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal((n_blocks, 24))
    n = 2048
    rows = -(-n_blocks * 24 // n)
    w = rng.standard_t(3, size=(rows, n)) * rng.uniform(0.5, 2.0, size=(rows, 1))
    t = hadamard_rows(w, rng).ravel()[: n_blocks * 24].reshape(n_blocks, 24)
    return {"gaussian": gauss, "t-hadamard": t}


def _time(fn, x, workers):
    t0 = time.perf_counter()
    out = fn(x, workers)
    return time.perf_counter() - t0, out


def measure(n_blocks: int, rates, reps: int, workers: int) -> list:
    """Rows ``(source, quantizer, bits/dim, original us, new us, ratio, identical)``."""
    rows = []
    for src, x in sources(n_blocks).items():
        fit = x[:2000]
        for bits in rates:
            for name, q, old in (
                ("shape-gain", ShapeGainQuantizer(bits), original.shape_gain_encode),
                ("ball", BallQuantizer(bits), original.ball_encode),
            ):
                q.fit(fit, workers=workers)
                q.prepare()

                def new(x, w, q=q):
                    return q.encode(x, workers=w)

                def ref(x, w, q=q, old=old):
                    return old(q, x, workers=w)

                new(x[:64], workers)  # compile and warm up both
                ref(x[:64], workers)
                t_new, t_old = [], []
                same = True
                for _ in range(reps):
                    dt, a = _time(new, x, workers)
                    t_new.append(dt)
                    dt, b = _time(ref, x, workers)
                    t_old.append(dt)
                    same &= bool(np.array_equal(a, b))
                us_new = min(t_new) / len(x) * 1e6
                us_old = min(t_old) / len(x) * 1e6
                rows.append((src, name, q.bits_per_dim, us_old, us_new, us_old / us_new, same))
    return rows


def table(rows) -> str:
    lines = ["| source | quantizer | bits/dim | original µs/block | new µs/block | speed-up "
             "| identical codes |",
             "|---|---|---|---|---|---|---|"]
    for src, name, bits, old, new, ratio, same in rows:
        lines.append(f"| {src} | {name} | {bits:.4f} | {old:.1f} | {new:.1f} | {ratio:.2f}x "
                     f"| {'yes' if same else 'NO'} |")
    return "\n".join(lines)


def search_stats(n_blocks: int, rates) -> str:
    """How the new encoders decide the blocks (one thread): per source, quantizer and
    rate, the share of blocks decided by decodes alone (the nearest lattice point, or
    an exact shortcut: the shell's scaled decode, a ball probe on the outer shell) and
    the cosets the search visits per searched block (mean, 99th percentile, max)."""
    import math

    from leechlib.constrained import _ball_points, _shell_points

    lines = ["| source | quantizer | bits/dim | blocks searched | cosets visited: mean | p99 | max |",
             "|---|---|---|---|---|---|---|"]
    for src, x in sources(n_blocks).items():
        for bits in rates:
            sg = ShapeGainQuantizer(bits).fit(x[:2000])
            ball = BallQuantizer(bits).fit(x[:2000])
            n = 8 * sg.shells[0]
            u = x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(n)
            _, _, vs = _shell_points(u, n, return_stats=True)
            y = x * (math.sqrt(8.0) / ball.scale)
            _, over, vb = _ball_points(y, 8 * ball.max_norm, return_stats=True)
            for name, q, searched in (("shape-gain", sg, vs > 0), ("ball", ball, vb > 0)):
                v = (vs if name == "shape-gain" else vb)[searched]
                lines.append(f"| {src} | {name} | {q.bits_per_dim:.4f} | {searched.mean():.1%} | "
                             f"{v.mean():.2f} | {np.percentile(v, 99):.0f} | {v.max()} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--rates", type=float, nargs="+", default=[2.0, 1.5])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--stats", action="store_true",
                    help="also print how the blocks are decided (searched share, cosets visited)")
    args = ap.parse_args(argv)
    rows = measure(args.blocks, args.rates, args.reps, args.workers)
    print(f"{args.blocks} blocks per source, workers={args.workers}, min of {args.reps} "
          "interleaved runs\n")
    print(table(rows))
    if args.stats:
        print("\n" + search_stats(args.blocks, args.rates))
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
