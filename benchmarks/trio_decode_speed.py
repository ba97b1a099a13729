"""Decode speed of the trio code (Numba, numpy reference) against BallCodebook(26).point, same run.

    NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/trio_decode_speed.py
"""

import time

import numpy as np

from leechlib import BallCodebook
from leechlib.trio import TrioCodebook


def timed(f, *a, **k):
    t = time.perf_counter()
    f(*a, **k)
    return time.perf_counter() - t


def main(n=200_000):
    rng = np.random.default_rng(0)
    cb = TrioCodebook()
    idx = rng.integers(0, cb.size, n)
    cb.point(idx[:10])  # compile
    rows = [("trio numba", timed(cb.point, idx)), ("trio numpy ref", timed(cb.point, idx, reference=True))]
    bc = BallCodebook(26)
    bi = rng.integers(0, len(bc), n)
    bc.point(bi[:10])
    rows.append(("BallCodebook(26).point", timed(bc.point, bi)))
    for name, s in rows:
        print(f"{name:24s} {s / n * 1e9:8.1f} ns/block {24 * n / s / 1e6:8.1f} Mweights/s")


if __name__ == "__main__":
    main()
