"""End to end: generation speed and resident memory of a quantized LILA model against its float twin.

A :class:`~torch_ext.LilaTransformer` with at least 50 M weights in its ``nn.Linear``
layers (default ``d_model=768``, 9 layers: 53.1 M) is built with random weights
(fixed seed) and saved; each method of ``--methods`` quantizes it (2 bits per weight,
no rotation unless ``--rotation``, no calibration) into a file written by
:func:`~torch_ext.quantize.save_quantized`.  The weights are random: the numbers are
speed and memory only, nothing about the quality of the output.

Every arm then runs in a fresh process of its own:

* ``float``          :meth:`LilaTransformer.load <torch_ext.LilaTransformer.load>` of the float file;
* ``M codes``        ``load_quantized(file, cache=False)``: the quantized layers hold
                     only their codes and scales, and the methods with a table decode
                     (``leech-trio``, ``e8``, ``rtn``) multiply from the packed codes;
* ``M cache``        ``load_quantized(file, cache=True)``: each layer decodes its weight
                     once, on the first forward, and keeps it (dense float32).

and reports, in this order: the load time; the resident set size (RSS) after loading;
a first ``generate`` of ``--warmup`` tokens at every batch size (Numba compiles its
kernels lazily, the cached arms decode their weights: its time is the "first call"
column, not counted in the speed); then ``--tokens`` new tokens after a
``--prompt``-token random prompt at each batch size of ``--batches``, sampled with a
seeded generator through the key/value cache (``generate(..., use_cache=True)``);
tokens/s is batch × new tokens over the wall time of the whole call (the prompt's
prefill included; the best of ``--repeats``).  Memory, in MiB:

* ``RSS base``   after the imports (torch, torch_ext, Numba: the same in every arm);
* ``RSS load``   after loading, after ``gc.collect()`` and glibc's ``malloc_trim(0)``
                 (which hands freed heap memory back, so that what the loader freed
                 and the allocator kept is not counted; ``--no-trim`` leaves it; the
                 untrimmed size is in the JSON);
* ``peak first`` the peak RSS during the first call (Numba's compiler, the dense
                 cache being built), from the kernel's high-water mark ``VmHWM``,
                 reset through ``/proc/self/clear_refs`` (Linux);
* ``peak gen``   the peak RSS during the timed generation (reset and trimmed again
                 after the first call): the memory the model needs while it generates;
* ``peak all``   the largest of the process's peaks, loading included.  Not
                 ``ru_maxrss``: on Linux it carries the parent's peak over ``exec``
                 (a child of a 500 MB parent reports at least 500 MB), so it would
                 not be the arm's alone; it is in the JSON as ``ru_maxrss_mb``;
* ``lin bits/w`` the bytes resident in the model's linear layers while it
                 generates, × 8, over their weights: for the quantized layers their
                 buffers and parameters (codes, scales, gains, biases), the float32
                 copy of the scales that the codes kernel keeps, and the dense cache
                 when there is one; for the float model its ``nn.Linear`` weights.  The
                 codebook tables that all layers share (e8: 2 MB) are in the JSON
                 (``shared_tables_mb``), not in this column;
* ``LLVM MB``    resident pages of llvmlite's library (Numba's compiler, needed to
                 load even cached kernels) at the end: part of every RSS above in the
                 arms that run Numba kernels, the same whatever the model's size.

``cpu tok/s`` counts the process's CPU time instead of the wall time: with one thread
it is the speed the arm would have on an idle core (a busy machine slows the wall
clock, not the CPU time, as long as the arm runs on one thread).

Usage::

    python benchmarks/bench_generate.py                      # leech-trio, e8, rtn, float; 1 thread
    python benchmarks/bench_generate.py --methods rtn e8 --batches 1 8 --json out.json
    python benchmarks/bench_generate.py --small              # a tiny model, under a minute

Quantized files are cached in ``--work-dir`` (default: ``leechlib-bench-generate``
in the temporary directory), keyed by the model config, the seed, the method and the
rotation (not by the library's version: clear the directory after changing a
quantizer), so a rerun skips the quantization.  Making them takes long: for the
53.1 M weights, with ``--workers 2`` on a busy two-core machine, 14 minutes for
leech-trio, 15 for e8, 1 for rtn; the seven arms then take about 5 minutes.
``--small`` takes under a minute once its files are made (a minute more the first
time: fitting the e8 and trio codebooks costs seconds whatever the model).
``--threads`` sets torch's threads and ``NUMBA_NUM_THREADS`` of every arm (default 1).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from torch_ext import LilaConfig, LilaTransformer  # noqa: E402
from torch_ext.quantize import (  # noqa: E402
    METHODS,
    LeechQuantizedLinear,
    load_quantized,
    model_bits_report,
    quantize_model,
    save_quantized,
)

#: the default model: 9 blocks of width 768 (frozen Leech attention: v and out
#: projections, MLP 4x): 9 * 10 * 768**2 = 53,084,160 linear weights
MODEL = dict(vocab_size=2048, block_size=256, d_model=768, n_layer=9, n_head=8, align_weight=0.0)
#: ``--small``: a smoke-test model (184,320 linear weights)
SMALL = dict(vocab_size=256, block_size=64, d_model=96, n_layer=2, n_head=2, align_weight=0.0)
MB = 1 << 20


def linear_weights(model: nn.Module) -> int:
    """Weights of the model's ``nn.Linear`` layers."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def _tag(cfg: dict, seed: int) -> str:
    return hashlib.sha1(json.dumps([cfg, seed], sort_keys=True).encode()).hexdigest()[:10]


