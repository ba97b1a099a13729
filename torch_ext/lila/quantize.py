"""Quantize a LILA training checkpoint into a quantized checkpoint (``leechlib lila quantize``).

:func:`quantize_checkpoint` loads a checkpoint written by
:func:`torch_ext.lila.train.train`, draws calibration windows from the **training**
split of the corpus it was trained on (never the validation split, on which
``leechlib lila eval`` scores it), quantizes every ``nn.Linear`` with
:func:`~torch_ext.quantize.quantize_model`, and writes the result with
:func:`~torch_ext.quantize.save_quantized` plus the checkpoint's training metadata
(step, arguments, tokenizer), so that :func:`torch_ext.lila.checkpoint.load_checkpoint`,
and with it ``leechlib lila eval``, reads it like any other checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

import numpy as np
import torch

from .._validation import check_int
from ..quantize.apply import model_bits_report, quantize_model
from ..quantize.config import QuantizeConfig, resolve_config
from ..quantize.io import save_quantized
from .checkpoint import atomic_replace, load_checkpoint, resolve_checkpoint
from .data import load_data

__all__ = ["calibration_windows", "quantize_checkpoint", "check_output_path"]

#: training metadata copied from the checkpoint into the quantized file
_KEPT_META = ("step", "args", "data_resolved", "data_key", "tokenizer", "tokenizer_fingerprint")


def calibration_windows(tokens: np.ndarray, steps: int, batch_size: int, block_size: int,
                        seed: int = 0) -> list:
    """``steps`` batches of ``batch_size`` random windows of ``block_size`` tokens (int64).

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.lila.quantize import calibration_windows
    >>> b = calibration_windows(np.arange(1000), steps=3, batch_size=2, block_size=16)
    >>> len(b), tuple(b[0].shape), b[0].dtype
    (3, (2, 16), torch.int64)
    >>> bool((b[1][:, 1:] - b[1][:, :-1] == 1).all())   # contiguous windows
    True
    """
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    block_size = check_int(block_size, "block_size", 1)
    n = len(tokens)
    if n < block_size:
        raise ValueError(f"the training split has {n} tokens, fewer than one window of {block_size}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block_size + 1, size=(steps, batch_size))
    offs = np.arange(block_size)
    return [torch.from_numpy(np.asarray(tokens[s[:, None] + offs], dtype=np.int64)) for s in starts]


def check_output_path(out, *, what: str = "out", overwrite: bool = False, protect=()) -> Path:
    """Check, before any work, that a file can be written at ``out``; return it as a Path.

    Refused (``ValueError`` naming ``what``): an empty path; a directory; anything that
    is not a regular file (a FIFO, a device, a socket), even with ``overwrite``; an
    existing regular file unless ``overwrite``; a path equal to one of ``protect``
    (the input files), always; a path under a regular file.  The folders above
    ``out`` need not exist (they are created when the file is written).
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or Path, got {type(out).__name__}")
    if os.fspath(out) == "":
        raise ValueError(f"{what} is empty")
    p = Path(os.fspath(out))
    if p.is_symlink() or p.exists():
        real = p.resolve()
        for q in protect:
            with contextlib.suppress(OSError):
                if os.path.samefile(real, q):
                    raise ValueError(f"{what} {str(p)!r} is the input {str(q)!r}: it is never overwritten")
        mode = os.stat(real).st_mode if real.exists() else None
        if mode is not None and stat.S_ISDIR(mode):
            raise ValueError(f"{what} {str(p)!r} is a directory")
        if mode is not None and not stat.S_ISREG(mode):
            raise ValueError(f"{what} {str(p)!r} exists and is not a regular file")
        if not overwrite:
            raise ValueError(f"{what} {str(p)!r} exists (pass --force / overwrite=True to replace it)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {str(p)!r} is under {str(parent)!r}, which is not a directory")
            break
    return p


