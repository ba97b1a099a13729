"""Trio-coded weights on a GPU: the codes kernels against cuBLAS (one prepared run).

Measures, on one CUDA device, for weights of ``R x P`` (default 4096 x 4096 and
11008 x 4096, random 48-bit trio codes, one float32 scale per row) and batches
``B`` (default 1, 4, 16):

* ``cublas fp16`` / ``cublas fp32``: ``F.linear(x, W)`` with the dense weight (the
  baseline a model with a cached dequantized weight runs);
* ``codes kernel x32`` / ``codes kernel x16``: :func:`leechlib.kernels.packed_matmul_cuda`
  on pre-made Numba views (the kernel and Numba's launch overhead: ``x @ W.T`` from the
  codes, ``W`` never materialised), float32 and float16 activations;
* ``codes torch x16``: :func:`torch_ext.quantize._cuda_packed.packed_linear_cuda`, the
  torch-facing call the layer hook makes (adds padding, a float32 output and its cast);
* ``codes lanes=L``: the kernel with ``L`` lanes per output row instead of 32 (``--lanes``);

and dequantization (``W`` from the codes; weights/s): :func:`leechlib.kernels.packed_weight_cuda`
to float16 and float32, against the pure-torch decode of
``LeechQuantizedLinear._stored_weight`` (what a ``cache=False`` layer runs on CUDA
today).  Arms are interleaved (round-robin, the order rotated every round); each
sample is ``--reps`` back-to-back calls between two CUDA events on torch's current
stream; the table gives the median sample per call (and the least).  The host time
per call (``perf_counter`` around the same loop) is reported beside it: where it is
the larger, the arm is bound by Python/Numba launch overhead, not by the GPU.

Before timing, the results are checked: the codes kernel against ``F.linear`` with
the dequantized weight (relative error), and the dequantized float32 weight of the
first rows bitwise against leechlib's CPU :func:`leechlib.kernels.packed_weight`.

``P`` is padded to a multiple of 24 for the codes (4096 -> 4104 columns, 171 blocks;
the padding weights are real codes here, so the codes arms do 0.2 % more work).

Usage (from the repository root, on a machine with a GPU)::

    python benchmarks/gpu_qmatmul.py --out "$OUT"

Without a GPU (or without torch) it says so and exits 0.  The kernels were written
without a GPU: this script is their first measurement.  ``--sim-dry-run`` runs the
script itself on the CPU in Numba's CUDA simulator, with tiny sizes and CPU stand-ins
for the CUDA plumbing (a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np


def _parse_sizes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        r, p = part.lower().split("x")
        out.append((int(r), int(p)))
    return out


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def _time(fn, reps: int, torch):
    """Seconds per call: (GPU, between two events on the current stream; host)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    t1 = time.perf_counter()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3 / reps, (t1 - t0) / reps


def _interleaved(arms: dict, rounds: int, reps: int, torch) -> dict:
    names = list(arms)
    samples = {k: [] for k in names}
    host = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            g, h = _time(arms[k], reps, torch)
            samples[k].append(g)
            host[k].append(h)
    return {k: {"median_s": statistics.median(samples[k]), "min_s": min(samples[k]),
                "host_s": statistics.median(host[k])} for k in names}


class _SimEvent:
    """A CUDA event stand-in (host clock) for ``--sim-dry-run``."""

    def __init__(self, enable_timing=True):
        self.t = 0.0

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


