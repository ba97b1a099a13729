"""Training loop for LILA models: seeded, resumable, torchrun-ready.

One command trains a preset on a corpus and evaluates it on the whole validation
split::

    python -m torch_ext.lila train --preset lila-tiny --data shakespeare --steps 2000 --out runs/tiny
    torchrun --nproc_per_node 8 -m torch_ext.lila train --preset lila-20m --data tinystories ...

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
* SIGINT and SIGTERM end the run after the step under way, with a checkpoint of
  it; a non-finite loss, gradient or weight stops it at its step
  (:class:`NonFiniteError`; ``skip_nonfinite`` skips such steps); ``out`` must be a
  run directory (``.lila-run`` marker), a new or an empty one.  See the docs'
  *Reliability* page.

Batches
-------
Each optimizer step draws ``grad_accum x (world_size * batch_size)`` window offsets
from the generator (identically on every process); process ``r`` takes columns
``r*batch_size : (r+1)*batch_size``.  So ``--batch-size`` is per process and a run on
``W`` processes sees exactly the windows of a one-process run with
``--batch-size W*batch_size``.

The arguments and their checks are in :mod:`torch_ext.lila.train_config`, checkpoint
files in :mod:`torch_ext.lila.checkpoint`, the ``torch.distributed`` calls in
:mod:`torch_ext.lila.distributed`; the command line is :mod:`torch_ext.lila.cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leechlib.kernels import SQRT8

from .._signals import Interrupted, StopSignals
from ..model import LilaTransformer
from ..ops import MAX_ABS
from ._run_setup import (
    fingerprint_args,
    load_run_data,
    model_config,
    param_groups,
    resume_checkpoint,
    resume_mismatch,
    run_dir,
)
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    NonFiniteError,
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    nonfinite_tensors,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .data import TokenData
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
from .evaluate import bits_per_character, param_counts
from .results import EvalResult, TrainResult
from .train_config import TrainConfig

__all__ = [
    "TrainConfig",
    "train",
    "lr_at",
    "Checkpoint",
    "CheckpointError",
    "NonFiniteError",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "list_checkpoints",
]



# ---------------------------------------------------------------------------
# step timing: throughput after the first steps, and when ``time_budget`` re-plans
# ---------------------------------------------------------------------------

#: steps excluded from the throughput (first-call overheads), when the run is long enough
WARM_STEPS = 2
#: steps after the warm-up ones that first measure the step time for ``time_budget``
CALIBRATION_STEPS = 10


def is_calibration_step(n: int) -> bool:
    """``time_budget`` re-plans after 10, 20, 40, 80... steps past the warm-up."""
    if n < CALIBRATION_STEPS or n % CALIBRATION_STEPS:
        return False
    k = n // CALIBRATION_STEPS
    return k & (k - 1) == 0


@dataclass
class Clock:
    """Seconds spent in optimizer steps: in all, and by the end of the warm-up steps."""

    train: float = 0.0
    warm: float | None = None

    def add(self, seconds: float, done: int) -> None:
        """Count a step that took ``seconds``, the ``done``-th of this process."""
        self.train += seconds
        if done == WARM_STEPS:
            self.warm = self.train

    def throughput(self, tokens_per_step: int, done: int) -> float:
        """Training tokens per second, over the steps after the first ``WARM_STEPS`` when possible."""
        if self.warm is not None and done > 2 * WARM_STEPS and self.train > self.warm:
            return tokens_per_step * (done - WARM_STEPS) / (self.train - self.warm)
        return tokens_per_step * done / self.train if self.train > 0 else 0.0


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


def train(args, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LILA model; see the module docstring for the guarantees.

    Parameters
    ----------
    args : TrainConfig, mapping or namespace
        The run's arguments (see :class:`TrainConfig`).
    callback : callable, optional
        Called with a dict for each event: ``{"event": "start", ...}``, then
        ``{"event": "step", "step", "steps", "loss", "lr", "tokens_per_s", ...}``
        after each optimizer step, ``{"event": "eval", "step", "val_bpc", ...}``,
        ``{"event": "checkpoint", "path", ...}`` and ``{"event": "log", "message"}``.
        Only the main process calls it.  The library never prints; the command
        line shows these in a progress bar.

    Returns
    -------
    TrainResult
        Steps done, final training loss, the final evaluation on the whole
        validation split (``val``; ``None`` after ``stop_at``), history, last
        checkpoint, throughput, parameter counts...

    Raises
    ------
    TypeError, ValueError
        A bad argument; ``out`` holds checkpoints and not ``resume``; ``out`` is a
        non-empty directory that is not a run directory and not ``force``.
    NonFiniteError
        A step's loss, gradient norm or hidden states, or the weights, are not
        finite (not with ``skip_nonfinite``, which skips such steps).  That step is
        not applied and nothing of it is saved; the error names the step, the cause
        and the last good checkpoint.
    DataUnavailableError
        The corpus cannot be read here.
    OSError
        ``out`` is a file, under a file, or not writable (checked before any work);
        writing the run's files failed (including the final ``model.safetensors``).
    KeyboardInterrupt
        A signal before training started, or a second one (no checkpoint then).

    Notes
    -----
    SIGINT and SIGTERM (on the main thread, over the default handlers) end the run
    after the current step, with a checkpoint of it: the result has
    ``interrupted=True`` and ``interrupted_by`` the signal's name.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "a.txt").write_text("to be or not to be\\n" * 40)
    >>> _ = (tmp / "b.txt").write_text("that is the question\\n" * 40)
    >>> res = train({"data": str(tmp), "val_fraction": 0.5, "cache_dir": str(tmp / "cache"),
    ...              "out": str(tmp / "run"), "steps": 3, "warmup": 1, "d_model": 24, "n_head": 1,
    ...              "n_layer": 1, "block_size": 16, "batch_size": 2, "device": "cpu"})
    >>> res.step, res.val.n_chars > 0, Path(res.checkpoint).name
    (3, True, 'ckpt-0000003.safetensors')
    >>> import shutil; shutil.rmtree(tmp)
    """
    cfg = TrainConfig.from_any(args).validate()
    emit = callback or _no_events
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    dist_info, device = init_distributed(cfg.device)
    with StopSignals(immediate=not dist_info.enabled) as signals:
        out, existing = run_dir(cfg, dist_info)  # before any work: someone else's or an unwritable out is refused
        data = load_run_data(cfg, dist_info, emit)
        run = _Run(cfg, data, out, dist_info, device, emit, signals)
        if cfg.resume and existing:
            run.resume(resume_checkpoint(existing))
        result = run.run()
    shutdown(dist_info)
    return result


