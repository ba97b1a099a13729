"""Compile leechlib's CUDA kernels to PTX without a GPU; print size and local memory.

Usage (needs Numba CUDA with NVVM; no GPU or driver)::

    python -m venv /tmp/cv
    /tmp/cv/bin/pip install numpy numba numba-cuda nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12
    /tmp/cv/bin/python benchmarks/cuda_ptx.py [--cc 9.0]

This checks that the CPU kernels' functions (the factories ``make_kernels`` of
``leechlib._kernels.leech`` and ``leechlib._kernels.minvec``) still compile
for the CUDA target (typing and lowering, which the CUDA simulator used by the test
suite does not check), and reports the per-thread local memory (``__local_depot``)
that bounds occupancy on the GPU.  Device functions are compiled for the current
device's compute capability, so without a driver that query is answered with
``--cc``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 for H100/H200")
    args = ap.parse_args(argv)
    cc = tuple(int(v) for v in args.cc.split("."))

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba import types as nt

    # no driver here: device functions ask the "current device" for its capability
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    from leechlib._kernels import cuda as lc

    k = lc.kernels()

    def arr(t, d=1):
        return nt.Array(t, d, "C")

    i64 = arr(nt.int64)
    print("| kernel | input | PTX characters | local bytes per thread | compile s |")
    print("|---|---|---:|---:|---:|")
    for xt in (nt.float32, nt.float64):
        sigs = {
            "nearest_kernel": (arr(xt, 2), nt.float64, nt.float64, nt.float64, nt.float64,
                               nt.float64, i64, i64, i64, arr(nt.float64, 2),
                               arr(nt.float64), arr(nt.int8)),
            "minvec_kernel": (arr(xt, 2), i64, i64, i64, i64, arr(nt.float64, 2), i64),
        }
        for name, sig in sigs.items():
            t0 = time.perf_counter()
            ptx, _ = cuda.compile_ptx(getattr(k, name).py_func, sig, cc=cc)
            dt = time.perf_counter() - t0
            depot = re.search(r"__local_depot\d+\[(\d+)\]", ptx)
            print(f"| {name} | {xt} | {len(ptx)} | {depot.group(1) if depot else 0} | {dt:.1f} |")


if __name__ == "__main__":
    main()
