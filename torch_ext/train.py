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

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
    no_sync,
    shutdown,
    wrap_ddp,
)
from .results import EvalResult, TrainResult

__all__ = [
    "TrainConfig",
    "train",
    "lr_at",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "list_checkpoints",
]

#: LilaConfig fields that the command line can override
MODEL_OVERRIDES = ("attention", "kernel", "kernel_seed", "align_weight", "align_directions", "d_model",
                   "n_layer", "n_head", "block_size", "dropout", "shared_qk")

#: arguments that may differ between an interrupted run and its resumption
_RESUME_FREE = {"resume", "stop_at", "device", "compile", "eval_batch_size", "time_budget", "cache_dir",
                "num_threads"}


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


def _evaluate_distributed(model, data, cfg: TrainConfig, dist_info: DistInfo, device, amp) -> EvalResult:
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
        nll, sep, n = all_reduce_sum([res.nll_nats, res.sep_nats, float(res.n_tokens_scored)], dist_info, device)
        res = dataclasses.replace(res, nll_nats=nll, sep_nats=sep, n_tokens_scored=int(round(n)))
        res = res.result(data.validation)
    return dataclasses.replace(res, **param_counts(model))


def train(args, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LILA model; see the module docstring for the guarantees.

    Parameters
    ----------
    args : TrainConfig, mapping or namespace
        The run's arguments (see :class:`TrainConfig`).
    callback : callable, optional
        Called with a dict for each event: ``{"event": "start", ...}``, then
        ``{"event": "step", "step", "steps", "loss", "lr", "tokens_per_s", ...}``
        after each optimizer step, ``{"event": "eval", "step", "val_bpc", ...}``
        and ``{"event": "checkpoint", "path", ...}``.  Only the main process calls it.
        The library never prints; the command line shows these in a progress bar.

    Returns
    -------
    TrainResult
        Steps done, final training loss, the final evaluation on the whole
        validation split (``val``; ``None`` after ``stop_at``), history, last
        checkpoint, throughput, parameter counts...
    """
    cfg = TrainConfig.from_any(args).validate()
    emit = callback or (lambda e: None)
    from .data import load_data

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    dist_info, device = init_distributed(cfg.device)
    say = (lambda s: emit({"event": "log", "message": s})) if dist_info.main else None
    # rank 0 builds the token cache first; the others then read it
    if dist_info.main:
        data = load_data(cfg.data, cfg.tokenizer, cache_dir=cfg.cache_dir, val_fraction=cfg.val_fraction,
                         bpe_vocab_size=cfg.bpe_vocab_size, max_docs=cfg.max_docs, progress=say)
    barrier(dist_info)
    if not dist_info.main:
        data = load_data(cfg.data, cfg.tokenizer, cache_dir=cfg.cache_dir, val_fraction=cfg.val_fraction,
                         bpe_vocab_size=cfg.bpe_vocab_size, max_docs=cfg.max_docs)
    out = Path(cfg.out or _default_out(cfg))
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(dist_info)

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
        optim_state = ck.optimizer_state()
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
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
    ddp_model = wrap_ddp(model, dist_info, device)
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
              "resumed_from": resumed_from, "config": raw.config.to_dict(), **counts})

    def rng_tensors() -> dict:
        t = {"rng/batch": gen.get_state()}
        # every process's dropout stream (gathered only without DDP: dropout is per process)
        t[f"rng/torch/{dist_info.rank}"] = torch.get_rng_state()
        if device.type == "cuda":
            t[f"rng/cuda/{dist_info.rank}"] = torch.cuda.get_rng_state(device)
        return t

    def checkpoint(step: int, tokens_per_s: float) -> Path | None:
        extra = rng_tensors()
        # gather every process's dropout RNG state to rank 0
        for s in all_gather_objects({k: v for k, v in extra.items() if k != "rng/batch"}, dist_info):
            extra.update(s)
        path = None
        if dist_info.main:
            meta = {"args": _fingerprint_args(cfg) | {"cache_dir": cfg.cache_dir},
                    "history": history, "total_steps": total_steps, "train_tokens": train_tokens_done,
                    "train_tokens_per_s": tokens_per_s, "tokenizer": data.tokenizer.to_json(),
                    "tokenizer_fingerprint": data.tokenizer.fingerprint(), "world_size": dist_info.world,
                    "data_key": data.key, "data_resolved": str(Path(cfg.data).resolve())
                    if os.path.exists(str(cfg.data)) else str(cfg.data)}
            path = save_checkpoint(checkpoint_path(out, step), raw, optimizer, step=step, meta=meta,
                                   extra_tensors=extra)
            prune_checkpoints(out, cfg.keep)
            emit({"event": "checkpoint", "step": step, "path": str(path)})
        barrier(dist_info)
        return path

    def run_eval(step: int, train_loss: float | None) -> EvalResult:
        res = _evaluate_distributed(raw, data, cfg, dist_info, device, amp)
        rec = {"step": step, "val_bpc": res.bpc, "val_loss": res.loss, "train_loss": train_loss,
               "tokens": train_tokens_done}
        history.append(rec)
        if dist_info.main:
            emit({"event": "eval", **rec, "n_chars": res.n_chars})
            atomic_write(out / "metrics.json", json.dumps({"history": history}, indent=1).encode())
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
                with no_sync(ddp_model, dist_info, sync):
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
            last_loss = all_reduce_sum([loss_sum], dist_info, device)[0] / dist_info.world
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
    result = TrainResult(
        out=str(out), step=step, steps=total_steps, final_loss=last_loss, val=val,
        history=history, checkpoint=str(last_ckpt) if last_ckpt else None, tokens_per_s=tps,
        train_seconds=t_train, wall_seconds=time.perf_counter() - t_start,
        resumed_from=resumed_from, stopped=stopped, interrupted=interrupted,
        tokenizer=data.tokenizer, world_size=dist_info.world, device=str(device), **counts,
    )
    shutdown(dist_info)
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


if __name__ == "__main__":  # pragma: no cover - `python -m torch_ext.train` is `leechlib lila train`
    from torch_ext.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
