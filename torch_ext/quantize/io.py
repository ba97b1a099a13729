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

from .._safetensors import read_safetensors, read_safetensors_header
from .calibrate import _set_module
from .layer import LeechQuantizedLinear, _check_config, is_conv1d, layer_checksum

__all__ = ["save_quantized", "load_quantized", "register_architecture", "QUANTIZED_FORMAT"]

#: ``checkpoint`` metadata value of files written by :func:`save_quantized`
QUANTIZED_FORMAT = "torch_ext.quantized/1"

#: metadata key -> (model class, rebuild from the stored config dict, its name in messages)
_ARCHITECTURES: dict[str, tuple[type, Callable[[dict], nn.Module], str]] = {}
#: metadata key -> check(config dict, {name: (shape, bytes per element)}, file size), called
#: before the model is built (see register_architecture)
_CHECKS: dict[str, Callable[[dict, dict, int], None]] = {}
_RESERVED = ("format", "checkpoint", "quantized_layers", "quantized_aliases", "quantized_checksums",
             "tied_tensors")


def register_architecture(key: str, cls: type, build: Callable[[dict], nn.Module], *,
                          name: str | None = None,
                          check: Callable[[dict, dict, int], None] | None = None) -> None:
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
    check : callable, optional
        ``check(config_dict, shapes, file_size)``, called before anything is built:
        ``shapes`` maps each tensor of the file to ``(shape, bytes per element)``
        (from its header; a quantized layer ``L`` also appears as ``L.weight`` of
        the float shape its config gives), ``file_size`` is in bytes.  It raises
        ``ValueError`` for a config the file's tensors do not bear out, so that a
        crafted config cannot make the build allocate more than the file implies.
        Without it, the build on the meta device still allocates no parameter,
        but tensors the build makes from data (a frozen kernel) are real.

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
    if check is not None and not callable(check):
        raise TypeError(f"check must be callable, got {type(check).__name__}")
    _ARCHITECTURES[key] = (cls, build, name or f"{cls.__name__} config")
    if check is not None:
        _CHECKS[key] = check
    else:
        _CHECKS.pop(key, None)


def _layer_tensors(module: LeechQuantizedLinear) -> dict:
    """The state-dict tensors of a quantized layer, by their local names."""
    return dict(module.state_dict())


def _aliases(model: nn.Module) -> tuple[dict, dict]:
    """``({name: layer}, {alias: name})`` of the quantized layers of ``model``.

    A layer used at several places (one module reached by several names) is named
    by its first name; each other name is an alias of it.
    """
    first: dict[int, str] = {}
    layers: dict[str, LeechQuantizedLinear] = {}
    aliases: dict[str, str] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if not isinstance(m, LeechQuantizedLinear):
            continue
        if id(m) in first:
            if n != first[id(m)]:
                aliases[n] = first[id(m)]
        else:
            first[id(m)] = n
            layers[n] = m
    return layers, aliases