def _no_events(event: dict) -> None:
    """The callback of a run without one."""



class _Run:
    """One training run: the model, optimizer and window generator, and where the run stands.

    Built from the arguments (seeded), optionally :meth:`resume`-d from a
    checkpoint, then :meth:`run` to the end, to ``stop_at`` or to SIGINT/SIGTERM.
    """

    def __init__(self, cfg: TrainConfig, data: TokenData, out: Path, dist_info: DistInfo, device: torch.device,
                 emit: Callable[[dict], None], signals: StopSignals | None = None):
        self.cfg, self.data, self.out, self.dist, self.device, self.emit = cfg, data, out, dist_info, device, emit
        self.signals = signals or StopSignals()
        torch.manual_seed(cfg.seed)
        mconf = model_config(cfg, data.vocab_size)
        self.block = int(mconf.block_size)
        if data.train.n_tokens < self.block + 2:
            raise ValueError(f"block_size {self.block} is too long: the train split has {data.train.n_tokens} "
                             f"tokens, fewer than block_size + 2")
        self.raw = LilaTransformer(mconf).to(device)
        self.model: torch.nn.Module = self.raw  # compiled and/or wrapped in DDP by run()
        self.optimizer = torch.optim.AdamW(param_groups(self.raw, cfg.weight_decay), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2), eps=1e-8)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed + 7919 * (dist_info.rank + 1))  # dropout stream, per process
        self.amp = torch.bfloat16 if device.type == "cuda" else None
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * dist_info.world * self.block
        self.save_every = cfg.save_every or (cfg.eval_every if cfg.eval_every > 0 else max(1, cfg.steps // 10))
        self.history: list[dict] = []
        self.start_step = self.step = 0
        self.resumed_from: int | None = None
        self.total_steps = cfg.steps
        self.end_step = cfg.steps
        self.train_tokens = 0
        self.last_loss = float("nan")
        self.last_ckpt: Path | None = None
        self.last_good: Path | None = None  # the latest checkpoint of the run (all checkpoints are finite)
        self.clock = Clock()
        self.skipped = 0  # steps skipped for non-finite values (skip_nonfinite)
        self._stop: str | None = None  # a signal every process has seen, by the end of a step
        self._in_step = False  # inside an optimizer step: the state is half-updated
        self._hidden_tops: list[torch.Tensor] = []  # largest |entry| of each aligned hidden state, this step
        self._hidden_top: float | None = None  # set when the aligned hidden states diverged in this step
        self._eval_due = False  # the evaluation of the resumed step is still to do
        if self.raw.align is not None:
            self.raw.align.register_forward_pre_hook(self._check_hidden)

    # ---- set-up

    def resume(self, ck: Checkpoint) -> None:
        """Continue from ``ck`` (loaded ``with_state=True``): weights, optimizer, RNGs, history."""
        diff = resume_mismatch(ck, self.cfg, self.dist.world)
        if diff:
            raise ValueError("resume needs the arguments of the interrupted run; these differ "
                             + ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items()))
        self.raw.load_state_dict(ck.model.state_dict(), strict=True)
        optim_state = ck.optimizer_state()
        if optim_state is not None:
            self.optimizer.load_state_dict(optim_state)
        self.gen.set_state(ck.state["rng/batch"])
        rank = self.dist.rank
        if f"rng/torch/{rank}" in ck.state:
            torch.set_rng_state(ck.state[f"rng/torch/{rank}"])
        if self.device.type == "cuda" and f"rng/cuda/{rank}" in ck.state:
            torch.cuda.set_rng_state(ck.state[f"rng/cuda/{rank}"], self.device)
        self.start_step = self.step = self.resumed_from = ck.step
        self.history = list(ck.meta.get("history", []))
        self.total_steps = int(ck.meta.get("total_steps", self.cfg.steps))
        self.train_tokens = int(ck.meta.get("train_tokens", 0))
        self.skipped = int(ck.meta.get("skipped_steps", 0))
        self.last_good = ck.path
        self.last_loss = float(ck.meta.get("last_loss", math.nan))
        cfg = self.cfg  # a signal during an evaluation leaves its step's checkpoint without it: redo it
        self._eval_due = bool(cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps
                              and not any(h.get("step") == self.step for h in self.history))

    def run(self) -> TrainResult:
        """Train to the end (then evaluate, checkpoint and export), to ``stop_at`` or to a signal."""
        cfg = self.cfg
        self.raw.train()
        self.model = wrap_ddp(torch.compile(self.raw) if cfg.compile else self.raw, self.dist, self.device)
        counts = param_counts(self.raw)
        self.end_step = cfg.stop_at if cfg.stop_at is not None else self.total_steps
        if self.dist.main:
            self.emit({"event": "start", "out": str(self.out), "step": self.start_step, "steps": self.total_steps,
                       "tokens_per_step": self.tokens_per_step, "device": str(self.device),
                       "world_size": self.dist.world, "resumed_from": self.resumed_from,
                       "config": self.raw.config.to_dict(), **counts})
        t_start = time.perf_counter()
        interrupted_by = None
        self.signals.immediate = False  # from here on a signal ends the current step first
        try:
            if self._eval_due:
                with self.signals.at_once(not self.dist.enabled):
                    self._evaluate(self.last_loss)
            while self.step < self.end_step:
                self._train_step()
        except KeyboardInterrupt as exc:
            interrupted_by = self._on_interrupt(exc)
        tps = self.clock.throughput(self.tokens_per_step, self.step - self.start_step)
        stopped = self.step < self.total_steps
        val = None
        if not stopped and interrupted_by is None:
            try:
                with self.signals.at_once(not self.dist.enabled):
                    val = self._evaluate(self.last_loss)
            except KeyboardInterrupt as exc:
                val, interrupted_by = None, self._on_interrupt(exc)
            if interrupted_by is None:
                self._checkpoint(tps)  # the final one carries the final history
                if self.dist.main:
                    self._export()
        return TrainResult(
            out=str(self.out), step=self.step, steps=self.total_steps, final_loss=self.last_loss, val=val,
            history=self.history, checkpoint=str(self.last_ckpt) if self.last_ckpt else None, tokens_per_s=tps,
            train_seconds=self.clock.train, wall_seconds=time.perf_counter() - t_start,
            resumed_from=self.resumed_from, stopped=stopped, interrupted=interrupted_by is not None,
            tokenizer=self.data.tokenizer, world_size=self.dist.world, device=str(self.device), **counts,
            skipped_steps=self.skipped, interrupted_by=interrupted_by,
        )

    def _on_interrupt(self, exc: KeyboardInterrupt) -> str:
        """Checkpoint the last finished step after a signal (not after a second one); the signal's name."""
        if getattr(exc, "hard", False):
            raise exc
        if not self._in_step and self.step > self.start_step and self.last_ckpt != checkpoint_path(self.out,
                                                                                                   self.step):
            self._checkpoint(self.clock.throughput(self.tokens_per_step, self.step - self.start_step))
        return getattr(exc, "signal", "SIGINT")

    # ---- one step

    def _train_step(self) -> None:
        """One optimizer step, then what follows it: report, re-plan, evaluate, checkpoint."""
        if not self.dist.enabled and self.signals.requested:  # one process: stop before the next step
            raise Interrupted(self.signals.requested)
        t0 = time.perf_counter()
        self._in_step = True
        lr = self._optimizer_step()
        self._in_step = False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        done = self.step - self.start_step
        self.clock.add(dt, done)
        tps = self.clock.throughput(self.tokens_per_step, done)
        self._replan(done)
        if self.dist.main:
            self.emit({"event": "step", "step": self.step, "steps": self.total_steps, "loss": self.last_loss,
                       "lr": lr, "tokens_per_s": tps, "step_seconds": dt})
        if self._stop:  # every process saw it in this step's reduction
            raise Interrupted(self._stop)
        cfg, step = self.cfg, self.step
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
            with self.signals.at_once(not self.dist.enabled):
                self._evaluate(self.last_loss)
        if (step % self.save_every == 0 or step == self.end_step) and step < self.total_steps:
            self._checkpoint(tps)

    def _optimizer_step(self) -> float:
        """Gradients of ``grad_accum`` micro-batches, clipping, one AdamW step; returns the learning rate.

        A non-finite loss, gradient norm or aligned hidden state (on any process) stops
        the run here with :class:`NonFiniteError`, before the step is applied, or,
        with ``skip_nonfinite``, skips the step (it counts as done: its windows and
        learning rate are used up).
        """
        cfg, dist = self.cfg, self.dist
        lr = lr_at(self.step, self.total_steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        # every process draws all offsets (the same ones) and takes its own columns
        offsets = torch.randint(0, self.data.train.n_tokens - self.block, (cfg.grad_accum, dist.world * cfg.batch_size),
                                generator=self.gen)
        mine = offsets[:, dist.rank * cfg.batch_size:(dist.rank + 1) * cfg.batch_size]
        loss_sum = 0.0
        self._hidden_top, self._hidden_tops = None, []
        for a in range(cfg.grad_accum):
            x, y = self._windows(mine[a])
            with no_sync(self.model, dist, sync=a == cfg.grad_accum - 1):
                with self._autocast():
                    out = self.model(x, targets=y)
                loss = out.loss / cfg.grad_accum
                loss.backward()
            loss_sum += float(loss.detach())
        if cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.grad_clip))
        else:
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in self.raw.parameters() if p.grad is not None]))
        tops = [float(t) for t in self._hidden_tops]
        if any(not math.isfinite(t) or t * SQRT8 >= MAX_ABS for t in tops):
            self._hidden_top = max(tops) if all(map(math.isfinite, tops)) else math.nan
        sig = self.signals.requested
        red = all_reduce_sum([loss_sum, float(not math.isfinite(loss_sum)), float(not math.isfinite(norm)),
                              float(self._hidden_top is not None), float(sig == "SIGINT"), float(sig == "SIGTERM")],
                             dist, self.device)
        loss_mean = red[0] / dist.world
        self._stop = "SIGTERM" if red[5] else ("SIGINT" if red[4] else None)
        if red[1] or red[2] or red[3]:
            self.optimizer.zero_grad(set_to_none=True)
            cause = self._nonfinite_cause(loss_mean, norm, bool(red[1]), bool(red[2]))
            if not cfg.skip_nonfinite:
                last = str(self.last_good) if self.last_good else None
                raise NonFiniteError(
                    f"step {self.step + 1}: {cause}; training stopped before applying it, nothing of it was saved. "
                    + (f"The latest good checkpoint is {last!r}: continue from it skipping such steps "
                       "(--resume --skip-nonfinite), or start again with a lower learning rate" if last else
                       "No checkpoint was written yet: start again with a lower learning rate, or skip such "
                       "steps with skip_nonfinite=True (--skip-nonfinite)"),
                    step=self.step + 1, cause=cause, last_good=last)
            self.step += 1
            self.train_tokens += self.tokens_per_step
            self.skipped += 1
            if self.dist.main and (self.skipped <= 10 or self.skipped & (self.skipped - 1) == 0):
                self.emit({"event": "log", "message": f"step {self.step}: {cause}; step skipped "
                                                      f"(--skip-nonfinite; {self.skipped} skipped so far)"})
            return lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.train_tokens += self.tokens_per_step
        self.last_loss = loss_mean
        return lr

    def _nonfinite_cause(self, loss: float, norm: float, bad_loss: bool, bad_norm: bool) -> str:
        """What was not finite in this step, in words."""
        if self._hidden_top is not None or not (bad_loss or bad_norm):
            top = self._hidden_top
            if top is None or not math.isfinite(top):
                return "the hidden states diverged: they hold NaN or inf"
            return (f"the hidden states diverged: their largest entry is {top:.3g}, beyond what the alignment "
                    "loss can score (|h| * sqrt(8) must stay below 2**50)")
        if bad_loss:
            return f"the training loss is {loss} (not finite)"
        return f"the gradient norm is {norm} (not finite; the loss was {loss:.4g})"

    def _check_hidden(self, module, args):
        """Forward pre-hook of the alignment loss: note the largest entry of the hidden states it scores
        (read at the end of the step, no sync here) and hand it zeros where they are beyond what it can
        score (NaN, inf, or ``|h| * sqrt(8) >= 2**50``), so that the step ends and is refused there."""
        hidden = args[0]
        top = hidden.detach().abs().amax().float()
        self._hidden_tops.append(top)
        ok = torch.isfinite(top) & (top * SQRT8 < MAX_ABS)
        return (torch.where(ok, hidden, torch.zeros_like(hidden)), *args[1:])

    def _autocast(self):
        """bfloat16 autocast on CUDA, nothing on CPU."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _windows(self, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the training windows starting at ``offsets``."""
        tokens = self.data.train.tokens
        xy = np.stack([np.asarray(tokens[o:o + self.block + 1], dtype=np.int64) for o in offsets.tolist()])
        xy = torch.from_numpy(xy).to(self.device, non_blocking=True)
        return xy[:, :-1], xy[:, 1:]

    def _replan(self, done: int) -> None:
        """``time_budget``: fit the run's length to the measured step time (not after a resume)."""
        cfg = self.cfg
        if cfg.time_budget is None or self.resumed_from is not None:
            return
        fit = None
        if self.clock.train >= cfg.time_budget:  # out of time (also before calibrating)
            fit = self.step
        elif is_calibration_step(done - WARM_STEPS):
            per_step = (self.clock.train - self.clock.warm) / (done - WARM_STEPS)
            fit = min(cfg.steps, self.step + int((cfg.time_budget - self.clock.train) / per_step))
        if fit is not None and fit != self.total_steps:
            self.total_steps = max(self.step, fit)
            self.end_step = self.total_steps if cfg.stop_at is None else min(cfg.stop_at, self.total_steps)

    # ---- evaluation, checkpoints, export

    def _evaluate(self, train_loss: float) -> EvalResult:
        """The whole validation split, windows sharded over the processes; recorded in the history."""
        res = _validation_result(self.raw, self.data, self.cfg.eval_batch_size, self.dist, self.device, self.amp)
        rec = {"step": self.step, "val_bpc": res.bpc, "val_loss": res.loss, "train_loss": train_loss,
               "tokens": self.train_tokens}
        self.history.append(rec)
        if self.dist.main:
            self.emit({"event": "eval", **rec, "n_chars": res.n_chars})
            atomic_write(self.out / "metrics.json", json.dumps({"history": self.history}, indent=1).encode())
        return res

    def _rng_tensors(self) -> dict:
        """The window generator's state and this process's dropout RNG states."""
        t = {"rng/batch": self.gen.get_state(), f"rng/torch/{self.dist.rank}": torch.get_rng_state()}
        if self.device.type == "cuda":
            t[f"rng/cuda/{self.dist.rank}"] = torch.cuda.get_rng_state(self.device)
        return t

    def _meta(self, tokens_per_s: float) -> dict:
        """The JSON metadata of a checkpoint: arguments, history, tokenizer, data."""
        cfg, data = self.cfg, self.data
        return {"args": fingerprint_args(cfg) | {"cache_dir": cfg.cache_dir},
                "history": self.history, "total_steps": self.total_steps, "train_tokens": self.train_tokens,
                "train_tokens_per_s": tokens_per_s, "skipped_steps": self.skipped, "last_loss": self.last_loss,
                "tokenizer": data.tokenizer.to_json(),
                "tokenizer_fingerprint": data.tokenizer.fingerprint(), "world_size": self.dist.world,
                "data_key": data.key, "data_resolved": str(Path(cfg.data).resolve())
                if os.path.exists(str(cfg.data)) else str(cfg.data)}

    def _checkpoint(self, tokens_per_s: float) -> None:
        """Checkpoint the current step (rank 0 writes, with every process's RNG states); never non-finite weights."""
        state = {f"model/{k}": v for k, v in self.raw.named_parameters()}
        state.update({f"optim/{i}/{k}": v for i, st in enumerate(self.optimizer.state.values())
                      for k, v in st.items()})
        bad = nonfinite_tensors(state)  # the same on every process (DDP keeps them equal)
        if bad:
            last = str(self.last_good) if self.last_good else None
            raise NonFiniteError(
                f"step {self.step}: the weights became non-finite ({', '.join(bad[:3])}"
                f"{'...' if len(bad) > 3 else ''}); no checkpoint of it was written. "
                + (f"The latest good checkpoint is {last!r}" if last else "No checkpoint was written yet"),
                step=self.step, cause="non-finite weights", last_good=last)
        extra = self._rng_tensors()
        for states in all_gather_objects({k: v for k, v in extra.items() if k != "rng/batch"}, self.dist):
            extra.update(states)
        if self.dist.main:
            path = save_checkpoint(checkpoint_path(self.out, self.step), self.raw, self.optimizer, step=self.step,
                                   meta=self._meta(tokens_per_s), extra_tensors=extra)
            prune_checkpoints(self.out, self.cfg.keep)
            self.emit({"event": "checkpoint", "step": self.step, "path": str(path)})
        self.last_ckpt = self.last_good = checkpoint_path(self.out, self.step)
        barrier(self.dist)

    def _export(self) -> None:
        """Also save the final weights with :meth:`LilaTransformer.save` (``model.safetensors``)."""
        path = self.out / "model.safetensors"
        try:
            self.raw.save(path)  # atomic: a temporary of ours beside it, renamed into place
        except OSError as exc:
            raise OSError(f"training finished, but exporting the weights to {str(path)!r} failed: {exc} "
                          f"(the checkpoint {str(self.last_ckpt)!r} holds them)") from exc


def _validation_result(model, data: TokenData, batch_size: int, dist_info: DistInfo, device, amp) -> EvalResult:
    """Whole-validation-split evaluation, windows sharded over the processes."""
    model.eval()
    try:
        res = bits_per_character(model, data.validation, eos_id=data.tokenizer.eos_id,
                                 block_size=model.config.block_size, batch_size=batch_size,
                                 device=device, autocast_dtype=amp,
                                 shard=(dist_info.rank, dist_info.world) if dist_info.enabled else None)
    finally:
        model.train()
    if dist_info.enabled:
        nll, sep, n = all_reduce_sum([res.nll_nats, res.sep_nats, float(res.n_tokens_scored)], dist_info, device)
        res = dataclasses.replace(res, nll_nats=nll, sep_nats=sep, n_tokens_scored=int(round(n)))
        res = res.result(data.validation)
    return dataclasses.replace(res, **param_counts(model))
