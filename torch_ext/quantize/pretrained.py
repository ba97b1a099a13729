r"""Hugging Face folders in, quantized folders out, a block at a time; and loaded back.

:func:`quantize_pretrained` quantizes a ``transformers`` model folder (causal LM or
encoder; ``config.json`` and safetensors shards) into a new folder without ever
holding the float model: the model is built with its parameters on the meta
device, the parts outside the stack of blocks (embeddings, final norm, output
head) are read from the shards, and then each block in turn is

1. read from the shards (float32),
2. calibrated on the inputs that the *already quantized* blocks produce (the
   inputs of the first block are caught once, from the calibration batches run
   through the embeddings), group by group, exactly as
   :func:`~torch_ext.quantize.quantize_model` does it on the whole model (the same
   held-out guard, the same layer names and so the same rotation seeds: the codes
   are the same bit for bit),
3. quantized, written to its own shard (atomically), and run once more to give
   the next block its inputs,
4. freed.

Peak memory is the outside parts, one block, and the calibration activations of
one block (tokens × width × 4 bytes, a few times).  A run that is interrupted
keeps the blocks it has written; run it again with the same settings and it
carries on from the first block not written (checked against a fingerprint of
the source, the settings and the calibration data).

The quantized folder holds ``config.json`` with a ``quantization_config``
(``quant_method: "leechlib"``, the settings, every quantized layer's config),
one safetensors shard per block and one for the rest, the index, and every other
file of the source folder (tokenizer, generation config, sentence-transformers
modules).  :func:`load_pretrained` builds the model from it with the quantized
layers in place, never making a float weight; with :mod:`torch_ext` imported,
``transformers``' own ``from_pretrained`` does the same (:mod:`.hf`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .._safetensors import read_safetensors
from ._memory import free_memory
from .apply import _matches
from .calibrate import (
    CalibrationError,
    CalibrationPlan,
    _forward,
    _mask_of,
    _set_module,
    _Stop,
    as_batches,
    calibrate_sequential,
)
from .config import QuantizeConfig, resolve_config
from .folders import (
    FolderError,
    ShardReader,
    _as_folder,
    copy_side_files,
    empty_model,
    fill,
    find_blocks,
    load_config,
    model_class,
    release,
    stored_name,
)
from .io import QUANTIZED_FORMAT
from .layer import LeechQuantizedLinear, is_conv1d

__all__ = ["quantize_pretrained", "load_pretrained", "QuantizedFolder", "QUANT_METHOD"]

#: ``quant_method`` of the ``quantization_config`` of a quantized folder
QUANT_METHOD = "leechlib"
_PROGRESS = ".leechlib-progress.json"
_TMP = ".leechlib-tmp-"


@dataclasses.dataclass
class QuantizedFolder:
    """What :func:`quantize_pretrained` wrote.

    Attributes
    ----------
    path : pathlib.Path
    blocks : int
        Blocks in the model; ``resumed`` of them were taken from an earlier run.
    layers : dict
        Full layer name -> its ``info`` (as given to the callback; ``"resumed": True``
        for a layer of a block written by an earlier run).
    quantized_weights, quantized_bits, other_params, other_bits : int
        As in :class:`~torch_ext.quantize.BitsReport`: the quantized layers' weights
        and stored bits; every other stored tensor (counted once if tied) at its
        stored dtype.
    block_seconds : list of float
        Seconds each block took (reading, calibration, quantization, writing).
    seconds : float
    """

    path: Path
    blocks: int
    resumed: int
    layers: dict
    quantized_weights: int
    quantized_bits: int
    other_params: int
    other_bits: int
    block_seconds: list
    seconds: float

    @property
    def bits_per_quantized_weight(self) -> float:
        return self.quantized_bits / self.quantized_weights if self.quantized_weights else float("nan")

    @property
    def bits_per_param(self) -> float:
        n = self.quantized_weights + self.other_params
        return (self.quantized_bits + self.other_bits) / n if n else float("nan")


def _targets_in(module: nn.Module, prefix: str, skip) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules()
            if (type(m) is nn.Linear or is_conv1d(m)) and not _matches(prefix + n, skip)]


def _fingerprint(src: Path, reader: ShardReader, cfg: QuantizeConfig, batches, kind: str) -> str:
    h = hashlib.sha256()
    h.update((src / "config.json").read_bytes())
    for k in sorted(reader.keys()):
        h.update(f"{k}:{reader.shape(k)};".encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(kind.encode())
    for b in batches or ():
        for t in (b.values() if isinstance(b, Mapping) else b if isinstance(b, (tuple, list)) else (b,)):
            if isinstance(t, Tensor):
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _shard_name(i: int, n: int) -> str:
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def _prepare_out(out, src: Path, fingerprint: str, *, resume: bool, force: bool) -> tuple[Path, bool]:
    """The output folder, made or checked; whether it holds a run to resume."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path (str or os.PathLike), got {type(out).__name__}")
    out = Path(out)
    if str(out) == "":
        raise ValueError("out must not be empty")
    if out.resolve() == src.resolve():
        raise ValueError(f"out is the source folder {src}: choose a new folder")
    if out.exists() and not out.is_dir():
        raise FolderError(f"out: {out} exists and is not a folder")
    progress = out / _PROGRESS
    if out.is_dir() and any(out.iterdir()):
        if progress.is_file():
            try:
                old = json.loads(progress.read_text(encoding="utf-8")).get("fingerprint")
            except (ValueError, AttributeError, UnicodeDecodeError):
                old = None
            if old == fingerprint and resume:
                for p in out.glob(_TMP + "*"):  # what a killed run was writing
                    p.unlink()
                return out, True
            if not force:
                why = ("with other settings, another source or other calibration data"
                       if old != fingerprint else "and resume=False")
                raise FolderError(f"out: {out} holds an unfinished run {why}; pass force=True "
                                  "(--force) to start it over, or choose a new folder")
        elif not force:
            raise FolderError(f"out: {out} exists and is not empty; pass force=True (--force) to "
                              "write into it (files of the same names are replaced)")
        for p in out.glob("model-*.safetensors"):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(_TMP + "*"):  # what a killed run was writing
        p.unlink()
    probe = out / f"{_TMP}probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FolderError(f"out: cannot write into {out}: {exc.strerror or exc}") from None
    _atomic_json(progress, {"fingerprint": fingerprint, "source": str(src.resolve())})
    return out, False


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(_TMP + path.name)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_shard(path: Path, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(_TMP + path.name)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stored_dtypes(reader: ShardReader, model: nn.Module) -> dict[str, torch.dtype]:
    """Model parameter name -> the dtype it is stored in (float tensors are written back in it)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for k, _ in model.named_parameters(remove_duplicate=False):
        key = stored_name(k, reader, prefix)
        if key is not None:
            out[k] = reader.dtype(key)
    return out


def _tensors_of(state: dict, prefix: str, dtypes: dict) -> dict[str, Tensor]:
    """``state`` under ``prefix``, on the CPU; float parameters back in their stored dtype."""
    out = {}
    for k, t in state.items():
        full = prefix + k
        t = t.detach().cpu()
        want = dtypes.get(full)
        if want is not None and t.is_floating_point():
            t = t.to(want)
        out[full] = t.contiguous()
    return out


class _BlockRunner(nn.Module):
    """One block, run on the inputs caught for calibration batch ``_batch``."""

    def __init__(self, block: nn.Module, inputs: list):
        super().__init__()
        self.block = block
        self._inputs = inputs
        self.eval()

    def forward(self, _batch, attention_mask=None):
        args, kwargs = self._inputs[int(_batch)]
        return self.block(*args, **kwargs)


class _Replay(nn.Module):
    """Stands for a block once all are quantized: passes its input on, or gives the stored output."""

    def __init__(self, outputs: list | None, state: dict, as_tuple: bool):
        super().__init__()
        self._outputs, self._state, self._as_tuple = outputs, state, as_tuple

    def forward(self, hidden_states=None, *args, **kwargs):
        out = hidden_states if self._outputs is None else self._outputs[self._state["batch"]]
        return (out,) if self._as_tuple else out


class _ModelRunner(nn.Module):
    """The whole model on calibration batch ``_batch`` (telling the replayed blocks which)."""

    def __init__(self, model: nn.Module, batches: list, state: dict):
        super().__init__()
        self.model = model
        self._batches, self._state = batches, state
        self.eval()

    def forward(self, _batch, attention_mask=None):
        self._state["batch"] = int(_batch)
        b = self._batches[int(_batch)]
        if isinstance(b, Mapping):
            return self.model(**b)
        if isinstance(b, (tuple, list)):
            return self.model(*b)
        return self.model(b)


def _hidden_of(out):
    return out if isinstance(out, Tensor) else out[0]


def _with_hidden(args, kwargs, hidden):
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _drop_caches(kwargs: dict) -> dict:
    return {k: (None if k in ("cache", "past_key_values", "past_key_value", "layer_past") else v)
            for k, v in kwargs.items()}


@torch.no_grad()
def _catch_inputs(model: nn.Module, first_block: nn.Module, batches: list) -> list:
    caught = []

    def hook(mod, args, kwargs):
        caught.append((tuple(args), _drop_caches(dict(kwargs))))
        raise _Stop

    h = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i, b in enumerate(batches):
            n = len(caught)
            try:
                _forward(model, b, i)
            except _Stop:
                pass
            if len(caught) != n + 1:
                raise CalibrationError(f"calibration batch {i}: the model returned without calling "
                                       "its first block")
    finally:
        h.remove()
    return caught


def _load_quantized_block(block: nn.Module, prefix: str, path: Path) -> dict:
    """Put the quantized block stored at ``path`` into ``block``; returns its layers' infos."""
    meta, tensors = read_safetensors(path, what="quantized block shard")
    try:
        layers = json.loads(meta["quantized_layers"])
        infos = json.loads(meta.get("layer_infos", "{}"))
    except (KeyError, ValueError) as exc:
        raise FolderError(f"{path}: not a block shard written by quantize_pretrained ({exc})") from None
    for full, cfg in layers.items():
        q = LeechQuantizedLinear.from_config(cfg, name=full)
        _set_module(block, full[len(prefix):], q)
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    for k in block.state_dict():
        if k not in state:
            raise FolderError(f"{path} lacks {prefix + k!r}: delete it and run again")
    block.load_state_dict({k: state[k] for k in block.state_dict()}, strict=True, assign=True)
    for m in block.modules():
        if isinstance(m, LeechQuantizedLinear):
            m.validate()
    return {full: {**infos.get(full, {}), "resumed": True} for full in layers}


def quantize_pretrained(src, out, config: QuantizeConfig | None = None, *, data=None,
                        kind: str = "auto", workers: int | None = -1, resume: bool = True,
                        force: bool = False, progress: bool = False, cache: bool | None = None,
                        callback: Callable[[str, dict], None] | None = None,
                        **settings) -> QuantizedFolder:
    """Quantize the Hugging Face model folder ``src`` into the folder ``out``, a block at a time.

    See the module docstring for the procedure and the output.

    Parameters
    ----------
    src : path
        A ``transformers`` model folder: ``config.json`` and safetensors weights.
    out : path
        The folder to write (created); an existing non-empty folder is refused unless
        it holds an unfinished run of the same source, settings and data (which is
        resumed) or ``force``.
    config : QuantizeConfig, optional
        As in :func:`~torch_ext.quantize.quantize_model` (also as keywords).
    data : optional
        Calibration batches, as in :func:`~torch_ext.quantize.quantize_model` (a
        tensor of token ids, batches, a tokenizer's ``BatchEncoding``).
    kind : {"auto", "causal-lm", "base"}
        The model class: the config's ``architectures`` (``"auto"``), or the causal
        LM / base model of its type.
    workers : int or None
        Numba threads for the encoders (as in ``from_linear``).
    resume, force : bool
        Carry on an unfinished run in ``out``; start over (or write into a
        non-empty folder).
    progress : bool
        Show a progress bar of the blocks on stderr (``tqdm``).
    cache : bool or None
        How the quantized layers run once loaded (stored in the folder's
        ``quantization_config``; :func:`load_pretrained` and ``from_pretrained``
        follow it): ``False`` keeps only the codes in memory (a 2-bit model stays
        16x smaller than float32 while it runs; each forward of more than a few
        tokens decodes the weight again), ``True`` a dense float32 copy of each
        weight after the first forward, ``None`` the method's default (codes only
        for ``"leech-trio"``).  See :class:`LeechQuantizedLinear`.
    callback : callable, optional
        ``callback(name, info)`` after each layer, as in ``quantize_model`` with
        ``info["block"]`` added; and ``callback("<block>", info)`` after each block
        with ``block``, ``blocks``, ``seconds`` and ``resumed``.

    Returns
    -------
    QuantizedFolder

    Raises
    ------
    FolderError
        ``src`` is not a model folder (no config, a missing or corrupt shard, a
        tensor missing or of another shape); ``out`` is a file, not writable, or
        holds something else.
    ValueError, TypeError
        A bad setting or calibration batch (as ``quantize_model``).
    """
    t_start = time.perf_counter()
    cfg = resolve_config(config, (), settings, caller="quantize_pretrained")
    if cfg.feedback == "ldlq" and data is None:
        raise ValueError("feedback='ldlq' needs calibration data: pass data=")
    for k, v in (("resume", resume), ("force", force), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{k} must be a bool, got {type(v).__name__}")
    if cache is not None and not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool or None, got {type(cache).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    src = _as_folder(src)
    hf_config = load_config(src)
    reader = ShardReader(src)
    batches = as_batches(data) if data is not None else None
    cls = model_class(hf_config, kind)
    fingerprint = _fingerprint(src, reader, cfg, batches, cls.__name__)
    out, resuming = _prepare_out(out, src, fingerprint, resume=resume, force=force)

    model = empty_model(hf_config, cls)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # the blocks are run again and again on caught inputs
    blocks_name, blocks = find_blocks(model)
    n_blocks = len(blocks)
    n_shards = n_blocks + 1
    dtypes = _stored_dtypes(reader, model)
    under_blocks = blocks_name + "."

    # the parts outside the blocks, read once
    fill(model, "", reader, exclude=blocks_name)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    lost = [n for n, p in model.named_parameters() if p.is_meta and not n.startswith(under_blocks)]
    if lost:
        raise FolderError(f"{src} has no tensor for {lost[0]!r} ({len(lost)} parameters outside "
                          "the blocks are missing)")

    targets = {i: _targets_in(blocks[i], f"{under_blocks}{i}.", cfg.skip) for i in range(n_blocks)}
    outer = [(n, m) for n, m in _targets_in(model, "", cfg.skip) if not n.startswith(under_blocks)]
    total = sum(len(t) for t in targets.values()) + len(outer)
    layers: dict[str, dict] = {}
    configs: dict[str, dict] = {}
    block_seconds: list[float] = []
    resumed = 0

    floats: dict[str, nn.Module] = {}  # the float layers of the current block, by full name

    def report(block):
        def cb(name, info):
            m = floats.pop(name, None)
            if m is not None:  # replaced: its weight is not used again (the model is ours)
                release(m)
            free_memory()
            info = {**info, "block": block}
            layers[name] = info
            if callback is not None:
                callback(name, info)
        return cb

    inputs = _catch_inputs(model, blocks[0], batches) if batches is not None else None
    # the parts outside the blocks (the embedding and the output head: 1 GB of float32 in a
    # 7 B model) are not used by the blocks: freed now, read again at the end
    release(model, exclude=blocks_name, buffers=False)
    masks = [_mask_of(b) for b in batches] if batches is not None else None
    as_tuple = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_blocks, desc="quantizing blocks", unit="block")
    try:
        for i in range(n_blocks):
            t0 = time.perf_counter()
            block = blocks[i]
            prefix = f"{under_blocks}{i}."
            shard = out / _shard_name(i, n_shards)
            from_shard = resuming and shard.is_file()
            if from_shard:
                fill(model, f"{blocks_name}.{i}", reader)
                for full, info in _load_quantized_block(block, prefix, shard).items():
                    report(i)(full, {**info, "index": len(layers), "total": total})
                resumed += 1
            else:
                fill(model, f"{blocks_name}.{i}", reader)
                floats.update((prefix + n, m) for n, m in targets[i])
                runner = _BlockRunner(block, inputs)
                plan = CalibrationPlan(runner, [(f"block.{n}", m) for n, m in targets[i]], cfg,
                                       workers=workers, callback=report(i),
                                       names={f"block.{n}": prefix + n for n, _ in targets[i]},
                                       first_index=len(layers), total=total)
                if batches is None:
                    plan.run(None)
                else:
                    calibrate_sequential(plan, [{"_batch": j, "attention_mask": masks[j]}
                                                for j in range(len(batches))])
                qlayers = {prefix + n: m.config for n, m in block.named_modules()
                           if isinstance(m, LeechQuantizedLinear)}
                infos = {k: {kk: vv for kk, vv in layers[k].items() if kk not in ("block", "index")}
                         for k in qlayers}
                _save_shard(shard, _tensors_of(block.state_dict(), prefix, dtypes),
                            {"format": "pt", "checkpoint": QUANTIZED_FORMAT,
                             "quantized_layers": json.dumps(qlayers),
                             "layer_infos": json.dumps(infos, default=float)})
            for n, m in block.named_modules():
                if isinstance(m, LeechQuantizedLinear):
                    configs[prefix + n] = m.config
            if inputs is not None:
                block.eval()
                with torch.no_grad():
                    for j, (args, kwargs) in enumerate(inputs):
                        out_j = block(*args, **kwargs)
                        as_tuple = not isinstance(out_j, Tensor)
                        h = _hidden_of(out_j)
                        if not bool(torch.isfinite(h).all()):
                            raise CalibrationError(f"block {i}: its outputs contain NaN or inf on "
                                                   f"calibration batch {j}")
                        inputs[j] = _with_hidden(args, kwargs, h)
            release(block)
            for _, m in targets.pop(i):  # the float layers replaced: their weights go too
                release(m)
            free_memory()
            block_seconds.append(time.perf_counter() - t0)
            if callback is not None:
                callback("<block>", {"block": i, "blocks": n_blocks, "seconds": block_seconds[-1],
                                     "resumed": from_shard})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    fill(model, "", reader, exclude=blocks_name)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    # the linear layers outside the blocks (an output head that is not skipped), last
    if outer:
        if batches is None:
            CalibrationPlan(model, outer, cfg, workers=workers, callback=report(None),
                            first_index=len(layers), total=total).run(None)
        else:
            state = {"batch": 0}
            finals = [args[0] if args else kwargs["hidden_states"] for args, kwargs in inputs]
            saved = list(blocks)
            try:
                for k in range(n_blocks):
                    blocks[k] = _Replay(finals if k == n_blocks - 1 else None, state, as_tuple)
                runner = _ModelRunner(model, batches, state)
                plan = CalibrationPlan(runner, [(f"model.{n}", m) for n, m in outer], cfg,
                                       workers=workers, callback=report(None),
                                       names={f"model.{n}": n for n, _ in outer},
                                       first_index=len(layers), total=total)
                calibrate_sequential(plan, [{"_batch": j, "attention_mask": masks[j]}
                                            for j in range(len(batches))])
            finally:
                for k in range(n_blocks):
                    blocks[k] = saved[k]
        for n, m in model.named_modules():
            if isinstance(m, LeechQuantizedLinear) and not n.startswith(under_blocks):
                configs[n] = m.config

    # everything outside the blocks, a tied tensor once
    rest, seen = {}, set()
    for k, t in model.state_dict(keep_vars=True).items():
        if k.startswith(under_blocks) or id(t) in seen:
            continue
        seen.add(id(t))
        rest[k] = t
    _save_shard(out / _shard_name(n_blocks, n_shards), _tensors_of(rest, "", dtypes),
                {"format": "pt", "checkpoint": QUANTIZED_FORMAT,
                 "quantized_layers": json.dumps({k: v for k, v in configs.items()
                                                 if not k.startswith(under_blocks)})})
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    result = _finish(src, out, n_shards, cfg, configs, blocks_name,
                     untie=isinstance(head, LeechQuantizedLinear), cache=cache)
    return QuantizedFolder(path=out, blocks=n_blocks, resumed=resumed, layers=layers,
                           block_seconds=block_seconds, seconds=time.perf_counter() - t_start,
                           **result)


def _finish(src: Path, out: Path, n_shards: int, cfg: QuantizeConfig, configs: dict,
            blocks_name: str, untie: bool = False, cache: bool | None = None) -> dict:
    """Write the index, ``config.json`` and the side files; count the bits; drop the progress file."""
    from safetensors import safe_open

    weight_map, total_size = {}, 0
    qw = qb = on = ob = 0
    for i in range(n_shards):
        name = _shard_name(i, n_shards)
        path = out / name
        total_size += path.stat().st_size
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k in f.keys():
                weight_map[k] = name
    # bits: the quantized layers from their configs, the rest from the shards
    quant_keys = set()
    for n, c in configs.items():
        layer = LeechQuantizedLinear.from_config(c, device="meta")
        r = layer.bits_report()
        qw += r["weights"]
        qb += r["total_bits"]
        quant_keys |= {f"{n}.packed", f"{n}.scales", f"{n}.gains"}
    for i in range(n_shards):
        with safe_open(str(out / _shard_name(i, n_shards)), framework="pt", device="cpu") as f:
            for k in f.keys():
                if k in quant_keys:
                    continue
                sl = f.get_slice(k)
                numel = 1
                for d in sl.get_shape():
                    numel *= d
                on += numel
                ob += numel * 8 * {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1,
                                   "I64": 8, "I32": 4}.get(sl.get_dtype(), 4)
    _atomic_json(out / "model.safetensors.index.json",
                 {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
    copy_side_files(src, out)
    raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if untie:  # the output head is quantized: it no longer shares the (float) token embedding
        raw["tie_word_embeddings"] = False
    raw["quantization_config"] = {
        "quant_method": QUANT_METHOD, "format": QUANTIZED_FORMAT, "settings": cfg.to_dict(),
        "blocks": blocks_name, "cache": cache, "layers": configs}
    _atomic_json(out / "config.json", raw)
    (out / _PROGRESS).unlink(missing_ok=True)
    return {"quantized_weights": qw, "quantized_bits": qb, "other_params": on, "other_bits": ob}


def quantization_config_of(config) -> dict:
    """The ``quantization_config`` dict of a ``transformers`` config of a quantized folder.

    Raises ``FolderError`` if the config has none or another ``quant_method``.
    """
    qc = getattr(config, "quantization_config", None)
    if qc is not None and not isinstance(qc, dict):
        qc = qc.to_dict() if hasattr(qc, "to_dict") else vars(qc)
    if not isinstance(qc, dict) or qc.get("quant_method") != QUANT_METHOD:
        raise FolderError("config.json has no quantization_config with quant_method "
                          f"{QUANT_METHOD!r}: not a folder written by quantize_pretrained")
    if qc.get("cache") is not None and not isinstance(qc.get("cache"), bool):
        raise FolderError(f"quantization_config.cache must be true, false or null, got {qc.get('cache')!r}")
    layers = qc.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, dict)
                                               for k, v in layers.items()):
        raise FolderError("quantization_config.layers must map layer names to layer configs")
    return qc


def replace_quantized_layers(model: nn.Module, layers: dict, device="meta", cache: bool | None = None) -> None:
    """Put an empty :class:`LeechQuantizedLinear` (on ``device``) wherever ``layers`` names one."""
    if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, dict)
                                               for k, v in layers.items()):
        raise FolderError("quantization_config.layers must map layer names to layer configs")
    for name, c in layers.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise FolderError(f"quantization_config names layer {name!r}, which the model built "
                              "from config.json does not have") from None
        if not (type(old) is nn.Linear or is_conv1d(old) or isinstance(old, LeechQuantizedLinear)):
            raise FolderError(f"quantization_config names layer {name!r}, which is a "
                              f"{type(old).__name__}, not a linear layer")
        try:
            q = LeechQuantizedLinear.from_config(c, name=name, device=device, cache=cache)
        except (TypeError, ValueError, KeyError) as exc:
            raise FolderError(f"quantization_config.layers[{name!r}]: {exc}") from None
        if not isinstance(old, LeechQuantizedLinear):
            w = old.weight
            shape = (w.shape[1], w.shape[0]) if is_conv1d(old) else tuple(w.shape)
            if shape != (q.out_features, q.in_features):
                raise FolderError(f"quantization_config.layers[{name!r}] is {q.out_features}x"
                                  f"{q.in_features} but the model's layer is {shape[0]}x{shape[1]}")
        _set_module(model, name, q)


