"""The ``leechlib`` command line.

``leechlib info``  recomputes every invariant of the Golay code and the Leech
lattice live and prints a pass/fail table (exit status 1 if any fails).

``leechlib demo``  the main job on embedded defaults: a tour of the code, the
lattice and the decoder, with timings, then (with torch) ``leechlib lila demo``.

``leechlib lila ...``  the LILA commands, which live in torch_ext
(:func:`torch_ext.lila.cli.main`); ``_torch_ext_cli`` below is the one, lazy, import of
torch_ext in leechlib.

Only this module prints; the library itself never does.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

__all__ = ["main", "invariant_checks"]


class _Check:
    def __init__(self, group: str, name: str, expected, compute: Callable[[], object]):
        self.group, self.name, self.expected, self.compute = group, name, expected, compute


def invariant_checks() -> list[_Check]:
    """The invariants ``leechlib info`` recomputes, as (group, name, expected, thunk)."""
    import itertools

    from . import GolayCode, LeechLattice, hexacode_words, shell_count, theta_series

    code = GolayCode()
    lat = LeechLattice()

    def weights():
        w = code.weight_enumerator()
        return {i: int(c) for i, c in enumerate(w) if c}

    def min_distance():
        w = code.codewords().sum(axis=1)
        return int(w[w > 0].min())

    def self_dual():
        g = code.G.astype(int)
        return bool(np.all((g @ g.T) % 2 == 0)) and g.shape == (12, 24)

    def steiner():
        seen = set()
        for o in code.octads().tolist():
            for five in itertools.combinations(o, 5):
                if five in seen:
                    return False
                seen.add(five)
        return len(seen) == 42504

    def hexa():
        h = hexacode_words()
        return {k: int(v) for k, v in enumerate(np.bincount((h != 0).sum(axis=1))) if v}

    def gram():
        import sympy

        g = lat.gram_matrix(coords="int")
        m = sympy.Matrix((g // 8).tolist())
        even = all(int(m[i, i]) % 2 == 0 for i in range(24))
        return (int(m.det()), bool(np.all(g % 8 == 0)), even)

    def minimal():
        v = lat.minimal_vectors(coords="int")
        a = np.abs(v).max(axis=1)
        ok = lat.contains(v, coords="int").all()
        norms = set(np.unique((v.astype(np.int32) ** 2).sum(axis=1)).tolist())
        return (int((a == 4).sum()), int((a == 2).sum()), int((a == 3).sum()), bool(ok), norms)

    def inner_products():
        v = lat.minimal_vectors(coords="int").astype(np.int32)
        rng = np.random.default_rng(0)
        s = v[rng.choice(len(v), 200, replace=False)]
        return sorted(set((np.unique(s @ v.T) // 8).tolist()))

    def shell6():
        return sum(len(c) for c in lat.shell(6, coords="int", chunk_size=1 << 20))

    def automorphism():
        A = lat.random_automorphism(rng=0)
        v = lat.minimal_vectors(coords="int").astype(np.float64)
        w = v @ A.T
        same = {r.tobytes() for r in v.astype(np.int8)} == {
            r.tobytes() for r in w.astype(np.int8)
        }
        return bool(np.array_equal(A @ A.T, np.eye(24))) and same

    def decoder_exact():
        from . import nearest_point
        from ._kernels.reference import leech_nearest_ref

        rng = np.random.default_rng(1)
        y = rng.standard_normal((100, 24)) * 4.0
        q = nearest_point(y, coords="int")
        ref, _, _ = leech_nearest_ref(y)
        d_fast = ((y - q) ** 2).sum(axis=1)
        d_ref = ((y - ref) ** 2).sum(axis=1)
        return bool(np.allclose(d_fast, d_ref, rtol=1e-12, atol=1e-12)) and bool(
            lat.contains(q, coords="int").all()
        )

    def deep_hole():
        from . import nearest_point

        h = np.zeros(24)
        h[0] = 4.0
        _, d2 = nearest_point(h, coords="int", return_distance=True)
        return float(d2) / 8.0

    def nsm():
        from . import nearest_point

        rng = np.random.default_rng(2)
        u = rng.random((400_000, 24)) @ lat.generator_matrix()
        _, d2 = nearest_point(u, return_distance=True, workers=-1)
        g = d2.mean() / 24.0
        se = d2.std() / 24.0 / np.sqrt(len(d2))
        return abs(g - 0.065753) < max(4 * se, 3e-5), round(float(g), 6)

    checks = [
        _Check("Golay", "codewords", 4096, lambda: len(code.codewords())),
        _Check("Golay", "weight enumerator", {0: 1, 8: 759, 12: 2576, 16: 759, 24: 1}, weights),
        _Check("Golay", "minimum distance", 8, min_distance),
        _Check("Golay", "self-dual (G Gᵀ = 0, k = 12)", True, self_dual),
        _Check("Golay", "octads form S(5,8,24)", True, steiner),
        _Check("Golay", "octads", 759, lambda: len(code.octads())),
        _Check("Golay", "sextets", 1771, lambda: len(code.sextets())),
        _Check("Golay", "hexacode weights", {0: 1, 4: 45, 6: 18}, hexa),
        _Check("Golay", "|M24| (sympy Schreier–Sims)", 244823040, code.automorphism_group_order),
        _Check("Leech", "det Gram, Gram int, even", (1, True, True), gram),
        _Check(
            "Leech",
            "minimal vectors by shape, in Λ, norm",
            (1104, 97152, 98304, True, {32}),
            minimal,
        ),
        _Check("Leech", "inner products of minimal vectors", [-4, -2, -1, 0, 1, 2, 4], inner_products),
        _Check("Leech", "vectors of norm 2", 0, lambda: shell_count(2)),
        _Check(
            "Leech",
            "theta series (E12 − 65520/691 Δ)",
            [1, 0, 196560, 16773120, 398034000, 4629381120, 34417656000],
            lambda: theta_series(7),
        ),
        _Check(
            "Leech",
            "theta = structural shell counts (k < 14)",
            True,
            lambda: theta_series(14) == [shell_count(2 * k) for k in range(14)],
        ),
        _Check("Leech", "norm-6 shell enumerated", 16773120, shell6),
        _Check("Leech", "random automorphism permutes Λ(4)", True, automorphism),
        _Check("Decode", "exact vs brute force (100 points)", True, decoder_exact),
        _Check("Decode", "deep hole (4,0²³)/√8: distance² = ρ² = 2", 2.0, deep_hole),
        _Check("Decode", "NSM within 4σ of 0.065753 (4·10⁵ pts)", True, lambda: nsm()[0]),
    ]
    return checks


def _fmt(v, width=44) -> str:
    s = str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def cmd_info(args) -> int:
    from . import __version__

    print(f"leechlib {__version__}: invariants, each recomputed now\n")
    header = f"{'':6} {'invariant':42} {'expected':44} {'status':6} {'time':>7}"
    print(header)
    print("-" * len(header))
    failed = 0
    for chk in invariant_checks():
        t0 = time.perf_counter()
        try:
            got = chk.compute()
            ok = got == chk.expected
        except Exception as exc:  # report, don't crash the table
            got, ok = f"error: {exc}", False
        dt = time.perf_counter() - t0
        failed += not ok
        status = "PASS" if ok else "FAIL"
        print(f"{chk.group:6} {chk.name:42} {_fmt(chk.expected):44} {status:6} {dt:6.2f}s")
        if not ok:
            print(f"{'':6} {'  computed:':42} {_fmt(got)}")
    print()
    print("all invariants hold" if not failed else f"{failed} invariant(s) FAILED")
    return 1 if failed else 0


#: the most points ``leechlib demo --points`` decodes (about 1 GB of float64 arrays)
DEMO_MAX_POINTS = 1_000_000


def _check_demo_args(args) -> str | None:
    """Check ``leechlib demo``'s arguments before any work: an error message, or None.

    ``--points`` above :data:`DEMO_MAX_POINTS` is lowered to it, with a note.
    """
    if args.points < 1:
        return f"--points must be >= 1, got {args.points}"
    if args.seed < 0:
        return f"--seed must be >= 0, got {args.seed}"
    if not 0 < args.seconds < float("inf"):
        return f"--seconds must be positive and finite, got {args.seconds}"
    if args.points > DEMO_MAX_POINTS:
        print(f"note: --points {args.points:,} is more than the demo decodes; using {DEMO_MAX_POINTS:,}")
        args.points = DEMO_MAX_POINTS
    return None


def cmd_demo(args) -> int:
    from . import GolayCode, LeechLattice, theta_series

    rng = np.random.default_rng(args.seed)
    print("== The extended Golay code (MOG coordinates) ==")
    code = GolayCode()
    msg = rng.integers(0, 2, 12)
    c = code.encode(msg)
    r = c.copy()
    flips = rng.choice(24, 3, replace=False)
    r[flips] ^= 1
    dec = code.decode(r)
    print(f"message   {''.join(map(str, msg))}")
    print(f"codeword  {''.join(map(str, c))}")
    print(f"received  {''.join(map(str, r))}  (errors at {sorted(flips.tolist())})")
    print(
        f"decoded   {''.join(map(str, dec.codewords))}  "
        f"corrected {int(dec.n_errors)} errors: {bool((dec.codewords == c).all())}"
    )
    print()
    print("== The Leech lattice ==")
    lat = LeechLattice()
    t0 = time.perf_counter()
    lat.minimal_vectors(coords="int")
    print(f"196 560 minimal vectors built from the code in {time.perf_counter() - t0:.3f} s")
    print(f"theta series: {theta_series(6)}")
    for status in _demo_decoder(rng, args):
        print(status)
    return _demo_lila(args)


def _demo_decoder(rng, args):
    """Decoder section of the demo: speed and the normalized second moment."""
    from . import nearest_point

    yield ""
    yield "== Exact nearest-point decoding =="
    n = args.points
    x = rng.standard_normal((n, 24))
    nearest_point(x[:10])  # compile or load from cache
    t0 = time.perf_counter()
    q, d2 = nearest_point(x, return_distance=True)
    dt = time.perf_counter() - t0
    yield f"decoded {n:,} Gaussian points in {dt:.3f} s: {1e6 * dt / n:.2f} µs/point (one thread)"
    # NSM from uniform points on a fundamental region (reduced mod the lattice)
    from . import LeechLattice

    B = LeechLattice().generator_matrix()
    u = rng.random((n, 24)) @ B
    q, d2 = nearest_point(u, return_distance=True)
    g = d2.mean() / 24.0
    se = d2.std() / 24.0 / np.sqrt(n)
    yield f"normalized second moment G(Λ24) ≈ {g:.6f} ± {se:.6f} (published 0.065771)"


def _torch_ext_cli():
    """``torch_ext.lila.cli.main``, the ``lila`` command line (needs torch).

    This is the only place where leechlib imports torch_ext: ``leechlib lila ARGS``
    forwards ``ARGS`` to it, and the LILA section of ``leechlib demo`` is ``leechlib lila
    demo``.  The import is lazy, so ``import leechlib``, ``leechlib info`` and the rest of
    ``leechlib demo`` never import torch.

    Raises
    ------
    ImportError
        If torch or torch_ext is not installed.
    """
    from torch_ext.lila.cli import main

    return main


def _demo_lila(args) -> int:
    """LILA section of the demo: ``leechlib lila demo`` (a minute of lila-tiny; needs torch)."""
    if args.no_lila:
        return 0
    print()
    try:
        lila_main = _torch_ext_cli()
    except ImportError as exc:  # torch or torch_ext unavailable
        print(f"(LILA section skipped: {exc}; install the [torch] extra)")
        return 0
    return int(lila_main(["demo", "--seconds", str(args.seconds)]) or 0)


def cmd_lila(args) -> int:
    """``leechlib lila ARGS``: the LILA commands of torch_ext (:func:`torch_ext.lila.cli.main`)."""
    try:
        lila_main = _torch_ext_cli()
    except ImportError as exc:
        print(f"leechlib lila needs torch and torch_ext ({exc}); install the [torch] extra",
              file=sys.stderr)
        return 2
    return int(lila_main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="leechlib",
        description="The Leech lattice and the extended binary Golay code, exact and fast.",
    )
    p.add_argument("--version", action="version", version=f"leechlib {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    pi = sub.add_parser("info", help="recompute every invariant and print a pass/fail table")
    pi.set_defaults(func=cmd_info)
    pd = sub.add_parser("demo", help="the main job: a tour of the code, lattice and decoder")
    pd.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pd.add_argument(
        "--points", type=int, default=100_000,
        help=f"points to decode (default 100000, at most {DEMO_MAX_POINTS})"
    )
    pd.add_argument(
        "--no-lila", action="store_true", help="skip the LILA training section (needs torch)"
    )
    pd.add_argument(
        "--seconds", type=float, default=60.0, help="LILA training time in seconds (default 60)"
    )
    pd.set_defaults(func=cmd_demo, check=_check_demo_args)
    pl = sub.add_parser(
        "lila",
        help="train and evaluate LILA models (torch_ext): leechlib lila {train,eval,demo} ...",
        add_help=False,
    )
    pl.add_argument("rest", nargs=argparse.REMAINDER)
    pl.set_defaults(func=cmd_lila)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lila"]:  # everything after `lila` belongs to torch_ext's parser
        return cmd_lila(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    problem = check(args) if check is not None else None
    if problem:
        parser.error(f"{args.command}: {problem}")  # exit status 2, before any work
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
