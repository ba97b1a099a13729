"""The LILA demo: ``lila-tiny`` trained on the embedded Shakespeare corpus for about a minute.

``leechlib demo`` (its LILA section) and ``leechlib lila demo`` run :func:`demo`
with a progress bar; this module prints nothing.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .train import train
from .train_config import TrainConfig

__all__ = ["demo"]


def demo(seconds: float = 60.0, out=None, *, seed: int = 0, callback=None) -> dict:
    """Train ``lila-tiny`` on the embedded Shakespeare corpus for about ``seconds``.

    The run's length is set from the measured step time so that training plus
    the final evaluation (the whole validation split) take about ``seconds``.

    Parameters
    ----------
    seconds : float
        Wall-clock budget, roughly.
    out : str or Path, optional
        Run directory to keep; by default a temporary one, deleted afterwards.
    seed : int
        Seed of the run and of the sample.
    callback : callable, optional
        Passed to :func:`torch_ext.lila.train.train` (progress events).

    Returns
    -------
    dict
        ``bpc``, ``n_chars``, ``perplexity``, ``params_trainable``, ``params_frozen``,
        ``steps``, ``tokens_per_s``, ``train_seconds``, ``seconds``, ``sample``
        (generated text), ``out`` (``None`` when temporary) and ``val`` (the
        :class:`~torch_ext.lila.results.EvalResult` of the whole validation split).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    t0 = time.perf_counter()
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="lila-demo-")
        run_dir = Path(tmp) / "run"
    else:
        run_dir = Path(out)
    try:
        # The final evaluation reads ~0.7 M validation tokens; on CPU it costs about a
        # quarter of the training throughput's time per token, so keep ~30 % for it.
        # one thread on small machines: torch's threads slow down many times over when
        # they compete with other processes for two cores
        threads = 1 if (os.cpu_count() or 1) <= 2 else None
        cfg = TrainConfig(preset="lila-tiny", data="shakespeare", steps=100_000, warmup=30, lr=2e-3,
                          seed=seed, out=str(run_dir), time_budget=max(1.0, 0.7 * seconds),
                          eval_batch_size=64, save_every=10**9, num_threads=threads)
        res = train(cfg, callback=callback)
        model = load_checkpoint(res.checkpoint).model
        tok = res.tokenizer
        prompt = [tok.eos_id] + tok.encode("ROMEO\n").tolist()
        g = torch.Generator().manual_seed(seed)
        idx = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(idx, max_new_tokens=300, temperature=0.8, top_k=40, generator=g)
        sample = tok.decode(gen[0].tolist(), eos="\n\n")
        v = res.val
        return {
            "bpc": v.bpc, "n_chars": v.n_chars, "perplexity": v.perplexity,
            "params_trainable": res.params_trainable, "params_frozen": res.params_frozen,
            "steps": res.step, "tokens_per_s": res.tokens_per_s, "train_seconds": res.train_seconds,
            "seconds": time.perf_counter() - t0, "sample": sample.strip("\n"),
            "out": None if tmp else str(run_dir), "val": v,
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
