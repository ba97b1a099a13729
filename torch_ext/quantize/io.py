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
from torch.overrides import TorchFunctionMode

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
    config) to get the model to load into.  It calls it under
    ``torch.device("meta")`` first, so that the layers it replaces never hold a
    float weight (see :func:`load_quantized`); a build that fails there, or that
    leaves a tensor on the meta device which the file cannot fill (a
    non-persistent buffer made by a torch factory function), is called again
    normally.

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
        a :class:`~torch_ext.LilaTransformer`).  The model is then built on the
        meta device (see :func:`register_architecture`): the layers that the file
        replaces never allocate a float weight, and only the other tensors
        (embeddings, norms, float layers) are allocated, then loaded from the file,
        so the memory used while loading is about that of the quantized model.
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
    on_meta = False
    if model is None:
        key = next((k for k in _ARCHITECTURES if k in meta), None)
        if key is None:
            known = " or ".join(v[2] for v in _ARCHITECTURES.values()) or "model config"
            raise ValueError(f"{p} holds no {known}: pass model= (a float model of the same "
                             "architecture)")
        _, build, what = _ARCHITECTURES[key]
        try:
            stored = json.loads(meta[key])
        except ValueError as exc:  # json.JSONDecodeError
            raise ValueError(f"{p}: invalid stored {what}: {exc}") from None
        model = _build_on_meta(build, stored)
        on_meta = model is not None
        if model is None:  # the ordinary build (it raises its own errors)
            try:
                model = build(stored)
            except (TypeError, ValueError) as exc:
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
    if on_meta:
        _materialize(model)
    model.load_state_dict(tensors, strict=True)
    for m in model.modules():
        if isinstance(m, LeechQuantizedLinear):
            m.validate()
    return model.to(map_location)


def _build_on_meta(build: Callable[[dict], nn.Module], config: dict) -> nn.Module | None:
    """``build(config)`` under ``torch.device("meta")``, or None where that cannot serve.

    None when the build fails there (whatever the error: the ordinary build then
    decides, and raises its own), returns no module, or leaves a tensor on the meta
    device that is not in the state dict (a non-persistent buffer or a plain tensor
    attribute made by a torch factory function: no file can fill it).  Tensors the
    build makes from data (``torch.from_numpy``, or with an explicit device) stay real.
    """
    try:
        with torch.device("meta"), _MetaInit():
            model = build(config)
    except Exception:  # any failure: the caller builds again, off the meta device
        return None
    if not isinstance(model, nn.Module):
        return None
    stored = {id(t) for t in model.state_dict(keep_vars=True).values()}
    for m in model.modules():
        for t in (*m._parameters.values(), *m._buffers.values(), *vars(m).values()):
            if isinstance(t, torch.Tensor) and t.is_meta and id(t) not in stored:
                return None
    return model


#: value-only initializers: on a meta tensor there is nothing for them to do
_INITIALIZERS = ("normal_", "uniform_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                 "sparse_", "fill_", "zero_", "random_", "bernoulli_", "exponential_", "geometric_",
                 "log_normal_", "cauchy_")


class _MetaInit(TorchFunctionMode):
    """While :func:`_build_on_meta` builds: an initializer applied to a meta tensor returns it as is.

    A meta tensor has no values to fill, and torch's meta kernel of ``normal_`` is
    Python: its first call imports some 800 modules (sympy among them, about 70 MB
    resident), more than the weights that the meta device saves in a small model.
    """

    _funcs = frozenset(f for name in _INITIALIZERS for f in (getattr(torch.nn.init, name, None),
                                                             getattr(torch.Tensor, name, None))
                       if f is not None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        t = args[0] if args else (kwargs or {}).get("tensor")
        if func in self._funcs and isinstance(t, torch.Tensor) and t.is_meta:
            return t
        return func(*args, **(kwargs or {}))


def _materialize(model: nn.Module) -> None:
    """Give each parameter and buffer left on the meta device an empty CPU tensor (ties kept).

    Called on a model built by :func:`_build_on_meta` once its quantized layers are in
    place: what is left on the meta device is in the state dict, which the file fills.
    """
    new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (meta tensor, its replacement)
    for m in model.modules():
        for slots in (m._parameters, m._buffers):
            for k, t in slots.items():
                if t is None or not t.is_meta:
                    continue
                if id(t) not in new:
                    e = torch.empty_like(t, device="cpu")
                    if isinstance(t, nn.Parameter):
                        e = nn.Parameter(e, requires_grad=t.requires_grad)
                    new[id(t)] = (t, e)
                slots[k] = new[id(t)][1]
