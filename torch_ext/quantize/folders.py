"""Hugging Face model folders: the config, the safetensors shards, a model without weights.

A Hugging Face folder holds ``config.json``, the weights as one
``model.safetensors`` or as shards listed in ``model.safetensors.index.json``, and
the tokenizer's files.  :class:`ShardReader` reads single tensors from the shards
(memory-mapped: nothing else is read), :func:`empty_model` builds the model class
the config names with every parameter on the meta device (buffers, such as rotary
frequencies, are real: they are computed, not stored), and :func:`fill` gives a
module of that model its stored values, :func:`release` takes them back.  Peak
memory is what is filled at a time.

``transformers`` is imported by the functions that need it, not by this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

__all__ = ["FolderError", "ShardReader", "empty_model", "fill", "release", "find_blocks",
           "copy_side_files", "WEIGHT_SUFFIXES"]

#: files that hold weights (never copied to a quantized folder)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_INDEX = "model.safetensors.index.json"
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
              "I64": torch.int64, "BOOL": torch.bool}
_SINGLE = "model.safetensors"


class FolderError(ValueError):
    """A model folder is unusable: no config, a missing or corrupt shard, a missing tensor."""


def _as_folder(path, what: str = "src") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    p = Path(path)
    if not p.is_dir():
        raise FolderError(f"{what}: {p} is not a folder" if p.exists() else f"{what}: no folder {p}")
    return p


class ShardReader:
    """Single tensors of a folder's safetensors weights, read on demand.

    Parameters
    ----------
    folder : path
        A folder with ``model.safetensors`` or ``model.safetensors.index.json`` and its
        shards.

    Raises
    ------
    FolderError
        No weights, a corrupt index, a shard the index names that is missing or is
        not a safetensors file (each checked here, before any work).

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from torch_ext.quantize.folders import ShardReader
    >>> d = tempfile.mkdtemp()
    >>> save_file({"w": torch.ones(2, 3)}, os.path.join(d, "model.safetensors"))
    >>> r = ShardReader(d)
    >>> "w" in r, r.shape("w"), r.get("w").sum().item()
    (True, (2, 3), 6.0)
    """

    def __init__(self, folder):
        from safetensors import safe_open

        self.folder = _as_folder(folder)
        index = self.folder / _INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict) or not all(
                        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                    raise TypeError("weight_map must map tensor names to file names")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise FolderError(f"{index} is not a valid safetensors index: "
                                  f"{type(exc).__name__}: {exc}") from None
            files = sorted(set(weight_map.values()))
        elif (self.folder / _SINGLE).is_file():
            weight_map, files = None, [_SINGLE]
        else:
            raise FolderError(f"{self.folder} holds no safetensors weights ({_SINGLE} or {_INDEX}); "
                              "convert .bin weights with save_pretrained(safe_serialization=True)")
        self._where: dict[str, str] = {}
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}
        for name in files:
            path = self.folder / name
            if os.path.dirname(name) or not path.is_file():
                raise FolderError(f"shard {name!r} named by {_INDEX} is missing from {self.folder}")
            try:
                # the header only; each tensor is read on its own later, through a handle that
                # is closed again (a handle kept open keeps every page read of its file resident)
                with safe_open(str(path), framework="pt", device="cpu") as h:
                    for k in h.keys():
                        sl = h.get_slice(k)
                        self._meta[k] = (tuple(sl.get_shape()), sl.get_dtype())
                        self._where[k] = name
            except Exception as exc:  # safetensors raises its own error types
                raise FolderError(f"shard {path} is not a readable safetensors file: {exc}") from None
        if weight_map is not None:
            lost = [k for k, f in weight_map.items() if self._where.get(k) != f]
            if lost:
                raise FolderError(f"tensor {lost[0]!r} is listed in {_INDEX} under "
                                  f"{weight_map[lost[0]]!r} but that shard does not hold it "
                                  f"({len(lost)} such tensors)")

    def __contains__(self, key) -> bool:
        return key in self._where

    def keys(self) -> list[str]:
        """Every stored tensor name."""
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        """The stored shape of ``key`` (no data read)."""
        return self._meta[key][0]

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype of ``key`` (no data read)."""
        return _ST_DTYPES.get(self._meta[key][1], torch.float32)

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (``FolderError`` if missing or unreadable)."""
        if key not in self._where:
            raise FolderError(f"{self.folder} has no tensor {key!r}")
        from safetensors import safe_open

        try:
            with safe_open(str(self.folder / self._where[key]), framework="pt", device="cpu") as h:
                return h.get_tensor(key)
        except Exception as exc:
            raise FolderError(f"tensor {key!r} of shard {self._where[key]} cannot be read: {exc}") from None


@contextlib.contextmanager
def _parameters_on_meta():
    """Within, every parameter a module registers is created on the meta device (buffers are not)."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def model_class(config, kind: str = "auto"):
    """The ``transformers`` class to build for ``config``: its ``architectures``, else an auto class."""
    import transformers

    if kind not in ("auto", "causal-lm", "base"):
        raise ValueError(f"kind must be 'auto', 'causal-lm' or 'base', got {kind!r}")
    if kind == "auto":
        for arch in getattr(config, "architectures", None) or ():
            cls = getattr(transformers, str(arch), None)
            if isinstance(cls, type):
                return cls
    auto = transformers.AutoModelForCausalLM if kind != "base" else transformers.AutoModel
    try:
        return auto._model_mapping[type(config)]
    except KeyError:
        if kind == "auto":
            return transformers.AutoModel._model_mapping[type(config)]
        raise


