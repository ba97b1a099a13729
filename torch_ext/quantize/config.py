"""The settings of a quantization run: :class:`QuantizeConfig`, validated once.

:func:`~torch_ext.quantize.quantize_model`,
:meth:`LeechQuantizedLinear.from_linear <torch_ext.quantize.LeechQuantizedLinear.from_linear>`
and :func:`~torch_ext.quantize.quantize_matrix` take one :class:`QuantizeConfig`
for *how* to quantize; what they quantize (the model, the calibration data, a layer
and its second moment, a matrix) and how to run (``workers``, ``cache``, a
``callback``) stay arguments of the call.  The settings can still be given as
keywords, as before (:func:`resolve_config` builds the config from them).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import torch

from .._validation import check_int
from .codecs import Codec, check_method, get_codec
from .rotation import check_rotation

__all__ = ["QuantizeConfig", "FEEDBACKS", "SCALE_DTYPES", "resolve_config"]

#: error feedback modes (``QuantizeConfig.feedback``; ``None`` picks one, see there)
FEEDBACKS = ("none", "ldlq")
#: storage dtypes of the scales, by the name :meth:`QuantizeConfig.to_dict` writes
SCALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def scale_dtype_name(dtype) -> str:
    """The name of a scale dtype (``"float16"``...); ``ValueError`` for any other dtype."""
    for k, v in SCALE_DTYPES.items():
        if v == dtype:
            return k
    raise ValueError(f"scale_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {dtype!r}")


def check_group(group, block: int):
    """``group`` checked for a codec of block length ``block``: ``"row"``, ``"tensor"`` or an int."""
    if isinstance(group, str):
        if group not in ("row", "tensor"):
            raise ValueError(f"group must be 'row', 'tensor' or a positive int, got {group!r}")
        return group
    if isinstance(group, bool) or not isinstance(group, numbers.Integral):
        raise TypeError(f"group must be 'row', 'tensor' or a positive int, got {type(group).__name__}")
    g = int(group)
    if g < 1 or g % block:
        raise ValueError(f"group must be a positive multiple of the block length {block}, got {g}")
    return g


#: output heads and poolers of ``transformers`` models: left in float unless asked
DEFAULT_SKIP = ("lm_head", "*pooler.*", "classifier", "*classifier.*", "score", "qa_outputs", "cls.*")


def _check_skip(skip) -> tuple[str, ...]:
    if isinstance(skip, str):
        return (skip,)
    try:
        out = tuple(skip)
    except TypeError:
        raise TypeError("skip must be an iterable of str patterns") from None
    if not all(isinstance(p, str) for p in out):
        raise TypeError("skip must be an iterable of str patterns")
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """How to quantize: method, bits, scales, rotation, calibration (frozen, validated).

    One value for a whole run: every setting of
    :func:`~torch_ext.quantize.quantize_model` and
    :meth:`LeechQuantizedLinear.from_linear
    <torch_ext.quantize.LeechQuantizedLinear.from_linear>`, checked once when the
    config is made (``dataclasses.replace`` checks the new one again).  Keywords
    only.  The defaults are those of ``quantize_model``; ``from_linear`` called
    with keywords instead of a config keeps its own (``rotation="none"``,
    ``feedback="none"``).

    Parameters
    ----------
    method : str
        One of :data:`~torch_ext.quantize.METHODS` (``"leech-shape-gain"``,
        ``"leech-ball"``, ``"e8"``, ``"rtn"``, or a registered codec).
    bits : float
        Bits per weight of the codes (an int 1-8 for ``"rtn"``).  Scales come on top.
    group : "row", "tensor" or int
        One scale per output row, one per layer, or one per ``group`` inputs of a
        row (a multiple of the method's block length: 24, 8 for E8, 1 for RTN).
    rotation : {"hadamard", "hadamard-both", "none"}
        Incoherence rotation of each layer (:mod:`torch_ext.quantize.rotation`).
    feedback : {"ldlq", "none"} or None
        Error feedback across the input dimension
        (:mod:`torch_ext.quantize.feedback`).  ``None``: ``"ldlq"`` when there is
        calibration (``data``, ``hessian``, ``H``), ``"none"`` without.
    seed : int
        Seed of the rotations (each layer's is derived from it and its name).
    damp : float
        Relative damping of the second moments, in ``[0, 1e6)`` (times their mean
        diagonal), raised ten-fold while a factorization fails.
    act_order : bool
        With feedback, encode the column blocks in decreasing order of input energy.
    scale_iters : int
        Least-squares refits of the scales, 0 to 100.
    scale_dtype : torch.dtype
        float16, bfloat16 or float32.
    max_points : int, optional
        Blocks used to fit each codebook (default: the method's own, 4000 or 20000).
    skip : str or iterable of str
        ``fnmatch`` patterns of module names that ``quantize_model`` leaves in float
        (stored as a tuple), matched against the full dotted name and its last part.
        The default, :data:`DEFAULT_SKIP`, leaves the output heads and poolers of
        ``transformers`` models in float: ``lm_head``, ``*pooler.*`` (BERT's pooler,
        which embedders never use), ``classifier``, ``*classifier.*``, ``score``,
        ``qa_outputs`` and ``cls.*`` (BERT's pre-training heads).

    Raises
    ------
    TypeError
        A setting of the wrong kind (``bits`` for RTN, ``group``, ``seed``,
        ``act_order``, ``scale_iters``, ``max_points``, ``skip``).
    ValueError
        A setting of the right kind with a bad value; the message names it.

    See Also
    --------
    resolve_config : the config of a call given keywords (the older convention).

    Notes
    -----
    Not in the config, because they are what a call works on or how it runs:
    ``model``, ``data``, ``callback`` (``quantize_model``), ``linear``,
    ``hessian``, ``name`` (``from_linear``), ``W``, ``H`` (``quantize_matrix``),
    and ``workers`` and ``cache`` (all three; they do not change the codes).
    ``rotation``, ``seed`` and ``skip`` concern layers and models:
    ``quantize_matrix`` quantizes the matrix it is given, in its basis.

    Examples
    --------
    >>> import dataclasses, torch
    >>> from torch import nn
    >>> from torch_ext.quantize import QuantizeConfig, quantize_model
    >>> cfg = QuantizeConfig(method="rtn", bits=3, rotation="none")
    >>> cfg
    QuantizeConfig(method='rtn', bits=3, group='row', rotation='none', feedback=None, seed=0,
                   damp=0.01, act_order=False, scale_iters=1, scale_dtype=torch.float16,
                   max_points=None, skip=('lm_head', '*pooler.*', 'classifier', '*classifier.*',
                   'score', 'qa_outputs', 'cls.*'))
    >>> net = quantize_model(nn.Sequential(nn.Linear(24, 4)), cfg)
    >>> net[0].method, net[0].bits, net[0].packed.shape      # 24 codes of 3 bits a row
    ('rtn', 3, torch.Size([4, 9]))
    >>> dataclasses.replace(cfg, group=8).group
    8
    >>> QuantizeConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> QuantizeConfig(damp=-1)
    Traceback (most recent call last):
        ...
    ValueError: damp must be a number in [0, 1e6), got -1
    >>> QuantizeConfig(method="leech-ball", group=16)
    Traceback (most recent call last):
        ...
    ValueError: group must be a positive multiple of the block length 24, got 16
    """

    method: str = "leech-shape-gain"
    bits: float = 2
    group: str | int = "row"
    rotation: str = "hadamard"
    feedback: str | None = None
    seed: int = 0
    damp: float = 0.01
    act_order: bool = False
    scale_iters: int = 1
    scale_dtype: torch.dtype = torch.float16
    max_points: int | None = None
    skip: tuple[str, ...] = DEFAULT_SKIP

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        check_method(self.method)
        codec = get_codec(self.method, self.bits)  # checks bits
        put("group", check_group(self.group, codec.block))
        check_rotation(self.rotation)
        if self.feedback is not None and self.feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {self.feedback!r}")
        put("seed", check_int(self.seed, "seed", 0))
        d = self.damp
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0 <= d < 1e6:
            raise ValueError(f"damp must be a number in [0, 1e6), got {d!r}")
        put("damp", float(d))
        if not isinstance(self.act_order, bool):
            raise TypeError(f"act_order must be a bool, got {type(self.act_order).__name__}")
        put("scale_iters", check_int(self.scale_iters, "scale_iters", 0, 100))
        scale_dtype_name(self.scale_dtype)
        if self.max_points is not None:
            put("max_points", check_int(self.max_points, "max_points", 1))
        put("skip", _check_skip(self.skip))

    def codec(self) -> Codec:
        """The codec of ``method`` at ``bits`` (:mod:`torch_ext.quantize.codecs`), a new one."""
        return get_codec(self.method, self.bits)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (``scale_dtype`` by name, ``skip`` a list).

        :meth:`from_dict` reads it back, e.g. from a file's metadata.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["scale_dtype"] = scale_dtype_name(self.scale_dtype)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantizeConfig:
        """A config from :meth:`to_dict`'s dict (missing keys take their defaults).

        Raises
        ------
        TypeError
            ``d`` is not a mapping.
        ValueError
            An unknown key, or a bad setting (as the constructor).
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a mapping (a dict from QuantizeConfig.to_dict), got "
                            f"{type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names, key=str)
        if unknown:
            raise ValueError(f"d has keys that are not QuantizeConfig fields: {unknown}")
        kw = dict(d)
        dt = kw.get("scale_dtype")
        if isinstance(dt, str):
            if dt not in SCALE_DTYPES:
                raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {dt!r}")
            kw["scale_dtype"] = SCALE_DTYPES[dt]
        return cls(**kw)


_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizeConfig))


def resolve_config(config, args=(), settings: Mapping | None = None, *, caller: str,
                   positional: tuple[str, ...] = (), accepted=None,
                   defaults: Mapping | None = None) -> QuantizeConfig:
    """The :class:`QuantizeConfig` of a call that takes a config or, as before, keywords.

    Parameters
    ----------
    config : QuantizeConfig or None or a legacy positional setting
        A config is used as it is.  Anything else but ``None`` is the first of the
        call's legacy positional settings (``bits`` of ``quantize_model(model, 2)``).
    args : tuple
        The further positional arguments of the call (legacy: ``method``...).
    settings : mapping
        The setting keywords of the call.
    caller : str
        The function's name, for the messages.
    positional : tuple of str
        The names of the legacy positional settings, in order.
    accepted : iterable of str, optional
        The setting keywords the call takes (default: every field).
    defaults : mapping, optional
        The call's own defaults where they differ from the config's.

    Raises
    ------
    TypeError
        A config and a setting keyword together (the message names the keyword),
        a config and more positional arguments, an unknown keyword, a setting
        given twice, too many positional arguments, or a dict as ``config``.

    Examples
    --------
    >>> from torch_ext.quantize.config import QuantizeConfig, resolve_config
    >>> resolve_config(2, ("rtn",), {"group": 8}, caller="f", positional=("bits", "method")).group
    8
    >>> resolve_config(QuantizeConfig(), (), {"damp": 0.1}, caller="f")
    Traceback (most recent call last):
        ...
    TypeError: f() got both a QuantizeConfig and damp=: set it in the config, dataclasses.replace(config, damp=...)
    """
    settings = dict(settings or {})
    allowed = set(_FIELDS if accepted is None else accepted)
    for k in settings:
        if k not in allowed:
            raise TypeError(f"{caller}() got an unexpected keyword argument {k!r}")
    if isinstance(config, QuantizeConfig):
        if args:
            raise TypeError(f"{caller}() got a QuantizeConfig and {len(args)} more positional "
                            "argument(s): give every setting in the config")
        for k in settings:
            raise TypeError(f"{caller}() got both a QuantizeConfig and {k}=: set it in the config, "
                            f"dataclasses.replace(config, {k}=...)")
        return config
    if isinstance(config, Mapping):
        raise TypeError(f"config must be a QuantizeConfig (QuantizeConfig.from_dict for a dict), got "
                        f"{type(config).__name__}")
    values = () if config is None and not args else (config, *args)
    if len(values) > len(positional):
        raise TypeError(f"{caller}() takes a config or at most {len(positional)} positional settings "
                        f"({', '.join(positional)}), got {len(values)} positional arguments")
    kw = dict(defaults or {})
    for name, v in zip(positional, values, strict=False):
        if name in settings:
            raise TypeError(f"{caller}() got multiple values for argument {name!r}")
        kw[name] = v
    kw.update(settings)
    return QuantizeConfig(**kw)
