"""Encoder speed of the trio code: the bounded search against the first search, same run, same blocks.

    NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/trio_encode_speed.py [--n 400] [--n-orig 40]

Gaussian N(0, 1) blocks at the scale fitted by ``TrioQuantizer().fit`` (and x3,
overloaded), one thread.  The first search (``benchmarks/trio_original_encoder.py``)
is slow (milliseconds per block): it runs on the first ``--n-orig`` blocks, and the
new search is timed on those same blocks too.  Work per block: the first search's
octet-set scans (16 tier scans of 256 rows each), the new search's octet-set
enumerations (or row scans beyond ``RHO_SCAN``).  Both must give the same distances.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from leechlib._jit import num_threads
from leechlib.trio import TrioQuantizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trio_original_encoder import trio_nearest_original  # noqa: E402


def original(cb, y):
    T = cb.tables
    out = np.zeros(y.shape, dtype=np.int64)
    scans = np.zeros(len(y), dtype=np.int64)
    trio_nearest_original(y, cb.tier_size, T["tab"], T["perm"], T["sign"], T["cls_of"], T["words"], T["combos"],
                          T["allowed"], T["lo"], T["hi"], out, scans)
    return out, scans


def timed(f, *a, **k):
    t = time.perf_counter()
    r = f(*a, **k)
    return time.perf_counter() - t, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="blocks for the new search")
    ap.add_argument("--n-orig", type=int, default=40, help="blocks (the first ones) for the first search")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    q = TrioQuantizer().fit(rng.standard_normal((400, 24)), iters=10)
    cb = q.codebook
    print(f"fitted scale {q.scale:.4f}; one thread")
    with num_threads(1):
        for mult in (1.0, 3.0):
            y = rng.standard_normal((a.n, 24)) * (np.sqrt(8) / q.scale) * mult
            cb.nearest(y[:2])  # compile
            original(cb, y[:2])
            n = a.n if mult == 1.0 else max(a.n // 20, 2)
            y = y[:n]
            k = min(a.n_orig if mult == 1.0 else max(a.n_orig // 8, 2), n)
            t_new, (v_new, s_new) = timed(cb.nearest, y, return_scans=True)
            t_new_k, (v_new_k, _) = timed(cb.nearest, y[:k], return_scans=True)
            t_old, (v_old, s_old) = timed(original, cb, y[:k])
            d_new = ((y[:k] - v_new_k) ** 2).sum(1)
            d_old = ((y[:k] - v_old) ** 2).sum(1)
            same = np.allclose(d_new, d_old, rtol=1e-12, atol=1e-9)
            print(f"x{mult:g}: new search {t_new / n * 1e6:9.1f} us/block on {n} blocks "
                  f"({s_new.mean():.1f} set enumerations/block, median {np.median(s_new):.0f}, max {s_new.max()})")
            print(f"     first {k} blocks: new {t_new_k / k * 1e6:9.1f} us/block, first search "
                  f"{t_old / k * 1e6:9.1f} us/block ({s_old.mean():.1f} octet-set scans = "
                  f"{16 * s_old.mean():.0f} tier scans/block); same distances: {same}")


if __name__ == "__main__":
    main()