def save_quantized(model: nn.Module, path, metadata: dict | None = None) -> None:
    """Write a quantized model to one safetensors file (no pickle).

    The state dict (packed codes, scales, gains, and every other tensor) plus JSON
    metadata: the config of each quantized layer (rotation seeds included), a
    CRC-32 of each quantized layer (config and tensors, checked on load), the
    other names of a layer used at several places (stored once) and, for a model
    of a registered architecture (:func:`register_architecture`; a
    :class:`~torch_ext.LilaTransformer`), the model config, so that
    :func:`load_quantized` can rebuild it.  ``metadata`` adds more entries (a
    str is stored as is, anything else as JSON; the reserved keys ``format``,
    ``checkpoint``, ``quantized_layers``, ``quantized_aliases``,
    ``quantized_checksums`` and the architectures' keys, such as
    ``lila_config``, are refused).

    Raises
    ------
    ValueError
        What :func:`load_quantized` would refuse: a tensor with NaN or inf, a
        quantized layer whose scales or gains are not finite or whose
        dequantized weight is beyond float32 (messages name the tensor or
        layer).  Nothing is written then.

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

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules, aliases = _aliases(model)
    for m in modules.values():  # what load_quantized would refuse, refused before writing
        lbl = m.name or m.method
        for what, t in (("scales", m.scales), ("gains", m.gains)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"layer {lbl!r}: {what} contain NaN or inf: not saved (the file "
                                 "would not load)")
        m.check_finite()
    dropped = {f"{a}.{k}" for a in aliases for k in _layer_tensors(modules[aliases[a]])}
    state = {}
    seen: dict = {}
    tied: dict[str, str] = {}
    for k, v in model.state_dict().items():
        if k in dropped:  # a layer used twice is stored once
            continue
        t = v.detach().to("cpu").contiguous()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"tensor {k!r} contains NaN or inf: not saved (the file would not load)")
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if key in seen:  # a tied tensor (an output head sharing the token embedding): stored once
            tied[k] = seen[key]
            continue
        state[k] = t
        seen[key] = k
    layers = {n: m.config for n, m in modules.items()}
    sums = {n: layer_checksum(layers[n], _layer_tensors(m)) for n, m in modules.items()}
    meta = {"format": "pt", "checkpoint": QUANTIZED_FORMAT, "quantized_layers": json.dumps(layers),
            "quantized_checksums": json.dumps(sums)}
    if aliases:
        meta["quantized_aliases"] = json.dumps(aliases)
    if tied:
        meta["tied_tensors"] = json.dumps(tied)
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or k in meta or k in _RESERVED or k in _ARCHITECTURES:
            raise ValueError(f"metadata key {k!r} is reserved or not a str")
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    cfg = getattr(model, "config", None)
    for key, (cls, _, _) in _ARCHITECTURES.items():
        if isinstance(model, cls) and callable(getattr(cfg, "to_dict", None)):
            meta[key] = json.dumps(cfg.to_dict())
            break
    save_file(state, os.fspath(path), metadata=meta)


def _json_field(meta: dict, key: str, p: str, what: str):
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{p}: {what} ({key!r}) is not valid JSON: {exc}") from None


def _read_metadata(meta: dict, p: str) -> tuple[dict, dict, dict | None]:
    """The layer configs, aliases and checksums of a quantized file, every field checked."""
    if meta.get("checkpoint") != QUANTIZED_FORMAT:
        raise ValueError(f"{p} is not a quantized checkpoint: its 'checkpoint' metadata is "
                         f"{meta.get('checkpoint')!r}, not {QUANTIZED_FORMAT!r}")
    if "quantized_layers" not in meta:
        raise ValueError(f"{p} is not a complete quantized checkpoint: the 'quantized_layers' "
                         "metadata field is missing")
    layers = _json_field(meta, "quantized_layers", p, "the quantized layer metadata")
    if not isinstance(layers, dict):
        raise ValueError(f"{p}: 'quantized_layers' must be a JSON object (layer name -> config), "
                         f"got {type(layers).__name__}")
    for n, cfg in layers.items():
        if not n:
            raise ValueError(f"{p}: 'quantized_layers' has an empty layer name")
        try:
            _check_config(cfg)
        except ValueError as exc:
            raise ValueError(f"{p}: layer {n!r}: {exc}") from None
    aliases = {}
    if "quantized_aliases" in meta:
        aliases = _json_field(meta, "quantized_aliases", p, "the shared layer metadata")
        if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
            raise ValueError(f"{p}: 'quantized_aliases' must be a JSON object of layer names")
        for a, n in aliases.items():
            if n not in layers or a in layers or not a:
                raise ValueError(f"{p}: 'quantized_aliases' maps {a!r} to {n!r}, which is not one "
                                 "of the other quantized layers")
    sums = None
    if "quantized_checksums" in meta:
        sums = _json_field(meta, "quantized_checksums", p, "the checksums")
        if (not isinstance(sums, dict) or set(sums) != set(layers)
                or not all(isinstance(v, str) for v in sums.values())):
            raise ValueError(f"{p}: 'quantized_checksums' must be a JSON object with one checksum "
                             "string per quantized layer")
    return layers, aliases, sums


def _check_stored(key: str, stored, layers: dict, shapes: dict, file_size: int, p: str, what: str) -> None:
    """Run the registered check of a stored config before the build."""
    check = _CHECKS.get(key)
    if check is None:
        return
    if not isinstance(stored, dict):
        raise ValueError(f"{p}: invalid stored {what}: it must be a JSON object, got "
                         f"{type(stored).__name__}")
    view = dict(shapes)
    for n, cfg in layers.items():
        view.setdefault(f"{n}.weight", ((cfg["out_features"], cfg["in_features"]), 1))
    try:
        check(stored, view, file_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: invalid stored {what}: {exc}") from None


def _replace_layers(model: nn.Module, layers: dict, aliases: dict, p: str, cache, device) -> None:
    for name, cfg in layers.items():
        old = _linear_at(model, name, p)
        if isinstance(old, LeechQuantizedLinear):
            shape = (old.in_features, old.out_features)
        elif is_conv1d(old):
            shape = (old.nx, old.nf)
        else:
            shape = (old.in_features, old.out_features)
        if shape != (cfg["in_features"], cfg["out_features"]):
            raise ValueError(f"{p}: layer {name!r} is {shape[1]}x{shape[0]} in the "
                             f"model but {cfg['out_features']}x{cfg['in_features']} in the file")
        try:
            new = LeechQuantizedLinear.from_config(cfg, name=name, cache=cache, device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: layer {name!r}: {exc}") from None
        _set_module(model, name, new)
        for a, n in aliases.items():
            if n == name:
                _linear_at(model, a, p, also=new)
                _set_module(model, a, new)


def _linear_at(model: nn.Module, name: str, p: str, also=None) -> nn.Module:
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{p}: quantized layer {name!r} is not in the model") from None
    if m is also or isinstance(m, (nn.Linear, LeechQuantizedLinear)) or is_conv1d(m):
        return m
    raise ValueError(f"{p}: {name!r} is a {type(m).__name__}, not a linear layer")


def _read_tied(meta: dict, shapes: dict, p: str) -> dict[str, str]:
    """``{name: stored name}`` of the tied tensors that the file stores once (checked)."""
    if "tied_tensors" not in meta:
        return {}
    tied = _json_field(meta, "tied_tensors", p, "the tied tensor metadata")
    if not isinstance(tied, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in tied.items()):
        raise ValueError(f"{p}: 'tied_tensors' must be a JSON object of tensor names")
    for k, v in tied.items():
        if v not in shapes:
            raise ValueError(f"{p}: 'tied_tensors' ties {k!r} to {v!r}, which the file does not hold")
        if k in shapes:
            raise ValueError(f"{p}: 'tied_tensors' ties {k!r}, which the file also stores")
    return tied


def _fill_aliases(tensors: dict, aliases: dict, model: nn.Module) -> dict:
    """The file's tensors, with those of each alias of a shared layer (stored once) added."""
    out = dict(tensors)
    for a, n in aliases.items():
        for k in _layer_tensors(model.get_submodule(n)):
            if f"{n}.{k}" in out:
                out.setdefault(f"{a}.{k}", out[f"{n}.{k}"])
    return out