def _simulate(torch, ncuda, cp):
    """CPU stand-ins for the CUDA plumbing (as ``tests/torch/test_cuda_packed.py``); returns the CPU."""
    import contextlib
    import types

    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    ncuda.as_cuda_array = lambda t: FakeCUDAArray(t.numpy())
    ncuda.external_stream = lambda ptr: 0
    ncuda.gpus = {0: contextlib.nullcontext()}
    torch.cuda.device = lambda dev: contextlib.nullcontext()
    torch.cuda.current_stream = lambda dev=None: types.SimpleNamespace(cuda_stream=0)
    torch.cuda.get_device_name = lambda dev=None: "Numba CUDA simulator (dry run, not a measurement)"
    torch.cuda.synchronize = lambda dev=None: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.Event = _SimEvent
    cp._is_cuda = lambda t: True
    return torch.device("cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--sizes", default="4096x4096,11008x4096", help="weights R x P, comma-separated")
    ap.add_argument("--batches", default="1,4,16", help="batch sizes B, comma-separated")
    ap.add_argument("--lanes", default="8,16", help="extra arms: lanes per row of the codes kernel "
                                                   "(default arm: 32); empty for none")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (samples per arm)")
    ap.add_argument("--reps", type=int, default=50, help="calls per sample")
    ap.add_argument("--torch-decode", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the pure-torch dequantization of LeechQuantizedLinear")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for gpu_qmatmul.md and gpu_qmatmul.json")
    ap.add_argument("--sim-dry-run", action="store_true",
                    help="check this script on the CPU (Numba's CUDA simulator, tiny sizes; no measurement)")
    args = ap.parse_args(argv)
    if args.sim_dry_run:
        if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            print("gpu_qmatmul: --sim-dry-run must start before numba is imported (or set NUMBA_ENABLE_CUDASIM=1)")
            return 1
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.sizes, args.batches, args.lanes, args.rounds, args.reps = "5x40", "1,3", "8", 2, 1

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("gpu_qmatmul: torch is not installed; nothing to measure")
        return 0
    if not torch.cuda.is_available() and not args.sim_dry_run:
        print("gpu_qmatmul: no CUDA device here; nothing to measure (run it on a machine with a GPU)")
        return 0
    from numba import cuda as ncuda

    from leechlib._kernels import cuda_qmatmul
    from leechlib.kernels import _trio_args, cuda_available, packed_matmul_cuda, packed_weight, packed_weight_cuda
    from torch_ext.quantize import LeechQuantizedLinear
    from torch_ext.quantize import _cuda_packed as cp

    if not cuda_available():
        print("gpu_qmatmul: numba.cuda cannot run kernels here; nothing to measure")
        return 0
    dev = torch.device("cuda")
    if args.sim_dry_run:
        dev = _simulate(torch, ncuda, cp)
    name = torch.cuda.get_device_name(dev)
    stream = ncuda.external_stream(torch.cuda.current_stream(dev).cuda_stream)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    report = {"device": name, "torch": torch.__version__, "args": vars(args), "sizes": []}
    lines = [f"# gpu_qmatmul on {name}", "",
             f"rounds {args.rounds} x reps {args.reps}; seconds are per call (median sample, least sample); "
             "host: Python time per call", ""]

    def show(title, res, extra):
        first = len(lines)
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| arm | us / call (median) | us (least) | host us / call | " + extra[0] + " |")
        lines.append("|---|---:|---:|---:|---:|")
        for k, v in res.items():
            lines.append(f"| {k} | {v['median_s'] * 1e6:.1f} | {v['min_s'] * 1e6:.1f} | {v['host_s'] * 1e6:.1f} | "
                         f"{extra[1](k, v)} |")
        lines.append("")
        print("\n".join(lines[first:]), flush=True)

    def one_size(R, P):
        nb = -(-P // 24)
        Pp = 24 * nb
        packed = torch.randint(0, 256, (R, 6 * nb), dtype=torch.uint8, generator=g).to(dev)
        scales = (torch.rand(R, 1, generator=g) * 0.01 + 0.005).to(dev)
        group = torch.zeros(nb, dtype=torch.int64, device=dev)
        nv = {k: ncuda.as_cuda_array(t) for k, t in (("packed", packed), ("scales", scales), ("group", group))}
        entry = {"R": R, "P": P, "blocks": nb, "checks": {}, "matmul": {}, "dequant": {}}
        # dense weights (the codes' own, so that every arm computes the same product)
        w32 = torch.empty((R, Pp), dtype=torch.float32, device=dev)
        packed_weight_cuda(nv["packed"], nv["scales"], nv["group"], out=ncuda.as_cuda_array(w32), stream=stream)
        w16 = w32.half()
        w32c, w16c = w32[:, :P].contiguous(), w16[:, :P].contiguous()
        torch.cuda.synchronize()
        rows = min(R, 64)
        cpu = packed_weight(packed[:rows].cpu().numpy(), scales[:rows].cpu().numpy(), group.cpu().numpy(),
                            codebook="trio")
        entry["checks"]["dequant_fp32_bitwise_cpu"] = bool(np.array_equal(w32[:rows].cpu().numpy(), cpu))
        for B in _ints(args.batches):
            x32 = torch.randn(B, P, generator=g).to(dev)
            x16 = x32.half()
            xp32 = F.pad(x32, (0, Pp - P)).contiguous()
            xp16 = xp32.half()
            out = torch.empty((B, R), dtype=torch.float32, device=dev)
            nx32, nx16, nout = ncuda.as_cuda_array(xp32), ncuda.as_cuda_array(xp16), ncuda.as_cuda_array(out)

            def codes(nx, lanes=None, nout=nout):
                if lanes is None:
                    return lambda: packed_matmul_cuda(nx, nv["packed"], nv["scales"], nv["group"], out=nout,
                                                      stream=stream, check_group=False)
                ta = _trio_args()
                return lambda: cuda_qmatmul.matmul(nx, nv["packed"], nv["scales"], nv["group"], ta, out=nout,
                                                   stream=stream, check_group=False, lanes=lanes, threads=128)

            with torch.no_grad():
                ref = F.linear(xp32.double(), w32.double())
                codes(nx32)()
                torch.cuda.synchronize()
                err = float((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
                y16 = cp.packed_linear_cuda(x16, packed, scales, group, check_group=False)
                err16 = float((y16.double() - F.linear(x16.double(), w32c.double())).abs().max()
                              / ref.abs().max().clamp_min(1e-30))
            entry["checks"][f"B{B}"] = {"codes_x32_rel_err": err, "codes_torch_x16_rel_err": err16}
            arms = {
                "cublas fp16": lambda x16=x16: F.linear(x16, w16c),
                "cublas fp32": lambda x32=x32: F.linear(x32, w32c),
                "codes kernel x32": codes(nx32),
                "codes kernel x16": codes(nx16),
                "codes torch x16": lambda x16=x16: cp.packed_linear_cuda(x16, packed, scales, group,
                                                                         check_group=False),
            }
            for lanes in _ints(args.lanes):
                arms[f"codes lanes={lanes} x16"] = codes(nx16, lanes)
            with torch.no_grad():
                for f in arms.values():  # compile and warm up
                    f()
                torch.cuda.synchronize()
                res = _interleaved(arms, args.rounds, args.reps, torch)
            base = res["cublas fp16"]["median_s"]
            entry["matmul"][f"B{B}"] = res
            show(f"x @ W.T: R={R}, P={P}, B={B} (rel. err. codes x32 {err:.1e}, x16 {err16:.1e})", res,
                 ("x cublas fp16 time", lambda k, v, base=base: f"{v['median_s'] / base:.2f}"))
        # dequantization
        o16 = torch.empty((R, Pp), dtype=torch.float16, device=dev)
        n16, n32 = ncuda.as_cuda_array(o16), ncuda.as_cuda_array(w32)
        arms = {
            "packed_weight_cuda fp16": lambda: packed_weight_cuda(nv["packed"], nv["scales"], nv["group"], out=n16,
                                                                  stream=stream, check_group=False),
            "packed_weight_cuda fp32": lambda: packed_weight_cuda(nv["packed"], nv["scales"], nv["group"], out=n32,
                                                                  stream=stream, check_group=False),
        }
        reps = args.reps
        if args.torch_decode:
            layer = LeechQuantizedLinear(P, R, method="leech-trio", group="row", cache=False, bias=False,
                                         scale_dtype=torch.float32).to(dev)
            layer.packed.copy_(packed[:, : layer.packed.shape[1]])
            layer.scales.copy_(scales)
            arms["torch decode fp16 (layer today)"] = lambda: layer._stored_weight(torch.float16)
            reps = max(1, reps // 10)
        with torch.no_grad():
            for f in arms.values():
                f()
            torch.cuda.synchronize()
            res = _interleaved(arms, args.rounds, reps, torch)
        entry["dequant"] = res
        show(f"dequantization: R={R}, P={P} ({R * Pp} weights)", res,
             ("weights / s", lambda k, v: f"{R * Pp / v['median_s']:.3g}"))
        return entry

    for R, P in _parse_sizes(args.sizes):
        try:
            report["sizes"].append(one_size(R, P))
        except Exception:  # report and go on with the next size: one GPU session, one run
            traceback.print_exc()
            report["sizes"].append({"R": R, "P": P, "error": traceback.format_exc(limit=3)})
        torch.cuda.empty_cache()

    text = "\n".join(lines)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_qmatmul.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(args.out, "gpu_qmatmul.json"), "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({f"{s['R']}x{s['P']}": s.get("checks", s.get("error")) for s in report["sizes"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
