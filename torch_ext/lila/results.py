"""What evaluation and training return: small frozen dataclasses.

:class:`EvalResult` is what :func:`torch_ext.lila.evaluate.evaluate` and
:func:`~torch_ext.lila.evaluate.bits_per_character` return, :class:`TrainResult` what
:func:`torch_ext.lila.train.train` returns; ``.to_dict()`` gives the JSON that
``leechlib lila`` writes.  :class:`EvalSums` are the sums one process gathers over
its windows of a split (``bits_per_character(..., shard=...)``); summed over the
processes they give the :class:`EvalResult` of the whole split.  Both the
evaluation and the training loop build their results here.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .data import TokenSplit

__all__ = ["EvalResult", "EvalSums", "TrainResult"]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalSums:
    """Sums of a (partial) evaluation, in nats, before they are turned into rates.

    Attributes
    ----------
    nll_nats : float
        Negative log-likelihood of the scored targets.
    sep_nats : float
        The part of ``nll_nats`` spent on end-of-document targets.
    n_tokens_scored : int
        Targets scored.
    eval_seconds : float
        Time spent scoring.
    block_size, stride : int
        The windows.

    Examples
    --------
    >>> import dataclasses
    >>> a = EvalSums(1.5, 0.5, 3, 0.1, 4, 4)
    >>> dataclasses.replace(a, nll_nats=a.nll_nats + 2.0).nll_nats
    3.5
    """

    nll_nats: float
    sep_nats: float
    n_tokens_scored: int
    eval_seconds: float
    block_size: int
    stride: int

    def result(self, split: TokenSplit) -> EvalResult:
        """The evaluation result of ``split`` from its sums over all its windows.

        Raises
        ------
        RuntimeError
            If the sums do not cover every target of ``split`` once (an internal
            invariant of the evaluation, not an input check).
        """
        n, nll = self.n_tokens_scored, self.nll_nats
        if n != split.n_targets:
            raise RuntimeError(f"scored {n} targets, the split has {split.n_targets}")
        nll_bits = nll / _LN2
        dt = self.eval_seconds
        return EvalResult(
            bpc=nll_bits / split.n_chars,
            nll_bits=nll_bits,
            n_chars=int(split.n_chars),
            n_bytes=int(split.n_bytes),
            n_docs=int(split.n_docs),
            n_tokens_scored=int(n),
            bits_per_byte=nll_bits / split.n_bytes,
            loss=nll / n,
            perplexity=math.exp(nll / n) if nll / n < 700 else float("inf"),
            nll_bits_separators=self.sep_nats / _LN2,
            chars_per_token=split.n_chars / n,
            eval_seconds=dt,
            eval_tokens_per_s=n / dt if dt > 0 else float("inf"),
            block_size=int(self.block_size),
            stride=int(self.stride),
        )


class _Record:
    """``result[key]`` reads the field ``key``: the form of the dicts these results replace."""

    __slots__ = ()

    def __getitem__(self, key: str):
        if isinstance(key, str) and key in self.__dataclass_fields__:
            return getattr(self, key)
        raise KeyError(key)


def _copy(v):
    return copy.deepcopy(v) if isinstance(v, (dict, list)) else v


@dataclass(frozen=True)
class EvalResult(_Record):
    """The evaluation of a model on a whole split (see :mod:`torch_ext.lila.evaluate`).

    Attributes
    ----------
    bpc : float
        ``nll_bits / n_chars``: bits per Unicode character of the documents' text.
    nll_bits : float
        Negative log-likelihood of every scored token, in bits.
    n_chars, n_bytes, n_docs : int
        Characters, UTF-8 bytes and documents of the split.
    n_tokens_scored : int
        Targets scored (every token after the leading end-of-document token).
    bits_per_byte : float
        ``nll_bits / n_bytes``.
    loss : float
        Mean negative log-likelihood per token, in nats.
    perplexity : float
        ``exp(loss)`` (per token: it depends on the tokenizer).
    nll_bits_separators : float
        The part of ``nll_bits`` spent on end-of-document targets.
    chars_per_token : float
        ``n_chars / n_tokens_scored``.
    eval_seconds, eval_tokens_per_s : float
        Time spent scoring, and tokens scored per second.
    block_size, stride : int
        The windows.
    split : str, optional
        Name of the split (set by :func:`~torch_ext.lila.evaluate.evaluate`).
    params_trainable, params_frozen : int, optional
        Parameter counts (set by :func:`~torch_ext.lila.evaluate.evaluate` and the training loop).
    stable_rank, effective_rank : dict, optional
        ``{matrix name: rank}`` of every weight matrix (``evaluate(..., ranks=True)``).
    ranks : dict, optional
        ``{matrix name: {"stable_rank", "effective_rank", "shape", "frozen"}}``.

    Notes
    -----
    The optional fields are ``None`` when not measured; :meth:`to_dict` leaves them
    out.  ``result["bpc"]`` reads a field like a dict lookup.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.lila.data import ByteTokenizer, TokenSplit
    >>> from torch_ext.lila.evaluate import bits_per_character
    >>> split = TokenSplit.from_texts(["ab", "b"], ByteTokenizer())
    >>> uniform = lambda idx: torch.zeros(*idx.shape, 257)   # p = 1/257 for every token
    >>> r = bits_per_character(uniform, split, eos_id=256, block_size=4)
    >>> r.n_tokens_scored, r.n_chars, round(r.bpc, 4)        # 5 * log2(257) bits / 3 chars
    (5, 3, 13.3427)
    >>> r["bpc"] == r.bpc == r.to_dict()["bpc"], "split" in r.to_dict()
    (True, False)
    """

    bpc: float
    nll_bits: float
    n_chars: int
    n_bytes: int
    n_docs: int
    n_tokens_scored: int
    bits_per_byte: float
    loss: float
    perplexity: float
    nll_bits_separators: float
    chars_per_token: float
    eval_seconds: float
    eval_tokens_per_s: float
    block_size: int
    stride: int
    split: str | None = None
    params_trainable: int | None = None
    params_frozen: int | None = None
    stable_rank: dict | None = None
    effective_rank: dict | None = None
    ranks: dict | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict, without the optional ones that are ``None``."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in _EVAL_OPTIONAL or getattr(self, f.name) is not None}


_EVAL_OPTIONAL = frozenset(f.name for f in dataclasses.fields(EvalResult) if f.default is None)


@dataclass(frozen=True)
class TrainResult(_Record):
    """The outcome of :func:`torch_ext.lila.train.train`.

    Attributes
    ----------
    out : str
        Run directory.
    step, steps : int
        Optimizer steps done, and the run's length (``time_budget`` may lower it).
    final_loss : float
        Training loss of the last step (all micro-batches and processes).
    val : EvalResult or None
        The final evaluation on the whole validation split; ``None`` after
        ``stop_at`` or an interruption.
    history : list of dict
        The evaluations during the run: ``step``, ``val_bpc``, ``val_loss``,
        ``train_loss``, ``tokens``.
    checkpoint : str or None
        The last checkpoint written.
    tokens_per_s, train_seconds, wall_seconds : float
        Training throughput (after the first steps), time in optimizer steps, and
        wall-clock time of the call.
    resumed_from : int or None
        The step the run resumed from.
    stopped, interrupted : bool
        Ended by ``stop_at``; ended by SIGINT (Ctrl-C) or SIGTERM (a checkpoint of
        the last finished step was written).
    tokenizer : ByteTokenizer or BPETokenizer
        The tokenizer of the data (not in :meth:`to_dict`).
    world_size : int
        Processes.
    device : str
        Device of this process.
    params_trainable, params_frozen : int
        Parameter counts.
    skipped_steps : int
        Optimizer steps skipped for a non-finite loss or gradient
        (``skip_nonfinite``), over the whole run.
    interrupted_by : str or None
        ``"SIGINT"`` or ``"SIGTERM"`` when ``interrupted``.

    Examples
    --------
    >>> from torch_ext.lila.data import ByteTokenizer
    >>> r = TrainResult(out="runs/a", step=4, steps=10, final_loss=2.5, val=None, history=[],
    ...                 checkpoint="runs/a/ckpt-0000004.safetensors", tokens_per_s=1e4,
    ...                 train_seconds=0.5, wall_seconds=0.7, resumed_from=None, stopped=True,
    ...                 interrupted=False, tokenizer=ByteTokenizer(), world_size=1, device="cpu",
    ...                 params_trainable=1000, params_frozen=576)
    >>> r.stopped, r["step"], "tokenizer" in r.to_dict()
    (True, 4, False)
    """

    out: str
    step: int
    steps: int
    final_loss: float
    val: EvalResult | None
    history: list
    checkpoint: str | None
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float
    resumed_from: int | None
    stopped: bool
    interrupted: bool
    tokenizer: Any = field(repr=False, compare=False)
    world_size: int
    device: str
    params_trainable: int
    params_frozen: int
    skipped_steps: int = 0
    interrupted_by: str | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (``val`` as :meth:`EvalResult.to_dict`), without the tokenizer."""
        d = {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "tokenizer"}
        d["val"] = None if self.val is None else self.val.to_dict()
        return d
