"""``leechlib quantize`` and ``leechlib eval-ppl``: Hugging Face folders on the command line.

``leechlib quantize SRC_DIR --out OUT_DIR [--method M] [--bits B] [--calib FILE|DIR]
[--calib-tokens N] ...`` quantizes a ``transformers`` model folder a block at a time
(:func:`~torch_ext.quantize.quantize_pretrained`), with a progress bar and a line
per block on stderr; ``leechlib eval-ppl MODEL_DIR --text FILE --context N --stride S``
prints the perplexity of a float or quantized folder on a text.

Exit status: 0 success; 2 a bad argument, folder or file (one line ``error: ...``
on stderr, no traceback); 130 / 143 interrupted by SIGINT / SIGTERM (the blocks
already written are kept: the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .._signals import EXIT_CODES, Interrupted, StopSignals
from .codecs import METHODS
from .config import QuantizeConfig
from .folders import FolderError, ShardReader, empty_model, fill, load_config, model_class
from .perplexity import perplexity, read_texts, text_windows
from .pretrained import load_pretrained, quantize_pretrained

__all__ = ["main_quantize", "main_eval_ppl"]


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _positive_int(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {v}")
        return v
    return parse


def _check_json_path(path) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        return f"--json {p} is a folder"
    if not p.parent.is_dir():
        return f"--json {p}: no folder {p.parent}"
    return None


def _load_tokenizer(folder):
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ValueError(f"{folder} has no tokenizer that transformers can load "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _tokenize(tokenizer, text: str):
    import torch

    enc = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)
    return torch.tensor(enc["input_ids"], dtype=torch.long)


def _model_positions(config) -> int | None:
    for k in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(config, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


# ---------------------------------------------------------------------------- quantize
def build_quantize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leechlib quantize",
        description="Quantize a Hugging Face model folder a block at a time into a new folder "
                    "that transformers loads with from_pretrained (after import torch_ext).")
    p.add_argument("src", metavar="SRC_DIR", help="model folder: config.json and safetensors shards")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="folder to write (new, or a run to resume)")
    p.add_argument("--method", default="leech-shape-gain", choices=list(METHODS), help="codebook")
    p.add_argument("--bits", type=float, default=2.0, help="bits per weight of the codes (default 2)")
    p.add_argument("--group", default="row", help="scale group: row, tensor, or a number of inputs")
    p.add_argument("--calib", metavar="FILE|DIR", help="calibration text: a file or a folder of .txt/.md files")
    p.add_argument("--calib-tokens", type=_positive_int("--calib-tokens"), default=8192,
                   help="calibration tokens (default 8192), in windows spread over the text")
    p.add_argument("--calib-context", type=_positive_int("--calib-context"), default=None,
                   help="tokens per calibration window (default min(512, the model's positions))")
    p.add_argument("--rotation", choices=["hadamard", "none"], default="hadamard",
                   help="randomized Hadamard rotation of the weights (default hadamard)")
    p.add_argument("--feedback", choices=["ldlq", "none"], default=None,
                   help="LDLQ error feedback (default: ldlq with --calib, none without)")
    p.add_argument("--skip", nargs="+", default=None, metavar="PATTERN",
                   help="fnmatch patterns of layers left in float, added to the default (output heads, poolers)")
    p.add_argument("--no-default-skip", action="store_true", help="quantize heads and poolers too")
    p.add_argument("--seed", type=int, default=0, help="rotation seed (default 0)")
    p.add_argument("--kind", choices=["auto", "causal-lm", "base"], default="auto",
                   help="model class: the config's architectures (auto), the causal LM, or the base model")
    p.add_argument("--force", action="store_true", help="start over in OUT_DIR (an unfinished run is dropped)")
    p.add_argument("--codes-only", action="store_true",
                   help="the loaded model keeps only its codes while it runs (smallest; each forward of "
                        "more than a few tokens decodes the weights again); default: the method's")
    p.add_argument("--json", metavar="FILE", help="also write the per-layer report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main_quantize(argv: list[str] | None = None) -> int:
    """``leechlib quantize ...``; returns the exit status (module docstring)."""

    args = build_quantize_parser().parse_args(argv)
    problem = _check_json_path(args.json)
    if problem:
        return _err(problem)
    try:
        group = args.group if args.group in ("row", "tensor") else int(args.group)
    except ValueError:
        return _err(f"--group must be row, tensor or an integer, got {args.group!r}")
    if not math.isfinite(args.bits):
        return _err(f"--bits must be finite, got {args.bits}")
    bits = int(args.bits) if float(args.bits).is_integer() else args.bits
    try:
        skip = () if args.no_default_skip else QuantizeConfig().skip
        skip = tuple(skip) + tuple(args.skip or ())
        cfg = QuantizeConfig(method=args.method, bits=bits, group=group, rotation=args.rotation,
                             feedback=args.feedback, seed=args.seed, skip=skip)
    except (ValueError, TypeError) as exc:
        return _err(str(exc).replace("bits_per_dim", "bits"))
    started = time.perf_counter()
    try:
        hf_config = load_config(args.src)
        data = None
        if args.calib is not None:
            text, files = read_texts(args.calib)
            tok = _load_tokenizer(args.src)
            ids = _tokenize(tok, text)
            if ids.numel() < 2:
                return _err(f"--calib {args.calib}: the text gives {ids.numel()} token(s)")
            positions = _model_positions(hf_config)
            context = args.calib_context or min(512, positions or 512)
            if positions is not None and context > positions:
                return _err(f"--calib-context {context} is more than the model's {positions} positions")
            windows, covered = text_windows(ids, tokens=args.calib_tokens, context=context)
            data = [w[None] for w in windows]
            print(f"calibration: {len(data)} windows of {windows.shape[1]} tokens ({covered:,} of the "
                  f"{ids.numel():,} tokens of {len(files)} file(s))", file=sys.stderr)
        elif cfg.feedback == "ldlq":
            return _err("--feedback ldlq needs --calib")
    except (FolderError, ValueError, FileNotFoundError, OSError) as exc:
        return _err(str(exc))

    layer_lines = []
    bar = None
    blocks = getattr(hf_config, "num_hidden_layers", None) or getattr(hf_config, "n_layer", None)

    def callback(name, info):
        nonlocal bar
        if bar is None and not args.quiet:  # made at the first layer: no bar before an early error
            from tqdm.auto import tqdm

            bar = tqdm(total=blocks, desc="blocks", unit="block", file=sys.stderr)
        if name == "<block>":
            done = [v for v in layer_lines if v[1].get("block") == info["block"]]
            how = "resumed from OUT_DIR" if info["resumed"] else f"{info['seconds']:.1f} s"
            mse = [v[1]["mse"] for v in done if v[1].get("mse") is not None]
            extra = f", mean weight MSE {sum(mse) / len(mse):.3g}" if mse else ""
            msg = f"block {info['block'] + 1}/{info['blocks']}: {len(done)} layers, {how}{extra}"
            if bar is not None:
                bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr)
            if bar is not None:
                bar.update(1)
            return
        layer_lines.append((name, info))
        if bar is not None:
            bar.set_postfix_str(name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]
                                if name.count(".") else name)

    try:
        with StopSignals(immediate=True):
            result = quantize_pretrained(args.src, args.out, cfg, data=data, kind=args.kind,
                                         force=args.force, callback=callback,
                                         cache=False if args.codes_only else None)
    except Interrupted as exc:
        if bar is not None:
            bar.close()
        print(f"interrupted ({exc.signal}): the blocks written are kept in {args.out}; run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_CODES.get(exc.signal, 130)
    except (FolderError, ValueError, TypeError, OSError) as exc:
        if bar is not None:
            bar.close()
        return _err(str(exc).replace("bits_per_dim", "bits"))
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - started
    print(f"wrote {result.path}: {result.blocks} blocks ({result.resumed} resumed), "
          f"{len(result.layers)} quantized layers, {result.quantized_weights:,} weights at "
          f"{result.bits_per_quantized_weight:.4f} bits/weight; whole model "
          f"{result.bits_per_param:.4f} bits/parameter; {secs:.1f} s")
    if args.json:
        report = {"path": str(result.path), "blocks": result.blocks, "resumed": result.resumed,
                  "block_seconds": result.block_seconds, "seconds": secs,
                  "quantized_weights": result.quantized_weights,
                  "bits_per_quantized_weight": result.bits_per_quantized_weight,
                  "bits_per_param": result.bits_per_param, "settings": cfg.to_dict(),
                  "layers": result.layers}
        try:
            Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        except OSError as exc:
            return _err(f"--json {args.json}: {exc.strerror or exc}")
    return 0


# ---------------------------------------------------------------------------- eval-ppl
def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leechlib eval-ppl",
        description="Perplexity and bits per token of a float or quantized Hugging Face causal LM "
                    "folder on a text, with a sliding window.")
    p.add_argument("model", metavar="MODEL_DIR", help="a model folder (float, or written by leechlib quantize)")
    p.add_argument("--text", required=True, metavar="FILE|DIR", help="text file, or a folder of .txt/.md files")
    p.add_argument("--context", type=_positive_int("--context"), default=None,
                   help="tokens per forward pass (default min(1024, the model's positions))")
    p.add_argument("--stride", type=_positive_int("--stride"), default=None,
                   help="tokens between windows (default context / 2)")
    p.add_argument("--max-tokens", type=_positive_int("--max-tokens"), default=None,
                   help="score only the first N tokens of the text")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main_eval_ppl(argv: list[str] | None = None) -> int:
    """``leechlib eval-ppl ...``; returns the exit status (module docstring)."""

    args = build_eval_parser().parse_args(argv)
    problem = _check_json_path(args.json)
    if problem:
        return _err(problem)
    try:
        hf_config = load_config(args.model)
        archs = [str(a) for a in (getattr(hf_config, "architectures", None) or ())]
        if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                             for a in archs):
            return _err(f"eval-ppl needs a causal language model; {args.model} holds {', '.join(archs)}")
        text, _ = read_texts(args.text)
        tok = _load_tokenizer(args.model)
        ids = _tokenize(tok, text)
        n_bytes = len(text.encode("utf-8"))
        if args.max_tokens is not None and ids.numel() > args.max_tokens:
            n_bytes = len(tok.decode(ids[:args.max_tokens].tolist()).encode("utf-8"))
            ids = ids[:args.max_tokens]
        if ids.numel() < 2:
            return _err(f"--text {args.text}: the text gives {ids.numel()} token(s), at least 2 are needed")
        positions = _model_positions(hf_config)
        context = args.context or min(1024, positions or 1024)
        if positions is not None and context > positions:
            return _err(f"--context {context} is more than the model's {positions} positions")
        stride = args.stride or max(1, context // 2)
        if stride > context:
            return _err(f"--stride {stride} must be at most --context {context}")
        quantized = getattr(hf_config, "quantization_config", None) is not None
        if quantized:
            model = load_pretrained(args.model, kind="causal-lm")
            qc = hf_config.quantization_config
            s = qc.get("settings", {}) if isinstance(qc, dict) else {}
            what = f"quantized ({s.get('method', '?')}, {s.get('bits', '?')} bits)"
        else:
            model = empty_model(hf_config, model_class(hf_config, "causal-lm"))
            fill(model, "", ShardReader(args.model))
            if hasattr(model, "tie_weights"):
                model.tie_weights()
            lost = [n for n, p in model.named_parameters() if p.is_meta]
            if lost:
                return _err(f"{args.model} has no tensor for {lost[0]!r}")
            what = "float"
    except (FolderError, ValueError, TypeError, FileNotFoundError, OSError, KeyError) as exc:
        return _err(str(exc))
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, desc="windows", unit="window", file=sys.stderr)

    def progress(done, total):
        if bar is not None:
            bar.total = total
            bar.update(1)

    try:
        with StopSignals(immediate=True):
            r = perplexity(model, ids, context=context, stride=stride, text_bytes=n_bytes,
                           progress=progress)
    except Interrupted as exc:
        return EXIT_CODES.get(exc.signal, 130)
    except (ValueError, TypeError) as exc:
        return _err(str(exc))
    finally:
        if bar is not None:
            bar.close()
    print(f"{args.model} ({what}): {r}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps({"model": str(args.model), "quantized": quantized,
                                                   **r.to_dict()}, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            return _err(f"--json {args.json}: {exc.strerror or exc}")
    return 0
