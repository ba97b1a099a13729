"""The ``lila`` command line: ``leechlib lila {train,eval,demo,quantize} ...``.

:func:`main` is its one entry point.  ``leechlib lila ARGS`` forwards ``ARGS`` to it
(leechlib imports torch_ext only there, lazily), and so does ``python -m torch_ext.lila
ARGS`` (torchrun-ready: ``torchrun -m torch_ext.lila train ...``).  The LILA section of
``leechlib demo`` is ``leechlib lila demo``; :func:`torch_ext.lila.demo.demo` is the same
run as a function.  Only this module prints (the progress bar and the results); the library reports through callbacks.

Exit status: 0 success (also ``train --stop-at``); 2 a usage error, bad data or
checkpoint, or an operating-system error (a one-line message, never a traceback;
outputs are checked before any work); 3 training stopped at a non-finite loss,
gradient or weight (``train --skip-nonfinite`` skips such steps instead); 130 after
SIGINT (Ctrl-C) and 143 after SIGTERM (a checkpoint of the last finished step is
written first; ``--resume`` continues); 141, quietly, when the reader of standard
output went away (``... | head``).  A non-finite evaluation is an error (2), never a
printed NaN.  Paths stored in a checkpoint are never read: data and caches come from
``--data`` and ``--cache-dir`` (or a named corpus the checkpoint records, and the
default cache).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._signals import EXIT_CODES
from ..quantize import METHODS, QuantizeConfig
from ..quantize.rotation import ROTATIONS
from ._rundir import check_output_file
from .checkpoint import (
    CheckpointError,
    NonFiniteError,
    load_checkpoint,
    resolve_checkpoint,
    stored_corpus,
    training_corpus,
)
from .corpora import ENCODING_ERRORS, get_source
from .data import DataUnavailableError, check_cache_dir, load_corpus, load_data
from .demo import demo
from .evaluate import evaluate, format_table
from .quantize import check_output_path, quantize_checkpoint
from .tokenizer import ByteTokenizer, tokenizer_from_json
from .train import train
from .train_config import TrainConfig

__all__ = ["main", "demo"]  # demo: re-exported from .demo

_USAGE = """usage: leechlib lila {train,eval,demo,quantize} [options]

  train     train a LILA model (python -m torch_ext.lila train; torchrun-ready)
  eval      bits per character over a whole split, perplexity, ranks, parameter counts
  demo      train lila-tiny on the embedded Shakespeare corpus for about a minute, then a sample
  quantize  quantize a checkpoint's linear layers to ~2 bits per weight (eval reads the result)

