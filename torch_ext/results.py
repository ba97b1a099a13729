"""What evaluation and training return.

:class:`EvalSums` are the sums one process gathers over its windows of a split
(:func:`torch_ext.evaluate.bits_per_character` with ``shard=``); summed over the
processes they give the evaluation result of the whole split.  Both the
evaluation and the training loop build their results here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .data import TokenSplit

__all__ = ["EvalSums"]

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

    def result(self, split: TokenSplit) -> dict:
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
        return {
            "bpc": nll_bits / split.n_chars,
            "nll_bits": nll_bits,
            "n_chars": int(split.n_chars),
            "n_bytes": int(split.n_bytes),
            "n_docs": int(split.n_docs),
            "n_tokens_scored": int(n),
            "bits_per_byte": nll_bits / split.n_bytes,
            "loss": nll / n,
            "perplexity": math.exp(nll / n) if nll / n < 700 else float("inf"),
            "nll_bits_separators": self.sep_nats / _LN2,
            "chars_per_token": split.n_chars / n,
            "eval_seconds": dt,
            "eval_tokens_per_s": n / dt if dt > 0 else float("inf"),
            "block_size": int(self.block_size),
            "stride": int(self.stride),
        }
