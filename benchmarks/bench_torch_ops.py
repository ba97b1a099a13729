"""Decode throughput (points/s) of the torch_ext paths; prints a markdown table.

Paths
-----
* ``op cpu (leechlib)``: ``torch_ext.nearest_point`` on CPU tensors, which calls
  leechlib's Numba kernels through numpy (only when leechlib's decoders exist);
* ``torch cpu``: the pure-torch vectorised decoder on CPU (eager, and with
  ``--compile`` also ``torch.compile``-d);
* ``torch cuda``: the same decoder on the GPU (eager and, with ``--compile``,
  compiled), when CUDA is available;
* ``op ... Numba CUDA``: leechlib's kernel compiled for the GPU by Numba CUDA (what
  ``torch_ext.nearest_point`` uses on CUDA when ``numba.cuda`` works);
* the same for the nearest minimal vector (``--minvec``).

Usage::

    python benchmarks/bench_torch_ops.py                 # CPU, 16384 points
    python benchmarks/bench_torch_ops.py --n 65536 --compile --threads 2
    python benchmarks/bench_torch_ops.py --cuda-n 4194304 --compile --minvec   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import torch_ext  # noqa: E402
from torch_ext import ops  # noqa: E402
from torch_ext.ops import _decoder  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, x, repeat):
    fn(x)  # warm-up (jit, compile, caches)
    _sync(x.device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        _sync(x.device)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16384, help="points per CPU call")
    p.add_argument("--cuda-n", type=int, default=1 << 22, help="points per CUDA call")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--compile", action="store_true", help="also time torch.compile-d decoders")
    p.add_argument("--minvec", action="store_true", help="also time the nearest minimal vector")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    rows = []

    def add(path, device, n, pts_s, note=""):
        rows.append((path, device, n, pts_s, note))

    x_cpu = (torch.randn(args.n, 24, generator=g) * 1.5).to(dtype)
    backend = ops.cpu_backend()
    if backend == "leechlib":
        add("op nearest_point (leechlib Numba)", "cpu", args.n,
            _time(torch_ext.nearest_point, x_cpu, args.repeat), f"{args.threads} thread(s)")
    else:
        add("op nearest_point (leechlib Numba)", "cpu", args.n, None, "TORCH_EXT_CPU_BACKEND=torch")

    def torch_decoder(x):
        return ops.nearest_point_torch(x)

    ops.set_decoder_compile(False)
    add("pure-torch decoder, eager", "cpu", args.n, _time(torch_decoder, x_cpu, args.repeat),
        f"{args.threads} thread(s), fp32 search + fp64 fallback")
    if args.minvec and backend == "leechlib":
        add("op nearest_minimal_vector (leechlib Numba)", "cpu", args.n,
            _time(torch_ext.nearest_minimal_vector, x_cpu, args.repeat), f"{args.threads} thread(s)")
    if args.minvec:
        add("pure-torch min. vector, eager", "cpu", args.n,
            _time(ops.nearest_minimal_vector_torch, x_cpu, args.repeat), "")
    if args.compile:
        ops.set_decoder_compile(True)
        add("pure-torch decoder, torch.compile", "cpu", args.n,
            _time(torch_decoder, x_cpu, args.repeat), "inductor C++")
        ops.set_decoder_compile(False)

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(dev)
        for n in sorted({min(args.cuda_n, 1 << 16), args.cuda_n}):
            xc = (torch.randn(n, 24, device=dev) * 1.5).to(dtype)
            if ops.cuda_backend() == "numba":
                add("op nearest_point (leechlib kernel, Numba CUDA)", name, n,
                    _time(torch_ext.nearest_point, xc, args.repeat), "one thread per point")
            else:
                add("op nearest_point (leechlib kernel, Numba CUDA)", name, n, None,
                    "numba.cuda cannot run kernels here")
            ops.set_decoder_compile(False)
            add("pure-torch decoder, eager", name, n, _time(torch_decoder, xc, args.repeat),
                f"chunk {_decoder.DEFAULT_CHUNK['cuda']}")
            if args.compile:
                ops.set_decoder_compile(True)
                add("pure-torch decoder, torch.compile", name, n,
                    _time(torch_decoder, xc, args.repeat), "inductor Triton")
                ops.set_decoder_compile(False)
            if args.minvec:
                if ops.cuda_backend() == "numba":
                    add("op nearest_minimal_vector (leechlib kernel, Numba CUDA)", name, n,
                        _time(torch_ext.nearest_minimal_vector, xc, args.repeat),
                        "one thread per point")
                add("pure-torch min. vector, eager", name, n,
                    _time(ops.nearest_minimal_vector_torch, xc, args.repeat), "")
    else:
        add("pure-torch decoder", "cuda", 0, None, "no CUDA device")

    print(f"torch {torch.__version__}, input {args.dtype}, best of {args.repeat}\n")
    print("| path | device | batch | points/s | note |")
    print("|---|---|---:|---:|---|")
    for path, device, n, pts, note in rows:
        val = "n/a" if pts is None else f"{pts:,.0f}"
        print(f"| {path} | {device} | {n:,} | {val} | {note} |")


if __name__ == "__main__":
    main()
