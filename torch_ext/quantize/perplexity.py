r"""Perplexity of a causal language model on a text, with a sliding window; calibration windows.

:func:`perplexity` scores every token of a text but the first, each predicted from
at most ``context`` tokens before it, the model run on windows of ``context``
tokens that start ``stride`` tokens apart (the evaluation of the ``transformers``
documentation).  Each token is scored once, in the first window that reaches it,
so with ``stride < context`` every token but the first is scored, those after the
first window with at least ``context - stride`` tokens of history;
``stride == context`` cuts the text into disjoint windows (fastest, the least
history), and the first token of each window, which has none, is not scored.  Perplexities are only
comparable at the same context, stride and tokenizer; bits per byte (the total
cross-entropy over the bytes of the text) compare across tokenizers.

:func:`text_windows` cuts a tokenized text into calibration windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .._validation import check_int

__all__ = ["PerplexityResult", "perplexity", "read_texts", "text_windows"]

#: text file suffixes read from a folder given as text
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """Sliding-window evaluation of a causal LM (see :func:`perplexity`).

    Attributes
    ----------
    nll : float
        Summed negative log-likelihood (nats) of the scored tokens.
    tokens : int
        Scored tokens (the text's tokens but the first).
    context, stride : int
    windows : int
        Forward passes.
    text_bytes : int or None
        UTF-8 bytes of the text, when known (for :attr:`bits_per_byte`).
    """

    nll: float
    tokens: int
    context: int
    stride: int
    windows: int
    text_bytes: int | None = None

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_token(self) -> float:
        return self.mean_nll / math.log(2)

    @property
    def bits_per_byte(self) -> float | None:
        return None if not self.text_bytes else self.nll / math.log(2) / self.text_bytes

    def to_dict(self) -> dict:
        return {"perplexity": self.perplexity, "bits_per_token": self.bits_per_token,
                "bits_per_byte": self.bits_per_byte, "nll": self.nll, "tokens": self.tokens,
                "context": self.context, "stride": self.stride, "windows": self.windows,
                "text_bytes": self.text_bytes}

    def __str__(self) -> str:
        bpb = f", {self.bits_per_byte:.4f} bits per byte" if self.bits_per_byte else ""
        return (f"perplexity {self.perplexity:.4f} ({self.bits_per_token:.4f} bits per token{bpb}) "
                f"over {self.tokens:,} tokens, context {self.context}, stride {self.stride}")


def _logits(out) -> Tensor:
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Tensor):
        logits = out
    if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        logits = out[0]
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise TypeError("the model must return logits (batch, tokens, vocab) or an output with .logits: "
                        "perplexity needs a causal language model")
    return logits


@torch.no_grad()
def perplexity(model: nn.Module, ids, *, context: int, stride: int | None = None,
               text_bytes: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    """Sliding-window perplexity of ``model`` on the token ids ``ids`` (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM: ``model(input_ids)`` gives logits ``(1, T, vocab)`` (or an
        output with ``.logits``).
    ids : sequence of int or 1-D integer tensor
        The tokenized text (at least 2 tokens).
    context : int
        Tokens per forward pass (at most the model's positions).
    stride : int, optional
        Tokens between window starts, ``1 <= stride <= context`` (default ``context // 2``).
    text_bytes : int, optional
        UTF-8 bytes of the text, for bits per byte.
    progress : callable, optional
        ``progress(done, total)`` after each window.

    Returns
    -------
    PerplexityResult

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize.perplexity import perplexity
    >>> class Uniform(nn.Module):            # every next token equally likely among 16
    ...     def forward(self, x):
    ...         return torch.zeros(*x.shape, 16)
    >>> r = perplexity(Uniform(), torch.arange(100) % 16, context=32, stride=16)
    >>> round(r.perplexity, 6), r.tokens, r.bits_per_token
    (16.0, 99, 4.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ids = torch.as_tensor(ids)
    if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be a 1-D sequence of token ids, got {ids.dtype} {tuple(ids.shape)}")
    n = ids.numel()
    if n < 2:
        raise ValueError(f"the text has {n} token(s): at least 2 are needed")
    context = check_int(context, "context", 2)
    stride = context // 2 if stride is None else stride
    stride = check_int(stride, "stride", 1)
    if stride > context:
        raise ValueError(f"stride ({stride}) must be at most context ({context})")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    ids = ids.long()
    starts = [0] + [stride * k for k in range(1, -(-max(0, n - context) // stride) + 1)]
    total_nll, scored, prev_end, windows = 0.0, 0, 0, 0
    was = model.training
    model.eval()
    try:
        for k, begin in enumerate(starts):
            end = min(begin + context, n)
            window = ids[begin:end].to(device)[None]
            logits = _logits(model(window))[0, :-1].float()
            targets = window[0, 1:]
            # this window scores the targets max(prev_end, begin + 1) .. end - 1 (text positions)
            first = max(prev_end, begin + 1) - (begin + 1)
            lp = torch.log_softmax(logits[first:], dim=-1)
            nll = -lp.gather(1, targets[first:, None]).sum()
            if not bool(torch.isfinite(nll)):
                raise ValueError(f"the model's log-likelihood is not finite in window {k} "
                                 f"(tokens {begin}..{end - 1})")
            total_nll += float(nll)
            scored += end - 1 - max(prev_end, begin + 1) + 1
            prev_end = end
            windows += 1
            if progress is not None:
                progress(k + 1, len(starts))
    finally:
        model.train(was)
    return PerplexityResult(nll=total_nll, tokens=scored, context=context, stride=stride,
                            windows=windows, text_bytes=text_bytes)


def read_texts(path) -> tuple[str, list[Path]]:
    """The text of a file, or of every text file of a folder (sorted, joined by blank lines).

    Text is decoded as strict UTF-8.  ``FileNotFoundError`` for nothing at ``path``;
    ``ValueError`` for a folder with no text file (``.txt``, ``.md``, ``.text``,
    ``.rst``), an empty text, or bytes that are not UTF-8 (naming the file).
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{p} holds no text file ({', '.join(TEXT_SUFFIXES)})")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"no file or folder {p}")
    parts = []
    for f in files:
        try:
            parts.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{f} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    text = "\n\n".join(parts)
    if not text.strip():
        raise ValueError(f"{p}: the text is empty")
    return text, files


def text_windows(ids, *, tokens: int, context: int) -> tuple[Tensor, int]:
    """``ceil(tokens / context)`` windows ``(n, context)`` spread evenly over ``ids``.

    Fewer when the text is short (as many disjoint windows as fit, at least one,
    shorter than ``context`` if the whole text is).  Returns the windows and the
    number of distinct tokens they cover.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize.perplexity import text_windows
    >>> w, covered = text_windows(torch.arange(1000), tokens=256, context=64)
    >>> tuple(w.shape), int(w[1, 0]), covered
    ((4, 64), 312, 256)
    """
    ids = torch.as_tensor(ids).long()
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError("ids must be a non-empty 1-D sequence of token ids")
    tokens = check_int(tokens, "tokens", 1)
    context = check_int(context, "context", 1)
    n = ids.numel()
    if n <= context:
        return ids[None], n
    want = -(-tokens // context)
    fit = n // context
    k = min(want, fit)
    if k == 1:
        starts = [0]
    else:
        span = n - context
        starts = [round(i * span / (k - 1)) for i in range(k)]
    w = torch.stack([ids[s:s + context] for s in starts])
    return w, k * context
