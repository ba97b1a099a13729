"""The ``leechlib`` command line.

``leechlib info``  recomputes every invariant of the Golay code and the Leech
lattice live (:func:`leechlib.invariants.invariant_checks`) and prints a pass/fail
table (exit status 1 if any fails).

``leechlib demo``  the main job on embedded defaults: a tour of the code, the
lattice and the decoder, with timings, then (with torch) ``leechlib lila demo``.

``leechlib lila ...``  the LILA commands, which live in torch_ext
(:func:`torch_ext.lila.cli.main`).

``leechlib quantize SRC_DIR --out OUT_DIR ...`` and ``leechlib eval-ppl MODEL_DIR --text
FILE ...``  Hugging Face model folders: quantize one a block at a time, and measure
the perplexity of a float or quantized one (:mod:`torch_ext.quantize.cli`; they
need torch and transformers).

``_torch_ext_cli`` below is the one, lazy, import of torch_ext in leechlib.

Only this module prints; the library itself never does.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import GolayCode, LeechLattice, __version__, nearest_point, theta_series
from .invariants import invariant_checks

__all__ = ["main", "invariant_checks"]


def _fmt(v, width=44) -> str:
    s = str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def cmd_info(args) -> int:
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
    B = LeechLattice().generator_matrix()
    u = rng.random((n, 24)) @ B
    q, d2 = nearest_point(u, return_distance=True)
    g = d2.mean() / 24.0
    se = d2.std() / 24.0 / np.sqrt(n)
    yield f"normalized second moment G(Λ24) ≈ {g:.6f} ± {se:.6f} (published 0.065771)"


def _torch_ext_cli(command: str = "lila"):
    """The torch_ext command line of ``command`` (``lila``, ``quantize``, ``eval-ppl``; needs torch).

    This is the only place where leechlib imports torch_ext: ``leechlib lila ARGS``
    forwards ``ARGS`` to it, and the LILA section of ``leechlib demo`` is ``leechlib lila
    demo``.  The import is lazy, so ``import leechlib``, ``leechlib info`` and the rest of
    ``leechlib demo`` never import torch.

    Raises
    ------
    ImportError
        If torch or torch_ext is not installed.
    """
    if command == "quantize":
        from torch_ext.quantize.cli import main_quantize

        return main_quantize
    if command == "eval-ppl":
        from torch_ext.quantize.cli import main_eval_ppl

        return main_eval_ppl
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


def cmd_forward(command: str, rest: list[str]) -> int:
    """``leechlib quantize ARGS`` / ``leechlib eval-ppl ARGS``: torch_ext's folder commands."""
    try:
        import transformers  # noqa: F401

        func = _torch_ext_cli(command)
    except ImportError as exc:
        print(f"error: leechlib {command} needs torch, torch_ext and transformers ({exc}); "
              "pip install 'leechlib[hf]'", file=sys.stderr)
        return 2
    return int(func(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
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
    for name, what in (("quantize", "quantize a Hugging Face model folder a block at a time: "
                                    "leechlib quantize SRC_DIR --out OUT_DIR ..."),
                       ("eval-ppl", "perplexity of a float or quantized Hugging Face folder on a text: "
                                    "leechlib eval-ppl MODEL_DIR --text FILE ...")):
        pf = sub.add_parser(name, help=what, add_help=False)
        pf.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lila"]:  # everything after `lila` belongs to torch_ext's parser
        return cmd_lila(argparse.Namespace(rest=argv[1:]))
    if argv[:1] in (["quantize"], ["eval-ppl"]):  # likewise
        return cmd_forward(argv[0], argv[1:])
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    problem = check(args) if check is not None else None
    if problem:
        parser.error(f"{args.command}: {problem}")  # exit status 2, before any work
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
