"""Speed of LILA models: frozen Leech attention against its learned twin, in one run.

For each preset (``lila-tiny``, ``lila-20m``) the frozen model (``attention="frozen"``,
the preset itself) and its learned twin (the same config with ``attention="learned"``;
for ``lila-20m`` that is the ``lila-20m-learned`` preset) are measured, eager and
``torch.compile``-d, on

* ``train``     one optimizer step: forward with the loss (cross-entropy + the preset's
                alignment loss), backward, ``AdamW.step()``; tokens/s = batch × length;
* ``forward``   inference forward of the same batch (``torch.inference_mode``);
* ``generate``  :meth:`~torch_ext.LilaTransformer.generate` with its key/value cache,
                greedy (``top_k=1``), from a prompt of a quarter of the length;
                tokens/s counts the new tokens only (the prompt's prefill is included
                in the time).

The arms are interleaved: every round measures every arm of a task, in an order that
rotates from round to round, and the table gives medians over the rounds and the
median of the per-round frozen/learned ratios (with their range), so that load from
other processes falls on both arms alike.  Compilation happens before the rounds
(its time is reported, not counted).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over each measurement
(weights, optimizer state and activations); on the CPU, in a fresh subprocess per
model (eager only, Linux), the peak resident set size during an inference forward and
then during the first training step, above the resident size just before it (the
kernel's high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs``; the CPU
allocator has no peak counter, and ``tracemalloc`` does not see tensor memory).  Memory
that the allocator keeps after the forward is not counted again in the step.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/lila_speed.py --out speed.json   # CPU, CUDA if present
    OMP_NUM_THREADS=2 python benchmarks/lila_speed.py --quick            # about 2 minutes
    python benchmarks/lila_speed.py --device cuda --presets lila-20m

``--quick`` (about 2 minutes on 2 busy cores) uses fewer rounds and a shorter
``lila-20m`` batch (1 × 128 on the CPU), skips the memory subprocesses and measures
eager arms only unless ``--compile`` is given: compiling ``lila-20m`` for training takes
several minutes per arm on such a machine (the full run takes 30-60 minutes there).
Prints a markdown table; ``--out FILE`` also writes every measurement as JSON.  The
ratio column is the frozen median tokens/s over the learned one (in brackets: the
range of the ratios of single rounds); "best rounds" compares the fastest round of
each arm (the least disturbed, as ``timeit`` advises); "by CPU time" is the ratio of
the medians of the process CPU time per token, which a busy machine disturbs less
than the wall clock (with one thread; with more, it also counts threads spinning).
Below the table, the matrix-product flops per token of each mode (counted, so the
same on any machine) give the ratio that a purely compute-bound run would approach.
``--profile`` prints instead where a CPU training step of each mode goes
(``torch.profiler`` self time per operator).  ``--align-weight 0`` measures the models without
the alignment loss (its cost depends on the hidden states, not on the attention);
``--attn-dropout 0.1`` with dropout on the attention probabilities, which the
``lila-20m`` presets leave off: ``scaled_dot_product_attention`` then falls back from
its fused kernels to the math path, which costs both arms alike and about 4× the
attention time on a CPU, and the ratio moves towards 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from torch_ext import LilaConfig, LilaTransformer  # noqa: E402

PRESETS = ("lila-tiny", "lila-20m")
MODES = ("frozen", "learned")
TASKS = ("train", "forward", "generate")

#: (batch, length) per preset, device kind and run size
SHAPES = {
    ("lila-tiny", "cpu", "full"): (16, 64),
    ("lila-tiny", "cpu", "quick"): (8, 64),
    ("lila-20m", "cpu", "full"): (4, 512),
    ("lila-20m", "cpu", "quick"): (1, 128),
    ("lila-tiny", "cuda", "full"): (64, 64),
    ("lila-tiny", "cuda", "quick"): (64, 64),
    ("lila-20m", "cuda", "full"): (16, 512),
    ("lila-20m", "cuda", "quick"): (8, 512),
}


def config(preset: str, mode: str, overrides=None) -> LilaConfig:
    """The frozen preset, or its learned twin (same config, learned q/k/v), with ``overrides``."""
    return LilaConfig.preset(preset, attention=mode, **(overrides or {}))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _autocast(dev):
    if dev.type == "cuda":  # as torch_ext.lila.train does on GPUs
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Arm:
    """One model (mode × eager/compiled) and the three tasks on it."""

    def __init__(self, preset, mode, compiled, dev, batch, length, gen_new, overrides=None):
        self.name = f"{mode} {'compiled' if compiled else 'eager'}"
        self.mode, self.compiled, self.dev = mode, compiled, dev
        torch.manual_seed(0)
        self.model = LilaTransformer(config(preset, mode, overrides)).to(dev)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        if compiled:
            # in place: generate() calls self(...), which then runs the compiled code
            self.model.compile(dynamic=None)
        g = torch.Generator().manual_seed(1)
        vocab = self.model.config.vocab_size
        self.idx = torch.randint(0, vocab, (batch, length), generator=g).to(dev)
        self.prompt = self.idx[:, : max(1, length // 4)]
        self.gen_new = gen_new

    def run(self, task):
        m, dev = self.model, self.dev
        if task == "train":
            m.train()
            with _autocast(dev):
                loss = m(self.idx, targets=self.idx).loss
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return self.idx.numel()
        if task == "forward":
            m.eval()
            with torch.inference_mode(), _autocast(dev):
                m(self.idx)
            return self.idx.numel()
        with _autocast(dev):
            m.generate(self.prompt, self.gen_new, top_k=1)
        return self.prompt.shape[0] * self.gen_new

    def timed(self, task, reps):
        """Wall and process CPU seconds per call (means over ``reps``), tokens, peak CUDA bytes."""
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        _sync(self.dev)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            tokens = self.run(task)
        _sync(self.dev)
        dt = (time.perf_counter() - t) / reps
        dc = (time.process_time() - c) / reps
        peak = torch.cuda.max_memory_allocated(self.dev) if self.dev.type == "cuda" else None
        return dt, dc, tokens, peak


def _reps(preset, dev, quick):
    if dev.type == "cuda":
        return {"train": 5, "forward": 10, "generate": 1}
    if preset == "lila-tiny":
        return {"train": 3 if quick else 10, "forward": 5 if quick else 20, "generate": 1}
    return {"train": 1, "forward": 1, "generate": 1}


def measure_preset(preset, dev, args, log):
    """Interleaved rounds over the arms of one preset on one device."""
    kind = "quick" if args.quick else "full"
    batch, length = SHAPES[(preset, dev.type, kind)]
    if args.batch_size:
        batch = args.batch_size
    if args.seq_len:
        length = args.seq_len
    block = config(preset, "frozen").block_size
    if length > block:
        raise SystemExit(f"--seq-len {length} exceeds the block size {block} of {preset}")
    gen_new = min(args.gen_tokens, block - max(1, length // 4))
    compiled = (False,) if args.no_compile else (False, True)
    arms = [Arm(preset, m, c, dev, batch, length, gen_new, args.overrides)
            for c in compiled for m in MODES]
    reps = _reps(preset, dev, args.quick)
    out = {"preset": preset, "device": str(dev), "batch": batch, "length": length,
           "gen_prompt": arms[0].prompt.shape[1], "gen_new": gen_new, "reps": reps,
           "rounds": args.rounds, "compile_s": {}, "times": {}}
    for a in arms:  # warm-up (and compilation) before any timing
        for task in TASKS:
            t = time.perf_counter()
            for _ in range(2 if a.compiled else 1):
                a.run(task)
            _sync(dev)
            if a.compiled:
                out["compile_s"][f"{a.name} {task}"] = time.perf_counter() - t
        log(f"  {preset} {dev}: {a.name} ready")
    for r in range(args.rounds):
        for task in TASKS:
            order = arms[r % len(arms):] + arms[: r % len(arms)]
            if r % 2:
                order.reverse()
            for a in order:
                dt, dc, tokens, peak = a.timed(task, reps[task])
                out["times"].setdefault(f"{a.name}|{task}", []).append(
                    {"s": dt, "cpu_s": dc, "tokens": tokens, "tok_s": tokens / dt,
                     "peak_bytes": peak})
        log(f"  {preset} {dev}: round {r + 1}/{args.rounds} done")
    return out


def _status(field):
    """A ``/proc/self/status`` memory field in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _peak_during(fn):
    """Peak resident set size while ``fn()`` runs, above the size before it (bytes).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) and reads ``VmHWM``.
    (``ru_maxrss`` cannot be reset and is inherited across ``exec`` from the parent.)
    """
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return _status("VmHWM") - base


