"""Agreement of the decoders on hard and tied inputs, at a larger scale than the tests.

Usage::

    python benchmarks/decoder_agreement.py [--quick]

1. ``nearest_point`` (Numba) against the numpy brute force over the 8192 cosets of
   4D24 (the squared distances must agree): Gaussian points at scales 0.5-100,
   points near deep holes (a deep hole plus lattice vectors plus noise down to
   1e-9) and near Voronoi faces (half-sums of two minimal vectors plus noise).
2. Exact ties (integer and dyadic points in the integer frame, where all arithmetic
   is exact): leechlib's kernels against the pure-torch decoders of ``torch_ext``
   (the CUDA fallback), bitwise -- nearest point and nearest minimal vector.  Needs
   torch; skipped without it.

Prints the counts; every count of differences should be 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import leechlib  # noqa: E402
from leechlib._kernels import reference as ref  # noqa: E402


def brute_force_rows(rng, n):
    """(label, points in the integer frame) of the hard cases."""
    mv = leechlib.LeechLattice().minimal_vectors(coords="int").astype(np.float64)
    rows = [(f"Gaussian x{sc:g}", rng.normal(size=(n, 24)) * sc)
            for sc in (0.5, 1.0, 2.0, 3.0, 8.0, 100.0)]
    for k in range(4):
        base = np.zeros((n, 24))
        base[:, k] = 4.0
        base += mv[rng.integers(0, len(mv), n)] * rng.integers(-2, 3, (n, 1))
        noise = 10.0 ** rng.uniform(-9, -1, (n, 1))
        rows.append((f"deep hole (4 e_{k}) + lattice + noise", base + rng.normal(size=base.shape) * noise))
        half = (mv[rng.integers(0, len(mv), n)] + mv[rng.integers(0, len(mv), n)]) / 2
        rows.append(("Voronoi face (half-sum) + 1e-3 noise", half + rng.normal(size=(n, 24)) * 1e-3))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(123)
    n_bf = 100 if args.quick else 400
    n_tie = 5000 if args.quick else 40000
    t0 = time.perf_counter()

    print("## nearest_point against the brute force (integer frame)\n")
    print("| case | points | distance differs from the brute force |")
    print("|---|---:|---:|")
    tot = bad = 0
    for label, y in brute_force_rows(rng, n_bf):
        p = leechlib.nearest_point(y, coords="int")
        _, rd, _ = ref.leech_nearest_ref(y)
        d = ((y - p) ** 2).sum(1)
        worse = int((~np.isclose(d, rd, rtol=0, atol=1e-9 * max(1.0, float(np.abs(y).max()) ** 2))).sum())
        tot += len(y)
        bad += worse
        print(f"| {label} | {len(y)} | {worse} |")
    print(f"| all | {tot} | {bad} |\n")

    try:
        import torch

        from torch_ext.ops._decoder import leech_nearest_int, nearest_minvec_int
    except ImportError:
        print("torch not installed: exact-tie agreement with the pure-torch decoders skipped")
        return
    print("## exact ties: leechlib against the pure-torch decoders (bitwise)\n")
    print("| op | inputs | points | rows that differ |")
    print("|---|---|---:|---:|")
    for lo, hi, div in [(-1, 2, 1), (-2, 3, 1), (-4, 5, 1), (-8, 9, 2), (-8, 9, 4),
                        (-16, 17, 8), (-100, 101, 1), (0, 2, 0.25)]:
        y = rng.integers(lo, hi, (n_tie, 24)) / div
        a = leechlib.nearest_point(y, coords="int")
        b = leech_nearest_int(torch.from_numpy(y)).numpy()
        print(f"| nearest point | integers in [{lo}, {hi}) / {div:g} | {n_tie} | "
              f"{int((a != b).any(1).sum())} |")
    for lo, hi in [(-1, 2), (-3, 4), (0, 3)]:
        y = rng.integers(lo, hi, (n_tie, 24)).astype(np.float64)
        y[(y == 0).all(1), 0] = 1.0
        _, i = leechlib.nearest_minimal_vector(y, coords="int", return_index=True)
        j = nearest_minvec_int(torch.from_numpy(y)).numpy()
        print(f"| nearest minimal vector | integers in [{lo}, {hi}) | {n_tie} | {int((i != j).sum())} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
