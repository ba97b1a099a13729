"""One prepared GPU session: CUDA correctness checks and decode throughput, in one run.

The project's GPU machine is lent for minutes at a time and has torch, numba and
numpy but no pytest or hypothesis, so this script checks the CUDA paths with plain
asserts against leechlib's CPU decoder (the reference) and then measures throughput.
Every stage is timed and isolated (a failure is reported and the next stage runs);
a time budget skips what would not fit.

Usage (on the GPU machine, from the repository root)::

    python benchmarks/gpu_check.py --out "$OUT" --budget 420

It prints a markdown report and writes ``gpu_check.md`` and ``gpu_check.json`` to
``--out``.  Without a GPU it only reports that (and exits 0), so it can be tried on
any machine; ``--cpu-dry-run`` runs the first two stages on the CPU with the
pure-torch decoder (the code path CUDA uses) to check the script itself.

Stages
------
1. ``decoder``: ``torch_ext.nearest_point`` on CUDA (leechlib's kernel compiled by
   Numba CUDA when ``numba.cuda`` works, else the pure-torch decoder; the pure-torch
   decoder is also checked on its own) against ``leechlib.nearest_point``: bitwise on
   integer, half-integer and deep-hole inputs in the integer frame (exact ties, broken by the same rule); equal squared
   distances on Gaussian float32/float64 inputs at scales 0.1, 1, 10, 1e4 (the count
   of bitwise-different rows is reported).  Also ``nearest_minimal_vector`` indices
   (integer inputs, bitwise) and ``quantize_ste`` gradients.
2. ``model``: ``lila-tiny`` forward and backward under bf16 autocast on CUDA, and a
   2-bit quantized copy's forward.
3. ``pytest``: the test suite's CUDA tests (``pytest -m cuda``), in a subprocess.
4. ``throughput``: ``benchmarks/bench_torch_ops.py --cuda-n 4194304 --compile --minvec``
   (points/s of every path, eager and compiled), and beside it the naive brute force
   over the 8192 cosets (``benchmarks/bruteforce_torch.py``) on the same device, which
   also checks the decoder's distances against it.
5. ``dequant``: 2-bit dequantization throughput of ``LeechQuantizedLinear`` on the
   GPU (blocks/s and weights/s) for every method.
6. ``ablation``: ``benchmarks/lila_ablation.py --config gpu`` (one seed) in a
   subprocess, with whatever time is left (``--ablation-steps``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys
import time
import traceback
from contextlib import redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def stage_decoder(dev):
    import leechlib
    import torch_ext

    rng = np.random.default_rng(0)
    lines = []
    # exact arithmetic (integer frame, integer or half-integer points, deep holes):
    # ties are broken by the same rule, so the points must be bitwise equal
    exact = [("integers", rng.integers(-9, 10, (20000, 24)).astype(np.float64)),
             ("half-integers", rng.integers(-9, 10, (20000, 24)) / 2.0)]
    hole = np.zeros((20000, 24))
    hole[:, 0] = 4.0
    exact.append(("deep holes + 8Z^24", hole + 8.0 * rng.integers(-3, 4, hole.shape)))
    from torch_ext import ops

    backend = ops.cuda_backend() if dev.type == "cuda" else "cpu"
    lines.append(f"torch_ext.nearest_point backend on {dev.type}: {backend}")
    for label, x in exact:
        ref = leechlib.nearest_point(x, coords="int")
        xd = torch.from_numpy(x).to(dev)
        for path, fn in (("op", lambda t: torch_ext.nearest_point(t, coords="int")),
                         ("pure torch", lambda t: ops.nearest_point_torch(t, coords="int"))):
            got = fn(xd).cpu().numpy()
            bad = int((got != ref).any(axis=1).sum())
            lines.append(f"nearest_point {label} (int coords, {path}): {bad} of {len(x)} rows differ")
            if bad:
                raise AssertionError(lines[-1])
    # rounded to the integer frame: equal distances (to rounding); report exact equality
    for sc in (0.1, 1.0, 10.0, 1e4):
        x = rng.standard_normal((20000, 24)) * sc
        for dt in (np.float32, np.float64):
            xd = x.astype(dt)
            ref = leechlib.nearest_point(xd)
            got = torch_ext.nearest_point(torch.from_numpy(xd).to(dev)).cpu().numpy()
            x64 = xd.astype(np.float64)
            dref = ((x64 - ref.astype(np.float64)) ** 2).sum(1)
            dgot = ((x64 - got.astype(np.float64)) ** 2).sum(1)
            bad = int((got != ref).any(axis=1).sum())
            err = float(np.max(np.abs(dgot - dref) / np.maximum(dref, 1e-300)))
            lines.append(f"nearest_point gauss x{sc:g} {np.dtype(dt).name}: {bad} of {len(x)} "
                         f"rows differ, max relative distance difference {err:.1e}")
            tol = 1e-5 if dt == np.float32 else 1e-12
            if err > tol:
                raise AssertionError(lines[-1])
    xi = rng.integers(-2, 3, (20000, 24)).astype(np.float64)
    xi[(xi == 0).all(1), 0] = 1.0
    _, ref_i = leechlib.nearest_minimal_vector(xi, coords="int", return_index=True)
    xid = torch.from_numpy(xi).to(dev)
    for path, fn in (("op", lambda t: torch_ext.nearest_minimal_vector(t, coords="int",
                                                                       return_index=True)),
                     ("pure torch", lambda t: ops.nearest_minimal_vector_torch(t, coords="int"))):
        got_i = fn(xid)[1].cpu().numpy()
        bad = int((got_i != ref_i).sum())
        lines.append(f"nearest_minimal_vector integers (exact ties, {path}): {bad} of "
                     f"{len(xi)} indices differ")
        if bad:
            raise AssertionError(lines[-1])
    x = rng.standard_normal((20000, 24)).astype(np.float32)
    ref_v, ref_i = leechlib.nearest_minimal_vector(x, return_index=True)
    got_v, got_i = torch_ext.nearest_minimal_vector(torch.from_numpy(x).to(dev), return_index=True)
    bad = int((got_i.cpu().numpy() != ref_i).sum())
    lines.append(f"nearest_minimal_vector: {bad} of {len(x)} indices differ")
    if bad:
        raise AssertionError(lines[-1])
    xt = torch.randn(64, 24, device=dev, requires_grad=True)
    q = torch_ext.quantize_ste(xt, scale=0.5)
    q.sum().backward()
    if not torch.equal(xt.grad, torch.ones_like(xt)):
        raise AssertionError("quantize_ste: gradient is not the identity")
    lines.append("quantize_ste: straight-through gradient is the identity")
    return lines


def stage_model(dev):
    from torch_ext.model import LilaConfig, LilaTransformer
    from torch_ext.quantize import quantize_model

    torch.manual_seed(0)
    cfg = LilaConfig.preset("lila-tiny")
    m = LilaTransformer(cfg).to(dev)
    idx = torch.randint(0, cfg.vocab_size, (4, cfg.block_size), device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        out = m(idx, targets=idx)
    out.loss.backward()
    lines = [f"lila-tiny bf16 forward/backward: loss {out.loss.item():.4f}"]
    if not torch.isfinite(out.loss):
        raise AssertionError("non-finite loss")
    qm = quantize_model(m.cpu(), method="leech-shape-gain").to(dev)
    with torch.no_grad():
        lq = qm(idx, targets=idx).loss.item()
    lines.append(f"2-bit leech-shape-gain copy on {dev.type}: loss {lq:.4f}")
    return lines


def stage_throughput(dev, compile_=True):
    import bench_torch_ops

    buf = io.StringIO()
    with redirect_stdout(buf):
        bench_torch_ops.main(["--cuda-n", str(1 << 22), "--minvec", "--repeat", "3"]
                             + (["--compile"] if compile_ else []))
    return buf.getvalue().splitlines()


def stage_pytest(dev):
    import subprocess

    if dev.type != "cuda":
        return ["skipped on the CPU"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                        "tests"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    lines = (r.stdout + r.stderr).strip().splitlines()
    if r.returncode != 0:
        raise AssertionError("\n".join(lines[-60:]))
    return lines[-5:]


def stage_bruteforce(dev):
    import bruteforce_torch

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = bruteforce_torch.main(["--n", str(1 << 16 if dev.type == "cuda" else 256),
                                    "--device", dev.type])
    lines = buf.getvalue().splitlines()
    if rc:
        raise AssertionError("\n".join(lines))
    return lines


def stage_dequant(dev):
    from torch_ext.quantize import LeechQuantizedLinear

    torch.manual_seed(0)
    big = (1024, 3072) if dev.type == "cuda" else (96, 192)
    lines = ["| method | layer | bits/weight | encode s (CPU) | blocks/s | weights/s |",
             "|---|---|---:|---:|---:|---:|"]
    for method in ("leech-shape-gain", "leech-ball", "e8", "rtn"):
        # the E8 encoder is far slower than the others: a smaller layer
        out_f, in_f = (big[0] // 4, big[1] // 3) if method == "e8" else big
        lin = torch.nn.Linear(in_f, out_f, bias=False)
        t0 = time.perf_counter()
        q = LeechQuantizedLinear.from_linear(lin, method=method, bits=2)
        t_enc = time.perf_counter() - t0
        q = q.to(dev)
        block = {"e8": 8, "rtn": 1}.get(method, 24)
        n_blocks = out_f * ((in_f + block - 1) // block)
        q.dequantize()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            q.dequantize()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        bits = q.bits_report()["bits_per_weight"]
        lines.append(f"| {method} | {out_f}x{in_f} | {bits:.3f} | {t_enc:.1f} | {n_blocks / best:,.0f} "
                     f"| {out_f * in_f / best:,.0f} |")
    return lines


def stage_ablation(dev, seconds, out, steps):
    import subprocess

    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "lila_ablation.py"), "--config",
           "gpu" if dev.type == "cuda" else "cpu", "--seeds", "1", "--steps", str(steps),
           "--out", os.path.join(out, "ablation")]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30.0, seconds))
        text = r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text += f"\n(timed out after {seconds:.0f} s; partial results in ablation/partial.jsonl)"
    return ["$ " + " ".join(cmd[1:])] + text.strip().splitlines()[-40:]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the report")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all stages")
    p.add_argument("--no-compile", action="store_true",
                   help="throughput without the torch.compile-d decoders (saves minutes)")
    p.add_argument("--ablation-steps", type=int, default=300, help="steps per ablation run")
    p.add_argument("--stages", default="decoder,pytest,throughput,bruteforce,dequant,model,ablation",
                   help="comma-separated stages to run, in this order")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the checks on the CPU with the pure-torch decoder (tests the script)")
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        os.environ["TORCH_EXT_CPU_BACKEND"] = "torch"
    t0 = time.perf_counter()
    report = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "stages": {}}
    lines = [f"# GPU check\n\ntorch {torch.__version__}"]
    if not (torch.cuda.is_available() or args.cpu_dry_run):
        lines.append("no CUDA device: nothing to check")
    else:
        dev = torch.device("cpu" if args.cpu_dry_run else "cuda")
        report["device"] = "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(dev)
        lines.append(f"device: {report['device']}")
        # estimated seconds per stage, to skip what would not fit the budget
        stages = {
            "decoder": (stage_decoder, 60),
            "pytest": (stage_pytest, 60),
            "throughput": (stage_throughput, 120),
            "bruteforce": (stage_bruteforce, 20),
            "dequant": (stage_dequant, 40),
            "model": (stage_model, 40),
            "ablation": (None, 60),
        }
        for name in args.stages.split(","):
            if name not in stages:
                p.error(f"--stages: unknown stage {name!r}; choose from {', '.join(stages)}")
        for name in args.stages.split(","):
            fn, need = stages[name]
            left = args.budget - (time.perf_counter() - t0)
            if args.cpu_dry_run and name in ("throughput", "ablation"):
                continue
            if name == "throughput" and args.no_compile:
                fn = functools.partial(stage_throughput, compile_=False)
            if name == "ablation":
                fn = functools.partial(stage_ablation, seconds=left - 10, out=args.out,
                                       steps=args.ablation_steps)
            if left < need:
                report["stages"][name] = {"status": "skipped", "why": f"{left:.0f} s left"}
                lines.append(f"\n## {name}: skipped ({left:.0f} s left of the budget)")
                continue
            ts = time.perf_counter()
            try:
                out = fn(dev)
                status = "ok"
            except Exception:  # report and go on: one run must bring back everything
                out = traceback.format_exc().splitlines()
                status = "FAILED"
            dt = time.perf_counter() - ts
            report["stages"][name] = {"status": status, "seconds": round(dt, 1), "lines": out}
            lines.append(f"\n## {name}: {status} ({dt:.1f} s)\n")
            lines.extend(out)
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    failed = any(s.get("status") == "FAILED" for s in report["stages"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