def memory_probe(preset, mode, batch, length, overrides=None):
    """In a fresh process: peak RSS increase of a forward and of a training step (bytes)."""
    torch.manual_seed(0)
    model = LilaTransformer(config(preset, mode, overrides))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    idx = torch.randint(0, model.config.vocab_size, (batch, length))

    def forward():
        with torch.inference_mode():
            model.eval()(idx)

    def train():
        model.train()
        model(idx, targets=idx).loss.backward()
        opt.step()  # the first step also allocates AdamW's two moments

    return {"forward": _peak_during(forward), "train": _peak_during(train)}


def matmul_flops(preset, length, overrides=None):
    """Matrix-product flops per token of a training step and of a forward, per mode.

    Counted by ``torch.utils.flop_counter`` (matmuls and attention) on one sequence;
    the same on every machine, unlike the times.
    """
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = LilaTransformer(config(preset, mode, overrides))
        idx = torch.randint(0, model.config.vocab_size, (1, length))
        with FlopCounterMode(display=False) as fc:
            model(idx, targets=idx).loss.backward()
        train = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(idx)
        out[mode] = {"train": train / length, "forward": fc.get_total_flops() / length}
    return out


def profile_train(preset, batch, length, overrides=None, steps=2, rows=12) -> str:
    """Where a CPU training step goes: ``torch.profiler`` self time per operator, per mode.

    Both arms run ``steps`` profiled steps (eager) after two warm-up steps; the table
    gives each operator's share of the step and its milliseconds per step.
    """
    from torch.profiler import ProfilerActivity, profile

    out = []
    for mode in MODES:
        torch.manual_seed(0)
        model = LilaTransformer(config(preset, mode, overrides)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        idx = torch.randint(0, model.config.vocab_size, (batch, length))

        def step(model=model, opt=opt, idx=idx):
            model(idx, targets=idx).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in ev)
        ev.sort(key=lambda e: -e.self_cpu_time_total)
        out.append(f"{preset} {mode}, {batch} × {length}: {total / steps / 1e3:,.0f} ms of self CPU time "
                   "per step")
        out += [f"  {e.self_cpu_time_total / total:6.1%}  {e.self_cpu_time_total / steps / 1e3:9.1f} ms  "
                f"{e.key}" for e in ev[:rows]]
    return "\n".join(out)


