"""Command line of the LILA pipeline: ``leechlib lila {train,eval} ...``.

``leechlib`` forwards everything after ``lila`` to :func:`main`, so torch is
imported only when these commands are used.  :func:`demo` is the LILA part of
``leechlib demo``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "demo"]

_USAGE = """usage: leechlib lila {train,eval} [options]

  train   train a LILA model (python -m torch_ext.train; torchrun-ready)
  eval    bits per character over a whole split, perplexity, ranks, parameter counts

'leechlib lila train --help' and 'leechlib lila eval --help' list the options.
"""


def main(argv=None) -> int:
    """Dispatch ``train`` and ``eval``; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after ``lila`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a usage error, otherwise what the sub-command returns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        from .train import main as train_main

        return _run(train_main, rest)
    if cmd == "eval":
        from .evaluate import main as eval_main

        return _run(eval_main, rest)
    print(f"error: unknown command {cmd!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


def _run(fn, argv) -> int:
    try:
        return int(fn(argv) or 0)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)


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
        Passed to :func:`torch_ext.train.train` (progress events).

    Returns
    -------
    dict
        ``bpc``, ``n_chars``, ``perplexity``, ``params_trainable``, ``params_frozen``,
        ``steps``, ``tokens_per_s``, ``train_seconds``, ``seconds``, ``sample``
        (generated text), ``out`` (``None`` when temporary) and ``val`` (the whole
        evaluation result).
    """
    import torch

    from .train import TrainConfig, train

    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
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
        import os

        threads = 1 if (os.cpu_count() or 1) <= 2 else None
        cfg = TrainConfig(preset="lila-tiny", data="shakespeare", steps=100_000, warmup=30, lr=2e-3,
                          seed=seed, out=str(run_dir), time_budget=max(1.0, 0.7 * seconds),
                          eval_batch_size=64, save_every=10**9, num_threads=threads)
        res = train(cfg, callback=callback)
        from .train import load_checkpoint

        model = load_checkpoint(res["checkpoint"]).model
        tok = res["tokenizer"]
        prompt = [tok.eos_id] + tok.encode("ROMEO\n").tolist()
        g = torch.Generator().manual_seed(seed)
        idx = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(idx, max_new_tokens=300, temperature=0.8, top_k=40, generator=g)
        sample = tok.decode(gen[0].tolist(), eos="\n\n")
        v = res["val"]
        return {
            "bpc": v["bpc"], "n_chars": v["n_chars"], "perplexity": v["perplexity"],
            "params_trainable": res["params_trainable"], "params_frozen": res["params_frozen"],
            "steps": res["step"], "tokens_per_s": res["tokens_per_s"], "train_seconds": res["train_seconds"],
            "seconds": time.perf_counter() - t0, "sample": sample.strip("\n"),
            "out": None if tmp else str(run_dir), "val": v,
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