def load_config(folder):
    """The ``transformers`` config of ``folder`` (``FolderError`` if absent or unreadable)."""
    import transformers

    folder = _as_folder(folder)
    if not (folder / "config.json").is_file():
        raise FolderError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise FolderError(f"{folder}/config.json cannot be read by transformers: "
                          f"{type(exc).__name__}: {exc}") from None


def empty_model(config, cls=None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model of ``config`` with every parameter on the meta device, in eval mode.

    Buffers are real (rotary frequencies and the like are computed by the
    constructor); parameters hold no memory until :func:`fill`.
    """
    cls = cls or model_class(config)
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with _parameters_on_meta():
            model = cls._from_config(config, dtype=dtype) if hasattr(cls, "_from_config") else cls(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def stored_name(key: str, reader: ShardReader, prefix: str) -> str | None:
    """The name under which the model's tensor ``key`` is stored (with or without ``prefix.``)."""
    if key in reader:
        return key
    if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1:] in reader:
        return key[len(prefix) + 1:]
    if prefix and f"{prefix}.{key}" in reader:
        return f"{prefix}.{key}"
    return None


def fill(model: nn.Module, module_name: str, reader: ShardReader, dtype: torch.dtype = torch.float32,
         *, exclude: str | None = None) -> list[str]:
    """Give the meta parameters of ``model.<module_name>`` their stored values.

    Floating parameters are converted to ``dtype``; stored persistent buffers are
    loaded in the dtype of the buffer they replace.  Modules under ``exclude`` (a
    full module name) are left alone.  Returns the full names of the parameters
    that are not stored (tied ones, usually).  A stored tensor of another shape is
    a :class:`FolderError`.
    """
    module = model.get_submodule(module_name) if module_name else model
    prefix = getattr(model, "base_model_prefix", "") or ""
    base = f"{module_name}." if module_name else ""
    missing = []
    for owner_name, owner in module.named_modules():
        full_owner = f"{base}{owner_name}".rstrip(".")
        if exclude and (full_owner == exclude or full_owner.startswith(exclude + ".")):
            continue
        for pname, p in list(owner._parameters.items()) + list(owner._buffers.items()):
            if p is None:
                continue
            full = f"{full_owner}.{pname}" if full_owner else pname
            is_param = pname in owner._parameters
            if not is_param and pname in owner._non_persistent_buffers_set:
                continue
            key = stored_name(full, reader, prefix)
            if key is None:
                if is_param and p.is_meta:
                    missing.append(full)
                continue
            shape = reader.shape(key)
            if tuple(shape) != tuple(p.shape):
                raise FolderError(f"tensor {key!r} has shape {tuple(shape)} in the folder but the "
                                  f"model built from config.json expects {tuple(p.shape)}")
            t = reader.get(key)
            if is_param:
                t = t.to(dtype) if t.is_floating_point() else t
                owner._parameters[pname] = nn.Parameter(t, requires_grad=False)
            else:
                owner._buffers[pname] = t.to(p.dtype)
    return missing


def release(module: nn.Module, *, exclude: str | None = None, buffers: bool = True) -> None:
    """Put every parameter and persistent buffer of ``module`` back on the meta device.

    Modules under ``exclude`` (a name in ``module``, as in :func:`fill`) are left alone;
    ``buffers=False`` keeps the buffers (some are not stored in a folder, so
    :func:`fill` could not give them back).
    """
    for name, owner in module.named_modules():
        if exclude and (name == exclude or name.startswith(exclude + ".")):
            continue
        for pname, p in list(owner._parameters.items()):
            if p is not None and not p.is_meta:
                owner._parameters[pname] = nn.Parameter(p.detach().to("meta"), requires_grad=False)
        for bname, b in list(owner._buffers.items()) if buffers else ():
            if b is not None and bname not in owner._non_persistent_buffers_set:
                owner._buffers[bname] = b.to("meta")
        clear = getattr(owner, "clear_cache", None)
        if callable(clear):
            clear()


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of blocks: the ``nn.ModuleList`` of like modules with the most parameters.

    Raises
    ------
    FolderError
        The model has no such list (it is not a stack of blocks).
    """
    best, best_n = None, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1:
            n = sum(p.numel() for p in m.parameters())
            if n > best_n:
                best, best_n = (name, m), n
    if best is None:
        raise FolderError(f"{type(model).__name__} has no list of blocks (an nn.ModuleList of like "
                          "modules): it cannot be quantized a block at a time")
    return best


def copy_side_files(src: Path, out: Path) -> list[str]:
    """Copy everything of ``src`` but its top-level weights, ``config.json`` and the index.

    The tokenizer, the generation config, a sentence-transformers pooling module and
    the like come along.  Returns the names copied.
    """
    copied = []
    for p in sorted(src.iterdir()):
        if p.name in ("config.json", _INDEX) or p.name.startswith(".leechlib"):
            continue
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES + (".index.json",)):
            continue
        dst = out / p.name
        if p.is_dir():
            shutil.copytree(p, dst, dirs_exist_ok=True)
        elif p.is_file():
            shutil.copy2(p, dst)
        else:
            continue
        copied.append(p.name)
    return copied
