"""Gaussian benchmark of the Leech lattice quantizers at 2 bits per dimension.

Usage::

    python benchmarks/bench_quantizers.py [--quick] [--bits 2.0] [--sweep]
                                          [--shell-table] [--write-docs]

For an i.i.d. N(0, 1) source (24-dimensional blocks; scales and gain levels fitted
on a training set, MSE measured on an independent test set) it prints a markdown
table of the MSE per dimension (with its standard error), the exact rate in bits
per dimension (gain levels counted), encode/decode time per 24-number block on one
thread and the overload fraction, for

* the Leech ball (spherical shaping, :class:`leechlib.BallQuantizer`),
* the Leech shape-gain quantizer (:class:`leechlib.ShapeGainQuantizer`),
* the spherically shaped E8 ball (:class:`leechlib.baselines.E8Quantizer`),
* Lloyd-Max and uniform 2-bit scalar quantizers (:class:`leechlib.baselines.ScalarQuantizer`),

next to the figures of the LLVQ paper (arXiv:2603.11021) and the rate-distortion
bound ``2**(-2 * bits)``.

``--sweep`` also measures shape-gain configurations (single shells with the most
gain levels that fit, integer gain bits, unions of shells); ``--shell-table``
measures the mean squared sine of the angle to the nearest direction of each
shell (the table :data:`leechlib.quantizers.SHELL_ANGLE_ERROR` the default
shape-gain configuration is chosen with); ``--write-docs`` writes the tables into
``docs/quantization.rst`` between its ``BEGIN/END GENERATED`` markers.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from leechlib import shell_count  # noqa: E402
from leechlib._gains import lloyd_max as _lloyd_max  # noqa: E402
from leechlib._optimize import golden_min  # noqa: E402
from leechlib.baselines import E8Quantizer, ScalarQuantizer, e8_nearest_point  # noqa: E402
from leechlib.constrained import _shell_points  # noqa: E402
from leechlib.decode import nearest_point  # noqa: E402
from leechlib.quantizers import BallQuantizer, ShapeGainQuantizer  # noqa: E402

#: LLVQ (arXiv:2603.11021), Gaussian source, 2 bits/dim, MSE per dimension
PAPER = {
    "Leech shape-gain": 0.078,
    "Leech ball (spherical shaping)": 0.084,
    "E8 ball": 0.103,
    "Lloyd-Max scalar": 0.12,
    "uniform scalar": 0.15,
}


def best_time(fn, reps=3):
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def mse_stats(x, xh):
    per_block = ((x - xh) ** 2).reshape(len(x), -1).mean(axis=1)
    return float(per_block.mean()), float(per_block.std(ddof=1) / math.sqrt(len(per_block)))


def approx_ball_points(y, n_hi, steps=10):
    """An *approximate* ball encoder (ablation): for an overloaded block, the nearest
    lattice point of ``t y`` with the largest ``t`` (bisection) whose nearest point
    lies in the ball, instead of the exact constrained search."""
    p = nearest_point(y, coords="int")
    over = (p * p).sum(axis=1) > n_hi
    if over.any():
        yo = y[over]
        yn = np.linalg.norm(yo, axis=1)
        r = math.sqrt(n_hi)
        lo = np.maximum(r - 4.0, 0.0) / yn
        hi = np.minimum((r + 4.5) / yn, 1.0)
        best = nearest_point(yo * lo[:, None], coords="int")
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            q = nearest_point(yo * mid[:, None], coords="int")
            f = (q * q).sum(axis=1) <= n_hi
            best[f] = q[f]
            lo = np.where(f, mid, lo)
            hi = np.where(f, hi, mid)
        p[over] = best
    return p


def measure(fit, xtr, xte, xt, n_time, width=24):
    """Fit a quantizer and measure it on the test and timing sets.

    ``fit(x)`` returns a fitted quantizer with ``encode``/``decode`` on blocks of
    ``width`` numbers (8 for E8).  Returns the quantizer, the fit time (s), MSE per
    dimension and its standard error, and encode/decode µs per block of 24 numbers.
    Where the quantizer has ``quantize``, its codes are checked to decode to it.
    """
    t0 = time.perf_counter()
    q = fit(xtr.reshape(-1, width))
    fit_s = time.perf_counter() - t0
    xh = q.decode(q.encode(xte.reshape(-1, width))).reshape(-1, 24)
    m, se = mse_stats(xte, xh)
    xw = xt.reshape(-1, width)
    codes = q.encode(xw)
    if hasattr(q, "quantize"):
        assert np.array_equal(q.decode(codes), q.quantize(xw))
    enc = best_time(lambda: q.encode(xw)) / n_time * 1e6
    dec = best_time(lambda: q.decode(codes)) / n_time * 1e6
    return q, fit_s, m, se, enc, dec


def run_main(bits, n_train, n_test, n_time, seed):
    rng = np.random.default_rng(seed)
    xtr = rng.standard_normal((n_train, 24))
    xte = rng.standard_normal((n_test, 24))
    xt = xte[:n_time]
    rows = []

    # Leech ball
    qb, fit_s, m, se, enc, dec = measure(BallQuantizer(bits).fit, xtr, xte, xt, n_time)
    p = nearest_point(xte / qb.scale)
    over = float(((p * p).sum(axis=1) > qb.max_norm + 1e-9).mean())
    rows.append(dict(name="Leech ball (spherical shaping)", bits=qb.bits_per_dim, mse=m, se=se,
                     enc=enc, dec=dec, over=over, fit=fit_s,
                     config=f"norm <= {qb.max_norm}, {qb.size} points, scale {qb.scale:.4f}"))

    # ablation: the same ball with the approximate overload encoder, its own best scale
    n_hi = 8 * qb.max_norm
    xs = xtr[:4000]

    def approx_mse(sc):
        return float(np.mean((approx_ball_points(xs * (math.sqrt(8) / sc), n_hi)
                              * (sc / math.sqrt(8)) - xs) ** 2))

    t0 = time.perf_counter()
    sc, _ = golden_min(approx_mse, 0.5 * qb.scale, 1.5 * qb.scale, 14)
    fit_s = time.perf_counter() - t0
    xh = approx_ball_points(xte * (math.sqrt(8) / sc), n_hi) * (sc / math.sqrt(8))
    m, se = mse_stats(xte, xh)
    enc = best_time(lambda: approx_ball_points(xt * (math.sqrt(8) / sc), n_hi)) / n_time * 1e6
    p = nearest_point(xte / sc)
    over = float(((p * p).sum(axis=1) > qb.max_norm + 1e-9).mean())
    rows.append(dict(name="Leech ball, approximate overload (ablation)", bits=qb.bits_per_dim,
                     mse=m, se=se, enc=enc, dec=float("nan"), over=over, fit=fit_s,
                     config=f"overload: Q(t x) with the largest feasible t; scale {sc:.4f}"))

    # Leech shape-gain
    qs, fit_s, m, se, enc, dec = measure(ShapeGainQuantizer(bits).fit, xtr, xte, xt, n_time)
    rows.append(dict(name="Leech shape-gain", bits=qs.bits_per_dim, mse=m, se=se, enc=enc,
                     dec=dec, over=None, fit=fit_s,
                     config=f"shell{'s' if len(qs.shells) > 1 else ''} "
                            f"{'+'.join(map(str, qs.shells))}, {qs.gain_levels} gain levels"))

    # E8 ball
    qe, fit_s, m, se, enc, dec = measure(E8Quantizer().fit, xtr, xte, xt, n_time, width=8)
    pe = e8_nearest_point(xte.reshape(-1, 8) / qe.scale)
    over = float(((pe * pe).sum(axis=1) > qe.max_norm + 1e-9).mean())
    rows.append(dict(name="E8 ball", bits=qe.bits_per_dim, mse=m, se=se, enc=enc, dec=dec,
                     over=over, fit=fit_s,
                     config=f"norm <= {qe.max_norm}, {qe.size} points per 8 numbers"))

    # scalar
    b_int = int(round(bits))
    for kind, name in (("lloyd-max", "Lloyd-Max scalar"), ("uniform", "uniform scalar")):
        qq, fit_s, m, se, enc, dec = measure(ScalarQuantizer(b_int, kind=kind).fit, xtr, xte,
                                             xt, n_time)
        rows.append(dict(name=name, bits=qq.bits_per_dim, mse=m, se=se, enc=enc, dec=dec,
                         over=None, fit=fit_s, config=f"{2 ** b_int} levels"))
    return rows


def snr_db(mse):
    return -10.0 * math.log10(mse)


def fmt_main(rows, bits, fmt="md"):
    """The main table.  "% of bound": SNR (dB) over the rate-distortion SNR, 6.02 R dB."""
    rd = 2.0 ** (-2.0 * bits)
    at2 = abs(bits - 2.0) < 1e-9
    head = ["quantizer", "bits/dim", "MSE/dim (± s.e.)", "SNR dB", "% of bound",
            "LLVQ paper MSE", "encode µs/block", "decode µs/block", "overload",
            "configuration"]
    body = []
    for r in rows:
        paper = PAPER.get(r["name"]) if at2 else None
        body.append([
            r["name"], f"{r['bits']:.4f}", f"{r['mse']:.4f} ± {r['se']:.4f}",
            f"{snr_db(r['mse']):.2f}", f"{100 * snr_db(r['mse']) / snr_db(rd):.1f} %",
            f"{paper:.3f}" if paper else "—",
            f"{r['enc']:.1f}", f"{r['dec']:.1f}" if r["dec"] == r["dec"] else "—",
            f"{100 * r['over']:.1f} %" if r["over"] is not None else "—", r["config"],
        ])
    body.append(["rate-distortion bound", f"{bits:.4f}", f"{rd:.4f}", f"{snr_db(rd):.2f}",
                 "100.0 %", "0.0625" if at2 else "—", "—", "—", "—",
                 "2^(-2R) for a unit-variance Gaussian"])
    return _table(head, body, fmt)


def _table(head, body, fmt):
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    # reStructuredText grid table
    cols = list(zip(head, *body, strict=False))
    w = [max(len(str(c)) for c in col) for col in cols]
    sep = "+" + "+".join("-" * (k + 2) for k in w) + "+"
    hsep = "+" + "+".join("=" * (k + 2) for k in w) + "+"

    def line(row):
        return "| " + " | ".join(str(c).ljust(k) for c, k in zip(row, w, strict=False)) + " |"

    out = [sep, line(head), hsep]
    for row in body:
        out += [line(row), sep]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# shape-gain sweep and shell table
# ---------------------------------------------------------------------------


def shell_shapes(x, m):
    """Best direction of shell m per row: projections c = <x, v> / ||v||."""
    n_int = 8 * m
    xn = np.linalg.norm(x, axis=1)
    y = x * (math.sqrt(n_int) / xn)[:, None]
    p = _shell_points(y, n_int)
    return (x * p).sum(axis=1) / math.sqrt(n_int)


def run_sweep(bits, n_train, n_test, seed):
    budget = 24.0 * bits
    rng = np.random.default_rng(seed + 1)
    xtr = rng.standard_normal((n_train, 24))
    xte = rng.standard_normal((n_test, 24))
    shells = [m for m in range(12, 30, 2) if math.log2(shell_count(m)) <= budget]
    ctr, cte = {}, {}
    for m in shells:
        ctr[m] = shell_shapes(xtr, m)
        cte[m] = shell_shapes(xte, m)
    configs = []
    for m in shells:
        kmax = int(2.0 ** (budget - math.log2(shell_count(m))) + 1e-9)
        configs.append(((m,), kmax))
        kb = 1 << int(math.floor(math.log2(kmax)))
        if kb != kmax:
            configs.append(((m,), kb))
    for k in range(len(shells) - 1):
        for width in (2, 3):
            us = tuple(shells[k:k + width])
            if len(us) < width:
                continue
            size = sum(shell_count(m) for m in us)
            kmax = int(2.0 ** (budget - math.log2(size)) + 1e-9)
            if kmax >= 1:
                configs.append((us, kmax))
    xx = (xte * xte).sum(axis=1)
    rows = []
    for us, K in configs:
        size = sum(shell_count(m) for m in us)
        # best direction over the union: largest projection (ties: first shell)
        c_tr = np.max(np.stack([ctr[m] for m in us]), axis=0)
        c_te = np.max(np.stack([cte[m] for m in us]), axis=0)
        lv = _lloyd_max(c_tr, K)
        mids = 0.5 * (lv[1:] + lv[:-1])
        g = lv[np.searchsorted(mids, c_te)]
        per_block = (xx - c_te**2 + (c_te - g) ** 2) / 24.0
        rows.append(dict(shells=us, shape_bits=math.log2(size), K=K,
                         bits=(math.log2(size) + math.log2(K)) / 24.0,
                         mse=float(per_block.mean()),
                         se=float(per_block.std(ddof=1) / math.sqrt(len(per_block)))))
    rows.sort(key=lambda r: r["mse"])
    return rows


def fmt_sweep(rows, fmt="md"):
    head = ["shells (norms)", "shape bits", "gain levels", "gain bits", "bits/dim",
            "MSE/dim (± s.e.)"]
    body = [["+".join(map(str, r["shells"])), f"{r['shape_bits']:.2f}", str(r["K"]),
             f"{math.log2(r['K']):.2f}", f"{r['bits']:.4f}",
             f"{r['mse']:.4f} ± {r['se']:.4f}"] for r in rows]
    return _table(head, body, fmt)


def run_shell_table(n, seed):
    rng = np.random.default_rng(seed + 2)
    x = rng.standard_normal((n, 24))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = {}
    for m in range(4, 58, 2):
        n_int = 8 * m
        p = _shell_points(u * math.sqrt(n_int), n_int)
        cos = (u * p).sum(axis=1) / math.sqrt(n_int)
        s2 = 1.0 - cos**2
        out[m] = (float(s2.mean()), float(s2.std(ddof=1) / math.sqrt(n)))
    return out


def write_docs(sections):
    path = os.path.join(ROOT, "docs", "quantization.rst")
    text = open(path, encoding="utf-8").read()
    for key, table in sections.items():
        pat = re.compile(rf"(\.\. BEGIN GENERATED {key}\n)(.*?)(\n\.\. END GENERATED {key})",
                         re.S)
        if not pat.search(text):
            raise SystemExit(f"docs/quantization.rst has no BEGIN/END GENERATED {key} markers")
        text = pat.sub(lambda mt: mt.group(1) + "\n" + table + "\n" + mt.group(3), text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    ap.add_argument("--bits", type=float, default=2.0, help="bits per dimension")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--n-test", type=int, default=None, help="test blocks (default 40000)")
    ap.add_argument("--sweep", action="store_true", help="shape-gain configurations")
    ap.add_argument("--shell-table", action="store_true", help="angle error per shell")
    ap.add_argument("--write-docs", action="store_true", help="update docs/quantization.rst")
    args = ap.parse_args(argv)
    n_train = 1000 if args.quick else 8000
    n_test = args.n_test or (2000 if args.quick else 40000)
    n_time = 500 if args.quick else 4000
    t0 = time.perf_counter()
    rows = run_main(args.bits, n_train, n_test, min(n_time, n_test), args.seed)
    print(f"Gaussian source, {n_test} test blocks of 24 (fit on {n_train} others), "
          f"one thread, seed {args.seed}\n")
    print(fmt_main(rows, args.bits))
    print("\nfit times (s): " + ", ".join(f"{r['name']} {r['fit']:.1f}" for r in rows))
    sections = {"MAIN": fmt_main(rows, args.bits, fmt="rst")}
    if args.sweep:
        srows = run_sweep(args.bits, n_train, n_test // 2, args.seed)
        print("\nShape-gain configurations (best first):\n")
        print(fmt_sweep(srows))
        sections["SWEEP"] = fmt_sweep(srows, fmt="rst")
    if args.shell_table:
        tab = run_shell_table(500 if args.quick else 4000, args.seed)
        print("\nSHELL_ANGLE_ERROR = {")
        for m, (s, se) in tab.items():
            print(f"    {m}: {s:.6f},  # ± {se:.6f}")
        print("}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.write_docs:
        write_docs(sections)
        print("wrote docs/quantization.rst")


if __name__ == "__main__":
    main()
