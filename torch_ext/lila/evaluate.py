"""Honest evaluation of LILA models: bits per character over a whole split.

What is measured (:func:`evaluate`)
-----------------------------------
The split is the stream ``[EOS] d1 [EOS] d2 ... [EOS]`` of :mod:`torch_ext.lila.data`.
Every token after the leading ``EOS`` is scored **exactly once**: the document
characters and the ``EOS`` that ends each document (the end of a document is
information a decoder needs, so it is paid for).  Windows of ``block_size`` inputs
cover the stream; with ``stride < block_size`` windows overlap and only the targets
not scored before are counted (more context per prediction, same targets).  The
last window is padded on the right; padded positions are masked out and never
scored, and under a causal model they cannot influence the scored positions.

* ``nll_bits`` - total negative log-likelihood of the scored tokens, in bits
  (accumulated in float64);
* ``n_chars`` - Unicode characters of the documents' text (separators add none);
* ``bpc = nll_bits / n_chars`` - an upper bound on the code length of the split
  per character; ``bits_per_byte`` divides by the UTF-8 size instead;
* ``perplexity = exp(nll_nats / n_tokens_scored)`` - per token, so it depends on
  the tokenizer; compare tokenizers by ``bpc``;
* ``nll_bits_separators`` - the part of ``nll_bits`` spent on ``EOS`` targets.

Plus weight statistics: stable rank ``||W||_F^2 / ||W||_2^2`` and effective rank
(``exp`` of the entropy of the normalised singular values, Roy & Vetterli 2007) of
every 2-D weight (frozen buffers included), and trainable/frozen parameter counts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .data import TokenData, TokenSplit
from .results import EvalResult, EvalSums

__all__ = [
    "evaluate",
    "eval_windows",
    "bits_per_character",
    "matrix_ranks",
    "weight_ranks",
    "param_counts",
    "format_table",
]


def eval_windows(n_tokens: int, block_size: int, stride: int | None = None) -> Iterator[tuple[int, int, int]]:
    """Windows that score every target of a stream once.

    Parameters
    ----------
    n_tokens : int
        Length of the stream; targets are the positions ``1 .. n_tokens - 1``.
    block_size : int
        Inputs per window.
    stride : int, optional
        Start-to-start distance of windows (default ``block_size``: no overlap).

    Yields
    ------
    start, n_inputs, first_scored : int
        The window reads inputs ``tokens[start : start + n_inputs]`` and predicts
        ``tokens[start + 1 : start + n_inputs + 1]``; positions ``j >= first_scored``
        (0-based within the window) are scored.

    Examples
    --------
    >>> list(eval_windows(6, 2))
    [(0, 2, 0), (2, 2, 0), (4, 1, 0)]
    >>> list(eval_windows(6, 4, stride=2))
    [(0, 4, 0), (2, 3, 2)]
    """
    for name, v in (("n_tokens", n_tokens), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if n_tokens < 2:
        raise ValueError(f"n_tokens must be >= 2 (a stream with at least one target), got {n_tokens}")
    stride = block_size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= block_size:
        raise ValueError(f"stride must be an int in [1, block_size={block_size}], got {stride!r}")
    last = n_tokens - 1  # index of the last target
    done = 0  # targets 1..done are scored
    start = 0
    while done < last:
        end = min(start + block_size, last)  # last target index of this window
        yield int(start), int(end - start), int(done - start)
        done = end
        start += stride


def _logits_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"model output must be a tensor, have .logits or be a tuple, got {type(out).__name__}")


def _model_block_size(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "block_size", None)


@torch.no_grad()
def bits_per_character(model, split: TokenSplit, *, eos_id: int, block_size: int, batch_size: int = 8,
                       stride: int | None = None, device=None, autocast_dtype=None,
                       shard: tuple[int, int] | None = None) -> EvalResult | EvalSums:
    """Score a whole split with ``model``; see the module docstring for the definitions.

    Parameters
    ----------
    model : callable
        ``model(idx)`` with ``idx`` of shape ``(B, T)`` returns logits ``(B, T, V)``
        (a tensor, an object with ``.logits``, or a tuple whose first item is them).
    split : TokenSplit
        The stream and its character counts.
    eos_id : int
        Id of the end-of-document token (also used as input padding, masked out).
    block_size : int
        Inputs per window.
    batch_size : int
        Windows per forward pass.
    stride : int, optional
        Window stride (default ``block_size``).
    device : torch.device or str, optional
        Device for the inputs (default: the model's, else CPU).
    autocast_dtype : torch.dtype, optional
        Run the forward under autocast (e.g. ``torch.bfloat16`` on CUDA); the
        log-softmax is always taken in float32 and sums kept in float64.
    shard : (int, int), optional
        ``(rank, world_size)``: score only windows ``rank::world_size`` and return
        their :class:`~torch_ext.lila.results.EvalSums`; the sums of all ranks, added up,
        give the result of the split (:meth:`EvalSums.result
        <torch_ext.lila.results.EvalSums.result>`): distributed evaluation.

    Returns
    -------
    EvalResult or EvalSums
        The :class:`~torch_ext.lila.results.EvalResult` of the split (its optional
        fields unset); with ``shard``, the :class:`~torch_ext.lila.results.EvalSums`
        of the shard.
    """
    if not isinstance(split, TokenSplit):
        raise TypeError(f"split must be a TokenSplit, got {type(split).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if split.n_chars <= 0:
        raise ValueError("split has no characters to score")
    if device is None:
        p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    tokens = split.tokens
    windows = list(eval_windows(split.n_tokens, block_size, stride))
    if shard is not None:
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
        windows = windows[rank::world]
    nll = 0.0  # nats, float64 on the host
    nll_sep = 0.0
    n_scored = 0
    t0 = time.perf_counter()
    for b0 in range(0, len(windows), batch_size):
        chunk = windows[b0:b0 + batch_size]
        x = np.full((len(chunk), block_size), eos_id, dtype=np.int64)
        y = np.full((len(chunk), block_size), -1, dtype=np.int64)
        for i, (s, n, first) in enumerate(chunk):
            seg = np.asarray(tokens[s:s + n + 1], dtype=np.int64)
            x[i, :n] = seg[:n]
            y[i, first:n] = seg[first + 1:n + 1]
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                logits = _logits_of(model(xt))
        else:
            logits = _logits_of(model(xt))
        if logits.shape[:2] != xt.shape:
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)} for inputs {tuple(xt.shape)}")
        mask = yt >= 0
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok_nll = -logp.gather(-1, yt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        tok_nll = torch.where(mask, tok_nll, torch.zeros_like(tok_nll)).double()
        nll += float(tok_nll.sum())
        nll_sep += float(tok_nll[yt == eos_id].sum())
        n_scored += int(mask.sum())
    sums = EvalSums(nll, nll_sep, n_scored, time.perf_counter() - t0, int(block_size), int(stride or block_size))
    return sums if shard is not None else sums.result(split)


def matrix_ranks(w: torch.Tensor) -> dict:
    """Stable rank and effective rank of a 2-D tensor.

    Returns
    -------
    dict
        ``stable_rank`` = ``||W||_F^2 / ||W||_2^2``; ``effective_rank`` =
        ``exp(H(s / sum(s)))`` over the singular values ``s``; ``shape``.

    Examples
    --------
    >>> r = matrix_ranks(torch.eye(4))
    >>> round(r["stable_rank"], 6), round(r["effective_rank"], 6)
    (4.0, 4.0)
    """
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        raise ValueError("w must be a 2-D tensor")
    s = torch.linalg.svdvals(w.detach().to("cpu", torch.float64))
    top = float(s[0]) if s.numel() else 0.0
    if top == 0.0:
        return {"stable_rank": 0.0, "effective_rank": 0.0, "shape": list(w.shape)}
    p = s / s.sum()
    p = p[p > 0]
    ent = float(-(p * p.log()).sum())
    return {"stable_rank": float((s ** 2).sum()) / top ** 2, "effective_rank": math.exp(ent),
            "shape": list(w.shape)}


def weight_ranks(model: torch.nn.Module) -> dict[str, dict]:
    """:func:`matrix_ranks` of every 2-D parameter and buffer of ``model``.

    Buffers (e.g. frozen attention kernels) are marked ``"frozen": True``; so are
    parameters with ``requires_grad=False``.  Tied weights appear once.  Vectors
    stored as ``(n, 1)`` or ``(1, n)`` (the row scales of quantized layers) are not
    matrices and are left out.
    """
    out: dict[str, dict] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.ndim == 2 and min(p.shape) > 1 and id(p) not in seen:
            seen.add(id(p))
            out[name] = {**matrix_ranks(p), "frozen": not p.requires_grad}
    for name, b in model.named_buffers():
        if b.ndim == 2 and min(b.shape) > 1 and b.is_floating_point() and id(b) not in seen:
            seen.add(id(b))
            out[name] = {**matrix_ranks(b), "frozen": True}
    return out


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts.

    Uses ``model.num_params()`` when the model has it, otherwise counts
    parameters by ``requires_grad`` and floating-point buffers as frozen.
    """
    f = getattr(model, "num_params", None)
    if callable(f):
        r = f()
        if isinstance(r, dict):
            t = r.get("trainable", r.get("params_trainable"))
            z = r.get("frozen", r.get("params_frozen"))
        elif isinstance(r, tuple) and len(r) == 2:
            t, z = r
        else:
            t = z = None
        if t is not None and z is not None:
            return {"params_trainable": int(t), "params_frozen": int(z)}
    seen: set[int] = set()
    t = z = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            t += p.numel()
        else:
            z += p.numel()
    for b in model.buffers():
        if b.is_floating_point():
            z += b.numel()
    return {"params_trainable": t, "params_frozen": z}


def evaluate(model, data, split: str = "validation", *, batch_size: int = 8, block_size: int | None = None,
             stride: int | None = None, device=None, ranks: bool = True,
             eos_id: int | None = None) -> EvalResult:
    """Evaluate ``model`` on a whole split: BPC, perplexity, ranks, parameter counts.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~torch_ext.model.LilaTransformer` (or any causal LM returning logits).
    data : TokenData or TokenSplit
        Tokenised corpus (its ``split`` is scored) or one split.
    split : {"validation", "train"}
        Which split of ``data`` to score.
    batch_size : int
        Windows per forward pass.
    block_size : int, optional
        Window length (default: ``model.config.block_size``).
    stride : int, optional
        Window stride (default: ``block_size``).
    device : torch.device or str, optional
        Device (default: the model's).
    ranks : bool
        Also compute stable/effective ranks of every weight matrix.
    eos_id : int, optional
        End-of-document id; needed only when ``data`` is a bare :class:`TokenSplit`.

    Returns
    -------
    EvalResult
        The measures of :func:`bits_per_character` plus ``split``,
        ``params_trainable``, ``params_frozen`` and (with ``ranks``) ``stable_rank``
        and ``effective_rank`` (``{matrix name: value}``) and ``ranks`` (details).
    """
    if isinstance(data, TokenData):
        sp, eos = data.split(split), data.tokenizer.eos_id
    elif isinstance(data, TokenSplit):
        sp, eos = data, eos_id
        if eos is None:
            raise ValueError("eos_id must be given when data is a bare TokenSplit")
    else:
        raise TypeError(f"data must be TokenData or TokenSplit, got {type(data).__name__}")
    if block_size is None:
        block_size = _model_block_size(model)
        if block_size is None:
            raise ValueError("block_size must be given for a model without config.block_size")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    dev = torch.device(device) if device is not None else None
    amp = torch.bfloat16 if (dev or _device_of(model)).type == "cuda" else None
    try:
        res = bits_per_character(model, sp, eos_id=eos, block_size=block_size, batch_size=batch_size,
                                 stride=stride, device=dev, autocast_dtype=amp)
    finally:
        if was_training:
            model.train()
    res = dataclasses.replace(res, split=split, **param_counts(model))
    if ranks:
        r = weight_ranks(model)
        res = dataclasses.replace(res, stable_rank={k: v["stable_rank"] for k, v in r.items()},
                                  effective_rank={k: v["effective_rank"] for k, v in r.items()}, ranks=r)
    return res


def _device_of(model) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def format_table(res: EvalResult | Mapping) -> str:
    """A plain-text table of an :func:`evaluate` result (used by the CLI).

    ``res`` is an :class:`~torch_ext.lila.results.EvalResult` or its :meth:`to_dict
    <torch_ext.lila.results.EvalResult.to_dict>` (to which the CLI adds
    ``train_tokens_per_s``, shown when present).
    """
    if isinstance(res, EvalResult):
        res = res.to_dict()
    lines = []
    head = [
        ("split", res.get("split", "")),
        ("bits per character", f"{res['bpc']:.4f}"),
        ("bits per byte", f"{res['bits_per_byte']:.4f}"),
        ("perplexity (per token)", f"{res['perplexity']:.3f}"),
        ("characters scored", f"{res['n_chars']:,}"),
        ("tokens scored", f"{res['n_tokens_scored']:,}  ({res['chars_per_token']:.3f} chars/token)"),
        ("documents", f"{res['n_docs']:,}"),
        ("NLL (bits)", f"{res['nll_bits']:,.1f}  (separators {res['nll_bits_separators']:,.1f})"),
        ("parameters", f"{res['params_trainable']:,} trainable, {res['params_frozen']:,} frozen"),
        ("eval tokens/s", f"{res['eval_tokens_per_s']:,.0f}"),
    ]
    if "train_tokens_per_s" in res:
        head.append(("train tokens/s", f"{res['train_tokens_per_s']:,.0f}"))
    w = max(len(k) for k, _ in head)
    lines += [f"{k:<{w}}  {v}" for k, v in head]
    if res.get("ranks"):
        lines.append("")
        nw = max(len(k) for k in res["ranks"])
        lines.append(f"{'matrix':<{nw}}  {'shape':>12}  {'stable rank':>11}  {'eff. rank':>9}  frozen")
        for k, v in res["ranks"].items():
            shape = "x".join(str(s) for s in v["shape"])
            lines.append(f"{k:<{nw}}  {shape:>12}  {v['stable_rank']:>11.2f}  {v['effective_rank']:>9.2f}  "
                         f"{'yes' if v['frozen'] else ''}")
    return "\n".join(lines)
