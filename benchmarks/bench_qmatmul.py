"""Quantized layers run from their codes: ``x W^T`` and dequantization, against dense, in one run.

Usage::

    python benchmarks/bench_qmatmul.py                        # the full grid (a few minutes)
    python benchmarks/bench_qmatmul.py --quick                # one small shape, batch 1
    python benchmarks/bench_qmatmul.py --shapes 4096x4096 --batches 1 4 16 --threads 1 2

For each weight shape (``out x in``), batch size and thread count it times, interleaved
(``--reps`` rounds, the median of each arm kept):

* ``dense f32`` / ``dense bf16``: ``torch.nn.functional.linear`` with the dense weight;
* ``codes <method>``: :class:`~torch_ext.quantize.LeechQuantizedLinear` with
  ``cache=False`` on the CPU, i.e. :func:`leechlib.kernels.packed_matmul` straight from
  the packed codes (no rotation, row scales), for ``leech-trio``, ``e8`` and ``rtn``,
  up to ``LeechQuantizedLinear.codes_max_rows`` rows; larger batches decode the
  weight for the forward and multiply densely, as the layer does;

and, with ``--glq`` when the ``glq`` package is installed (``pip install glq``; it
is no dependency of this project), ``glq trellis``: its 2-bit QTIP-style trellis layer
(``E8RHTLinear``, ``codebook_type="trellis"``, the lookup-free "3inst" code that its
fused CPU kernel decodes inside the product; random codes), whose forward includes
its input and output Hadamard transforms (ours run without rotation here: a rotated
layer adds about 0.15 ms at 4096 inputs, see the rotation rows).  It prints the
milliseconds and the speed relative to ``dense f32`` of the same run.
Then the input rotation of a rotated layer (``RandomizedHadamard.apply``): the chain
of torch operations against leechlib's one native pass per row.  And dequantization
(the whole weight from its codes), weights per second, one
thread: the torch decode of every method (``decode_torch``, codes to normalised
blocks: the enumerative unranking of ``leech-ball`` and ``leech-shape-gain``, table
gathers for the others) against leechlib's kernel (``packed_weight``, codes and
scales to the float32 weight) where a method has one.  The codes are random valid codes (speed
does not depend on the weights' values).  Torch's thread count is set with
``torch.set_num_threads``; leechlib's kernels use the same count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = ["4096x4096", "11008x4096", "1536x384", "384x1536", "3072x768", "768x3072"]
CODES = ("leech-trio", "e8", "rtn")


def _layer(method: str, out_f: int, in_f: int, rng):
    import torch

    from torch_ext.ops.codebook import pack_bits
    from torch_ext.quantize import LeechQuantizedLinear

    q = LeechQuantizedLinear(in_f, out_f, bias=False, method=method, bits=2, cache=False)
    size = q.codec.size
    n = q.layout.nblocks
    if size >= 1 << 62:
        codes = (rng.integers(0, 1 << 24, size=(out_f, n)) << 24) | rng.integers(0, 1 << 24, size=(out_f, n))
    else:
        codes = rng.integers(0, size, size=(out_f, n))
    with torch.no_grad():
        q.packed.copy_(pack_bits(torch.from_numpy(codes), q.codec.code_bits))
        q.scales.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, size=tuple(q.scales.shape))))
    return q


def _glq_layer(out_f: int, in_f: int):
    """glq's 2-bit trellis layer with random codes on its fused CPU path, or None."""
    try:
        import torch
        from glq.quantized_linear import E8RHTLinear
        from glq.trellis import TrellisCodebook
    except ImportError:
        return None
    lin = E8RHTLinear(in_f, out_f, bias=False, codebook_type="trellis")
    g = torch.Generator().manual_seed(0)
    tiles = (lin.m_pad // 16) * (lin.n_pad // 16)
    lin.trellis_packed = torch.randint(-2**15, 2**15, (tiles, 32), dtype=torch.int16, generator=g)
    lin.SU = torch.where(torch.rand(lin.m_pad, generator=g) < 0.5, -1.0, 1.0).half()
    lin.SV = torch.where(torch.rand(lin.n_pad, generator=g) < 0.5, -1.0, 1.0).half()
    lin.Wscale = torch.tensor(0.02)
    lin.set_codebook(TrellisCodebook("3inst", K=2))
    with torch.no_grad():
        lin(torch.zeros(1, in_f))
    if not lin._trellis_op_cpu:  # its dense fallback is no run from the codes
        return None
    return lin


def _time(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def matmul_rows(shapes, batches, threads, reps: int, methods, rng, glq: bool = False) -> list[dict]:
    import torch

    rows = []
    for shape in shapes:
        out_f, in_f = (int(v) for v in shape.split("x"))
        layers = {m: _layer(m, out_f, in_f, rng) for m in methods}
        glq_layer = _glq_layer(out_f, in_f) if glq else None
        if glq and glq_layer is None:
            print(f"glq: not installed, or no fused CPU kernel for {shape}: no glq arm", file=sys.stderr)
        W = layers[methods[0]].dequantize(torch.float32)
        Wb = W.to(torch.bfloat16)
        for nt in threads:
            torch.set_num_threads(nt)
            for B in batches:
                x = torch.randn(B, in_f)
                xb = x.to(torch.bfloat16)
                arms = {"dense f32": lambda x=x, W=W: torch.nn.functional.linear(x, W),
                        "dense bf16": lambda xb=xb, Wb=Wb: torch.nn.functional.linear(xb, Wb)}
                for m, q in layers.items():
                    arms[f"codes {m}"] = (lambda q=q, x=x: q(x))
                if glq_layer is not None:
                    arms["glq trellis"] = lambda q=glq_layer, x=x: q(x)
                with torch.no_grad():
                    for fn in arms.values():  # warm-up (compilation, caches)
                        fn()
                    inner = {k: max(1, int(0.05 / max(_time(fn, 1), 1e-6))) for k, fn in arms.items()}
                    times = {k: [] for k in arms}
                    for _ in range(reps):
                        for k, fn in arms.items():
                            times[k].append(_time(fn, inner[k]))
                med = {k: statistics.median(v) for k, v in times.items()}
                for k, t in med.items():
                    rows.append({"shape": shape, "threads": nt, "batch": B, "arm": k, "ms": 1e3 * t,
                                 "vs dense f32": med["dense f32"] / t})
    return rows


def dequant_rows(shape: str, methods, reps: int, rng) -> list[dict]:
    import torch

    from leechlib.kernels import packed_weight

    out_f, in_f = (int(v) for v in shape.split("x"))
    rows = []
    for m in methods:
        q = _layer(m, out_f, in_f, rng)  # random valid codes (every index below the size is one)
        n = out_f * in_f
        codes = q.codes()

        def torch_path(q=q, codes=codes):
            L = q.layout
            return q.codec.decode_torch(codes.reshape(-1), q.gains, torch.float32).reshape(out_f, L.padded)

        arms = {"torch decode": torch_path}
        spec = q._packed_spec()
        if spec is not None:
            packed, scales, group, pk = spec
            arms["leechlib kernel"] = lambda packed=packed, scales=scales, group=group, pk=pk: packed_weight(
                packed, scales, group, codebook=pk.codebook, table=pk.table, width=pk.width)
        for fn in arms.values():
            fn()
        for k, fn in arms.items():
            t = min(_time(fn, 1) for _ in range(reps))
            rows.append({"method": m, "path": k, "Mweights/s": n / t / 1e6})
    return rows


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def rotation_rows(sizes, batches, reps: int) -> list[dict]:
    """The input rotation of a layer: the torch chain against leechlib's one native pass."""
    import torch

    from torch_ext.quantize.hadamard import RandomizedHadamard

    rows = []
    for n in sizes:
        T = RandomizedHadamard(n, seed=0)
        for B in batches:
            x = torch.randn(B, n)
            arms = {"torch ops": lambda T=T, x=x: T._apply_torch(x), "native": lambda T=T, x=x: T.apply(x)}
            with torch.no_grad():
                for fn in arms.values():
                    fn()
                med = {k: statistics.median(_time(fn, 20) for _ in range(reps)) for k, fn in arms.items()}
            rows.append({"n": n, "batch": B, "torch ops µs": 1e6 * med["torch ops"],
                         "native µs": 1e6 * med["native"], "speed-up": med["torch ops"] / med["native"]})
    return rows


def md(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="out x in weight shapes")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--methods", nargs="+", default=list(CODES), choices=CODES)
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (median kept)")
    p.add_argument("--dequant-shape", default="1536x384", help="shape of the dequantization rows")
    p.add_argument("--rotation-sizes", nargs="+", type=int, default=[4096, 11008, 384, 1536],
                   help="input sizes of the rotation rows")
    p.add_argument("--quick", action="store_true", help="384x1536, batch 1, one thread, 2 rounds")
    p.add_argument("--glq", action="store_true", help="add glq's trellis layer where glq is installed")
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.batches, args.threads, args.reps = ["384x1536"], [1], [1], 2
        args.rotation_sizes = [384]
    rng = np.random.default_rng(0)
    rows = matmul_rows(args.shapes, args.batches, args.threads, args.reps, args.methods, rng, glq=args.glq)
    print(md(rows, ["shape", "threads", "batch", "arm", "ms", "vs dense f32"]))
    print()
    torch_threads(1)
    drows = dequant_rows(args.dequant_shape, ["leech-ball", "leech-shape-gain", *args.methods],
                         max(1, args.reps // 2), rng)
    print(f"dequantization of a {args.dequant_shape} weight, one run")
    print(md(drows, ["method", "path", "Mweights/s"]))
    print()
    print("input rotation (randomized Hadamard), one thread")
    rrows = rotation_rows(args.rotation_sizes, args.batches, max(3, args.reps))
    print(md(rrows, ["n", "batch", "torch ops µs", "native µs", "speed-up"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