def cpu_memory(preset, batch, length, overrides=None):
    res = {}
    for mode in MODES:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe",
               json.dumps([preset, mode, batch, length, overrides])]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            res[mode] = None
            continue
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    return res


def summarize(result):
    """Rows: task, compiled, medians, ratio and its range over rounds, peaks."""
    rows = []
    times = result["times"]
    for task in TASKS:
        for comp in ("eager", "compiled"):
            f = times.get(f"frozen {comp}|{task}")
            l = times.get(f"learned {comp}|{task}")
            if not f or not l:
                continue
            ratios = [a["tok_s"] / b["tok_s"] for a, b in zip(f, l, strict=False)]  # per round
            row = {"task": task, "compile": comp,
                   "frozen_tok_s": statistics.median(x["tok_s"] for x in f),
                   "learned_tok_s": statistics.median(x["tok_s"] for x in l),
                   "ratio_min": min(ratios), "ratio_max": max(ratios)}
            row["ratio"] = row["frozen_tok_s"] / row["learned_tok_s"]
            row["best_ratio"] = max(x["tok_s"] for x in f) / max(x["tok_s"] for x in l)
            fc = statistics.median(x["cpu_s"] / x["tokens"] for x in f)
            lc = statistics.median(x["cpu_s"] / x["tokens"] for x in l)
            row["cpu_ratio"] = lc / fc if fc > 0 else None
            if f[0]["peak_bytes"] is not None:
                row["frozen_peak"] = max(x["peak_bytes"] for x in f)
                row["learned_peak"] = max(x["peak_bytes"] for x in l)
            rows.append(row)
    return rows


def _mib(b):
    return "—" if b is None else f"{b / 2**20:,.0f}"