'leechlib lila COMMAND --help' lists the options of a command.
"""


def main(argv=None) -> int:
    """Run ``leechlib lila ARGV``; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after ``lila``: a command (``train``, ``eval``, ``demo``,
        ``quantize``) and its options (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (see the module docstring): 0 on success, 2 for a usage,
        data, checkpoint or operating-system error, 3 when training stopped at a
        non-finite value, 130/143 after SIGINT/SIGTERM.

    Examples
    --------
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: leechlib lila {train,eval,demo,quantize} [options]
    ...
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in _COMMANDS:
        return _run(_COMMANDS[cmd], rest)
    print(f"error: unknown command {cmd!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


#: the exit status after the reader of standard output went away (128 + SIGPIPE, as shells report it)
EXIT_BROKEN_PIPE = 141


def _run(fn, argv) -> int:
    try:
        code = int(fn(argv) or 0)
        sys.stdout.flush()  # a closed pipe is found here, not at the interpreter's exit
        return code
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except BrokenPipeError:  # `leechlib lila eval ... | head`: the reader left; stop quietly, as Unix tools do
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # what no command caught: still one line, no traceback
        _error(exc)
        return 2
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal", "SIGINT")
        print(f"\ninterrupted by {name}", file=sys.stderr)
        return EXIT_CODES.get(name, 130)


def _quiet_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's final flush of what is
    still buffered for the closed pipe raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's capture): nothing to flush
        pass


def _error(exc) -> None:
    """``error: <message>`` on one line of stderr."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {msg}", file=sys.stderr)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is nothing to show: required options,
    ``None`` defaults (their help says what happens), switches (off unless given)."""

    def _get_help_string(self, action):
        if (action.required or action.default is None or action.default is False
                or "(default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)


def _encoding_options(g) -> None:
    g.add_argument("--encoding", default="utf-8", help="encoding of local text files")
    g.add_argument("--encoding-errors", default="strict", choices=list(ENCODING_ERRORS),
                   help="undecodable bytes in local text: an error naming the file and offset (strict), "
                        "U+FFFD (replace) or dropped (ignore)")


def _train_parser() -> argparse.ArgumentParser:
    """Argument parser of ``leechlib lila train`` (``python -m torch_ext.lila train``)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="leechlib lila train", description="Train a LILA model (torchrun-ready).",
                                formatter_class=_HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data, help="shakespeare | tinystories | fineweb-edu | PATH")
    g.add_argument("--tokenizer", default=d.tokenizer, choices=["byte", "bpe"])
    g.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="expected fraction of documents in the validation split, in (0, 1)")
    g.add_argument("--max-docs", type=int, default=None, help="documents per split (Hugging Face corpora)")
    g.add_argument("--cache-dir", default=None, help="token cache root (default ~/.cache/leechlib/lila-data)")
    _encoding_options(g)
    g = p.add_argument_group("model")
    g.add_argument("--preset", default=d.preset, help="lila-tiny | lila-20m | lila-20m-learned")
    g.add_argument("--attention", choices=["frozen", "learned"], default=None)
    g.add_argument("--kernel", choices=["leech", "random", "identity"], default=None)
    g.add_argument("--kernel-seed", type=int, default=None)
    g.add_argument("--align-weight", type=float, default=None, help="weight of the alignment loss (0: off)")
    g.add_argument("--align-directions", choices=["minimal", "frame"], default=None,
                   help="alignment targets: the 196560 Leech minimal vectors or the frame +-e_i")
    g.add_argument("--d-model", type=int, default=None)
    g.add_argument("--n-layer", type=int, default=None)
    g.add_argument("--n-head", type=int, default=None)
    g.add_argument("--block-size", type=int, default=None)
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--attn-dropout", type=float, default=None,
                   help="dropout of the attention probabilities (default: the preset's; else --dropout)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per micro-batch per process")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    g.add_argument("--warmup", type=int, default=d.warmup)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, help="run directory (default runs/<preset>-<data>-s<seed>)")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="0: evaluate only at the end")
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    g.add_argument("--save-every", type=int, default=None)
    g.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    g.add_argument("--force", action="store_true",
                   help="write into --out even if it is a non-empty directory that is not a run directory")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip steps whose loss or gradient norm is not finite (default: stop, exit status 3)")
    g.add_argument("--stop-at", type=int, default=None, help="end after this step, as an interruption would")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    g.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--time-budget", type=float, default=None, help="seconds of training (lowers --steps)")
    g.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the result here")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _Progress:
    """A tqdm progress bar on stderr, fed by the events of :func:`~torch_ext.lila.train.train`'s callback."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def __call__(self, e: dict):
        from tqdm.auto import tqdm

        ev = e["event"]
        if ev == "log":
            self.write(e["message"])
        elif ev == "start":
            self.write(f"run {e['out']} on {e['device']} x{e['world_size']}: {e['params_trainable']:,} "
                       f"trainable + {e['params_frozen']:,} frozen parameters, "
                       f"{e['tokens_per_step']:,} tokens/step"
                       + (f", resuming at step {e['resumed_from']}" if e["resumed_from"] is not None else ""))
            if self.enabled:
                self.bar = tqdm(total=e["steps"], initial=e["step"], unit="step", dynamic_ncols=True,
                                file=sys.stderr)
        elif ev == "step":
            if self.bar is not None:
                if self.bar.total != e["steps"]:
                    self.bar.total = e["steps"]
                self.bar.update(e["step"] - self.bar.n)
                self.bar.set_postfix(loss=f"{e['loss']:.4f}", lr=f"{e['lr']:.2e}",
                                     tok_s=f"{e['tokens_per_s']:,.0f}")
        elif ev == "eval":
            self.write(f"step {e['step']}: validation {e['val_bpc']:.4f} bits/char over {e['n_chars']:,} chars"
                       + (f" (train loss {e['train_loss']:.4f})" if e.get("train_loss") is not None else ""))
        elif ev == "checkpoint":
            pass

    def write(self, s: str):
        if self.bar is not None:
            self.bar.write(s, file=sys.stderr)
        else:
            print(s, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _train_command(argv) -> int:
    """``leechlib lila train ...``: train, print progress and the final evaluation.

    Returns 0 on success (also after ``--stop-at``), 2 for bad arguments, data,
    checkpoints or an unwritable output, 3 when a non-finite loss, gradient or
    weight stopped the run, 130 after SIGINT and 143 after SIGTERM (a checkpoint of
    the last finished step is written first).
    """
    parser = _train_parser()
    ns = parser.parse_args(argv)
    json_path, quiet = ns.json_path, ns.quiet
    del ns.json_path, ns.quiet
    rank = int(os.environ.get("RANK", "0"))
    if json_path and rank == 0:
        check_output_file(json_path, "--json")  # before any work
    prog = _Progress(enabled=not quiet and rank == 0)
    try:
        res = train(vars(ns), callback=prog if rank == 0 else None)
    except NonFiniteError as exc:
        prog.close()
        _error(exc)
        return 3
    except (ValueError, TypeError, DataUnavailableError, OSError) as exc:
        prog.close()
        _error(exc)
        return 2
    except KeyboardInterrupt as exc:  # before training started, or a second signal
        prog.close()
        name = getattr(exc, "signal", "SIGINT")
        print(f"interrupted by {name}" + (" again: stopped at once, without a checkpoint of the current step"
                                          if getattr(exc, "hard", False) else " before training started"),
              file=sys.stderr)
        return EXIT_CODES.get(name, 130)
    prog.close()
    if rank != 0:
        return 0
    skipped = f"; {res.skipped_steps} non-finite steps skipped" if res.skipped_steps else ""
    if res.interrupted:
        name = res.interrupted_by or "SIGINT"
        print(f"interrupted by {name} at step {res.step}; checkpoint {res.checkpoint} (continue with --resume)"
              + skipped)
        return EXIT_CODES.get(name, 130)
    if res.stopped:
        print(f"stopped at step {res.step} of {res.steps}; checkpoint {res.checkpoint}{skipped}")
    else:
        v = res.val
        print(f"step {res.step}: train loss {res.final_loss:.4f}, validation {v.bpc:.4f} bits/char "
              f"over {v.n_chars:,} characters (perplexity {v.perplexity:.3f}), "
              f"{res.tokens_per_s:,.0f} tokens/s; checkpoint {res.checkpoint}{skipped}")
    if json_path:
        Path(json_path).write_text(json.dumps(res.to_dict(), indent=2, default=str))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    """Argument parser of ``leechlib lila eval`` (``python -m torch_ext.lila eval``)."""
    p = argparse.ArgumentParser(
        prog="leechlib lila eval",
        description="Bits per character over a whole split, perplexity, ranks, parameter counts.",
    )
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint file, or a run directory (its latest checkpoint)")
    p.add_argument("--data", default=None,
                   help="corpus: a file or folder of your own text, or a corpus name (default: the named corpus "
                        "the checkpoint was trained on; a path stored in the checkpoint is never used: pass it)")
    p.add_argument("--split", default=None, choices=["all", "validation", "train"],
                   help="'all': every document of the corpus, in order (the default with --data); "
                        "'validation' (the default without --data) or 'train': the training run's splits")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--block-size", type=int, default=None, help="window length (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="window stride (default: block size)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--cache-dir", default=None,
                   help="token cache root (default ~/.cache/leechlib/lila-data or $LEECHLIB_CACHE_DIR)")
    _encoding_options(p)
    p.add_argument("--no-ranks", action="store_true", help="skip the singular values")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="also write the results here")
    return p


def _eval_command(argv) -> int:
    """``leechlib lila eval CKPT [--json FILE] ...``: evaluate a checkpoint, print a table.

    Returns the exit status: 0 on success, 2 for a bad argument, a missing, corrupt
    or non-finite checkpoint, bad data or an unwritable ``--json``.
    """
    parser = _eval_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "block_size", "stride"):
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        parser.error(f"--device must be like 'cpu', 'cuda' or 'cuda:1', got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    split = args.split or ("all" if args.data else "validation")
    try:
        if args.json_path:
            check_output_file(args.json_path, "--json")  # before any work
        if args.cache_dir is not None:
            check_cache_dir(args.cache_dir)
        path = resolve_checkpoint(args.ckpt)
        ck = load_checkpoint(path, device=device)
    except (CheckpointError, ValueError, TypeError, OSError) as exc:
        _error(exc)
        return 2
    targs = ck.meta.get("args", {})
    say = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        spec = training_corpus(ck.meta, args.data, split=split)  # never a path stored in the file
        enc = dict(encoding=args.encoding, encoding_errors=args.encoding_errors)
        if (args.encoding == "utf-8" and args.encoding_errors == "strict"
                and _same_corpus(spec, ck.meta)):  # the training corpus: read as it was read then
            enc = dict(encoding=targs.get("encoding", "utf-8"),
                       encoding_errors=targs.get("encoding_errors", "strict"))
        if split == "all":
            tok = tokenizer_from_json(json.dumps(ck.meta["tokenizer"])) if "tokenizer" in ck.meta \
                else _byte_tokenizer_for(ck.model)
            data = load_corpus(spec, tok, cache_dir=args.cache_dir, max_docs=targs.get("max_docs"), progress=say,
                               **enc)
            source, eos = get_source(spec, max_docs=targs.get("max_docs"), **enc).describe(), tok.eos_id
        else:
            data = load_data(spec, targs.get("tokenizer", "byte"), cache_dir=args.cache_dir,
                             val_fraction=targs.get("val_fraction", 0.1),
                             bpe_vocab_size=targs.get("bpe_vocab_size", 2048), max_docs=targs.get("max_docs"),
                             progress=say, **enc)
            source, eos = data.source, None
            if data.tokenizer.fingerprint() != ck.meta.get("tokenizer_fingerprint", data.tokenizer.fingerprint()):
                print("error: the data's tokenizer differs from the checkpoint's (use --split all to score "
                      "another corpus with the checkpoint's tokenizer)", file=sys.stderr)
                return 2
        res = evaluate(ck.model, data, split, batch_size=args.batch_size, block_size=args.block_size,
                       stride=args.stride, ranks=not args.no_ranks, eos_id=eos)
        check_finite_result(res)
    except (DataUnavailableError, CheckpointError, ValueError, TypeError) as exc:
        _error(exc)
        return 2
    res = {**res.to_dict(), "checkpoint": str(path), "step": ck.step, "data": source}
    if "train_tokens_per_s" in ck.meta:
        res["train_tokens_per_s"] = ck.meta["train_tokens_per_s"]
    print(f"checkpoint {path} (step {ck.step})")
    print(format_table(res))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(res, indent=2, default=_json_default))
        print(f"wrote {args.json_path}")
    return 0


#: the metrics of an evaluation that must be finite for it to be reported
_METRICS = ("bpc", "nll_bits", "bits_per_byte", "loss", "perplexity", "nll_bits_separators")


def check_finite_result(res) -> None:
    """Refuse (``CheckpointError``) an evaluation whose metrics are not all finite.

    A NaN or infinite bits-per-character is never a result: the model's outputs on
    these windows were not finite (or a probability underflowed to zero).
    """
    bad = [f"{k} {getattr(res, k)}" for k in _METRICS if not math.isfinite(getattr(res, k))]
    if bad:
        raise CheckpointError(f"the evaluation is not finite ({', '.join(bad)}): the model's predictions on "
                              "this data hold NaN or inf (or a zero probability), so no result is reported")


def _same_corpus(spec: str, meta: dict) -> bool:
    """Whether ``spec`` names the corpus the checkpoint was trained on (a name, or the same path)."""
    name, stored = stored_corpus(meta)
    if spec == name:
        return True
    if stored is None:
        return False
    try:
        return os.path.samefile(spec, stored)
    except (OSError, ValueError):
        return False


def _byte_tokenizer_for(model) -> ByteTokenizer:
    """The byte tokenizer, for a model that records none; refused if the model's vocabulary cannot be it."""
    tok = ByteTokenizer()
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and vocab != tok.vocab_size:
        raise CheckpointError(f"the checkpoint records no tokenizer and its vocabulary ({vocab} tokens) is not "
                              f"the byte tokenizer's ({tok.vocab_size})")
    return tok


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _demo_command(argv) -> int:
    """``leechlib lila demo [--seconds S]``: :func:`demo` with a progress bar; print BPC and a sample.

    Returns 0 on success, 2 for a bad argument or when the corpus is unavailable.
    """
    p = argparse.ArgumentParser(prog="leechlib lila demo",
                                description="Train lila-tiny on the embedded Shakespeare corpus for about "
                                            "SECONDS, evaluate it on the whole validation split, print a sample.")
    p.add_argument("--seconds", type=float, default=60.0, help="training time in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run and of the sample (default 0)")
    args = p.parse_args(argv)
    if not 0 < args.seconds < math.inf:
        p.error(f"--seconds must be positive and finite, got {args.seconds}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    print(f"== LILA: training lila-tiny on the embedded Shakespeare corpus for ~{args.seconds} s ==")
    sys.stdout.flush()  # before the progress bar starts on stderr
    progress = _Progress(enabled=True)
    try:
        res = demo(seconds=args.seconds, seed=args.seed, callback=progress)
    except (DataUnavailableError, ValueError) as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress.close()
    print(f"validation bits per character: {res['bpc']:.4f} over {res['n_chars']:,} characters")
    print(f"parameters: {res['params_trainable']:,} trainable, {res['params_frozen']:,} frozen")
    print("sample:")
    print(res["sample"])
    return 0


def _quantize_parser() -> argparse.ArgumentParser:
    """Argument parser of ``leechlib lila quantize``."""

    p = argparse.ArgumentParser(
        prog="leechlib lila quantize", formatter_class=_HelpFormatter,
        description="Quantize the linear layers of a LILA checkpoint (calibration windows from its "
                    "training split) and write a checkpoint that 'leechlib lila eval' reads.")
    p.add_argument("ckpt", metavar="CKPT",
                   help="checkpoint file, a run directory (its latest checkpoint) or a run's model.safetensors")
    p.add_argument("--out", required=True, metavar="FILE", help="quantized checkpoint to write (.safetensors)")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it is an existing file (never the checkpoint read)")
    p.add_argument("--method", default="leech-shape-gain", choices=list(METHODS),
                   help="quantizer of the weights")
    p.add_argument("--bits", type=float, default=2.0, help="bits per weight of the codes")
    p.add_argument("--rotation", default="hadamard", choices=list(ROTATIONS),
                   help="seeded randomized Hadamard rotation of each layer's input side "
                        "(hadamard), of both sides (hadamard-both), or none")
    p.add_argument("--feedback", default=None, choices=["ldlq", "none"],
                   help="error feedback (default: ldlq when --calib-steps > 0)")
    p.add_argument("--calib-steps", type=int, default=32, help="calibration batches (0: no calibration)")
    p.add_argument("--calib-batch-size", type=int, default=4, help="windows per calibration batch")
    p.add_argument("--block-size", type=int, default=None, help="calibration window length (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rotations and of the windows")
    p.add_argument("--damp", type=float, default=0.01, help="relative damping of the second moments")
    p.add_argument("--act-order", action="store_true",
                   help="feed back the column blocks in decreasing order of input energy")
    p.add_argument("--max-points", type=int, default=None,
                   help="blocks used to fit each codebook (default: the quantizer's own, "
                        "20000 for shape-gain, 4000 for the ball, 2000 for E8)")
    p.add_argument("--data", default=None,
                   help="corpus of the calibration windows (its training split; default: the named corpus the "
                        "checkpoint was trained on; a path stored in the checkpoint is never used: pass it)")
    p.add_argument("--cache-dir", default=None,
                   help="token cache root (default ~/.cache/leechlib/lila-data or $LEECHLIB_CACHE_DIR)")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="also write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _quantize_command(argv) -> int:
    """``leechlib lila quantize CKPT --out FILE ...``: quantize, print the per-layer report.

    Returns 0 on success, 2 for a bad argument, a missing or corrupt checkpoint, an
    unavailable corpus, or an output or token cache that cannot be written.
    """
    from tqdm.auto import tqdm


    parser = _quantize_parser()
    args = parser.parse_args(argv)
    for name in ("calib_steps", "calib_batch_size", "block_size", "seed", "max_points"):
        v = getattr(args, name)
        low = 0 if name in ("calib_steps", "seed") else 1
        if v is not None and v < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {v}")
    bits = int(args.bits) if float(args.bits).is_integer() else args.bits
    bar = None

    def progress(name, info):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=info["total"], unit="layer", dynamic_ncols=True, file=sys.stderr)
        bar.update(1)
        bar.set_postfix_str(f"{name} {info['seconds']:.1f}s {info['calibration']}")

    try:
        if args.json_path is not None:
            check_output_path(args.json_path, what="--json", overwrite=True)
        config = QuantizeConfig(method=args.method, bits=bits, rotation=args.rotation, feedback=args.feedback,
                                seed=args.seed, damp=args.damp, act_order=args.act_order,
                                max_points=args.max_points)
        res = quantize_checkpoint(args.ckpt, args.out, config, calib_steps=args.calib_steps,
                                  calib_batch_size=args.calib_batch_size, block_size=args.block_size,
                                  data=args.data, cache_dir=args.cache_dir, callback=progress,
                                  overwrite=args.force)
    except (CheckpointError, DataUnavailableError, ValueError, TypeError, OSError) as exc:
        if bar is not None:
            bar.close()
            bar = None
        _error(exc)
        return 2
    finally:
        if bar is not None:
            bar.close()
    r = res["report"]
    print(f"checkpoint {res['checkpoint']} (step {res['step']}) -> {res['out']}")
    print(f"{args.method}, rotation {args.rotation}, feedback {res['settings']['feedback']}, "
          f"{res['calibration_tokens']:,} calibration tokens from the training split, {res['seconds']:.1f} s")
    print(r.table())
    if args.json_path:
        doc = {k: v for k, v in res.items() if k != "report"}
        doc["bits"] = {"bits_per_quantized_weight": r.bits_per_quantized_weight,
                       "bits_per_param": r.bits_per_param, "notes": r.notes}
        Path(args.json_path).write_text(json.dumps(doc, indent=2, default=_json_default))
        print(f"wrote {args.json_path}")
    return 0


_COMMANDS = {"train": _train_command, "eval": _eval_command, "demo": _demo_command,
             "quantize": _quantize_command}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
