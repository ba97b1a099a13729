"""Training checkpoints: one safetensors file per step, written atomically.

A checkpoint ``ckpt-0000100.safetensors`` holds the model weights (``model/...``),
the optimizer's per-parameter tensors (``optim/<i>/<name>``), the RNG states
(``rng/...``) and, as JSON metadata, the model config, the optimizer's
hyper-parameters and whatever the training loop adds (arguments, history,
tokenizer).  Files are written to a temporary name and renamed with
:func:`os.replace` (:func:`atomic_write`), so a kill never leaves a half-written
checkpoint and :func:`list_checkpoints` never sees one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._safetensors import read_safetensors_header
from ..model import CHECKPOINT_FORMAT as MODEL_FORMAT
from ..model import LilaConfig, LilaTransformer, _write_all, check_stored_config
from ..model import atomic_replace as _atomic_replace
from ..quantize.io import QUANTIZED_FORMAT, load_quantized
from .corpora import HF_CORPORA
from .tokenizer import tokenizer_from_json
from .train_config import TrainConfig

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointError",
    "NonFiniteError",
    "clean_stale_temporaries",
    "atomic_replace",
    "atomic_write",
    "check_metadata",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "nonfinite_tensors",
    "prune_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "stored_corpus",
    "training_corpus",
]

#: the ``format`` metadata of a training checkpoint
FORMAT = "lila-ckpt-v1"
_FILE_RE = re.compile(r"^ckpt-(\d{7,})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, holds non-finite weights or does not fit the run."""


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss, gradient, weight or hidden state.

    Raised by :func:`torch_ext.lila.train.train` at the step where it happened (before
    that step is applied; ``--skip-nonfinite`` skips such steps instead) and by
    :func:`save_checkpoint`, which never writes non-finite weights.

    Attributes
    ----------
    step : int or None
        The optimizer step (1-based) that was not applied.
    cause : str
        What was not finite.
    last_good : str or None
        The latest checkpoint of the run, whose weights are finite.
    """

    def __init__(self, message: str, *, step: int | None = None, cause: str = "", last_good: str | None = None):
        super().__init__(message)
        self.step, self.cause, self.last_good = step, cause, last_good


def nonfinite_tensors(tensors: dict) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` that hold a NaN or an infinity.

    Examples
    --------
    >>> nonfinite_tensors({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]), "c": torch.arange(3)})
    ['b']
    """
    return [k for k, v in tensors.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


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

    def optimizer_state(self) -> dict | None:
        """The optimizer state dict saved with the weights (``None`` if none was saved).

        Needs a checkpoint loaded with ``with_state=True``; pass the result to
        :meth:`torch.optim.Optimizer.load_state_dict`.
        """
        groups = self.meta.get("optim_groups")
        if groups is None:
            return None
        state: dict[int, dict] = {}
        for k, v in self.state.items():
            if k.startswith("optim/"):
                _, i, name = k.split("/", 2)
                state.setdefault(int(i), {})[name] = v
        return {"state": state, "param_groups": groups}


def checkpoint_path(run_dir, step: int) -> Path:
    """The file of the checkpoint of ``step`` in ``run_dir``.

    Examples
    --------
    >>> checkpoint_path("runs/tiny", 100).as_posix()
    'runs/tiny/ckpt-0000100.safetensors'
    """
    return Path(run_dir) / f"ckpt-{int(step):07d}.safetensors"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, path)`` of the finished checkpoints in ``run_dir``, by step.

    Temporary files of an interrupted write are not listed.
    """
    d = Path(run_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _FILE_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune_checkpoints(run_dir, keep: int) -> None:
    """Delete all but the ``keep`` latest checkpoints of ``run_dir`` (best effort).

    A finite checkpoint is never rotated out in favour of non-finite ones: if none
    of the ``keep`` latest has finite weights, the latest one that has is kept too.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    cks = list_checkpoints(run_dir)
    kept, old = cks[-keep:], cks[:-keep]
    if old and not any(_weights_finite(p) for _, p in reversed(kept)):
        good = next((i for i in range(len(old) - 1, -1, -1) if _weights_finite(old[i][1])), None)
        if good is not None:
            old = old[:good] + old[good + 1:]
    for _, p in old:
        with contextlib.suppress(OSError):  # another process may have removed it already
            p.unlink()