def prepare(args, cfg: dict) -> tuple[str, dict]:
    """The float file and each method's quantized file (made if not in the work dir)."""
    os.makedirs(args.work_dir, exist_ok=True)
    tag = _tag(cfg, args.seed)
    float_path = os.path.join(args.work_dir, f"float-{tag}.safetensors")
    model = None
    if not os.path.exists(float_path):
        torch.manual_seed(args.seed)
        model = LilaTransformer(LilaConfig(**cfg))
        model.save(float_path + ".part")
        os.replace(float_path + ".part", float_path)
    files = {}
    rot = "hadamard" if args.rotation else "none"
    for method in args.methods:
        path = os.path.join(args.work_dir, f"q-{method}-{rot}-{tag}.safetensors")
        info_path = path[: -len(".safetensors")] + ".json"
        if not (os.path.exists(path) and os.path.exists(info_path)):
            q = model if model is not None else LilaTransformer.load(float_path)
            model = None  # quantized in place below
            print(f"quantizing {linear_weights(q):,} linear weights with {method} "
                  f"(rotation {rot}, workers {args.workers}) ...", flush=True)
            t0 = time.perf_counter()
            quantize_model(q, method=method, bits=2, rotation=rot, workers=args.workers)
            seconds = time.perf_counter() - t0
            rep = model_bits_report(q)
            save_quantized(q, path + ".part")
            os.replace(path + ".part", path)
            info = {"seconds": seconds, "workers": args.workers,
                    "bits_per_quantized_weight": rep.bits_per_quantized_weight,
                    "quantized_weights": rep.quantized_weights, "file_bytes": os.path.getsize(path)}
            with open(info_path, "w") as f:
                json.dump(info, f)
            print(f"  {seconds:.1f} s, {rep.bits_per_quantized_weight:.4f} bits/weight stored", flush=True)
            del q
            gc.collect()
        with open(info_path) as f:
            files[method] = {"path": path, **json.load(f)}
    return float_path, files


# --------------------------------------------------------------------------- one arm, in its own process


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _mapped_rss(word: str) -> int:
    """Resident bytes of the file mappings whose path contains ``word`` (``/proc/self/smaps``)."""
    total, hit = 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    hit = word in line
                elif hit and first == "Rss:":
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim() -> bool:
    gc.collect()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


def resident(model: nn.Module) -> dict:
    """Bytes held by the linear layers (quantized or not) and by every other tensor."""
    spans: list = []  # (start, end) of the memory counted so far: each byte once

    def size(t) -> int:
        if t is None:
            return 0
        if isinstance(t, torch.Tensor):
            start, n = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        else:  # numpy: a view of a counted tensor is free, a copy is not
            start, n = t.ctypes.data, t.nbytes
        if n == 0 or any(a <= start and start + n <= b for a, b in spans):
            return 0
        spans.append((start, start + n))
        return n

    lin_bytes = lin_weights = tables = 0
    table_ids: set = set()
    for m in model.modules():
        if isinstance(m, LeechQuantizedLinear):
            lin_weights += m.in_features * m.out_features
            lin_bytes += sum(size(t) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))
            # what the layer keeps besides (private: read here to count it, not to use it)
            lin_bytes += sum(size(w) for _, w in m._cache.values())  # the dense cache
            state = m._packed_state  # the codes kernel's float32 scales and views of the codes
            if state is not None:
                packed, scales, group, spec = state[1]
                lin_bytes += size(packed) + size(scales) + size(group)
                if spec.table is not None and id(spec.table) not in table_ids:
                    table_ids.add(id(spec.table))
                    tables += spec.table.nbytes
        elif isinstance(m, nn.Linear):
            lin_weights += m.weight.numel()
            lin_bytes += size(m.weight) + size(m.bias)
    other = sum(size(t) for t in (*model.parameters(), *model.buffers()))
    return {"linear_bytes": lin_bytes, "linear_weights": lin_weights,
            "linear_bits_per_weight": 8 * lin_bytes / lin_weights if lin_weights else float("nan"),
            "other_bytes": other, "shared_tables_mb": tables / MB}


