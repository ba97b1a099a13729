"""Where the time of the Leech decoder goes: a stage profile from early-return copies.

Usage::

    python benchmarks/decoder_stages.py [--n 50000] [--rounds 20]

For each stage boundary of ``_leech_one`` (the numbered comments of
``leechlib/_kernels/leech.py``) a copy of the kernel module is written to a
temporary folder with ``return <a value read from every table>`` inserted there, and
compiled (uncached).  All copies and the full kernel decode the same Gaussian points
on one thread, in interleaved rounds (the best round counts); a stage's cost is the
difference to the previous boundary.  Indicative only: an early return lets the
compiler drop work whose result is not read.

One more copy counts the candidates whose exact cost is computed (the one with the
least lower bound, then those the pruned search cannot skip) by returning that
count in place of the distance.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (stage that ends at the marker, marker line in _leech_one)
STAGES = [
    ("1-2 reduce mod 8, per-coordinate costs", "        # 3. column tables per coset."),
    ("3 column tables", "        # 4a. lower bounds T"),
    ("4a 256 lower bounds", "        # An upper bound:"),
    ("exact cost of the least bound", "        # 4b. exact search"),
    ("4b pruned search", "        # 5. rebuild the point"),
]
# (``_leech_one`` is defined inside ``make_kernels``: its body is indented by 8)
_KEEP = "        return m[5] + T[7] + dd[9] + cA[3] + float(g[3] + qA[2]) + zB[3] + zO[5]\n"
#: (line, replacement) turning the kernel into a counter of priced candidates
_COUNT = [
    ("        be = -1\n", "        be = -1\n        npriced = 1\n"),
    ("                tv = tv + _candidate_repair(w, lane, g, dd, hoff)\n",
     "                npriced += 1\n                tv = tv + _candidate_repair(w, lane, g, dd, hoff)\n"),
    ("        return dist\n", "        return float(npriced)\n"),
]


def _load(tmp, name, src):
    path = os.path.join(tmp, name + ".py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50000, help="points")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    os.environ["LEECHLIB_NO_CACHE"] = "1"  # copies in a temporary folder: no cache
    import numba

    from leechlib._kernels import leech
    from leechlib._mog import kernel_tables as _tables

    numba.set_num_threads(1)
    src = open(leech.__file__).read()
    t = _tables()
    x = np.random.default_rng(0).normal(size=(args.n, 24))
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, marker in STAGES + [("5 rebuild (full kernel)", None)]:
            s = src
            if marker is not None:
                if marker not in s:
                    raise SystemExit(f"marker {marker.strip()!r} not found in leech.py")
                i = s.index(marker)
                s = s[:i] + _KEEP + s[i:]
            variants.append((label, _load(tmp, f"stage{len(variants)}", s)))
        s = src
        for old, new in _COUNT:
            if s.count(old) != 1:
                raise SystemExit(f"line {old.strip()!r} not found once in leech.py")
            s = s.replace(old, new)
        counter = _load(tmp, "counter", s)
        out = np.empty_like(x)
        dist = np.empty(len(x))
        S8 = float(np.sqrt(8.0))

        def run(mod, ddiv=8.0):
            mod.leech_nearest(x, S8, 1.0, S8, 1.0, ddiv, t["pat"], t["hexa"], t["hoff_leech"],
                              out, dist)

        run(counter, ddiv=1.0)  # dist[k] = the count
        priced = float(dist.mean())
        for _, mod in variants:
            run(mod)  # compile
        best = [np.inf] * len(variants)
        for _ in range(args.rounds):
            for k, (_, mod) in enumerate(variants):
                t0 = time.perf_counter()
                run(mod)
                best[k] = min(best[k], time.perf_counter() - t0)
    us = [b / len(x) * 1e6 for b in best]
    print(f"{args.n} Gaussian points, one thread, best of {args.rounds} interleaved rounds\n")
    print("| stage | µs/point | cumulative |")
    print("|---|---:|---:|")
    prev = 0.0
    for (label, _), u in zip(variants, us, strict=False):
        print(f"| {label} | {u - prev:.2f} | {u:.2f} |")
        prev = u
    print(f"\ncandidates whose exact cost is computed: {priced:.2f} per point on average (of 256)")


if __name__ == "__main__":
    main()