def _weights_finite(path: Path) -> bool:
    """Whether the model weights of the checkpoint file ``path`` are readable and finite."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return not any(nonfinite_tensors({k: f.get_tensor(k)}) for k in f.keys() if k.startswith("model/"))
    except Exception:  # unreadable: not a good checkpoint
        return False


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


#: the temporary files of :func:`atomic_write`: ``.<name>.<random>.tmp``
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def clean_stale_temporaries(run_dir, names=None) -> list[Path]:
    """Remove what killed :func:`atomic_write` calls left in ``run_dir``; return the removed files.

    Only files of the temporary pattern ``.<name>.<8 characters>.tmp`` are removed,
    and only for ``name`` a checkpoint (``ckpt-NNNNNNN.safetensors``) or one of
    ``names`` (e.g. ``metrics.json``): a user's own file never matches.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in (".ckpt-0000004.safetensors.k2j_9x0a.tmp", "notes.tmp", ".mine.k2j_9x0a.tmp"):
    ...     _ = (d / n).write_bytes(b"")
    >>> [p.name for p in clean_stale_temporaries(d)]
    ['.ckpt-0000004.safetensors.k2j_9x0a.tmp']
    >>> sorted(p.name for p in d.iterdir())
    ['.mine.k2j_9x0a.tmp', 'notes.tmp']
    """
    ours = set(names or ())
    removed = []
    d = Path(run_dir)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _TMP_RE.match(p.name)
        if m and (_FILE_RE.match(m.group("name")) or m.group("name") in ours) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return sorted(removed)


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`.

    A crash or kill leaves either the old file or the new one, never a mix; the
    temporary file is removed when the write fails.
    """
    atomic_replace(path, lambda fd, tmp: _write_all(fd, data))


def atomic_replace(path, write) -> None:
    """``write(fd, tmp)`` fills a temporary file (``.<name>.<random>.tmp``, the open
    descriptor ``fd``, which ``write`` closes, and its path ``tmp``) beside ``path``, then :func:`os.replace`
    puts it in place; on failure the temporary is removed (:func:`atomic_write`'s
    mechanism, for writers that take a path; the same as :meth:`LilaTransformer.save
    <torch_ext.model.LilaTransformer.save>`'s, :func:`torch_ext.model.atomic_replace`)."""
    _atomic_replace(path, write)


#: named corpora: the only stored data specs that are used without the user naming them
def _named_corpora() -> tuple:
    return ("shakespeare", *HF_CORPORA)


_MAX_INT = 2**63 - 1


