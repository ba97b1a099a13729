"""The arguments of a training run (:class:`TrainConfig`) and their checks."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ._textfiles import check_encoding

__all__ = ["TrainConfig", "MODEL_OVERRIDES"]

#: LilaConfig fields that the command line can override
MODEL_OVERRIDES = ("attention", "kernel", "kernel_seed", "align_weight", "align_directions", "d_model",
                   "n_layer", "n_head", "block_size", "dropout", "attn_dropout", "shared_qk")


@dataclass
class TrainConfig:
    """Arguments of :func:`~torch_ext.lila.train.train` (``leechlib lila train`` maps onto these).

    Attributes
    ----------
    preset : str
        ``LilaConfig.preset`` name (``"lila-tiny"``, ``"lila-20m"``, ``"lila-20m-learned"``).
    data : str
        ``"shakespeare"`` (embedded), ``"tinystories"``, ``"fineweb-edu"`` or a path.
    tokenizer : {"byte", "bpe"}
        Tokenizer; BPE is trained on the train split with ``bpe_vocab_size`` tokens.
    val_fraction : float
        Expected fraction of documents in the validation split, in ``(0, 1)``.
    encoding, encoding_errors : str
        Encoding of local text files (default UTF-8) and what an undecodable byte
        does: ``"strict"`` (default: an error naming the file and the byte offset),
        ``"replace"`` (U+FFFD) or ``"ignore"``.
    steps : int
        Optimizer steps of the whole run (the schedule's length).
    batch_size : int
        Windows per micro-batch per process.
    grad_accum : int
        Micro-batches per optimizer step.
    lr, min_lr_ratio, warmup : float, float, int
        Peak learning rate; linear warm-up for ``warmup`` steps, then cosine decay
        to ``lr * min_lr_ratio`` at ``steps``.
    weight_decay, beta1, beta2, grad_clip : float
        AdamW and clipping (``grad_clip <= 0``: no clipping).
    seed : int
        Seed of the initialisation, the window generator and dropout.
    out : str, optional
        Run directory (default ``runs/<preset>-<data>-s<seed>``).
    eval_every : int
        Evaluate on the whole validation split every this many steps (0: only at the end).
    save_every : int, optional
        Checkpoint every this many steps (default: ``eval_every``, or ``steps // 10``).
    keep : int
        Checkpoints kept in ``out`` (older ones are deleted).
    resume : bool
        Continue from the latest checkpoint in ``out`` (same arguments required).
    force : bool
        Write into ``out`` even if it is a non-empty directory that is not a run
        directory (no ``.lila-run`` marker); files of a run's names in it are replaced.
    skip_nonfinite : bool
        Skip (count, and report) an optimizer step whose loss or gradient norm is not
        finite, instead of stopping the run with :class:`~torch_ext.lila.checkpoint.NonFiniteError`.
    stop_at : int, optional
        End after this step as an interruption would (checkpoint, no final evaluation).
    compile : bool
        ``torch.compile`` the model.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: CUDA if available).
    time_budget : float, optional
        Seconds of training: the mean step time after the first two steps is
        measured after 10, 20, 40, 80... steps and the run's length re-planned to
        fit (at most ``steps``; the schedule follows); the run also ends when the
        budget is spent.  Not reproducible.
    attention, kernel, kernel_seed, align_weight, align_directions
        ``LilaConfig`` overrides (``None``: the preset's value).
    d_model, n_layer, n_head, block_size, dropout, attn_dropout, shared_qk
        ``LilaConfig`` overrides (``None``: the preset's value).
    """

    preset: str = "lila-tiny"
    data: str = "shakespeare"
    tokenizer: str = "byte"
    bpe_vocab_size: int = 2048
    val_fraction: float = 0.1
    max_docs: int | None = None
    cache_dir: str | None = None
    encoding: str = "utf-8"
    encoding_errors: str = "strict"
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    out: str | None = None
    eval_every: int = 0
    eval_batch_size: int = 16
    save_every: int | None = None
    keep: int = 2
    resume: bool = False
    force: bool = False
    skip_nonfinite: bool = False
    stop_at: int | None = None
    compile: bool = False
    device: str | None = None
    time_budget: float | None = None
    num_threads: int | None = None
    attention: str | None = None
    kernel: str | None = None
    kernel_seed: int | None = None
    align_weight: float | None = None
    align_directions: str | None = None
    d_model: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    attn_dropout: float | None = None
    shared_qk: bool | None = None

    @classmethod
    def from_any(cls, args) -> TrainConfig:
        """A :class:`TrainConfig` from itself, a mapping or a namespace.

        A namespace is any object whose attributes are the fields
        (``argparse.Namespace``, ``types.SimpleNamespace``); it is read with :func:`vars`.

        Examples
        --------
        >>> TrainConfig.from_any({"steps": 10}).steps
        10
        """
        if isinstance(args, cls):
            return dataclasses.replace(args)
        if not isinstance(args, Mapping) and hasattr(args, "__dict__") and not isinstance(args, type):
            args = vars(args)
        if not isinstance(args, Mapping):
            raise TypeError(f"args must be a TrainConfig, a mapping or a namespace, got {type(args).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - names)
        if unknown:
            raise ValueError(f"args has unknown fields: {', '.join(unknown)}")
        return cls(**args)

    def validate(self) -> TrainConfig:
        """Raise ``TypeError``/``ValueError`` naming the first bad field; return ``self``."""

        def intlike(name, lo, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")

        def floatlike(name, lo, hi=math.inf, allow_none=False, lo_open=False, hi_open=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
            if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
                raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                                 f"got {v}")

        for n in ("steps", "batch_size", "grad_accum", "keep", "eval_batch_size"):
            intlike(n, 1)
        for n in ("warmup", "eval_every", "seed"):
            intlike(n, 0)
        intlike("save_every", 1, allow_none=True)
        intlike("stop_at", 1, allow_none=True)
        intlike("max_docs", 1, allow_none=True)
        intlike("num_threads", 1, allow_none=True)
        for n in ("d_model", "n_layer", "n_head", "block_size"):
            intlike(n, 1, allow_none=True)
        intlike("kernel_seed", 0, allow_none=True)
        floatlike("lr", 0.0, lo_open=True)
        floatlike("min_lr_ratio", 0.0, 1.0)
        floatlike("weight_decay", 0.0)
        floatlike("beta1", 0.0, 1.0)
        floatlike("beta2", 0.0, 1.0)
        floatlike("grad_clip", 0.0)
        floatlike("align_weight", 0.0, allow_none=True)
        floatlike("dropout", 0.0, 1.0, allow_none=True, hi_open=True)
        floatlike("attn_dropout", 0.0, 1.0, allow_none=True, hi_open=True)
        floatlike("time_budget", 0.0, lo_open=True, allow_none=True)
        floatlike("val_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
        if self.stop_at is not None and self.stop_at > self.steps:
            raise ValueError(f"stop_at must be <= steps ({self.steps}), got {self.stop_at}")
        for n in ("resume", "force", "skip_nonfinite", "compile"):
            if not isinstance(getattr(self, n), bool):
                raise TypeError(f"{n} must be a bool, got {getattr(self, n)!r}")
        check_encoding(self.encoding, self.encoding_errors)
        if self.tokenizer not in ("byte", "bpe"):
            raise ValueError(f"tokenizer must be 'byte' or 'bpe', got {self.tokenizer!r}")
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"preset must be a preset name, got {self.preset!r}")
        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            raise ValueError(f"data must be a corpus name or a path, got {self.data!r}")
        if self.attention is not None and self.attention not in ("frozen", "learned"):
            raise ValueError(f"attention must be 'frozen' or 'learned', got {self.attention!r}")
        if self.align_directions is not None and self.align_directions not in ("minimal", "frame"):
            raise ValueError(f"align_directions must be 'minimal' or 'frame', got {self.align_directions!r}")
        if self.kernel is not None and self.kernel not in ("leech", "random", "identity"):
            raise ValueError(f"kernel must be 'leech', 'random' or 'identity', got {self.kernel!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {self.device!r}") from exc
        if self.d_model is not None and self.d_model % 24:
            raise ValueError(f"d_model must be a multiple of 24, got {self.d_model}")
        return self