def _check_shapes(model: nn.Module, shapes: dict, aliases: dict, p: str) -> dict:
    """The model's state dict against the file's header (names and shapes), before any allocation."""
    expected = model.state_dict(keep_vars=True)
    have = dict(shapes)
    for a, n in aliases.items():
        for k in _layer_tensors(model.get_submodule(n)):
            if f"{n}.{k}" in have:
                have.setdefault(f"{a}.{k}", have[f"{n}.{k}"])
    missing = sorted(set(expected) - set(have))
    unexpected = sorted(set(have) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{p} does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for k, t in expected.items():
        if tuple(have[k][0]) != tuple(t.shape):
            raise ValueError(f"{p}: tensor {k!r} has shape {tuple(have[k][0])}, expected "
                             f"{tuple(t.shape)}")
    return expected


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

    Notes
    -----
    Checked in this order, each before the next step allocates anything: the
    metadata (every field of every layer config type-checked), each layer config
    against the shape of its packed codes in the file's header, a stored model
    config against the header (the registered architecture's check, run before
    the build), the model's state dict (names and shapes, on the meta device)
    against the header; then, the tensors read, their dtypes, NaN and inf, each
    layer's CRC-32 (files written before checksums existed have none and load
    without), the codes' range and the finiteness of each dequantized weight in
    float32.  A float tensor stored in another float dtype than the model's
    (a model saved in float16 or bfloat16) is loaded in the file's dtype.

    Raises
    ------
    ValueError
        Not a quantized checkpoint, bad metadata (naming the field), a mismatch
        with ``model`` or with the stored config, codes beyond the codebook, a
        checksum mismatch, non-finite values (messages name the layer or tensor).
    """
    if cache is not None and not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool or None, got {type(cache).__name__}")
    p = os.fspath(path)
    meta, shapes = read_safetensors_header(p, what="quantized checkpoint")
    file_size = os.path.getsize(p)
    layers, aliases, sums = _read_metadata(meta, p)
    tied = _read_tied(meta, shapes, p)
    for k, src in tied.items():
        shapes[k] = shapes[src]
    for name, cfg in layers.items():  # each config against its codes, nothing built
        try:
            want = LeechQuantizedLinear.stored_shapes(cfg)
        except ValueError as exc:
            raise ValueError(f"{p}: layer {name!r}: {exc}") from None
        got = shapes.get(f"{name}.packed")
        if got is None:
            raise ValueError(f"{p}: quantized layer {name!r} has no tensor {name + '.packed'!r}")
        if tuple(got[0]) != want["packed"]:
            raise ValueError(f"{p}: quantized layer {name!r}: its config ({cfg['out_features']}x"
                             f"{cfg['in_features']}, {cfg['method']}) needs packed codes of shape "
                             f"{want['packed']}, the file has {tuple(got[0])}")
    on_meta = False
    if model is None:
        key = next((k for k in _ARCHITECTURES if k in meta), None)
        if key is None:
            known = " or ".join(v[2] for v in _ARCHITECTURES.values()) or "model config"
            raise ValueError(f"{p} holds no {known}: pass model= (a float model of the same "
                             "architecture)")
        _, build, what = _ARCHITECTURES[key]
        stored = _json_field(meta, key, p, f"stored {what}")
        _check_stored(key, stored, layers, shapes, file_size, p, what)
        model, usable = _build_on_meta(build, stored)
        if model is not None:  # names and shapes checked on the meta device
            _replace_layers(model, layers, aliases, p, cache, "meta")
            _check_shapes(model, shapes, aliases, p)
        on_meta = usable
        if not usable:  # the ordinary build (it raises its own errors)
            try:
                model = build(stored)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{p}: invalid stored {what}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not on_meta:
        _replace_layers(model, layers, aliases, p, cache, None)
    expected = _check_shapes(model, shapes, aliases, p)
    _, tensors = read_safetensors(p, what="quantized checkpoint")
    for k, src in tied.items():
        tensors[k] = tensors[src]
    tensors = _fill_aliases(tensors, aliases, model)
    owned = {f"{n}.{k}" for n in layers for k in ("packed", "scales", "gains")}
    for k, v in tensors.items():
        e = expected[k]
        if tuple(v.shape) != tuple(e.shape) or (v.dtype != e.dtype and not (
                k not in owned and v.is_floating_point() and e.is_floating_point())):
            raise ValueError(f"{p}: tensor {k!r} is {v.dtype} {tuple(v.shape)}, expected "
                             f"{e.dtype} {tuple(e.shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{p}: tensor {k!r} contains NaN or inf")
    if sums is not None:
        for n, cfg in layers.items():
            local = {k: tensors[f"{n}.{k}"] for k in _layer_tensors(model.get_submodule(n))}
            if layer_checksum(cfg, local) != sums[n]:
                raise ValueError(f"{p}: quantized layer {n!r} fails its checksum (its codes, scales, "
                                 "gains, bias or config, rotation seeds included, are not those "
                                 "saved): the file is corrupt")
    if on_meta:
        _materialize(model, tensors)
    _adopt_dtypes(model, tensors)
    model.load_state_dict(tensors, strict=True)
    for m in model.modules():
        if isinstance(m, LeechQuantizedLinear):
            m.validate()
    return model.to(map_location)


def _build_on_meta(build: Callable[[dict], nn.Module], config: dict) -> tuple[nn.Module | None, bool]:
    """``build(config)`` under ``torch.device("meta")``, and whether the model can be loaded as is.

    ``(None, False)`` when the build fails there (whatever the error: the caller
    builds again, off the meta device, and that build raises its own) or returns
    no module.  ``(model, False)`` when it leaves a tensor on the meta device that
    is not in the state dict (a non-persistent buffer or a plain tensor attribute
    made by a torch factory function: no file can fill it); the model still
    serves to check the file's names and shapes before the ordinary build.
    Tensors the build makes from data (``torch.from_numpy``, or with an explicit
    device) stay real.
    """
    try:
        with torch.device("meta"), _MetaInit():
            model = build(config)
    except Exception:  # any failure: the caller builds again, off the meta device
        return None, False
    if not isinstance(model, nn.Module):
        return None, False
    stored = {id(t) for t in model.state_dict(keep_vars=True).values()}
    for m in model.modules():
        for t in (*m._parameters.values(), *m._buffers.values(), *vars(m).values()):
            if isinstance(t, torch.Tensor) and t.is_meta and id(t) not in stored:
                return model, False
    return model, True


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


def _materialize(model: nn.Module, tensors: dict | None = None) -> None:
    """Give each parameter and buffer left on the meta device an empty CPU tensor (ties kept).

    Called on a model built by :func:`_build_on_meta` once its quantized layers are in
    place: what is left on the meta device is in the state dict, which the file fills.
    With ``tensors`` (the file's, by state-dict name), a floating tensor takes the
    dtype it has in the file.
    """
    dtypes = _file_dtypes(model, tensors or {})
    new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (meta tensor, its replacement)
    for m in model.modules():
        for slots in (m._parameters, m._buffers):
            for k, t in slots.items():
                if t is None or not t.is_meta:
                    continue
                if id(t) not in new:
                    e = torch.empty_like(t, device="cpu", dtype=dtypes.get(id(t), t.dtype))
                    if isinstance(t, nn.Parameter):
                        e = nn.Parameter(e, requires_grad=t.requires_grad)
                    new[id(t)] = (t, e)
                slots[k] = new[id(t)][1]


def _file_dtypes(model: nn.Module, tensors: dict) -> dict:
    """``{id(tensor): dtype}``: the model's floating tensors stored in another floating dtype."""
    out = {}
    for prefix, m in model.named_modules(remove_duplicate=False):
        for slots in (m._parameters, m._buffers):
            for k, t in slots.items():
                v = tensors.get(f"{prefix}.{k}" if prefix else k)
                if (t is not None and v is not None and t.is_floating_point()
                        and v.is_floating_point() and v.dtype != t.dtype):
                    out[id(t)] = v.dtype
    return out


def _adopt_dtypes(model: nn.Module, tensors: dict) -> None:
    """Convert each floating parameter or buffer to the dtype the file stores it in (ties kept)."""
    dtypes = _file_dtypes(model, tensors)
    if not dtypes:
        return
    new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (old tensor, kept alive; new)
    for m in model.modules():
        for slots in (m._parameters, m._buffers):
            for k, t in slots.items():
                if t is None or (id(t) not in dtypes) or (id(t) in new and new[id(t)][1] is t):
                    continue
                if id(t) not in new:
                    e = t.detach().to(dtypes[id(t)])
                    if isinstance(t, nn.Parameter):
                        e = nn.Parameter(e, requires_grad=t.requires_grad)
                    new[id(t)] = (t, e)
                slots[k] = new[id(t)][1]
        if isinstance(m, LeechQuantizedLinear):
            m.clear_cache()