def _int_meta(v, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an integer, got {_short(v)}")
    if not low <= v <= _MAX_INT:
        raise ValueError(f"{name} must be an integer in [{low}, 2**63), got {_short(v)}")
    return v


def _num_meta(v, name: str, *, nan_ok: bool = False, low: float = -math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {_short(v)}")
    if isinstance(v, int) and abs(v) > _MAX_INT:
        raise ValueError(f"{name} is out of range: {_short(v)}")
    if math.isnan(v) and nan_ok:
        return v
    if not math.isfinite(v) or v < low:
        raise ValueError(f"{name} must be a finite number >= {low}, got {_short(v)}")
    return v


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def check_metadata(meta: dict, *, training: bool = True) -> dict:
    """Check the JSON metadata of a checkpoint; return it (``TypeError``/``ValueError`` naming the field).

    Every field that the training loop, ``leechlib lila eval`` or ``leechlib lila
    quantize`` reads is checked for its type and range: ``step``, ``args`` (a JSON
    object whose known fields pass :meth:`~torch_ext.lila.train_config.TrainConfig.validate`),
    ``history`` (a list of objects of numbers, an integer ``step``), ``total_steps``, ``train_tokens``,
    ``skipped_steps``, ``world_size``, ``train_tokens_per_s``, ``last_loss``,
    ``tokenizer`` (it must rebuild), ``tokenizer_fingerprint``, ``data_key``,
    ``data_resolved`` and ``optim_groups``.  NaN is accepted only where training
    writes it (``last_loss`` before the first applied step, and the history, whose
    evaluations of a diverged run under ``--skip-nonfinite`` may be NaN or infinite);
    other infinities, ``null`` where a value is due and integers beyond 64 bits never.

    Parameters
    ----------
    meta : dict
        The metadata, its values parsed as JSON.
    training : bool
        A training checkpoint: ``step`` is required.

    Examples
    --------
    >>> check_metadata({"step": 3})["step"]
    3
    >>> check_metadata({"step": float("inf")})
    Traceback (most recent call last):
    ...
    TypeError: step must be an integer, got inf
    """
    if training or "step" in meta:
        if "step" not in meta:
            raise ValueError("step is missing")
        _int_meta(meta["step"], "step", 0)
    for name, low in (("total_steps", 1), ("train_tokens", 0), ("skipped_steps", 0), ("world_size", 1)):
        if name in meta:
            _int_meta(meta[name], name, low)
    if "train_tokens_per_s" in meta:
        _num_meta(meta["train_tokens_per_s"], "train_tokens_per_s", low=0.0)
    if "last_loss" in meta:
        _num_meta(meta["last_loss"], "last_loss", nan_ok=True)
    for name in ("tokenizer_fingerprint", "data_key", "data_resolved"):
        if name in meta and not isinstance(meta[name], str):
            raise TypeError(f"{name} must be a string, got {_short(meta[name])}")
    if "args" in meta:
        args = meta["args"]
        if not isinstance(args, dict):
            raise TypeError(f"args must be a JSON object, got {_short(args)}")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        known = {k: v for k, v in args.items() if k in names and k not in ("out", "cache_dir")}
        try:
            TrainConfig(**known).validate()
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"args: {exc}") from None
        for k in ("out", "cache_dir"):
            if args.get(k) is not None and not isinstance(args[k], str):
                raise TypeError(f"args: {k} must be a string or null, got {_short(args[k])}")
        bpe = args.get("bpe_vocab_size", 2048)
        if isinstance(bpe, bool) or not isinstance(bpe, int) or not 258 <= bpe <= 65535:
            raise ValueError(f"args: bpe_vocab_size must be an int in [258, 65535], got {_short(bpe)}")
    if "history" in meta:
        hist = meta["history"]
        if not isinstance(hist, list):
            raise TypeError(f"history must be a list, got {_short(hist)}")
        for i, rec in enumerate(hist):
            if not isinstance(rec, dict):
                raise TypeError(f"history[{i}] must be a JSON object, got {_short(rec)}")
            if "step" in rec:
                _int_meta(rec["step"], f"history[{i}].step", 0)
            for k, v in rec.items():  # NaN and infinities too: a diverged run under --skip-nonfinite scores so
                if k != "step" and v is not None:
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, int)
                                                                                  and abs(v) > _MAX_INT):
                        raise TypeError(f"history[{i}].{k} must be a number, got {_short(v)}")
    if "tokenizer" in meta:
        tok = meta["tokenizer"]
        if not isinstance(tok, dict):
            raise TypeError(f"tokenizer must be a JSON object, got {_short(tok)}")
        try:
            tokenizer_from_json(json.dumps(tok))
        except ValueError as exc:
            raise ValueError(f"tokenizer: {exc}") from None
    if "optim_groups" in meta:
        groups = meta["optim_groups"]
        if not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("params"), list)
                and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= _MAX_INT for i in g["params"])
                for g in groups):
            raise TypeError("optim_groups must be a list of objects, each with a list of parameter "
                            f"indices 'params', got {_short(groups)}")
    return meta


def stored_corpus(meta: dict) -> tuple[str | None, str | None]:
    """``(name, path)``: the named corpus a checkpoint was trained on, or the path it names.

    A checkpoint's metadata may name its training corpus (``data_resolved``, or
    ``args.data``).  A corpus name (``"shakespeare"``, ``"tinystories"``,
    ``"fineweb-edu"``) is returned as ``name``: it can be used as a default.  Anything
    else is a path, returned as ``path`` and never used: a path in a file is only a
    hint, which the user confirms by passing it (``--data PATH``).

    Examples
    --------
    >>> stored_corpus({"data_resolved": "shakespeare", "args": {"data": "shakespeare"}})
    ('shakespeare', None)
    >>> stored_corpus({"data_resolved": "/etc/passwd"})
    (None, '/etc/passwd')
    >>> stored_corpus({})
    (None, None)
    """
    args = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    specs = [s for s in (meta.get("data_resolved"), args.get("data")) if isinstance(s, str) and s]
    if not specs:
        return None, None
    names = _named_corpora()
    if all(s in names for s in specs) and len(set(specs)) == 1:
        return specs[0], None
    return None, next((s for s in specs if s not in names), specs[0])



