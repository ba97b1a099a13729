"""2-bit weight quantization of a trained LILA model: Leech shape-gain, Leech ball, E8, RTN.

Trains (or reuses with ``--ckpt``) a small LILA model on the embedded Shakespeare
corpus with :func:`torch_ext.lila.train.train`, then quantizes every ``nn.Linear`` of a
copy of it with :func:`torch_ext.quantize.quantize_model` by each method and scores
each model on the *whole* validation split with :func:`torch_ext.lila.evaluate.evaluate`
(bits per character).  Reported per row: true bits per weight of the quantized
layers and bits per parameter of the whole stored model (codes, scales, gains,
and the float embeddings/LayerNorms; :func:`torch_ext.quantize.model_bits_report`),
weight MSE (and relative to the mean squared weight), validation BPC, the
quantization wall time and the size of the safetensors file.

Rows: fp32 (the trained weights), bf16 (every parameter rounded to bfloat16),
``leech-shape-gain``, ``leech-ball``, ``e8``, ``rtn`` (2 bits, one float16 scale
per output row), and ``leech-shape-gain`` with calibrated scales (``data=``: the
scale refit weighted by the second moment of each layer's inputs on 32 training
windows).

CPU configuration (default): preset lila-tiny widened to d_model 96, 4 layers, 4
heads, context 128, frozen Leech Q/K kernels (the LILA default), no alignment
loss; byte tokenizer, Shakespeare with a 5 % validation split; 500 steps of 16
windows (about 5 minutes of training on 2 cores).

Usage::

    python benchmarks/quantize_lila.py                          # train + quantize + evaluate
    python benchmarks/quantize_lila.py --ckpt runs/quantize-lila/run   # reuse a run
    python benchmarks/quantize_lila.py --steps 50 --methods rtn    # smoke run
    python benchmarks/quantize_lila.py --update-doc docs/model_quantization.rst

Writes ``results.md`` and ``results.json`` under ``--out`` (default
``runs/quantize-lila``); ``--update-doc FILE`` replaces the text between the lines
``.. results-begin`` and ``.. results-end`` of FILE with the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("leech-shape-gain", "leech-ball", "e8", "rtn", "leech-trio")

TRAIN = dict(preset="lila-tiny", data="shakespeare", tokenizer="byte", val_fraction=0.05,
             d_model=96, n_layer=4, n_head=4, block_size=128, dropout=0.0, align_weight=0.0,
             steps=500, batch_size=16, grad_accum=1, lr=2e-3, warmup=50, eval_every=0,
             eval_batch_size=64, device="cpu", seed=0)


def _linear_weights(model):
    import torch

    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if type(m) is torch.nn.Linear}


def _weight_mse(model, ref: dict) -> tuple[float, float]:
    """MSE of the dequantized weights against ``ref`` and MSE / mean squared weight."""
    from torch_ext.quantize import LeechQuantizedLinear

    se = sq = n = 0.0
    for name, m in model.named_modules():
        if isinstance(m, LeechQuantizedLinear):
            w = ref[name].double()
            d = m.dequantize(dtype=w.dtype).cpu() - w
            se += float((d * d).sum())
            sq += float((w * w).sum())
            n += w.numel()
    if n == 0:
        return 0.0, 0.0
    return se / n, se / sq


def _bf16_copy(model):
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    return m


def _file_kb(model, path: Path) -> float:
    from torch_ext.quantize import save_quantized

    save_quantized(model, path)
    return path.stat().st_size / 1000.0


def _fmt_rel(v) -> str:
    if v is None:
        return "—"
    return f"{v:.4f}" if v >= 1e-3 else f"{v:.1e}"


def table(rows: list[dict], info: dict) -> str:
    head = ("| weights | bits/weight (quantized layers) | bits/param (whole model) | weight MSE "
            "| MSE / mean w² | validation BPC | Δ BPC vs fp32 | quantization time (s) | file (kB) |")
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows[0]["bpc"]
    for r in rows:
        mse = "—" if r["weight_mse"] is None else f"{r['weight_mse']:.3e}"
        rel = _fmt_rel(r["rel_mse"])
        tq = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
        out.append(f"| {r['label']} | {r['bits_per_weight']:.3f} | {r['bits_per_param']:.3f} | {mse} | "
                   f"{rel} | {r['bpc']:.4f} | {r['bpc'] - base:+.4f} | {tq} | {r['file_kb']:.0f} |")
    return "\n".join(out) + "\n\n" + info["note"] + "\n"


def rst_table(rows: list[dict], note: str) -> str:
    """The same table as an rst ``list-table`` (for the user guide)."""
    base = rows[0]["bpc"]
    out = [".. list-table::", "   :header-rows: 1", "",
           "   * - weights", "     - bits/weight (quantized layers)", "     - bits/param (whole model)",
           "     - MSE / mean w²", "     - validation BPC", "     - Δ BPC", "     - quantization (s)",
           "     - file (kB)"]
    for r in rows:
        rel = _fmt_rel(r["rel_mse"])
        tq = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
        out += [f"   * - {r['label']}", f"     - {r['bits_per_weight']:.3f}",
                f"     - {r['bits_per_param']:.3f}", f"     - {rel}", f"     - {r['bpc']:.4f}",
                f"     - {r['bpc'] - base:+.4f}", f"     - {tq}", f"     - {r['file_kb']:.0f}"]
    return "\n".join(out) + "\n\n" + note + "\n"


def update_doc(doc: Path, rows: list[dict], note: str) -> bool:
    """Replace the text between ``.. results-begin`` and ``.. results-end`` of ``doc``."""
    text = doc.read_text()
    b, e = ".. results-begin", ".. results-end"
    if b not in text or e not in text:
        return False
    head, rest = text.split(b, 1)
    _, tail = rest.split(e, 1)
    doc.write_text(f"{head}{b}\n\n{rst_table(rows, note)}\n{e}{tail}")
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=None, help="checkpoint file or run directory to reuse")
    p.add_argument("--out", default="runs/quantize-lila", help="output folder")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 500)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--no-calibrated", action="store_true", help="skip the calibrated shape-gain row")
    p.add_argument("--max-points", type=int, default=None,
                   help="blocks per codebook fit (default: leechlib's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--update-doc", default=None, help="rst file whose results block to replace")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="only print the tables of a previous run (and --update-doc)")
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        print(table(saved["rows"], {"note": saved["note"]}))
        if args.update_doc and not update_doc(Path(args.update_doc), saved["rows"], saved["note"]):
            print(f"{args.update_doc}: no results block", file=sys.stderr)
            return 1
        return 0

    import torch

    from torch_ext.lila.data import load_data
    from torch_ext.lila.evaluate import evaluate
    from torch_ext.lila.train import load_checkpoint, train
    from torch_ext.quantize import load_quantized, model_bits_report, quantize_model

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    if args.ckpt is None:
        cfg = dict(TRAIN, out=str(out / "run"), num_threads=args.threads, seed=args.seed)
        if args.steps is not None:
            cfg["steps"] = args.steps
            cfg["warmup"] = min(cfg["warmup"], max(1, args.steps // 10))
        print(f"training {cfg['preset']} d_model={cfg['d_model']} n_layer={cfg['n_layer']} "
              f"for {cfg['steps']} steps ...", flush=True)
        res = train(cfg)
        ckpt_path = res.checkpoint
        train_info = {"steps": res.step, "train_seconds": res.train_seconds, "tokens_per_s": res.tokens_per_s}
        print(f"trained in {res.train_seconds:.0f} s ({res.tokens_per_s:,.0f} tokens/s)", flush=True)
    else:
        ckpt_path = args.ckpt
        train_info = {}
    ck = load_checkpoint(ckpt_path)
    model = ck.model.float().eval()
    a = ck.meta.get("args", {}) if isinstance(ck.meta.get("args"), dict) else {}
    data = load_data(a.get("data", "shakespeare"), a.get("tokenizer", "byte"),
                     cache_dir=a.get("cache_dir"), val_fraction=a.get("val_fraction", 0.05),
                     bpe_vocab_size=a.get("bpe_vocab_size", 2048))
    ref = _linear_weights(model)
    n_lin = sum(w.numel() for w in ref.values())

    def score(m):
        t = time.perf_counter()
        with torch.no_grad():
            r = evaluate(m, data, batch_size=64, ranks=False)
        return r, time.perf_counter() - t

    rows = []
    r, te = score(model)
    n_params = sum(p.numel() for p in model.parameters())
    rows.append({"label": "fp32", "method": None, "bits_per_weight": 32.0, "bits_per_param": 32.0,
                 "weight_mse": None, "rel_mse": None, "bpc": r.bpc, "seconds": None,
                 "file_kb": _file_kb(model, out / "fp32.safetensors")})
    print(f"fp32: {r.bpc:.4f} bpc ({r.n_chars:,} characters, eval {te:.0f} s)", flush=True)
    n_chars = r.n_chars
    mb = _bf16_copy(model)
    r, _ = score(mb)
    se = sum(float(((dict(mb.named_modules())[n].weight.detach().double() - w.double()) ** 2).sum())
             for n, w in ref.items())
    sq = sum(float((w.double() ** 2).sum()) for w in ref.values())
    rows.append({"label": "bf16", "method": None, "bits_per_weight": 16.0, "bits_per_param": 16.0,
                 "weight_mse": se / n_lin, "rel_mse": se / sq, "bpc": r.bpc, "seconds": None,
                 "file_kb": _file_kb(mb.to(torch.bfloat16), out / "bf16.safetensors")})
    print(f"bf16: {r.bpc:.4f} bpc", flush=True)
    del mb

    runs = [(m, m, None) for m in args.methods]
    if not args.no_calibrated and "leech-shape-gain" in args.methods:
        g = torch.Generator().manual_seed(1)
        toks = torch.as_tensor(data.train.tokens[: 2_000_000].astype("int64"))
        T = model.config.block_size
        starts = torch.randint(0, len(toks) - T - 1, (32,), generator=g)
        calib = torch.stack([toks[s:s + T] for s in starts.tolist()])
        runs.append(("leech-shape-gain + calibrated scales", "leech-shape-gain", calib))
    for label, method, calib in runs:
        mq = copy.deepcopy(model)
        t0 = time.perf_counter()
        # the pipeline of this table: no rotation, no feedback (benchmarks/quantize_models.py
        # measures those); with data, calibration weights the scale refit only
        quantize_model(mq, 2, method, data=calib, max_points=args.max_points, workers=-1,
                       rotation="none", feedback="none")
        tq = time.perf_counter() - t0
        rep = model_bits_report(mq)
        mse, rel = _weight_mse(mq, ref)
        r, te = score(mq)
        path = out / f"{method}{'-calibrated' if calib is not None else ''}.safetensors"
        kb = _file_kb(mq, path)
        # the saved file reproduces the model exactly
        back = load_quantized(path)
        x = torch.randint(0, model.config.vocab_size, (2, 32))
        with torch.no_grad():
            same = torch.equal(back(x).logits, mq(x).logits)
        rows.append({"label": label, "method": method, "bits_per_weight": rep.bits_per_quantized_weight,
                     "bits_per_param": rep.bits_per_param, "weight_mse": mse, "rel_mse": rel,
                     "bpc": r.bpc, "seconds": tq, "file_kb": kb, "reload_identical": same,
                     "layers": rep.layers})
        print(f"{label}: {r.bpc:.4f} bpc, {rep.bits_per_quantized_weight:.3f} bits/weight, "
              f"MSE/w² {rel:.4f}, quantized in {tq:.1f} s, reload identical: {same}", flush=True)
        del mq, back

    cfgm = model.config
    note = (f"Model: LILA d_model {cfgm.d_model}, {cfgm.n_layer} layers, {cfgm.n_head} heads, context "
            f"{cfgm.block_size}, attention {cfgm.attention!r} (kernel {cfgm.kernel!r}); "
            f"{n_params:,} parameters of which {n_lin:,} in nn.Linear weights (quantized); the "
            f"embeddings (LM head tied), LayerNorms and frozen kernels are not quantized. "
            f"Trained {ck.step} steps on Shakespeare (byte tokenizer); BPC over the whole "
            f"validation split ({n_chars:,} characters). 2-bit rows: one float16 scale per output row "
            f"(``scale_iters=1``), ``workers=-1``; times on a shared 2-core CPU.")
    md = table(rows, {"note": note})
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"rows": rows, "note": note, "train": train_info,
                                                  "checkpoint": str(ckpt_path), "n_chars": n_chars,
                                                  "params": n_params, "linear_weights": n_lin},
                                                 indent=1, default=str))
    print()
    print(md)
    if args.update_doc:
        if update_doc(Path(args.update_doc), rows, note):
            print(f"updated {args.update_doc}")
        else:
            print(f"{args.update_doc} has no '.. results-begin' / '.. results-end' lines: not updated",
                  file=sys.stderr)
    print(f"total {time.perf_counter() - t_all:.0f} s; wrote {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
