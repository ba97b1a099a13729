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
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from .._validation import check_int
from ..quantize.apply import model_bits_report, quantize_model
from ..quantize.config import QuantizeConfig, resolve_config
from ..quantize.io import save_quantized
from ..quantize.layer import LeechQuantizedLinear
from .checkpoint import atomic_replace, load_checkpoint, resolve_checkpoint, training_corpus
from .data import ByteTokenizer, check_cache_dir, load_data

__all__ = ["CalibrationWindows", "MAX_CALIBRATION_TOKENS", "calibration_windows", "check_calibration_size",
           "quantize_checkpoint", "check_output_path"]

#: training metadata copied from the checkpoint into the quantized file
_KEPT_META = ("step", "args", "data_resolved", "data_key", "tokenizer", "tokenizer_fingerprint")


#: most calibration tokens (``calib_steps * calib_batch_size * block_size``) one run may ask for
MAX_CALIBRATION_TOKENS = 1 << 24


class CalibrationWindows(Sequence):
    """``steps`` batches of ``batch_size`` random windows of ``block_size`` tokens, built when read.

    Batch ``i`` is drawn from its own generator (seeded with ``(seed, i)``), so the
    batches are the same in any order and only the batch being read is in memory:
    the window offsets of all batches are never held at once.  Each batch is an
    int64 tensor of shape ``(batch_size, block_size)``.
    """

    def __init__(self, tokens, steps: int, batch_size: int, block_size: int, seed: int = 0):
        self.tokens, self.steps, self.batch_size, self.block_size = tokens, steps, batch_size, block_size
        self.seed = seed
        self._high = len(tokens) - block_size + 1
        self._offs = np.arange(block_size)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.steps))]
        i = int(i)
        if i < 0:
            i += self.steps
        if not 0 <= i < self.steps:
            raise IndexError(f"batch {i} of {self.steps}")
        starts = np.random.default_rng((self.seed, i)).integers(0, self._high, size=self.batch_size)
        return torch.from_numpy(np.asarray(self.tokens[starts[:, None] + self._offs], dtype=np.int64))

    @property
    def n_tokens(self) -> int:
        """Tokens in all the batches."""
        return self.steps * self.batch_size * self.block_size


def calibration_windows(tokens: np.ndarray, steps: int, batch_size: int, block_size: int,
                        seed: int = 0) -> CalibrationWindows:
    """``steps`` batches of ``batch_size`` random windows of ``block_size`` tokens (int64), built lazily.

    Raises ``ValueError`` if the split is shorter than one window, or if the batches
    would hold more than :data:`MAX_CALIBRATION_TOKENS` tokens.

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.lila.quantize import calibration_windows
    >>> b = calibration_windows(np.arange(1000), steps=3, batch_size=2, block_size=16)
    >>> len(b), tuple(b[0].shape), b[0].dtype
    (3, (2, 16), torch.int64)
    >>> bool((b[1][:, 1:] - b[1][:, :-1] == 1).all())   # contiguous windows
    True
    >>> bool((b[2] == b[2]).all()) and bool((b[-1] == b[2]).all())   # the same batch every time it is read
    True
    """
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    block_size = check_int(block_size, "block_size", 1)
    check_calibration_size(steps, batch_size, block_size)
    seed = check_int(seed, "seed", 0)
    n = len(tokens)
    if n < block_size:
        raise ValueError(f"the training split has {n} tokens, fewer than one window of {block_size}")
    return CalibrationWindows(tokens, steps, batch_size, block_size, seed)


def check_calibration_size(steps: int, batch_size: int, block_size: int) -> None:
    """Refuse calibration batches of more than :data:`MAX_CALIBRATION_TOKENS` tokens in all (``ValueError``)."""
    total = steps * batch_size * block_size
    if total > MAX_CALIBRATION_TOKENS:
        raise ValueError(f"calib_steps ({steps}) x calib_batch_size ({batch_size}) x block size ({block_size}) "
                         f"is {total:,} calibration tokens, more than the maximum of {MAX_CALIBRATION_TOKENS:,}: "
                         "lower --calib-steps or --calib-batch-size")


