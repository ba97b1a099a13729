"""Save and load quantized models: one safetensors file, no pickle.

A quantized file holds the model's state dict and, as JSON metadata, the config of
each quantized layer.  A model class registered with :func:`register_architecture`
also stores its own config, so that :func:`load_quantized` rebuilds it without a
float instance; :class:`~torch_ext.LilaTransformer` is registered (under
``"lila_config"``) by :mod:`torch_ext.lila`, which ``import torch_ext`` imports.
This module knows no model class of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import torch
from torch import nn

from .._safetensors import read_safetensors
from .calibrate import _set_module
from .layer import LeechQuantizedLinear, is_conv1d

__all__ = ["save_quantized", "load_quantized", "register_architecture", "QUANTIZED_FORMAT"]

#: ``checkpoint`` metadata value of files written by :func:`save_quantized`
QUANTIZED_FORMAT = "torch_ext.quantized/1"

#: metadata key -> (model class, rebuild from the stored config dict)
_ARCHITECTURES: dict[str, tuple[type, Callable[[dict], nn.Module], str]] = {}
_RESERVED = ("format", "checkpoint", "quantized_layers")


def register_architecture(key: str, cls: type, build: Callable[[dict], nn.Module], *,
                          name: str | None = None) -> None:
    """Let quantized files of ``cls`` models carry their config and rebuild themselves.

    :func:`save_quantized` stores ``model.config.to_dict()`` of a ``cls`` instance
    under the metadata key ``key``; :func:`load_quantized` without ``model=`` calls
    ``build(config_dict)`` (which must raise ``TypeError``/``ValueError`` on a bad
    config) to get the float model to load into.

    Parameters
    ----------
    key : str
        Metadata key of the stored config (reserved for it from now on).
    cls : type
        An ``nn.Module`` subclass whose instances have ``config.to_dict()``.
    build : callable
        ``dict -> nn.Module``.
    name : str, optional
        What the config is called in error messages (default ``"<class name> config"``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize.io import register_architecture
    >>> class Mlp(nn.Sequential):
    ...     pass
    >>> register_architecture("mlp_config", Mlp, lambda d: Mlp(nn.Linear(d["n"], 2)))
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty str, got {key!r}")
    if key in _RESERVED:
        raise ValueError(f"key {key!r} is reserved")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be a torch.nn.Module subclass, got {cls!r}")
    if not callable(build):
        raise TypeError(f"build must be callable, got {type(build).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _ARCHITECTURES[key] = (cls, build, name or f"{cls.__name__} config")


def save_quantized(model: nn.Module, path, metadata: dict | None = None) -> None:
    """Write a quantized model to one safetensors file (no pickle).

    The state dict (packed codes, scales, gains, and every other tensor) plus JSON
    metadata: the config of each quantized layer (rotation seeds included) and,
    for a model of a registered architecture (:func:`register_architecture`; a
    :class:`~torch_ext.LilaTransformer`), the model config, so that
    :func:`load_quantized` can rebuild it.  ``metadata`` adds more entries (a
    str is stored as is, anything else as JSON; the reserved keys ``format``,
    ``checkpoint``, ``quantized_layers`` and the architectures' keys, such as
    ``lila_config``, are refused).

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from torch import nn
    >>> from torch_ext.quantize import quantize_model, save_quantized, load_quantized
    >>> net = quantize_model(nn.Sequential(nn.Linear(24, 4)), method="rtn")
    >>> path = os.path.join(tempfile.mkdtemp(), "q.safetensors")
    >>> save_quantized(net, path)
    >>> net2 = load_quantized(path, model=nn.Sequential(nn.Linear(24, 4)))
    >>> x = torch.randn(2, 24)
    >>> torch.equal(net(x), net2(x))
    True
    """
    from safetensors.torch import save_file

    layers = {n: m.config for n, m in model.named_modules() if isinstance(m, LeechQuantizedLinear)}
    state = {}
    seen: dict = {}
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        state[k] = t.clone() if key in seen else t
        seen[key] = k
    meta = {"format": "pt", "checkpoint": QUANTIZED_FORMAT, "quantized_layers": json.dumps(layers)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or k in meta or k in _ARCHITECTURES:
            raise ValueError(f"metadata key {k!r} is reserved or not a str")
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    cfg = getattr(model, "config", None)
    for key, (cls, _, _) in _ARCHITECTURES.items():
        if isinstance(model, cls) and callable(getattr(cfg, "to_dict", None)):
            meta[key] = json.dumps(cfg.to_dict())
            break
    save_file(state, os.fspath(path), metadata=meta)


def load_quantized(path, model: nn.Module | None = None, map_location="cpu", *,
                   cache: bool | None = None) -> nn.Module:
    """Rebuild a model written by :func:`save_quantized`.

    Parameters
    ----------
    path : str or Path
    model : torch.nn.Module, optional
        A float model of the same architecture to load into (its ``nn.Linear``
        layers named in the file are replaced).  Default: rebuild the model from
        the config stored by a registered architecture (:func:`register_architecture`;
        a :class:`~torch_ext.LilaTransformer`).
    map_location : str or torch.device
    cache : bool or None
        The layers' ``cache`` (:class:`~torch_ext.quantize.LeechQuantizedLinear`):
        ``False`` keeps only the codes while the model runs (the methods with a
        table decode multiply from the packed codes on the CPU); ``None`` (default)
        the method's default (codes only for ``"leech-trio"``).

    Raises
    ------
    ValueError
        Not a quantized checkpoint, a mismatch with ``model``, codes beyond the
        codebook, or non-finite values (messages name the layer or tensor).
    """
    if cache is not None and not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool or None, got {type(cache).__name__}")
    p = os.fspath(path)
    meta, tensors = read_safetensors(p, what="quantized checkpoint")
    if meta.get("checkpoint") != QUANTIZED_FORMAT or "quantized_layers" not in meta:
        raise ValueError(f"{p} is not a quantized checkpoint (format {meta.get('checkpoint')!r})")
    try:
        layers = json.loads(meta["quantized_layers"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: quantized layer metadata is not valid JSON: {exc}") from None
    if model is None:
        key = next((k for k in _ARCHITECTURES if k in meta), None)
        if key is None:
            known = " or ".join(v[2] for v in _ARCHITECTURES.values()) or "model config"
            raise ValueError(f"{p} holds no {known}: pass model= (a float model of the same "
                             "architecture)")
        _, build, what = _ARCHITECTURES[key]
        try:
            model = build(json.loads(meta[key]))
        except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{p}: invalid stored {what}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, cfg in layers.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{p}: quantized layer {name!r} is not in the model") from None
        if is_conv1d(old):
            shape = (old.nx, old.nf)
        elif isinstance(old, (nn.Linear, LeechQuantizedLinear)):
            shape = (old.in_features, old.out_features)
        else:
            raise ValueError(f"{p}: {name!r} is a {type(old).__name__}, not a linear layer")
        if shape != (cfg.get("in_features"), cfg.get("out_features")):
            raise ValueError(f"{p}: layer {name!r} is {shape[1]}x{shape[0]} in the "
                             f"model but {cfg.get('out_features')}x{cfg.get('in_features')} in the file")
        _set_module(model, name, LeechQuantizedLinear.from_config(cfg, name=name, cache=cache))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{p} does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape) or v.dtype != expected[k].dtype:
            raise ValueError(f"{p}: tensor {k!r} is {v.dtype} {tuple(v.shape)}, expected "
                             f"{expected[k].dtype} {tuple(expected[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{p}: tensor {k!r} contains NaN or inf")
    model.load_state_dict(tensors, strict=True)
    for m in model.modules():
        if isinstance(m, LeechQuantizedLinear):
            m.validate()
    return model.to(map_location)
