"""The set-up of a training run: its directory, data, model config, optimizer groups, resumption.

Pieces of :func:`torch_ext.lila.train.train` that run before the first step.  Under
``torchrun`` the main process prepares the run directory and the token cache first
(:func:`main_first`), and every process raises the same error if that fails.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ..model import LilaConfig
from ._rundir import prepare_run_dir
from .checkpoint import Checkpoint, CheckpointError, _weights_finite, list_checkpoints, load_checkpoint
from .data import TokenData, load_data
from .distributed import DistInfo, all_gather_objects
from .train_config import MODEL_OVERRIDES, TrainConfig

#: arguments that may differ between an interrupted run and its resumption
_RESUME_FREE = {"resume", "stop_at", "device", "compile", "eval_batch_size", "time_budget", "cache_dir",
                "num_threads", "force", "skip_nonfinite"}



def main_first(dist_info: DistInfo, fn: Callable[[], object]):
    """``fn()`` on the main process, then on no other; its error is raised by every process
    (so that none waits forever for a process that failed)."""
    result, err = None, None
    if dist_info.main:
        try:
            result = fn()
        except Exception as exc:  # re-raised below, on every process
            err = exc
    if dist_info.enabled:
        shared = all_gather_objects(None if err is None else (isinstance(err, OSError), str(err)), dist_info)[0]
        if shared is not None and err is None:
            raise (OSError if shared[0] else ValueError)(shared[1])
    if err is not None:
        raise err
    return result


def load_run_data(cfg: TrainConfig, dist_info: DistInfo, emit) -> TokenData:
    """The tokenised corpus: rank 0 builds the token cache first; the others then read it."""
    kwargs = dict(cache_dir=cfg.cache_dir, val_fraction=cfg.val_fraction, bpe_vocab_size=cfg.bpe_vocab_size,
                  max_docs=cfg.max_docs, encoding=cfg.encoding, encoding_errors=cfg.encoding_errors)
    data = main_first(dist_info, lambda: load_data(
        cfg.data, cfg.tokenizer, progress=lambda s: emit({"event": "log", "message": s}), **kwargs))
    if not dist_info.main:
        data = load_data(cfg.data, cfg.tokenizer, **kwargs)
    return data


def run_dir(cfg: TrainConfig, dist_info: DistInfo) -> tuple[Path, list[tuple[int, Path]]]:
    """The run directory, prepared by rank 0 (:func:`~torch_ext.lila._rundir.prepare_run_dir`), and its checkpoints."""
    if cfg.out:
        out = Path(cfg.out)
    else:
        name = Path(str(cfg.data)).name if os.path.exists(str(cfg.data)) else str(cfg.data)
        out = Path("runs") / f"{cfg.preset}-{name}-s{cfg.seed}"
    main_first(dist_info, lambda: prepare_run_dir(out, force=cfg.force, resume=cfg.resume))
    return out, list_checkpoints(out)


def resume_checkpoint(existing: list[tuple[int, Path]]) -> Checkpoint:
    """The latest checkpoint, loaded to resume; a non-finite or corrupt one names the latest good one."""
    try:
        return load_checkpoint(existing[-1][1], with_state=True)
    except CheckpointError as exc:
        good = next((p for _, p in reversed(existing[:-1]) if _weights_finite(p)), None)
        hint = (f"; the latest good checkpoint is {str(good)!r}: move the later ones away to resume from it"
                if good is not None else "")
        raise CheckpointError(f"cannot resume: {exc}{hint}") from None


def model_config(cfg: TrainConfig, vocab_size: int) -> LilaConfig:
    over = {k: getattr(cfg, k) for k in MODEL_OVERRIDES if getattr(cfg, k) is not None}
    over["vocab_size"] = int(vocab_size)
    return LilaConfig.preset(cfg.preset, **over)


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def fingerprint_args(cfg: TrainConfig) -> dict:
    """The arguments a resumed run must share with the interrupted one."""
    d = dataclasses.asdict(cfg)
    return {k: v for k, v in d.items() if k not in _RESUME_FREE}


def resume_mismatch(ck: Checkpoint, cfg: TrainConfig, world: int) -> dict:
    """``{argument: (then, now)}`` of the arguments that differ from the checkpoint's run."""
    prev = ck.meta.get("args", {})
    diff = {k: (prev.get(k), v) for k, v in fingerprint_args(cfg).items()
            if k in prev and prev.get(k) != v and k != "out"}
    if int(ck.meta.get("world_size", 1)) != world:
        diff["world_size"] = (ck.meta.get("world_size", 1), world)
    return diff