def check_output_path(out, *, what: str = "out", overwrite: bool = False, protect=()) -> Path:
    """Check, before any work, that a file can be written at ``out``; return it as a Path.

    Refused (``ValueError`` naming ``what``): an empty path; a directory; anything that
    is not a regular file (a FIFO, a device, a socket), even with ``overwrite``; an
    existing regular file unless ``overwrite``; a path equal to one of ``protect``
    (the input files), always; a path under a regular file.  The folders above
    ``out`` need not exist (they are created when the file is written).  A folder in
    which no file can be created (read-only, a special file system) is an
    ``OSError`` naming ``what``; a temporary file is created and removed to find out.
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
            _check_writable(parent, p, what, probe=parent == p.parent)
            break
    return p


def _check_writable(folder: Path, p: Path, what: str, probe: bool) -> None:
    """``OSError`` unless a file can be created in ``folder`` (by trying, when ``probe``: a read-only
    mount, a special file system such as /proc or an exhausted quota answer only to a try)."""
    if probe:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            err = type(exc)(f"{what} {str(p)!r} cannot be written: {exc.strerror or exc} in {str(folder)!r}")
            err.errno = exc.errno
            raise err from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {str(p)!r} cannot be written: no write access to {str(folder)!r}")


def _write_atomically(write, out: Path) -> None:
    """``write(tmp)`` then :func:`os.replace` onto ``out`` (:func:`~torch_ext.lila.checkpoint.atomic_replace`),
    with the umask's permissions; on failure nothing is left: neither the temporary
    file nor the folders created for it."""
    created = [parent for parent in reversed(out.parents) if not parent.exists()]

    def fill(fd, tmp):
        os.close(fd)
        try:
            write(tmp)
        except SafetensorError as exc:  # safetensors reports a failed write (EFBIG, ENOSPC...) as its own type
            raise OSError(f"writing {str(out)!r} failed: {' '.join(str(exc).split())}") from None
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
                        data=None, cache_dir=None, callback=None, overwrite: bool = False, **settings) -> dict:
    """Quantize the LILA checkpoint ``ckpt`` and write it to ``out``.

    Parameters
    ----------
    ckpt : str or Path
        A checkpoint file, a run directory (its latest checkpoint) or a model file of
        :meth:`LilaTransformer.save <torch_ext.model.LilaTransformer.save>` (a run's
        ``model.safetensors``).
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
    data : str or Path, optional
        The corpus whose training split gives the calibration windows (default: the
        named corpus the checkpoint was trained on; a path stored in the checkpoint
        is never used: pass it here).
    cache_dir : str, optional
        Token cache root (default :func:`~torch_ext.lila.data.default_cache_dir`;
        never the one stored in the checkpoint).
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
        A bad argument; more than :data:`MAX_CALIBRATION_TOKENS` calibration tokens;
        no ``data`` for a checkpoint trained on a path.
    OSError
        ``out`` cannot be written: its folder is read-only (checked before any work),
        or the write failed (a full disk, a file size limit); nothing is left behind.
        Likewise a token cache that cannot be written.
    """
    cfg = resolve_config(config, (), settings, caller="quantize_checkpoint")
    calib_steps = check_int(calib_steps, "calib_steps", 0)
    calib_batch_size = check_int(calib_batch_size, "calib_batch_size", 1)
    if block_size is not None:
        block_size = check_int(block_size, "block_size", 1)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    if calib_steps:
        check_calibration_size(calib_steps, calib_batch_size, block_size or 1)
    if cache_dir is not None:
        check_cache_dir(cache_dir)
    path = resolve_checkpoint(ckpt)
    out = check_output_path(out, overwrite=overwrite, protect=(path,))
    ck = load_checkpoint(path, device="cpu")
    model = ck.model
    if any(isinstance(m, LeechQuantizedLinear) for m in model.modules()):  # before any data is read
        raise ValueError(f"{str(path)!r} is already quantized: quantize the float checkpoint it came from")
    windows = None
    if calib_steps:
        bs = block_size if block_size is not None else model.config.block_size
        check_calibration_size(calib_steps, calib_batch_size, bs)
        targs = ck.meta.get("args", {})
        spec = training_corpus(ck.meta, data)  # never a path stored in the file
        tokenizer = targs.get("tokenizer", "byte")
        if "tokenizer" not in ck.meta and model.config.vocab_size != ByteTokenizer().vocab_size:
            raise ValueError(f"{str(path)!r} records no tokenizer and its vocabulary ({model.config.vocab_size} "
                             "tokens) is not the byte tokenizer's: quantize the run's checkpoint instead, or "
                             "pass --calib-steps 0")
        enc = {k: targs[k] for k in ("encoding", "encoding_errors") if k in targs}
        corpus = load_data(spec, tokenizer, cache_dir=cache_dir, val_fraction=targs.get("val_fraction", 0.1),
                           bpe_vocab_size=targs.get("bpe_vocab_size", 2048), max_docs=targs.get("max_docs"), **enc)
        want = ck.meta.get("tokenizer_fingerprint")
        if want is not None and corpus.tokenizer.fingerprint() != want:
            raise ValueError("the corpus's tokenizer differs from the checkpoint's")
        windows = calibration_windows(corpus.train.tokens, calib_steps, calib_batch_size, bs, cfg.seed)
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
    ntok = 0 if windows is None else windows.n_tokens
    return {"out": str(out), "checkpoint": str(path), "step": ck.step, "seconds": seconds,
            "calibration_tokens": ntok, "settings": settings, "report": report, "layers": layers}
