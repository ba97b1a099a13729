"""Speed of the RTN scale search: the row-chunked form against the whole-array reference.

Usage::

    python benchmarks/bench_rtn_scales.py [--reps 3] [--bits 2 3 4]

For weights of the shapes of all-MiniLM-L6-v2's layers (384 × 384, 1536 × 384 and
384 × 1536; Student-t entries with 3 degrees of freedom and a random scale per
row, so that rows differ as in trained layers), one float scale per row, it times
:func:`torch_ext.quantize.codecs._rtn_scales` (a chunk of rows at a time, in place)
and :func:`~torch_ext.quantize.codecs._rtn_scales_reference` (the whole array per
grid point) in the same run, interleaved, ``--reps`` times each (minimum kept), and
prints a markdown table: milliseconds per layer for both, their ratio and whether
the scales are bitwise equal.  Numpy only: set ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
for the thread count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = [(384, 384), (1536, 384), (384, 1536)]


def _layer(out_f, in_f, rng):
    from torch_ext.quantize import BlockLayout

    W = rng.standard_t(3, size=(out_f, in_f)) * rng.uniform(0.2, 2.0, size=(out_f, 1))
    L = BlockLayout(out_f, in_f, 1, "row")
    blocks = W[:, :, None]
    rms = np.sqrt((W * W).mean(axis=1, keepdims=True))
    return blocks, L, rms


def main(argv=None) -> int:
    from torch_ext.quantize.codecs import _rtn_scales, _rtn_scales_reference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    rng = np.random.default_rng(0)
    rows = ["| layer (out × in) | bits | reference ms | chunked ms | speed-up | same scales |",
            "|---|---:|---:|---:|---:|---|"]
    for out_f, in_f in SHAPES:
        blocks, L, rms = _layer(out_f, in_f, rng)
        for bits in args.bits:
            t = {"ref": [], "new": []}
            for _ in range(args.reps):
                for key, fn in (("new", _rtn_scales), ("ref", _rtn_scales_reference)):
                    t0 = time.perf_counter()
                    s = fn(blocks, L, rms, 2 ** bits)
                    t[key].append(time.perf_counter() - t0)
                    if key == "new":
                        a = s
                    else:
                        same = np.array_equal(a, s)
            r, n = min(t["ref"]) * 1e3, min(t["new"]) * 1e3
            rows.append(f"| {out_f} × {in_f} | {bits} | {r:,.1f} | {n:,.1f} | {r / n:.2f}× | "
                        f"{'yes' if same else 'NO'} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