def run_arm(spec: dict) -> dict:
    """Load one arm, warm it up, time its generation, and measure its memory."""
    torch.set_num_threads(spec["threads"])
    import leechlib.kernels  # noqa: F401 - the same imports in every arm

    out = {"arm": spec["arm"], "path": spec["path"], "threads": torch.get_num_threads(),
           "numba_threads": os.environ.get("NUMBA_NUM_THREADS")}
    out["rss_base_mb"] = _status("VmRSS") / MB
    t0 = time.perf_counter()
    if spec["kind"] == "float":
        model = LilaTransformer.load(spec["path"])
    else:
        model = load_quantized(spec["path"], cache=spec["kind"] == "cache")
    model.eval()
    out["load_s"] = time.perf_counter() - t0
    out["rss_after_load_untrimmed_mb"] = _status("VmRSS") / MB
    out["trimmed"] = _trim() if spec["trim"] else False
    out["rss_after_load_mb"] = _status("VmRSS") / MB
    out["peak_load_mb"] = _status("VmHWM") / MB  # the process's peak so far: loading
    out["peak_reset"] = _reset_peak()
    cfg = model.config
    g = torch.Generator().manual_seed(spec["seed"])
    prompts = {b: torch.randint(0, cfg.vocab_size, (b, spec["prompt"]), generator=g) for b in spec["batches"]}
    t0 = time.perf_counter()
    for b in spec["batches"]:
        model.generate(prompts[b], spec["warmup"], generator=torch.Generator().manual_seed(0))
    out["first_call_s"] = time.perf_counter() - t0
    out["peak_first_mb"] = _status("VmHWM") / MB if out["peak_reset"] else float("nan")
    if spec["trim"]:
        _trim()
    out["rss_after_first_mb"] = _status("VmRSS") / MB
    _reset_peak()
    out["tok_s"], out["tok_s_cpu"] = {}, {}
    for b in spec["batches"]:
        best = best_cpu = float("inf")
        for _ in range(spec["repeats"]):
            gen = torch.Generator().manual_seed(spec["seed"])
            t0, c0 = time.perf_counter(), time.process_time()
            y = model.generate(prompts[b], spec["tokens"], generator=gen)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            assert y.shape == (b, spec["prompt"] + spec["tokens"])
        out["tok_s"][str(b)] = b * spec["tokens"] / best
        out["tok_s_cpu"][str(b)] = b * spec["tokens"] / best_cpu  # by the process's CPU time
    out["peak_gen_mb"] = _status("VmHWM") / MB if out["peak_reset"] else float("nan")
    out["rss_end_mb"] = _status("VmRSS") / MB
    out["llvmlite_mb"] = _mapped_rss("llvmlite") / MB  # Numba's compiler library, once loaded
    out.update(resident(model))
    out["linear_mb"] = out["linear_bytes"] / MB
    out["other_mb"] = out["other_bytes"] / MB
    out["peak_all_mb"] = max(out["peak_load_mb"], out["peak_first_mb"], out["peak_gen_mb"])
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    return out


def _child_main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    out = run_arm(spec)
    with open(spec["result"], "w") as f:
        json.dump(out, f)
    return 0


def measure(arm: str, kind: str, path: str, args, tmp: str) -> dict:
    spec = {"arm": arm, "kind": kind, "path": path, "threads": args.threads, "batches": args.batches,
            "tokens": args.tokens, "prompt": args.prompt, "warmup": args.warmup, "repeats": args.repeats,
            "seed": args.seed, "trim": not args.no_trim,
            "result": os.path.join(tmp, f"{arm.replace(' ', '_')}.json")}
    spec_path = spec["result"] + ".spec"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec_path], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"arm {arm!r} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    with open(spec["result"]) as f:
        return json.load(f)