def training_corpus(meta: dict, data=None, *, option: str = "--data", split: str | None = None) -> str:
    """The corpus to read for a checkpoint: ``data`` if given, else the named corpus it was trained on.

    A path stored in the checkpoint is never used on the file's word (it could name
    any file or folder of the machine): it only goes into the error, which asks the
    user to pass it as ``option`` if they mean it.

    Parameters
    ----------
    meta : dict
        The checkpoint's metadata (:attr:`Checkpoint.meta`).
    data : str or Path, optional
        The corpus the user named (``--data``); returned as it is.
    option : str
        How the user names a corpus, for the error message.
    split : str, optional
        The split to be read (``"validation"``, ``"train"``), for the error message.

    Raises
    ------
    ValueError
        ``data`` is not given and the checkpoint names no corpus, or a path.

    Examples
    --------
    >>> training_corpus({"data_resolved": "shakespeare"})
    'shakespeare'
    >>> training_corpus({"data_resolved": "/etc"}, "my-text.txt")
    'my-text.txt'
    >>> training_corpus({"data_resolved": "/etc"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint was trained on the local corpus '/etc': a path stored in a file is never read ...
    """
    if data is not None:
        if not isinstance(data, (str, os.PathLike)) or not os.fspath(data):
            raise ValueError(f"data must be a corpus name or a path, got {data!r}")
        return os.fspath(data)
    name, path = stored_corpus(meta)
    if name is not None:
        return name
    also = f" --split {split}" if split in ("validation", "train") and option == "--data" else ""
    if path is not None:
        raise ValueError(f"the checkpoint was trained on the local corpus {path!r}: a path stored in a file is "
                         f"never read on the file's word; pass {option} {shlex.quote(path)}{also} if you mean it")
    raise ValueError(f"the checkpoint does not name the corpus it was trained on: pass {option} PATH{also}")