def _write_atomically(write, out: Path) -> None:
    """``write(tmp)`` then :func:`os.replace` onto ``out`` (:func:`~torch_ext.lila.checkpoint.atomic_replace`),
    with the umask's permissions; on failure nothing is left: neither the temporary
    file nor the folders created for it."""
    created = [parent for parent in reversed(out.parents) if not parent.exists()]

    def fill(fd, tmp):
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(out, fill)
    except BaseException:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def quantize_checkpoint(ckpt, out, config: QuantizeConfig | None = None, *, calib_steps: int = 32,
                        calib_batch_size: int = 4, block_size: int | None = None, workers: int | None = -1,
                        cache_dir=None, callback=None, overwrite: bool = False, **settings) -> dict:
    """Quantize the LILA checkpoint ``ckpt`` and write it to ``out``.

    Parameters
    ----------
    ckpt : str or Path
        A checkpoint file or a run directory (its latest checkpoint).
    out : str or Path
        The quantized checkpoint to write (safetensors), checked before any work
        (:func:`check_output_path`) and written through a temporary file, so a
        failure leaves nothing behind.
    overwrite : bool
        Replace ``out`` if it is an existing regular file (never the checkpoint read).
    config : QuantizeConfig, optional
        How to quantize, as in :func:`~torch_ext.quantize.quantize_model`
        (``feedback=None``: ``"ldlq"`` when there are calibration batches); its
        ``seed`` also draws the calibration windows.  Default ``QuantizeConfig()``.
    **settings
        Instead of ``config``, as before: ``method``, ``bits``, ``rotation``,
        ``feedback``, ``seed``, ``damp``, ``act_order``, ``group``, ``max_points``
        (and every other :class:`~torch_ext.quantize.QuantizeConfig` field).
    workers : int, optional
        Threads of the Leech encoders (-1: all cores).
    calib_steps : int
        Calibration batches drawn from the training split (0: none).
    calib_batch_size : int
        Windows per calibration batch.
    block_size : int, optional
        Window length (default: the model's context).
    cache_dir : str, optional
        Token cache root (default: the one the run used).
    callback : callable, optional
        Passed to :func:`~torch_ext.quantize.quantize_model` (one call per layer).

    Returns
    -------
    dict
        ``out``, ``checkpoint`` (the source file), ``step``, ``seconds``,
        ``calibration_tokens``, ``settings``, ``report`` (the
        :class:`~torch_ext.quantize.BitsReport`) and ``layers`` (the per-layer
        ``info`` dicts of the callback).

    Raises
    ------
    torch_ext.lila.checkpoint.CheckpointError
        A missing or corrupt checkpoint.
    torch_ext.lila.corpora.DataUnavailableError
        The corpus cannot be loaded here.
    ValueError
        A bad argument.
    """
    cfg = resolve_config(config, (), settings, caller="quantize_checkpoint")
    calib_steps = check_int(calib_steps, "calib_steps", 0)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    path = resolve_checkpoint(ckpt)
    out = check_output_path(out, overwrite=overwrite, protect=(path,))
    ck = load_checkpoint(path, device="cpu")
    model = ck.model
    windows = None
    if calib_steps:
        targs = ck.meta.get("args", {}) or {}
        data = load_data(ck.meta.get("data_resolved") or targs.get("data", "shakespeare"),
                         targs.get("tokenizer", "byte"), cache_dir=cache_dir or targs.get("cache_dir"),
                         val_fraction=targs.get("val_fraction", 0.1),
                         bpe_vocab_size=targs.get("bpe_vocab_size", 2048),
                         max_docs=targs.get("max_docs"))
        want = ck.meta.get("tokenizer_fingerprint")
        if want is not None and data.tokenizer.fingerprint() != want:
            raise ValueError("the corpus's tokenizer differs from the checkpoint's")
        bs = block_size if block_size is not None else model.config.block_size
        windows = calibration_windows(data.train.tokens, calib_steps, calib_batch_size, bs, cfg.seed)
    layers: list = []

    def cb(name, info):
        layers.append({"name": name, **info})
        if callback is not None:
            callback(name, info)

    settings = {"method": cfg.method, "bits": cfg.bits, "rotation": cfg.rotation,
                "feedback": cfg.feedback if cfg.feedback is not None else ("ldlq" if windows else "none"),
                "calib_steps": calib_steps, "calib_batch_size": calib_batch_size, "seed": cfg.seed,
                "damp": cfg.damp, "act_order": cfg.act_order, "group": cfg.group, "max_points": cfg.max_points}
    t0 = time.perf_counter()
    with torch.no_grad():
        quantize_model(model, cfg, data=windows, workers=workers, callback=cb)
    seconds = time.perf_counter() - t0
    report = model_bits_report(model)
    meta = {k: ck.meta[k] for k in _KEPT_META if k in ck.meta}
    meta["quantization"] = {**settings, "source": str(path), "seconds": seconds,
                            "bits_per_quantized_weight": report.bits_per_quantized_weight,
                            "layers": [{k: v for k, v in layer.items() if k != "notes"}
                                       for layer in layers],
                            "notes": report.notes}
    out = check_output_path(out, overwrite=overwrite, protect=(path,))  # again: it may have appeared meanwhile
    _write_atomically(lambda tmp: save_quantized(model, tmp, metadata=meta), out)
    ntok = 0 if windows is None else sum(int(w.numel()) for w in windows)
    return {"out": str(out), "checkpoint": str(path), "step": ck.step, "seconds": seconds,
            "calibration_tokens": ntok, "settings": settings, "report": report, "layers": layers}