# --------------------------------------------------------------------------- report


def table(rows: list[dict], batches: list[int]) -> str:
    head = ["arm", "load s", "first call s", "RSS base MB", "RSS load MB", "peak first MB", "peak gen MB",
            "peak all MB",
            "LLVM MB", *[f"tok/s b{b}" for b in batches], *[f"cpu tok/s b{b}" for b in batches],
            "lin bits/w", "lin MB"]
    lines = [head]
    for r in rows:
        lines.append([r["arm"], f"{r['load_s']:.2f}", f"{r['first_call_s']:.2f}", f"{r['rss_base_mb']:.0f}",
                      f"{r['rss_after_load_mb']:.0f}", f"{r['peak_first_mb']:.0f}", f"{r['peak_gen_mb']:.0f}",
                      f"{r['peak_all_mb']:.0f}",
                      f"{r['llvmlite_mb']:.0f}", *[f"{r['tok_s'][str(b)]:.1f}" for b in batches],
                      *[f"{r['tok_s_cpu'][str(b)]:.1f}" for b in batches],
                      f"{r['linear_bits_per_weight']:.3f}", f"{r['linear_mb']:.1f}"])
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = []
    for i, x in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(x)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w[j] + 1) + (":" if j else "-") for j in range(len(head))) + "|")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for what each column measures.")
    p.add_argument("--methods", nargs="+", default=["leech-trio", "e8", "rtn"], choices=METHODS,
                   help="quantization methods, 2 bits per weight each (default: leech-trio e8 rtn)")
    p.add_argument("--no-float", action="store_true", help="leave out the float arm")
    p.add_argument("--arms", nargs="+", default=["codes", "cache"], choices=["codes", "cache"],
                   help="quantized arms: cache=False (codes) and/or cache=True (default both)")
    p.add_argument("--rotation", action="store_true", help="quantize with the Hadamard rotation (default off)")
    p.add_argument("--tokens", type=int, default=64, help="new tokens generated per measurement (default 64)")
    p.add_argument("--prompt", type=int, default=8, help="prompt length (default 8)")
    p.add_argument("--batches", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--warmup", type=int, default=2, help="tokens of the first (untimed) call (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per batch size, best kept (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch and Numba threads of each arm (default 1)")
    p.add_argument("--workers", type=int, default=1, help="encoder threads while quantizing (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the prompts (default 0)")
    p.add_argument("--small", action="store_true",
                   help="a tiny model (smoke test: under a minute once its files are made)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "leechlib-bench-generate"),
                   help="where the float and quantized files are kept between runs (default: %(default)s)")
    p.add_argument("--no-trim", action="store_true", help="no malloc_trim(0) after loading")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    p.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("tokens", "prompt", "warmup", "repeats", "threads", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if min(args.batches) < 1:
        p.error("--batches must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return _child_main(args.child)
    cfg = dict(SMALL if args.small else MODEL)
    if args.prompt + args.tokens > cfg["block_size"]:
        cfg["block_size"] = args.prompt + args.tokens
    with torch.device("meta"):  # shapes only
        n_lin = linear_weights(LilaTransformer(LilaConfig(**cfg)))
    print(f"LILA model {cfg}: {n_lin:,} weights in nn.Linear layers; random weights (seed {args.seed}): "
          "speed and memory only, no claim on quality", flush=True)
    float_path, files = prepare(args, cfg)
    for m, info in files.items():
        print(f"{m}: {info['path']} ({info['file_bytes'] / MB:.1f} MB, {info['bits_per_quantized_weight']:.4f} "
              f"bits/weight stored, quantized in {info['seconds']:.1f} s with {info['workers']} worker(s))")
    print(f"float: {float_path} ({os.path.getsize(float_path) / MB:.1f} MB)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        todo = [] if args.no_float else [("float", "float", float_path)]
        for m in args.methods:
            todo += [(f"{m} {kind}", kind, files[m]["path"]) for kind in args.arms]
        for arm, kind, path in todo:
            print(f"measuring {arm} ...", flush=True)
            rows.append(measure(arm, kind, path, args, tmp))
    print()
    print(f"{args.tokens} new tokens after a {args.prompt}-token prompt, {args.threads} thread(s); "
          "RSS in MiB; lin bits/w: bytes resident in the linear layers while generating x 8 / their weights")
    print(table(rows, args.batches))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "linear_weights": n_lin, "args": {k: v for k, v in vars(args).items()
                                                                       if k != "child"},
                       "files": files, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
