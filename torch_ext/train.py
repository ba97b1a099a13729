"""Training loop for LILA models: seeded, resumable, torchrun-ready.

One command trains a preset on a corpus and evaluates it on the whole validation
split::

    python -m torch_ext.train --preset lila-tiny --data shakespeare --steps 2000 --out runs/tiny
    torchrun --nproc_per_node 8 -m torch_ext.train --preset lila-20m --data tinystories ...

Reproducibility
---------------
* Weights are initialised after ``torch.manual_seed(seed)``; training windows are
  drawn from a dedicated ``torch.Generator`` seeded with ``seed`` whose state is
  part of every checkpoint, as are the optimizer state and the global torch RNG
  states (dropout).  The learning rate is a pure function of the step.
* ``--stop-at N`` ends the run after step ``N`` exactly as an interruption would
  (a checkpoint at ``N``, no final evaluation); ``--resume`` with the same
  arguments continues from the latest checkpoint in ``--out`` to the same final
  weights and loss as an uninterrupted run (bitwise on CPU, see the tests).
* Checkpoints are single safetensors files ``ckpt-0000100.safetensors`` (model
  weights, optimizer moments, RNG states; JSON config, arguments, history and
  tokenizer in the metadata), written to a temporary file and renamed with
  :func:`os.replace`, so a kill never leaves a half-written checkpoint.

Batches
-------
Each optimizer step draws ``grad_accum x (world_size * batch_size)`` window offsets
from the generator (identically on every process); process ``r`` takes columns
``r*batch_size : (r+1)*batch_size``.  So ``--batch-size`` is per process and a run on
``W`` processes sees exactly the windows of a one-process run with
``--batch-size W*batch_size``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "TrainConfig",
    "train",
    "main",
    "build_parser",
    "lr_at",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "list_checkpoints",
]

_CKPT_FORMAT = "lila-ckpt-v1"
_CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.safetensors$")

#: LilaConfig fields that the command line can override
MODEL_OVERRIDES = ("attention", "kernel", "kernel_seed", "align_weight", "align_directions", "d_model",
                   "n_layer", "n_head", "block_size", "dropout", "shared_qk")

#: arguments that may differ between an interrupted run and its resumption
_RESUME_FREE = {"resume", "stop_at", "device", "compile", "eval_batch_size", "time_budget", "cache_dir",
                "num_threads"}


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the run."""


