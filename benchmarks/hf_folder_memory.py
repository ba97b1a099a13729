"""Peak memory of quantizing a Hugging Face folder larger than RAM would like, and of running it.

1. ``make``: writes a randomly initialised Llama-shaped folder (default 1.54 B
   parameters: width 2048, MLP 5632, 32 blocks, 16 heads, 4 key/value heads,
   vocabulary 32 000, untied head; 6.2 GB of float32) a block at a time, one
   safetensors shard per block, with a word-level tokenizer and a calibration
   text of random words.  It never holds more than one block.
2. ``quantize``: ``leechlib quantize`` of that folder in a fresh process (calibration
   from the text, ``--calib-tokens``), which reports its peak resident set size
   (``VmHWM``, the kernel's high-water mark) and the time of every block.
3. ``run``: in a fresh process, ``AutoModelForCausalLM.from_pretrained`` of the
   quantized folder (after ``import torch_ext``), then ``generate`` of
   ``--tokens`` tokens; the peak RSS of loading and generating, and tokens/s.

The weights are random: the figures are memory and time, nothing about quality.
The float model would need ``4 × parameters`` bytes before the first block is
encoded (6.2 GB by default).  Per-block times project to a 7 B model (32 blocks of
4096 / 11008, 6.5 B weights in the blocks) by scaling with the weights of a block,
and to 16 cores by the share of the encoders that runs in parallel threads (stated,
not measured: this machine has the cores it has).

Usage::

    python benchmarks/hf_folder_memory.py make --dir /tmp/llama-1.5b
    python benchmarks/hf_folder_memory.py quantize --dir /tmp/llama-1.5b --method rtn
    python benchmarks/hf_folder_memory.py run --dir /tmp/llama-1.5b
    python benchmarks/hf_folder_memory.py all --dir /tmp/llama-1.5b --json out.json
    python benchmarks/hf_folder_memory.py all --dir /tmp/llama-1.5b --no-calib --no-rotation   # fastest
    python benchmarks/hf_folder_memory.py all --dir /tmp/one-block --blocks 1 --vocab 1000  # one block
    python benchmarks/hf_folder_memory.py layer --method leech-shape-gain --shape 5632 2048

4. ``layer``: in a fresh process, ``quantize_model`` of one random linear layer of
   ``--shape`` (no calibration, no rotation): the peak RSS above the process that holds it,
   i.e. the work arrays of one layer's quantization.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 2**20


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def make(args) -> dict:
    """Write the folder a block at a time (module docstring)."""
    import torch
    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.width, intermediate_size=args.mlp,
        num_hidden_layers=args.blocks, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=False)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(d)
    g = torch.Generator().manual_seed(0)
    hd = args.width // args.heads
    kv = hd * args.kv_heads

    def normal(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    n = args.blocks + 1
    weight_map, total, params = {}, 0, 0
    for i in range(args.blocks):
        p = f"model.layers.{i}."
        t = {p + "self_attn.q_proj.weight": normal(args.width, args.width),
             p + "self_attn.k_proj.weight": normal(kv, args.width),
             p + "self_attn.v_proj.weight": normal(kv, args.width),
             p + "self_attn.o_proj.weight": normal(args.width, args.width),
             p + "mlp.gate_proj.weight": normal(args.mlp, args.width),
             p + "mlp.up_proj.weight": normal(args.mlp, args.width),
             p + "mlp.down_proj.weight": normal(args.width, args.mlp),
             p + "input_layernorm.weight": torch.ones(args.width),
             p + "post_attention_layernorm.weight": torch.ones(args.width)}
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(t, str(d / name), metadata={"format": "pt"})
        for k, v in t.items():
            weight_map[k] = name
            total += v.numel() * 4
            params += v.numel()
        del t
    t = {"model.embed_tokens.weight": normal(args.vocab, args.width),
         "model.norm.weight": torch.ones(args.width), "lm_head.weight": normal(args.vocab, args.width)}
    name = f"model-{n:05d}-of-{n:05d}.safetensors"
    save_file(t, str(d / name), metadata={"format": "pt"})
    for k, v in t.items():
        weight_map[k] = name
        total += v.numel() * 4
        params += v.numel()
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    words = [f"w{i}" for i in range(args.vocab - 2)]
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                         pad_token="[PAD]").save_pretrained(d)
    r = torch.randint(0, len(words), (40_000,), generator=g).tolist()
    (d / "calib.txt").write_text(" ".join(words[i] for i in r) + "\n")
    return {"params": params, "float32_bytes": total, "blocks": args.blocks}


def _child_quantize(args) -> dict:
    from torch_ext.quantize.cli import main_quantize

    report = Path(args.dir + "-q.report.json")
    t0 = time.perf_counter()
    calib = [] if args.no_calib else ["--calib", str(Path(args.dir) / "calib.txt"), "--calib-tokens",
                                       str(args.calib_tokens), "--calib-context", str(args.calib_context)]
    rc = main_quantize([args.dir, "--out", args.dir + "-q", "--method", args.method, *calib,
                        "--quiet", "--json", str(report), "--codes-only"]
                       + (["--force"] if args.force else [])
                       + (["--rotation", "none"] if args.no_rotation else []))
    out = {"rc": rc, "seconds": time.perf_counter() - t0, "peak_rss_mb": _status("VmHWM") / MB}
    if rc == 0:
        r = json.loads(report.read_text())
        out.update(block_seconds=r["block_seconds"], bits_per_quantized_weight=r["bits_per_quantized_weight"],
                   bits_per_param=r["bits_per_param"], resumed=r["resumed"])
    return out


def _child_run(args) -> dict:
    import torch
    import transformers

    import torch_ext  # noqa: F401  (registers the leechlib quantizer)

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(args.dir + "-q")
    load_s = time.perf_counter() - t0
    peak_load = _status("VmHWM") / MB
    rss_load = _status("VmRSS") / MB
    x = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    model.generate(x, max_new_tokens=2, do_sample=False)  # first call: Numba compiles
    t0 = time.perf_counter()
    model.generate(x, max_new_tokens=args.tokens, do_sample=False, min_new_tokens=args.tokens)
    gen_s = time.perf_counter() - t0
    return {"load_s": load_s, "peak_load_mb": peak_load, "rss_after_load_mb": rss_load,
            "peak_rss_mb": _status("VmHWM") / MB, "tok_s": args.tokens / gen_s, "threads": args.threads}


def _child_layer(args) -> dict:
    """Quantize one random ``--shape OUT IN`` linear layer; peak RSS above the process with it."""
    import torch
    from torch import nn

    from torch_ext.quantize import QuantizeConfig, quantize_model

    out_f, in_f = args.shape
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(in_f, out_f, bias=False))
    nn.init.normal_(m[0].weight, std=0.02)
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    start = _status("VmRSS") / MB
    t0 = time.perf_counter()
    quantize_model(m, QuantizeConfig(method=args.method, bits=2, rotation="none"))
    return {"shape": [out_f, in_f], "method": args.method, "start_rss_mb": start,
            "peak_above_start_mb": _status("VmHWM") / MB - start, "seconds": time.perf_counter() - t0}


def _in_child(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--dir", args.dir, "--method", args.method,
           "--calib-tokens", str(args.calib_tokens), "--calib-context", str(args.calib_context),
           "--tokens", str(args.tokens), "--threads", str(args.threads)]
    cmd += ["--force"] if args.force else []
    cmd += ["--no-rotation"] if args.no_rotation else []
    cmd += ["--no-calib"] if args.no_calib else []
    cmd += ["--shape", *map(str, args.shape)] if mode == "layer" else []
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"{mode} failed with exit status {p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _projection(res: dict, args) -> dict:
    blocks_w = args.blocks * (2 * args.width**2 + 2 * args.width * (args.width // args.heads * args.kv_heads)
                              + 3 * args.width * args.mlp)
    per_block = sorted(res["block_seconds"])[len(res["block_seconds"]) // 2]
    w7 = 32 * (4 * 4096**2 + 3 * 4096 * 11008)
    per_weight = per_block * args.blocks / blocks_w
    return {"median_block_s": per_block, "s_per_million_weights": per_weight * 1e6,
            "projection_7b_this_machine_h": per_weight * w7 / 3600,
            "cores_here": os.cpu_count()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", choices=["make", "quantize", "run", "all", "layer"], default="all")
    p.add_argument("--child", choices=["quantize", "run", "layer"], help=argparse.SUPPRESS)
    p.add_argument("--dir", default="/tmp/leechlib-llama-1.5b")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--mlp", type=int, default=5632)
    p.add_argument("--blocks", type=int, default=32)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--method", default="rtn")
    p.add_argument("--no-rotation", action="store_true")
    p.add_argument("--no-calib", action="store_true", help="no calibration text (no feedback)")
    p.add_argument("--calib-tokens", type=int, default=4096)
    p.add_argument("--calib-context", type=int, default=512)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true")
    p.add_argument("--json")
    p.add_argument("--shape", type=int, nargs=2, default=[5632, 2048], metavar=("OUT", "IN"),
                   help="layer mode: the linear layer's shape (default 5632 2048, a gate projection)")
    args = p.parse_args(argv)
    if args.child:
        child = {"quantize": _child_quantize, "run": _child_run, "layer": _child_layer}[args.child]
        res = child(args)
        print(json.dumps(res))
        return 0
    out = {}
    if args.mode == "layer":
        out["layer"] = r = _in_child("layer", args)
        print(f"quantize one {r['shape'][0]} x {r['shape'][1]} layer ({args.method}, no calibration): "
              f"peak RSS {r['peak_above_start_mb']:.0f} MiB above the process holding it "
              f"({r['start_rss_mb']:.0f} MiB), {r['seconds']:.1f} s", flush=True)
    if args.mode in ("make", "all"):
        out["make"] = make(args)
        print(f"wrote {args.dir}: {out['make']['params'] / 1e9:.3f} B parameters, "
              f"{out['make']['float32_bytes'] / 1e9:.2f} GB of float32", flush=True)
    if args.mode in ("quantize", "all"):
        out["quantize"] = q = _in_child("quantize", args)
        if q.get("block_seconds"):
            q.update(_projection(q, args))
        print(f"quantize ({args.method}): peak RSS {q['peak_rss_mb']:.0f} MiB, {q['seconds']:.0f} s, "
              f"median block {q.get('median_block_s', float('nan')):.1f} s, "
              f"{q.get('bits_per_param', float('nan')):.3f} bits/parameter", flush=True)
    if args.mode in ("run", "all"):
        out["run"] = r = _in_child("run", args)
        print(f"from_pretrained + generate: peak RSS {r['peak_rss_mb']:.0f} MiB (loading {r['peak_load_mb']:.0f}), "
              f"load {r['load_s']:.1f} s, {r['tok_s']:.2f} tok/s on {r['threads']} thread(s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
