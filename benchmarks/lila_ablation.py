"""LILA ablation: does a frozen Leech kernel in attention, or the alignment loss, help?

Same corpus, tokenizer, steps, batches and seeds for every arm:

* ``learned``  standard attention with learned Q/K projections (the baseline);
* ``leech``    frozen Q/K projections = Leech-lattice kernels (``attention="frozen"``);
* ``random``   frozen Q/K projections = random orthogonal kernels (the control);

each without and with the alignment loss, over several seeds.  Every run is scored
on the *whole* validation split with :func:`torch_ext.lila.evaluate.evaluate` (bits per
character = total NLL in bits / characters of the split).  Writes, under ``--out``:

* ``ablation.md``   markdown table: validation BPC mean ± sd over seeds, parameters,
  training tokens/s;
* ``curves.png``    validation BPC against step (mean over seeds, ± sd band);
* ``results.json``  every run (config, history, final evaluation).

Configurations
--------------
``--config cpu``  a 2-layer, d_model 48, context 64 model, 600 steps of 16 windows,
    byte tokenizer, Shakespeare with a 5 % validation split (one play, 126 k
    characters); 2 processes of 1 thread.  About 9 minutes on a 2-core machine.
    The alignment loss uses the ``"frame"`` directions (``|cos|`` of each 24-block of
    the last hidden state with its nearest coordinate axis, the form of the published
    LILA auxiliary loss), weight 0.01.  ``--align-directions minimal`` uses the model's
    default, the nearest of the 196 560 Leech minimal vectors: exact, but about 0.1 s
    per step for the 2048 blocks of a batch on one of these cores, which makes the
    configuration take 20-40 minutes on a shared 2-core machine.
``--config gpu``  the ``lila-20m`` / ``lila-20m-learned`` shapes (d_model 384, 12
    layers, context 512, ~20 M parameters), BPE 2048 on Shakespeare (10 % split),
    300 steps of 16 windows, ``"minimal"`` alignment directions, bf16 autocast, one
    process; sized for one H200 in about 8 minutes.

Usage::

    python benchmarks/lila_ablation.py --config cpu            # ~10 min on 2 cores
    python benchmarks/lila_ablation.py --config gpu --out runs/ablation-gpu
    python benchmarks/lila_ablation.py --config cpu --steps 50 --seeds 1   # smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ARMS = {
    "learned": dict(attention="learned"),
    "leech": dict(attention="frozen", kernel="leech"),
    "random": dict(attention="frozen", kernel="random"),
}

CONFIGS = {
    "cpu": dict(
        train=dict(preset="lila-tiny", data="shakespeare", tokenizer="byte", val_fraction=0.05,
                   d_model=48, n_layer=2, n_head=2, block_size=64, dropout=0.0,
                   steps=600, batch_size=16, grad_accum=1, lr=2e-3, warmup=50, eval_every=100,
                   eval_batch_size=64, num_threads=1, device="cpu"),
        align_weight=0.01, align_directions="frame", seeds=3, jobs=2,
    ),
    "gpu": dict(
        train=dict(preset="lila-20m", data="shakespeare", tokenizer="bpe", bpe_vocab_size=2048,
                   val_fraction=0.1, steps=300, batch_size=16, grad_accum=1, lr=6e-4, warmup=30,
                   eval_every=50, eval_batch_size=32, device="cuda"),
        align_weight=0.01, align_directions="minimal", seeds=3, jobs=1,
    ),
}


def _init_worker(threads):
    import torch

    if threads:
        torch.set_num_threads(threads)


def _one_run(job: dict) -> dict:
    """Train and evaluate one (arm, align, seed); runs in a worker process."""
    from torch_ext.lila.evaluate import evaluate
    from torch_ext.lila.train import load_checkpoint, train

    t0 = time.perf_counter()
    res = train(job["train"])
    ck = load_checkpoint(res.checkpoint)
    from torch_ext.lila.data import load_data

    a = job["train"]
    data = load_data(a["data"], a["tokenizer"], cache_dir=a.get("cache_dir"), val_fraction=a["val_fraction"],
                     bpe_vocab_size=a.get("bpe_vocab_size", 2048))
    # the training loop's final evaluation is the same as this one; recompute with ranks
    ev = evaluate(ck.model.to(res.device), data, batch_size=a["eval_batch_size"], ranks=True)
    return {
        "arm": job["arm"], "align": job["align"], "seed": a["seed"],
        "val_bpc": res.val.bpc, "val_bpc_recomputed": ev.bpc, "n_chars": ev.n_chars,
        "val_loss": res.val.loss, "final_train_loss": res.final_loss,
        "params_trainable": res.params_trainable, "params_frozen": res.params_frozen,
        "tokens_per_s": res.tokens_per_s, "history": res.history,
        "stable_rank_mean": statistics.fmean(ev.stable_rank.values()),
        "seconds": time.perf_counter() - t0, "out": res.out,
    }


def _jobs(conf: dict, out: Path, seeds: int, steps: int | None) -> list[dict]:
    jobs = []
    for arm, over in ARMS.items():
        for align in (False, True):
            for seed in range(seeds):
                t = dict(conf["train"], **over, seed=seed, kernel_seed=seed,
                         align_weight=conf["align_weight"] if align else 0.0,
                         align_directions=conf["align_directions"],
                         out=str(out / "runs" / f"{arm}-{'align' if align else 'noalign'}-s{seed}"))
                if steps is not None:
                    t["steps"] = steps
                    t["eval_every"] = max(1, steps // 6)
                    t["warmup"] = min(t["warmup"], max(1, steps // 10))
                if t.get("preset") == "lila-20m" and arm == "learned":
                    t["preset"] = "lila-20m-learned"
                jobs.append({"arm": arm, "align": align, "train": t})
    return jobs


def _mean_sd(xs):
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return m, sd


def table(results: list[dict], conf_name: str, conf: dict) -> str:
    """The markdown table of the ablation (one row per arm and alignment setting)."""
    rows = []
    head = ("| attention | Q/K kernel | alignment loss | validation BPC (mean ± sd) | seeds | "
            "trainable params | frozen | train tokens/s |")
    rows.append(head)
    rows.append("|" + "---|" * 8)
    for arm in ARMS:
        for align in (False, True):
            rs = [r for r in results if r["arm"] == arm and r["align"] == align]
            if not rs:
                continue
            m, sd = _mean_sd([r["val_bpc"] for r in rs])
            tps = statistics.fmean(r["tokens_per_s"] for r in rs)
            att = "learned" if arm == "learned" else "frozen"
            ker = "—" if arm == "learned" else ("Leech" if arm == "leech" else "random orthogonal")
            al = f"{conf['align_directions']} × {conf['align_weight']}" if align else "—"
            rows.append(f"| {att} | {ker} | {al} | {m:.4f} ± {sd:.4f} | {len(rs)} | "
                        f"{rs[0]['params_trainable']:,} | {rs[0]['params_frozen']:,} | {tps:,.0f} |")
    t = conf["train"]
    n_chars = results[0]["n_chars"]
    note = (f"\n`--config {conf_name}`: preset {t['preset']}, data {t['data']} ({t['tokenizer']} tokenizer, "
            f"validation split {t['val_fraction']:.0%} by document: {n_chars:,} characters, all scored), "
            f"{results[0]['history'][-1]['step']} steps × {t['batch_size']} windows × "
            f"{t.get('block_size') or 'preset'} tokens, seeds 0..{max(r['seed'] for r in results)}.\n")
    return "\n".join(rows) + "\n" + note


def plot(results: list[dict], path: Path, title: str) -> None:
    """Validation BPC against step, mean over seeds with a ± sd band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = {"learned": "tab:blue", "leech": "tab:red", "random": "tab:green"}
    for arm in ARMS:
        for align in (False, True):
            rs = [r for r in results if r["arm"] == arm and r["align"] == align]
            if not rs:
                continue
            steps = [h["step"] for h in rs[0]["history"]]
            vals = [[h["val_bpc"] for h in r["history"]] for r in rs]
            mean = [statistics.fmean(v) for v in zip(*vals, strict=False)]
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*vals, strict=False)]
            ls = "--" if align else "-"
            ax.plot(steps, mean, ls, color=colors[arm], label=f"{arm}{' + align' if align else ''}")
            lo = [m - s for m, s in zip(mean, sd, strict=False)]
            hi = [m + s for m, s in zip(mean, sd, strict=False)]
            ax.fill_between(steps, lo, hi,
                            color=colors[arm], alpha=0.12)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation bits per character (whole split)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--out", default=None, help="output folder (default runs/ablation-<config>)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3)")
    p.add_argument("--steps", type=int, default=None, help="override the steps (smoke runs)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes")
    p.add_argument("--cache-dir", default=None, help="token cache root")
    p.add_argument("--align-directions", choices=["minimal", "frame"], default=None,
                   help="directions of the alignment loss (default: the configuration's)")
    args = p.parse_args(argv)
    conf = CONFIGS[args.config]
    if args.align_directions:
        conf["align_directions"] = args.align_directions
    seeds = args.seeds or conf["seeds"]
    jobs_n = args.jobs or conf["jobs"]
    if seeds < 1 or jobs_n < 1 or (args.steps is not None and args.steps < 1):
        p.error("--seeds, --jobs and --steps must be >= 1")
    out = Path(args.out or f"runs/ablation-{args.config}")
    if (out / "runs").exists():
        p.error(f"{out}/runs exists: choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    if args.cache_dir:
        conf["train"]["cache_dir"] = args.cache_dir
    if args.config == "gpu":
        import torch

        if not torch.cuda.is_available():
            p.error("--config gpu needs a CUDA device")

    # build the token cache once, before the workers start
    from torch_ext.lila.data import load_data

    t = conf["train"]
    data = load_data(t["data"], t["tokenizer"], cache_dir=t.get("cache_dir"), val_fraction=t["val_fraction"],
                     bpe_vocab_size=t.get("bpe_vocab_size", 2048), progress=print)
    print(f"{t['data']}: {data.train.n_tokens:,} train / {data.validation.n_tokens:,} validation tokens "
          f"({data.validation.n_chars:,} validation characters)")

    jobs = _jobs(conf, out, seeds, args.steps)
    results = []
    t0 = time.perf_counter()
    threads = conf["train"].get("num_threads")
    with cf.ProcessPoolExecutor(jobs_n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                initargs=(threads,)) as ex:
        futs = {ex.submit(_one_run, j): j for j in jobs}
        for f in cf.as_completed(futs):
            r = f.result()
            results.append(r)
            with open(out / "partial.jsonl", "a") as fh:  # survives a run that is cut short
                fh.write(json.dumps({k: v for k, v in r.items() if k != "history"}) + "\n")
            print(f"[{len(results):2d}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {r['arm']:8s} "
                  f"align={'yes' if r['align'] else 'no ':3s} seed {r['seed']}: val {r['val_bpc']:.4f} bpc, "
                  f"{r['tokens_per_s']:,.0f} tok/s, {r['seconds']:.0f}s", flush=True)
            if not math.isclose(r["val_bpc"], r["val_bpc_recomputed"], rel_tol=1e-6, abs_tol=1e-6):
                print(f"  warning: re-evaluation gave {r['val_bpc_recomputed']:.6f}", flush=True)
    results.sort(key=lambda r: (list(ARMS).index(r["arm"]), r["align"], r["seed"]))
    md = table(results, args.config, conf)
    md += f"Wall time {time.perf_counter() - t0:.0f} s with {jobs_n} process(es).\n"
    (out / "ablation.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"config": args.config, "conf": conf, "results": results},
                                                 indent=1))
    plot(results, out / "curves.png", f"LILA ablation ({args.config} config, {seeds} seed{'s' if seeds > 1 else ''})")
    print()
    print(md)
    print(f"wrote {out / 'ablation.md'}, {out / 'curves.png'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