@dataclass
class TrainConfig:
    """Arguments of :func:`train` (the command line maps onto these one to one).

    Attributes
    ----------
    preset : str
        ``LilaConfig.preset`` name (``"lila-tiny"``, ``"lila-20m"``, ``"lila-20m-learned"``).
    data : str
        ``"shakespeare"`` (embedded), ``"tinystories"``, ``"fineweb-edu"`` or a path.
    tokenizer : {"byte", "bpe"}
        Tokenizer; BPE is trained on the train split with ``bpe_vocab_size`` tokens.
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
    attention, kernel, kernel_seed, align_weight, align_directions, d_model, n_layer, n_head, block_size, dropout, shared_qk
        ``LilaConfig`` overrides (``None``: the preset's value).
    """

    preset: str = "lila-tiny"
    data: str = "shakespeare"
    tokenizer: str = "byte"
    bpe_vocab_size: int = 2048
    val_fraction: float = 0.1
    max_docs: int | None = None
    cache_dir: str | None = None
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
    shared_qk: bool | None = None

    @classmethod
    def from_any(cls, args) -> "TrainConfig":
        """A :class:`TrainConfig` from itself, a dict or an ``argparse.Namespace``."""
        if isinstance(args, cls):
            return dataclasses.replace(args)
        if isinstance(args, argparse.Namespace):
            args = vars(args)
        if not isinstance(args, dict):
            raise TypeError(f"args must be a TrainConfig, dict or argparse.Namespace, got {type(args).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - names)
        if unknown:
            raise ValueError(f"args has unknown fields: {', '.join(unknown)}")
        return cls(**args)

    def validate(self) -> "TrainConfig":
        """Raise ``TypeError``/``ValueError`` naming the first bad field; return ``self``."""

        def intlike(name, lo, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")

        def floatlike(name, lo, hi=math.inf, allow_none=False, lo_open=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
            if v < lo or (lo_open and v == lo) or v > hi:
                raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}")

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
        floatlike("dropout", 0.0, 1.0, allow_none=True)
        floatlike("time_budget", 0.0, lo_open=True, allow_none=True)
        floatlike("val_fraction", 0.0, 1.0, lo_open=True)
        if self.stop_at is not None and self.stop_at > self.steps:
            raise ValueError(f"stop_at must be <= steps ({self.steps}), got {self.stop_at}")
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


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr_ratio: float = 0.1) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine.

    Examples
    --------
    >>> [round(lr_at(s, 10, 2, 1.0, 0.0), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    lo = lr * min_lr_ratio
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * t))


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    model : torch.nn.Module
        The model, weights loaded, in eval mode.
    step : int
        Optimizer steps done.
    meta : dict
        ``config``, ``args``, ``history``, ``tokenizer`` and the other metadata.
    path : Path
        File it came from.
    state : dict
        The other tensors: ``optim/...`` and ``rng/...`` (for resuming).
    """

    model: torch.nn.Module
    step: int
    meta: dict
    path: Path
    state: dict = field(default_factory=dict)


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, path)`` of the finished checkpoints in ``run_dir``, by step.

    Temporary files of an interrupted write are not listed.
    """
    d = Path(run_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory.

    Raises
    ------
    CheckpointError
        If nothing is there.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    p = Path(path)
    if p.is_dir():
        cks = list_checkpoints(p)
        if not cks:
            raise CheckpointError(f"run directory {str(p)!r} holds no checkpoint (ckpt-*.safetensors)")
        return cks[-1][1]
    if p.is_file():
        return p
    raise CheckpointError(f"no checkpoint at {str(p)!r}")


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _model_config_dict(model) -> dict:
    cfg = model.config
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dataclasses.asdict(cfg)


def save_checkpoint(path, model, optimizer=None, *, step: int, meta: dict | None = None,
                    extra_tensors: dict | None = None) -> Path:
    """Write model weights, optimizer state and ``extra_tensors`` to one safetensors file, atomically.

    Parameters
    ----------
    path : str or Path
        Target file (its folder must exist).
    model : LilaTransformer
        The (unwrapped) model; its persistent state dict is saved.
    optimizer : torch.optim.Optimizer, optional
        Its per-parameter tensors are saved as ``optim/<i>/<name>``; the rest of its
        state dict (hyper-parameters) as JSON metadata.
    step : int
        Optimizer steps done.
    meta : dict, optional
        JSON-able metadata (arguments, history, tokenizer...).
    extra_tensors : dict, optional
        More tensors (RNG states) saved under their names.
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu").contiguous().clone()
    md = {"format": _CKPT_FORMAT, "step": str(int(step)), "config": json.dumps(_model_config_dict(model))}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                if not isinstance(v, torch.Tensor):
                    v = torch.tensor(v)
                tensors[f"optim/{i}/{k}"] = v.detach().to("cpu").contiguous().clone()
        md["optim_groups"] = json.dumps(sd["param_groups"])
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().to("cpu").contiguous().clone()
    for k, v in (meta or {}).items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    data = save(tensors, metadata=md)
    path = Path(path)
    _atomic_write(path, data)
    return path


def _build_model(config: dict):
    from .model import LilaConfig, LilaTransformer

    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint config must be a JSON object, got {type(config).__name__}")
    return LilaTransformer(LilaConfig.from_dict(dict(config)))


def load_checkpoint(path, device=None, *, with_state: bool = False) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` / :func:`train`.

    Parameters
    ----------
    path : str or Path
        Checkpoint file, or a run directory (its latest checkpoint).
    device : str or torch.device, optional
        Where to put the model (default CPU).
    with_state : bool
        Also return the optimizer and RNG tensors (for resuming).

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupt file, or weights that do not fit the config.
    """
    from safetensors import safe_open

    p = resolve_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            md = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or incomplete: {exc}") from None
    if md.get("format") != _CKPT_FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a LILA training checkpoint (format {md.get('format')!r})")
    meta: dict[str, Any] = {}
    for k, v in md.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            meta[k] = v
    try:
        step = int(meta["step"])
        config = meta["config"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} lacks its step or config: {exc}") from None
    try:
        model = _build_model(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has an invalid model config: {exc}") from None
    sd = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} does not fit its config: {exc}") from None
    if device is not None:
        model.to(device)
    model.eval()
    state = {k: v for k, v in tensors.items() if not k.startswith("model/")} if with_state else {}
    return Checkpoint(model, step, meta, p, state)


def _optimizer_state_from(tensors: dict, groups: list) -> dict:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if not k.startswith("optim/"):
            continue
        _, i, name = k.split("/", 2)
        state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_arg: str | None) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        want_cuda = (device_arg or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if want_cuda:
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        return _Dist(rank, world, local, True), device
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device_arg!r} requested but CUDA is not available")
    return _Dist(), device


def _all_reduce_sum(values: list[float], dist_info: _Dist, device) -> list[float]:
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(dist_info: _Dist):
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------- the loop


def _default_out(cfg: TrainConfig) -> str:
    name = Path(str(cfg.data)).name if os.path.exists(str(cfg.data)) else str(cfg.data)
    return os.path.join("runs", f"{cfg.preset}-{name}-s{cfg.seed}")


def _make_config(cfg: TrainConfig, vocab_size: int):
    from .model import LilaConfig

    over = {k: getattr(cfg, k) for k in MODEL_OVERRIDES if getattr(cfg, k) is not None}
    over["vocab_size"] = int(vocab_size)
    return LilaConfig.preset(cfg.preset, **over)


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _fingerprint_args(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: v for k, v in d.items() if k not in _RESUME_FREE}


def _evaluate_distributed(model, data, cfg: TrainConfig, dist_info: _Dist, device, amp) -> dict:
    """Whole-validation-split evaluation, windows sharded over the processes."""
    from .evaluate import bits_per_character, param_counts

    model.eval()
    try:
        res = bits_per_character(model, data.validation, eos_id=data.tokenizer.eos_id,
                                 block_size=model.config.block_size, batch_size=cfg.eval_batch_size,
                                 device=device, autocast_dtype=amp,
                                 shard=(dist_info.rank, dist_info.world) if dist_info.enabled else None)
    finally:
        model.train()
    if dist_info.enabled:
        nll, sep, n = _all_reduce_sum([res["_nll_nats"], res["_sep_nats"], float(res["n_tokens_scored"])],
                                      dist_info, device)
        from .evaluate import _finish

        res = _finish(nll, sep, int(round(n)), data.validation, res["block_size"], res["stride"],
                      res["eval_seconds"])
    res.pop("_nll_nats", None)
    res.pop("_sep_nats", None)
    res.update(param_counts(model))
    return res


def train(args, callback: Callable[[dict], None] | None = None) -> dict:
    """Train a LILA model; see the module docstring for the guarantees.

    Parameters
    ----------
    args : TrainConfig, dict or argparse.Namespace
        The run's arguments (see :class:`TrainConfig`).
    callback : callable, optional
        Called with a dict for each event: ``{"event": "start", ...}``, then
        ``{"event": "step", "step", "steps", "loss", "lr", "tokens_per_s", ...}``
        after each optimizer step, ``{"event": "eval", "step", "val_bpc", ...}``
        and ``{"event": "checkpoint", "path", ...}``.  Only the main process calls it.
        The library never prints; the command line shows these in a progress bar.

    Returns
    -------
    dict
        ``out``, ``step`` (steps done), ``steps``, ``final_loss`` (training loss of the
        last step, all micro-batches and processes), ``val`` (the final evaluation on
        the whole validation split, ``None`` after ``stop_at``), ``history``,
        ``checkpoint``, ``tokens_per_s``, ``params_trainable``, ``params_frozen``,
        ``resumed_from``, ``stopped``, ``interrupted``, ``tokenizer``.
    """
    cfg = TrainConfig.from_any(args).validate()
    emit = callback or (lambda e: None)
    from .data import load_data

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    dist_info, device = _init_distributed(cfg.device)
    say = (lambda s: emit({"event": "log", "message": s})) if dist_info.main else None
    # rank 0 builds the token cache first; the others then read it
    if dist_info.main:
        data = load_data(cfg.data, cfg.tokenizer, cache_dir=cfg.cache_dir, val_fraction=cfg.val_fraction,
                         bpe_vocab_size=cfg.bpe_vocab_size, max_docs=cfg.max_docs, progress=say)
    _barrier(dist_info)
    if not dist_info.main:
        data = load_data(cfg.data, cfg.tokenizer, cache_dir=cfg.cache_dir, val_fraction=cfg.val_fraction,
                         bpe_vocab_size=cfg.bpe_vocab_size, max_docs=cfg.max_docs)
    out = Path(cfg.out or _default_out(cfg))
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(dist_info)

    existing = list_checkpoints(out)
    if existing and not cfg.resume:
        raise ValueError(f"out {str(out)!r} already holds checkpoints: pass resume=True (--resume) "
                         "to continue that run, or choose another out directory")

    # ---- model, optimizer, generators
    torch.manual_seed(cfg.seed)
    mconf = _make_config(cfg, data.vocab_size)
    from .model import LilaTransformer

    block = int(mconf.block_size)
    n_train = data.train.n_tokens
    if n_train < block + 2:
        raise ValueError(f"block_size {block} is too long: the train split has {n_train} tokens, "
                         f"fewer than block_size + 2")
    raw = LilaTransformer(mconf).to(device)
    optimizer = torch.optim.AdamW(_param_groups(raw, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed + 7919 * (dist_info.rank + 1))  # dropout stream, per process
    history: list[dict] = []
    start_step = 0
    resumed_from = None
    total_steps = cfg.steps
    train_tokens_done = 0
    if cfg.resume and existing:
        ck = load_checkpoint(existing[-1][1], with_state=True)
        prev = ck.meta.get("args", {})
        mine = _fingerprint_args(cfg)
        diff = {k: (prev.get(k), v) for k, v in mine.items() if k in prev and prev.get(k) != v and k != "out"}
        if int(ck.meta.get("world_size", 1)) != dist_info.world:
            diff["world_size"] = (ck.meta.get("world_size", 1), dist_info.world)
        if diff:
            raise ValueError("resume needs the arguments of the interrupted run; these differ "
                             + ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items()))
        raw.load_state_dict(ck.model.state_dict(), strict=True)
        groups = ck.meta.get("optim_groups")
        if groups is not None:
            optimizer.load_state_dict(_optimizer_state_from(ck.state, groups))
        gen.set_state(ck.state["rng/batch"])
        key = f"rng/torch/{dist_info.rank}"
        if key in ck.state:
            torch.set_rng_state(ck.state[key])
        if device.type == "cuda" and f"rng/cuda/{dist_info.rank}" in ck.state:
            torch.cuda.set_rng_state(ck.state[f"rng/cuda/{dist_info.rank}"], device)
        start_step = ck.step
        resumed_from = ck.step
        history = list(ck.meta.get("history", []))
        total_steps = int(ck.meta.get("total_steps", cfg.steps))
        train_tokens_done = int(ck.meta.get("train_tokens", 0))
        del ck
    raw.train()
    model = raw
    if cfg.compile:
        model = torch.compile(model)
    ddp_model = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = torch.bfloat16 if device.type == "cuda" else None
    counts = None
    from .evaluate import param_counts

    counts = param_counts(raw)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * dist_info.world * block
    save_every = cfg.save_every or (cfg.eval_every if cfg.eval_every > 0 else max(1, cfg.steps // 10))
    end_step = cfg.stop_at if cfg.stop_at is not None else total_steps
    if dist_info.main:
        emit({"event": "start", "out": str(out), "step": start_step, "steps": total_steps,
              "tokens_per_step": tokens_per_step, "device": str(device), "world_size": dist_info.world,
              "resumed_from": resumed_from, "config": _model_config_dict(raw), **counts})

    def rng_tensors() -> dict:
        t = {"rng/batch": gen.get_state()}
        # every process's dropout stream (gathered only without DDP: dropout is per process)
        t[f"rng/torch/{dist_info.rank}"] = torch.get_rng_state()
        if device.type == "cuda":
            t[f"rng/cuda/{dist_info.rank}"] = torch.cuda.get_rng_state(device)
        return t

    def checkpoint(step: int, tokens_per_s: float) -> Path | None:
        extra = rng_tensors()
        if dist_info.enabled:  # gather every process's dropout RNG state to rank 0
            import torch.distributed as dist

            states = [None] * dist_info.world
            dist.all_gather_object(states, {k: v for k, v in extra.items() if k != "rng/batch"})
            for s in states:
                extra.update(s)
        path = None
        if dist_info.main:
            meta = {"args": _fingerprint_args(cfg) | {"cache_dir": cfg.cache_dir},
                    "history": history, "total_steps": total_steps, "train_tokens": train_tokens_done,
                    "train_tokens_per_s": tokens_per_s, "tokenizer": data.tokenizer.to_json(),
                    "tokenizer_fingerprint": data.tokenizer.fingerprint(), "world_size": dist_info.world,
                    "data_key": data.key, "data_resolved": str(Path(cfg.data).resolve())
                    if os.path.exists(str(cfg.data)) else str(cfg.data)}
            path = save_checkpoint(out / f"ckpt-{step:07d}.safetensors", raw, optimizer, step=step,
                                   meta=meta, extra_tensors=extra)
            for _, old in list_checkpoints(out)[:-cfg.keep]:
                with contextlib.suppress(OSError):
                    old.unlink()
            emit({"event": "checkpoint", "step": step, "path": str(path)})
        _barrier(dist_info)
        return path

    def run_eval(step: int, train_loss: float | None) -> dict:
        res = _evaluate_distributed(raw, data, cfg, dist_info, device, amp)
        rec = {"step": step, "val_bpc": res["bpc"], "val_loss": res["loss"], "train_loss": train_loss,
               "tokens": train_tokens_done}
        history.append(rec)
        if dist_info.main:
            emit({"event": "eval", **rec, "n_chars": res["n_chars"]})
            _atomic_write(out / "metrics.json", json.dumps({"history": history}, indent=1).encode())
        return res

    step = start_step
    last_loss = float("nan")
    last_ckpt = None
    interrupted = False
    t_train = 0.0
    t_warm = None
    t_start = time.perf_counter()
    val = None
    try:
        while step < end_step:
            t0 = time.perf_counter()
            lr = lr_at(step, total_steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            offsets = torch.randint(0, n_train - block - 1 + 1, (cfg.grad_accum, dist_info.world * cfg.batch_size),
                                    generator=gen)
            loss_sum = 0.0
            for a in range(cfg.grad_accum):
                rows = offsets[a, dist_info.rank * cfg.batch_size:(dist_info.rank + 1) * cfg.batch_size]
                xy = np.stack([np.asarray(data.train.tokens[o:o + block + 1], dtype=np.int64)
                               for o in rows.tolist()])
                xy = torch.from_numpy(xy).to(device, non_blocking=True)
                x, y = xy[:, :-1], xy[:, 1:]
                sync = a == cfg.grad_accum - 1
                ctx = ddp_model.no_sync() if (dist_info.enabled and not sync) else contextlib.nullcontext()
                with ctx:
                    with torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext():
                        outp = ddp_model(x, targets=y)
                    loss = outp.loss / cfg.grad_accum
                    loss.backward()
                loss_sum += float(loss.detach())
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_tokens_done += tokens_per_step
            last_loss = _all_reduce_sum([loss_sum], dist_info, device)[0] / dist_info.world
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            t_train += dt
            done_here = step - start_step
            if done_here == _WARM_STEPS:
                t_warm = t_train
            tps = _throughput(tokens_per_step, done_here, t_train, t_warm)
            if cfg.time_budget is not None and resumed_from is None:
                fit = None
                if t_train >= cfg.time_budget:  # out of time (also before calibrating)
                    fit = step
                elif _is_calibration_step(done_here - _WARM_STEPS):
                    per_step = (t_train - t_warm) / (done_here - _WARM_STEPS)
                    fit = min(cfg.steps, step + int((cfg.time_budget - t_train) / per_step))
                if fit is not None and fit != total_steps:
                    total_steps = max(step, fit)
                    end_step = total_steps if cfg.stop_at is None else min(cfg.stop_at, total_steps)
            if dist_info.main:
                emit({"event": "step", "step": step, "steps": total_steps, "loss": last_loss, "lr": lr,
                      "tokens_per_s": tps, "step_seconds": dt})
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                run_eval(step, last_loss)
            if (step % save_every == 0 or step == end_step) and step < total_steps:
                last_ckpt = checkpoint(step, tps) or last_ckpt
    except KeyboardInterrupt:
        interrupted = True
        if step > start_step:
            last_ckpt = checkpoint(step, 0.0) or last_ckpt
    tps = _throughput(tokens_per_step, step - start_step, t_train, t_warm)
    stopped = step < total_steps
    if not stopped and not interrupted:
        val = run_eval(step, last_loss)
        last_ckpt = checkpoint(step, tps) or last_ckpt  # the final one carries the final history
        if dist_info.main:
            with contextlib.suppress(Exception):
                _export_model(raw, out)
    result = {
        "out": str(out), "step": step, "steps": total_steps, "final_loss": last_loss, "val": val,
        "history": history, "checkpoint": str(last_ckpt) if last_ckpt else None, "tokens_per_s": tps,
        "train_seconds": t_train, "wall_seconds": time.perf_counter() - t_start,
        "resumed_from": resumed_from, "stopped": stopped, "interrupted": interrupted,
        "tokenizer": data.tokenizer, "world_size": dist_info.world, "device": str(device), **counts,
    }
    if dist_info.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


#: steps excluded from the throughput (first-call overheads), when the run is long enough
_WARM_STEPS = 2
#: steps after the warm-up ones that first measure the step time for ``time_budget``
_CALIBRATION_STEPS = 10


def _is_calibration_step(n: int) -> bool:
    """``time_budget`` re-plans after 10, 20, 40, 80... steps past the warm-up."""
    if n < _CALIBRATION_STEPS or n % _CALIBRATION_STEPS:
        return False
    k = n // _CALIBRATION_STEPS
    return k & (k - 1) == 0


def _throughput(tokens_per_step: int, done: int, t_train: float, t_warm: float | None) -> float:
    """Training tokens per second, over the steps after the first ``_WARM_STEPS`` when possible."""
    if t_warm is not None and done > 2 * _WARM_STEPS and t_train > t_warm:
        return tokens_per_step * (done - _WARM_STEPS) / (t_train - t_warm)
    return tokens_per_step * done / t_train if t_train > 0 else 0.0


def _export_model(model, out: Path):
    """Also save the final weights with the model's own ``save`` (weights-only export)."""
    save = getattr(model, "save", None)
    if callable(save):
        save(out / "model.safetensors")


# --------------------------------------------------------------------------- command line


def build_parser(prog: str = "leechlib lila train") -> argparse.ArgumentParser:
    """Argument parser of ``python -m torch_ext.train`` / ``leechlib lila train``."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog=prog, description="Train a LILA model (torchrun-ready).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data, help="shakespeare | tinystories | fineweb-edu | PATH")
    g.add_argument("--tokenizer", default=d.tokenizer, choices=["byte", "bpe"])
    g.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g.add_argument("--max-docs", type=int, default=None, help="documents per split (Hugging Face corpora)")
    g.add_argument("--cache-dir", default=None, help="token cache root (default ~/.cache/leechlib/lila-data)")
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
    g.add_argument("--stop-at", type=int, default=None, help="end after this step, as an interruption would")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    g.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--time-budget", type=float, default=None, help="seconds of training (lowers --steps)")
    g.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the result here")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _Progress:
    """tqdm progress bar fed by :func:`train`'s callback (command line only)."""

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


def main(argv=None) -> int:
    """``python -m torch_ext.train ...``: train, print progress and the final evaluation.

    Returns 0 on success (also after ``--stop-at``), 2 for bad arguments, data or
    checkpoints, 130 after Ctrl-C (a checkpoint is written first).
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    json_path, quiet = ns.json_path, ns.quiet
    del ns.json_path, ns.quiet
    from .data import DataUnavailableError

    rank = int(os.environ.get("RANK", "0"))
    prog = _Progress(enabled=not quiet and rank == 0)
    try:
        res = train(ns, callback=prog if rank == 0 else None)
    except (ValueError, TypeError, DataUnavailableError) as exc:
        prog.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prog.close()
    if rank != 0:
        return 0
    if res["interrupted"]:
        print(f"interrupted at step {res['step']}; checkpoint {res['checkpoint']} (continue with --resume)")
        return 130
    if res["stopped"]:
        print(f"stopped at step {res['step']} of {res['steps']}; checkpoint {res['checkpoint']}")
    else:
        v = res["val"]
        print(f"step {res['step']}: train loss {res['final_loss']:.4f}, validation {v['bpc']:.4f} bits/char "
              f"over {v['n_chars']:,} characters (perplexity {v['perplexity']:.3f}), "
              f"{res['tokens_per_s']:,.0f} tokens/s; checkpoint {res['checkpoint']}")
    if json_path:
        out = {k: v for k, v in res.items() if k != "tokenizer"}
        Path(json_path).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