def markdown(results) -> str:
    lines = ["| preset | device | batch × length | task | mode | frozen tokens/s | learned tokens/s "
             "| frozen / learned (rounds) | best rounds | by CPU time | peak MiB frozen / learned |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        mem = res.get("cpu_memory") or {}
        for row in summarize(res):
            shape = f"{res['batch']} × {res['length']}"
            if row["task"] == "generate":
                shape = f"{res['batch']} × ({res['gen_prompt']} + {res['gen_new']})"
            if "frozen_peak" in row:
                peak = f"{_mib(row['frozen_peak'])} / {_mib(row['learned_peak'])}"
            elif row["compile"] == "eager" and row["task"] in ("train", "forward") and mem:
                fm, lm = mem.get("frozen"), mem.get("learned")
                peak = (f"{_mib(fm and fm[row['task']])} / {_mib(lm and lm[row['task']])} "
                        "(RSS)")
            else:
                peak = "—"
            lines.append(
                f"| {res['preset']} | {res['device']} | {shape} | {row['task']} | {row['compile']} "
                f"| {row['frozen_tok_s']:,.0f} | {row['learned_tok_s']:,.0f} "
                f"| {row['ratio']:.2f} ({row['ratio_min']:.2f}–{row['ratio_max']:.2f}) "
                f"| {row['best_ratio']:.2f} "
                f"| {'—' if row['cpu_ratio'] is None else format(row['cpu_ratio'], '.2f')} "
                f"| {peak} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller lila-20m batch")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: the CPU, and CUDA when present (default)")
    ap.add_argument("--presets", default=",".join(PRESETS),
                    help=f"comma-separated, from {', '.join(PRESETS)}")
    ap.add_argument("--no-compile", action="store_true", help="eager arms only")
    ap.add_argument("--compile", action="store_true",
                    help="with --quick: also the compiled arms")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5; quick: 3)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    ap.add_argument("--seq-len", type=int, default=None, help="override the sequence length")
    ap.add_argument("--gen-tokens", type=int, default=None, help="new tokens per generate (64; quick: 16)")
    ap.add_argument("--align-weight", type=float, default=None,
                    help="override the presets' alignment-loss weight (0.01; 0 disables it)")
    ap.add_argument("--attn-dropout", type=float, default=None,
                    help="override the presets' attention-probability dropout (lila-20m: 0; "
                         "with dropout, SDPA cannot use its fused kernels)")
    ap.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    ap.add_argument("--profile", action="store_true",
                    help="only profile a CPU training step of each mode (torch.profiler, eager)")
    ap.add_argument("--out", default=None, help="also write the measurements as JSON")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    bad = [p for p in presets if p not in PRESETS]
    if bad or not presets:
        ap.error(f"--presets must name some of {', '.join(PRESETS)}, got {args.presets!r}")
    args.presets = presets
    for name in ("rounds", "batch_size", "seq_len", "gen_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.compile and args.no_compile:
        ap.error("--compile and --no-compile exclude each other")
    if args.quick and not args.compile:
        args.no_compile = True
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.gen_tokens is None:
        args.gen_tokens = 16 if args.quick else 64
    if args.align_weight is not None and not args.align_weight >= 0:
        ap.error(f"--align-weight must be >= 0, got {args.align_weight}")
    if args.attn_dropout is not None and not 0 <= args.attn_dropout < 1:
        ap.error(f"--attn-dropout must be in [0, 1), got {args.attn_dropout}")
    args.overrides = {k: v for k, v in (("align_weight", args.align_weight),
                                        ("attn_dropout", args.attn_dropout)) if v is not None}
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # the alignment loss's Numba kernels run on as many threads as torch (leechlib gives
    # torch its own count back after each call; this keeps Numba's regions to it too)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(torch.get_num_threads()))
    if args.memory_probe:
        print(json.dumps(memory_probe(*json.loads(args.memory_probe))))
        return
    if args.profile:
        for preset in args.presets:
            batch, length = SHAPES[(preset, "cpu", "quick" if args.quick else "full")]
            print(profile_train(preset, args.batch_size or batch, args.seq_len or length, args.overrides))
        return
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    # every arm compiles LilaTransformer.forward for train, eval, prefill and decode: more
    # graphs than Dynamo's default limit of 8 per function, past which it would run eager
    torch._dynamo.config.recompile_limit = 64
    t0 = time.perf_counter()
    results = []
    for dev in devices:
        for preset in args.presets:
            res = measure_preset(preset, dev, args, log)
            res["flops_per_token"] = matmul_flops(preset, res["length"], args.overrides)
            if dev.type == "cpu" and not (args.no_memory or args.quick):
                res["cpu_memory"] = cpu_memory(preset, res["batch"], res["length"],
                                               args.overrides)
            results.append(res)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "machine": platform.machine(), "cuda": torch.cuda.get_device_name() if any(
                d.type == "cuda" for d in devices) else None,
            "argv": sys.argv[1:], "overrides": args.overrides, "wall_s": time.perf_counter() - t0}
    print(f"torch {info['torch']}, {info['threads']} CPU threads "
          f"(OMP_NUM_THREADS={info['OMP_NUM_THREADS']}), {args.rounds} interleaved rounds, "
          f"medians; {info['wall_s']:.0f} s"
          + (f"; config overrides {args.overrides}" if args.overrides else "") + "\n")
    print(markdown(results))
    print()
    for r in results:
        f, l = r["flops_per_token"]["frozen"], r["flops_per_token"]["learned"]
        print(f"{r['preset']} ({r['device']}): matrix-product MFLOP per token, frozen / learned: "
              f"training {f['train'] / 1e6:,.1f} / {l['train'] / 1e6:,.1f} "
              f"(learned {l['train'] / f['train']:.3f}×), forward {f['forward'] / 1e6:,.1f} / "
              f"{l['forward'] / 1e6:,.1f} (learned {l['forward'] / f['forward']:.3f}×)")
    comp = {k: round(v, 1) for r in results for k, v in r["compile_s"].items()}
    if comp:
        print("\nfirst two calls of each compiled arm (compilation included), s: "
              + ", ".join(f"{k} {v}" for k, v in comp.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "results": results, "summary": [
                {"preset": r["preset"], "device": r["device"], **row}
                for r in results for row in summarize(r)]}, f, indent=1)


if __name__ == "__main__":
    main()