def _model_config_dict(model) -> dict:
    cfg = model.config
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dataclasses.asdict(cfg)


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


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

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    NonFiniteError
        If a weight or optimizer tensor holds a NaN or an infinity (nothing is written).
    """
    from safetensors.torch import save

    tensors = {f"model/{k}": _cpu(v) for k, v in model.state_dict().items()}
    md = {"format": FORMAT, "step": str(int(step)), "config": json.dumps(_model_config_dict(model))}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim/{i}/{k}"] = _cpu(v if isinstance(v, torch.Tensor) else torch.tensor(v))
        md["optim_groups"] = json.dumps(sd["param_groups"])
    for k, v in (extra_tensors or {}).items():
        tensors[k] = _cpu(v)
    bad = nonfinite_tensors({k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))})
    if bad:
        raise NonFiniteError(f"refusing to write the checkpoint {str(path)!r} of step {int(step)}: "
                             f"non-finite values in {', '.join(bad[:4])}{'...' if len(bad) > 4 else ''}",
                             step=int(step), cause="non-finite weights")
    for k, v in (meta or {}).items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    path = Path(path)
    atomic_write(path, save(tensors, metadata=md))
    return path


def _checked(meta: dict, p: Path, training: bool = True) -> dict:
    """:func:`check_metadata`, its error a :class:`CheckpointError` naming the file."""
    try:
        return check_metadata(meta, training=training)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has invalid metadata: {exc}") from None


def _load_quantized(p: Path, meta: dict, device) -> Checkpoint:
    """A quantized LILA model (``leechlib lila quantize``) as a :class:`Checkpoint`."""
    try:
        model = load_quantized(p)
    except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError) as exc:  # whatever a crafted file raises
        raise CheckpointError(f"quantized checkpoint {str(p)!r} is invalid: {exc}") from None
    step = meta.get("step", 0)
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, step, meta, p, {})


#: metadata of a training checkpoint that a model file of the same run takes over
_RUN_META = ("step", "args", "history", "total_steps", "train_tokens", "train_tokens_per_s", "tokenizer",
             "tokenizer_fingerprint", "data_key", "data_resolved", "world_size")


def _parse_meta(md: dict) -> dict[str, Any]:
    """Safetensors metadata (strings) with each value parsed as JSON where it is JSON."""
    meta: dict[str, Any] = {}
    for k, v in md.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            meta[k] = v
    return meta


def _load_model_file(p: Path, device) -> Checkpoint:
    """A model file of :meth:`LilaTransformer.save` (a run's ``model.safetensors``) as a :class:`Checkpoint`.

    The file holds the config and the weights only.  When it lies in a run directory
    whose latest checkpoint has the same config, that checkpoint's metadata (step,
    arguments, tokenizer; checked as always, its paths never trusted) comes with it,
    and ``meta["run_checkpoint"]`` names that checkpoint; otherwise the metadata is
    empty (step 0, no tokenizer: the byte tokenizer is assumed where one is needed).
    """
    try:
        model = LilaTransformer.load(p)
    except ValueError as exc:
        raise CheckpointError(f"model file {str(p)!r} is invalid: {exc}") from None
    meta: dict[str, Any] = {}
    cks = list_checkpoints(p.parent)
    if cks:
        try:
            md, _ = read_safetensors_header(cks[-1][1])
        except (OSError, ValueError):
            md = {}
        other = _parse_meta({k: v for k, v in md.items() if k in _RUN_META or k in ("format", "config")})
        if other.get("format") == FORMAT and other.get("config") == model.config.to_dict():
            other.pop("format"), other.pop("config")
            meta = _checked(other, cks[-1][1])
            meta["run_checkpoint"] = str(cks[-1][1])
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, meta.get("step", 0), meta, p, {})


def load_checkpoint(path, device=None, *, with_state: bool = False) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` / :func:`torch_ext.lila.train.train`.

    A quantized LILA model written by ``leechlib lila quantize``
    (:func:`~torch_ext.quantize.save_quantized` with the training metadata) loads
    too, its :class:`~torch_ext.quantize.LeechQuantizedLinear` layers in place
    (no optimizer state), and so does a model file of
    :meth:`LilaTransformer.save <torch_ext.model.LilaTransformer.save>` (a run's
    ``model.safetensors``; the metadata of its run's latest checkpoint comes with it
    when that checkpoint has the same config).  The metadata is checked
    (:func:`check_metadata`) before it is used.

    Parameters
    ----------
    path : str or Path
        Checkpoint file, or a run directory (its latest checkpoint).
    device : str or torch.device, optional
        Where to put the model (default CPU).
    with_state : bool
        Also return the optimizer and RNG tensors (for resuming).

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupt file, metadata of the wrong type or range,
        weights that do not fit the config, or non-finite weights or optimizer
        moments (the moments are read with ``with_state``).

    Notes
    -----
    Nothing in the file is executed: safetensors tensors and JSON metadata only.
    The config is checked against the shapes in the file's header (and its size)
    before anything is allocated (:func:`torch_ext.model.check_stored_config`).
    """
    from safetensors import safe_open

    p = resolve_checkpoint(path)
    try:
        md, shapes = read_safetensors_header(p)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or incomplete: {exc}") from None
    meta = _parse_meta(md)
    if md.get("format") != FORMAT:
        if md.get("checkpoint") == QUANTIZED_FORMAT and "lila_config" in md:
            return _load_quantized(p, _checked(meta, p, training=False), device)
        if md.get("checkpoint") == MODEL_FORMAT and "lila_config" in md:
            return _load_model_file(p, device)
        raise CheckpointError(f"{str(p)!r} is not a LILA training checkpoint (format {md.get('format')!r})")
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {str(p)!r} lacks its config")
    meta = _checked(meta, p)
    step, config = meta["step"], meta["config"]
    try:
        if not isinstance(config, dict):
            raise TypeError(f"it must be a JSON object, got {type(config).__name__}")
        cfg = LilaConfig.from_dict(dict(config))
        check_stored_config(cfg, shapes, p.stat().st_size, "the file", prefix="model/")  # before building
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has an invalid model config: {exc}") from None
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            keys = [k for k in f.keys() if with_state or k.startswith("model/")]
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or incomplete: {exc}") from None
    bad = nonfinite_tensors({k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))})
    if bad:
        raise CheckpointError(f"checkpoint {str(p)!r} holds non-finite values (NaN or inf) in "
                              f"{', '.join(bad[:4])}{'...' if len(bad) > 4 else ''}: it cannot be used")
    model = LilaTransformer(cfg)
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