def load_pretrained(path, *, dtype: torch.dtype | None = None, device="cpu", kind: str = "auto",
                    cache: bool | None = None) -> nn.Module:
    """The model of a folder written by :func:`quantize_pretrained`, quantized layers in place.

    The model is built with its parameters on the meta device, the quantized layers
    are put in (empty), and every tensor is read from the shards: no float weight of
    a quantized layer is ever made.

    Parameters
    ----------
    path : path
        The quantized folder.
    dtype : torch.dtype, optional
        Of the float tensors (embeddings, norms, biases; default float32).
    device : str or torch.device
    kind : {"auto", "causal-lm", "base"}
        As in :func:`quantize_pretrained`.
    cache : bool, optional
        The quantized layers' ``cache`` (see :class:`LeechQuantizedLinear`); default:
        the folder's (``quantize_pretrained(cache=)``), else the method's.

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Raises
    ------
    FolderError
        Not a quantized folder; a missing or corrupt shard or tensor; a layer config
        that does not fit the model.
    """
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    folder = _as_folder(path, "path")
    hf_config = load_config(folder)
    qc = quantization_config_of(hf_config)
    reader = ShardReader(folder)
    model = empty_model(hf_config, model_class(hf_config, kind), dtype=dtype)
    if cache is not None and not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool or None, got {type(cache).__name__}")
    replace_quantized_layers(model, qc["layers"], cache=qc.get("cache") if cache is None else cache)
    quantized = set(qc["layers"])
    missing = fill(model, "", reader, dtype)
    for n in quantized:
        q = model.get_submodule(n)
        for b in ("packed", "scales", "gains"):
            t = getattr(q, b, None)
            if t is not None and t.is_meta:
                raise FolderError(f"{folder} has no tensor {n + '.' + b!r}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    lost = [n for n, p in model.named_parameters() if p.is_meta]
    lost += [n for n, b in model.named_buffers() if b.is_meta]
    if lost:
        raise FolderError(f"{folder} has no tensor for {lost[0]!r} ({len(lost)} missing; "
                          f"first not stored: {missing[:3]})")
    for n in quantized:
        try:
            model.get_submodule(n).validate()
        except ValueError as exc:
            raise FolderError(f"{folder}: {exc}") from None
    model.config.use_cache = json.loads((folder / "config.json").read_text()).get("use_cache", True)
    return model.to(device).eval()
