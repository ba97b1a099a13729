"""The quantized layer of :mod:`torch_ext.quantize`: :class:`LeechQuantizedLinear`."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leechlib.kernels import packed_matmul, packed_weight

from .._validation import check_int
from ..ops.codebook import pack_bits, unpack_bits
from ._cuda_packed import layer_codes_forward_cuda, layer_weight_cuda
from .codecs import check_method, get_codec
from .config import SCALE_DTYPES, QuantizeConfig, resolve_config, scale_dtype_name
from .rotation import ROTATIONS, LayerRotation, check_rotation, layer_seeds, plan_rotation
from .scales import BlockLayout, quantize_matrix

__all__ = ["LeechQuantizedLinear", "layer_checksum"]

#: the largest float32: a dequantized weight beyond it is refused (it would be inf)
_F32_MAX = float(torch.finfo(torch.float32).max)
#: the keys of a layer config (``LeechQuantizedLinear.config``): required, then optional
_REQUIRED = ("in_features", "out_features", "bias", "method", "bits", "group", "scale_dtype")
_OPTIONAL = ("params", "rotation", "rotation_seeds", "code_bits", "codebook_size")

_ROW_CHUNK = 4096  # rows dequantized at once
#: the settings from_linear takes as keywords (all but skip), first the positional ones
_LINEAR_SETTINGS = ("method", "bits", "group", "scale_iters", "scale_dtype", "max_points",
                    "rotation", "seed", "feedback", "damp", "act_order")
#: from_linear's defaults where they differ from QuantizeConfig's (calls without a config)
_LINEAR_DEFAULTS = {"rotation": "none", "feedback": "none"}


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------


def is_conv1d(module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (GPT-2's linear layer, weight ``(in, out)``)."""
    w = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(w, Tensor) and w.ndim == 2
            and tuple(w.shape) == (getattr(module, "nx", None), getattr(module, "nf", None)))


def as_linear(module) -> nn.Linear:
    """``module`` itself if it is an ``nn.Linear``; a ``Conv1D`` as an ``nn.Linear`` view.

    The view shares the ``Conv1D``'s tensors (its weight transposed), so it costs no copy.
    """
    if isinstance(module, nn.Linear):
        return module
    if is_conv1d(module):
        lin = nn.Linear(module.nx, module.nf, bias=module.bias is not None, device="meta")
        lin.weight = nn.Parameter(module.weight.detach().T, requires_grad=False)
        if module.bias is not None:
            lin.bias = module.bias
        return lin
    raise TypeError(f"linear must be a torch.nn.Linear (or a transformers Conv1D), got "
                    f"{type(module).__name__}")


def resolve_cache(cache, codec) -> bool:
    """The ``cache`` setting of a layer: ``None`` is the codec's default."""
    if cache is None:
        return bool(codec.caches_by_default)
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool or None, got {type(cache).__name__}")
    return cache


class LeechQuantizedLinear(nn.Module):
    r"""A linear layer whose weight is stored as lattice codes and scales.

    ``y = x W_hat^T + b`` with ``W_hat`` the dequantized weight (:meth:`dequantize`).
    The stored weight ``W'`` is cut row by row into blocks (24 weights for the Leech
    methods, 8 for E8, 1 for RTN), and block ``j`` of row ``r`` is
    ``scale[r, group(j)] * decode(code[r, j])``.  Without rotation ``W_hat = W'``;
    with ``rotation="hadamard"`` (``"hadamard-both"``) ``W'`` is the weight in a
    rotated basis, ``W' = T_out W T_inᵀ`` (see :mod:`torch_ext.quantize.rotation`):
    the forward pass applies the fast transform ``T_in`` to the inputs and
    ``T_outᵀ`` to the outputs (then adds the bias), and :meth:`dequantize` returns
    ``T_outᵀ W' T_in``, the weight in the original basis.  See
    :mod:`torch_ext.quantize` for the methods, padding and the scale fit.

    Build one with :meth:`from_linear` (quantizes an ``nn.Linear``) or
    :func:`quantize_model`; the constructor makes an empty layer of the right shape
    (all codes 0, scales 1), e.g. to load a state dict into.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    method : {"leech-shape-gain", "leech-ball", "e8", "rtn"}
    bits : float
        Bits per weight of the codes (an int 1-8 for ``"rtn"``).
    group : "row", "tensor" or int
        One scale per output row, one for the layer, or one per ``group`` inputs of
        a row (a multiple of the block length).
    scale_dtype : torch.dtype
        float16 (default), bfloat16 or float32.
    params : dict, optional
        Codebook parameters (``max_norm``; ``shells`` and ``gain_levels``), as stored
        in :attr:`config`; default: those leechlib chooses for ``bits``.
    cache : bool or None
        ``True``: keep the dequantized weight of each device after the first forward
        (fast; the layer then holds a dense float weight too).  ``False``: hold only
        the codes while running: on the CPU, the methods whose codes decode by table
        lookups (``"leech-trio"``, ``"e8"``, ``"rtn"``) compute ``x W^T`` straight
        from the packed codes (:func:`leechlib.kernels.packed_matmul`, no weight is
        ever materialised) for inputs of at most :attr:`codes_max_rows` rows; the
        others, larger inputs, every other device and a forward that needs
        gradients for ``x`` decode the weight for that forward only.  ``None``
        (default): ``False`` for ``"leech-trio"``, the code built to run from its
        codes, ``True`` for the other methods (their decode is too slow to repeat
        at every forward).
    name : str
        Name used in error messages (set by :func:`quantize_model`).
    rotation : {"none", "hadamard", "hadamard-both"}
        The basis of the stored weight (see above).
    rotation_seeds : (int, int), optional
        Seeds of the input and output transforms (default: derived from seed 0 and
        ``name`` by :func:`~torch_ext.quantize.rotation.layer_seeds`).
    device : torch.device, optional
        Where the buffers are created.

    Attributes
    ----------
    packed : torch.Tensor
        ``uint8 (out_features, bytes per row)``: the codes, ``code_bits`` each,
        least significant bit first, row by row (buffer).
    scales : torch.Tensor
        ``(out_features, groups)`` or ``(1, 1)`` (buffer).
    gains : torch.Tensor
        Gain levels, ``"leech-shape-gain"`` only (buffer).
    rotation : LayerRotation
        The transforms (``rotation.kind`` is the rotation's name).
    stats : dict
        After :meth:`from_linear`: ``mse`` (weight MSE), ``seconds``, ``rotation``,
        ``feedback``, and with feedback ``damp`` (the relative damping used),
        ``damp_raised`` (ten-fold raises needed to factor ``H``), ``dead_inputs``;
        ``notes``, a list of what did not go as asked (a rotation that fell back,
        a raised damping).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import LeechQuantizedLinear
    >>> torch.manual_seed(0) and None
    >>> lin = nn.Linear(50, 3)                         # 50 = 2 blocks of 24 + 2: padded
    >>> q = LeechQuantizedLinear.from_linear(lin, "leech-ball", max_points=64)
    >>> q
    LeechQuantizedLinear(in_features=50, out_features=3, bias=True, method='leech-ball', bits=2, group='row',
    bits_per_weight=3.2)
    >>> q.packed.shape, q.packed.dtype, q.codes().shape   # 3 blocks x 48 bits = 18 bytes
    (torch.Size([3, 18]), torch.uint8, torch.Size([3, 3]))
    >>> w = q.dequantize()
    >>> x = torch.randn(4, 50)
    >>> torch.equal(q(x), torch.nn.functional.linear(x, w, q.bias))
    True
    >>> q.bits_report()["bits_per_weight"]                # (3*18*8 + 3*16) / 150
    3.2
    """

    #: inputs of at most this many rows (tokens) multiply from the packed codes when
    #: ``cache`` is False; larger ones decode the weight once for the forward and
    #: multiply densely (faster: the decode is amortised over the rows)
    codes_max_rows = 4

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 method: str = "leech-shape-gain", bits=2, group="row",
                 scale_dtype: torch.dtype = torch.float16, params: dict | None = None,
                 cache: bool | None = None, name: str = "", rotation: str = "none",
                 rotation_seeds=None, device=None):
        super().__init__()
        in_features = check_int(in_features, "in_features", 1)
        out_features = check_int(out_features, "out_features", 1)
        self.codec = get_codec(method, bits, params)
        self.layout = BlockLayout(out_features, in_features, self.codec.block, group)
        self.group = self.layout.group
        scale_dtype_name(scale_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.method, self.bits = self.codec.name, bits
        if rotation_seeds is None:
            rotation_seeds = layer_seeds(0, str(name))
        self.rotation = LayerRotation(check_rotation(rotation), in_features, out_features,
                                      rotation_seeds)
        L = self.layout
        nbytes = -(-L.nblocks * self.codec.code_bits // 8)
        self.register_buffer("packed", torch.zeros((out_features, nbytes), dtype=torch.uint8,
                                                   device=device))
        self.register_buffer("scales", torch.ones(L.scale_shape, dtype=scale_dtype, device=device))
        gains = self.codec.initial_gains(device)
        if gains is not None:
            self.register_buffer("gains", gains)
        else:
            self.gains = None
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device))
        else:
            self.register_parameter("bias", None)
        self.cache = resolve_cache(cache, self.codec)
        self.name = str(name)
        self.stats: dict = {}
        self._cache: dict = {}
        self._packed_state = None  # (buffer stamp, numpy views and float32 scales) of the codes path

    # ------------------------------------------------------------ building
    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantizeConfig | None = None, *args,
                    hessian: Tensor | None = None, name: str = "", workers: int | None = -1,
                    cache: bool | None = None, overwrite_hessian: bool = False,
                    **settings) -> LeechQuantizedLinear:
        """Quantize an ``nn.Linear`` (its weight and bias are copied, not modified).

        Parameters
        ----------
        linear : torch.nn.Linear
            (or a Hugging Face ``Conv1D``, GPT-2's transposed linear layer).
        config : QuantizeConfig, optional
            How to quantize (method, bits, group, scales, rotation, seed, feedback,
            damping, act-order; its ``skip`` is not used here).  ``feedback=None``:
            ``"ldlq"`` with ``hessian``, ``"none"`` without.
        hessian : torch.Tensor, optional
            ``(in_features, in_features)`` second moment of the inputs (in the
            original basis), damped by ``config.damp``: weights the scale refit (see
            the module docstring) and drives the feedback.
        overwrite_hessian : bool, optional
            Allow the rotation to overwrite ``hessian`` (a contiguous float64 CPU
            tensor then holds the rotated moment afterwards): two ``n x n`` arrays
            less while the layer is quantized.  Default ``False``.
        name : str
            Used in error messages, and with ``config.seed`` to derive the layer's
            rotation seeds.
        workers : int, optional
            Threads of the Leech encoders (-1: all cores).
        cache : bool or None
            As in the constructor.
        *args, **settings
            Instead of a config, as before: ``method`` and ``bits`` (also
            positional, in that order), ``group``, ``scale_iters``,
            ``scale_dtype``, ``max_points``, ``rotation``, ``seed``, ``feedback``,
            ``damp``, ``act_order`` as keywords (see :class:`~torch_ext.quantize.QuantizeConfig`),
            with this method's own defaults ``rotation="none"`` and
            ``feedback="none"``.  With a config, a setting keyword is a
            ``TypeError``.

        Notes
        -----
        The rotation: a side whose size has an odd part above
        :data:`~torch_ext.quantize.hadamard.MAX_ODD` is not rotated; ``stats["notes"]`` says
        so.  Act-order (with feedback): the column blocks are quantized in
        decreasing order of their inputs' energy (diagonal of the rotated
        ``hessian``; GPTQ's act-order at the codec's block length) instead of left
        to right; the stored codes keep the column order, so the layer and its file
        are unchanged.  The weight itself is quantized by :func:`~torch_ext.quantize.quantize_matrix`.

        Raises
        ------
        ValueError
            If the weight holds NaN or inf (the message names the layer),
            ``feedback="ldlq"`` without ``hessian``, or a bad setting.
        TypeError
            ``linear`` is not a linear layer; a config and a setting keyword
            together (naming the keyword); a setting of the wrong kind.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> from torch_ext.quantize import LeechQuantizedLinear, QuantizeConfig
        >>> lin = nn.Linear(48, 8)
        >>> cfg = QuantizeConfig(method="e8", rotation="none", max_points=64)
        >>> q = LeechQuantizedLinear.from_linear(lin, cfg, name="fc")
        >>> q2 = LeechQuantizedLinear.from_linear(lin, "e8", max_points=64, name="fc")  # keywords
        >>> torch.equal(q.packed, q2.packed) and torch.equal(q.scales, q2.scales)
        True
        """
        linear = as_linear(linear)
        config = resolve_config(config, args, settings, caller="from_linear",
                                positional=("method", "bits"), accepted=_LINEAR_SETTINGS,
                                defaults=_LINEAR_DEFAULTS)
        feedback = config.feedback
        if feedback is None:
            feedback = "ldlq" if hessian is not None else "none"
        if feedback == "ldlq" and hessian is None:
            raise ValueError("feedback='ldlq' needs hessian (the second moment of the inputs)")
        label = name or "the linear layer"
        w = linear.weight.detach()
        if w.is_meta:
            raise ValueError(f"layer {label!r}: the weight is on the meta device (no values to "
                             "quantize); load the model's weights first")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"layer {label!r}: weight contains NaN or inf")
        kind, note = plan_rotation(config.rotation, linear.in_features, linear.out_features)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    method=config.method, bits=config.bits, group=config.group,
                    scale_dtype=config.scale_dtype, cache=cache, name=name, rotation=kind,
                    rotation_seeds=layer_seeds(config.seed, str(name)))
        H = None
        if hessian is not None:
            H = torch.as_tensor(hessian).detach().to("cpu", torch.float64)
            if tuple(H.shape) != (linear.in_features,) * 2 or not bool(torch.isfinite(H).all()):
                raise ValueError(f"layer {label!r}: hessian must be a finite "
                                 f"({linear.in_features}, {linear.in_features}) matrix")
            H = layer.rotation.rotate_hessian(H, overwrite=bool(overwrite_hessian)).numpy()
        t0 = time.perf_counter()
        w64 = layer.rotation.rotate_weight(w.to("cpu", torch.float64)).numpy()
        if config.feedback != feedback:
            config = dataclasses.replace(config, feedback=feedback)
        fallback = None
        try:
            res = quantize_matrix(w64, config, H=H, workers=workers)
        except np.linalg.LinAlgError as exc:  # H did not factor at any damping tried
            fallback = f"feedback: {exc}; quantized without feedback"
            res = quantize_matrix(w64, dataclasses.replace(config, feedback="none"), H=H,
                                  workers=workers)
        dev = w.device
        codes = torch.from_numpy(res.codes)
        layer.packed = pack_bits(codes, layer.codec.code_bits).to(dev)
        layer.scales = torch.from_numpy(res.scales).to(res.scale_dtype).to(dev)
        if res.gains is not None:
            layer.gains = torch.from_numpy(res.gains).to(torch.float32).to(dev)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone(),
                                      requires_grad=linear.bias.requires_grad)
        notes = [x for x in (note, fallback) if x is not None]
        stats = {"mse": res.mse, "seconds": time.perf_counter() - t0, "rotation": kind,
                 "feedback": feedback if fallback is None else "none"}
        info = res.feedback_info
        if info is not None:
            stats.update(damp=info.damp, damp_raised=info.raised, dead_inputs=info.dead,
                         act_order=config.act_order)
            if info.raised:
                notes.append(f"feedback: H did not factor with damping {config.damp:g}; raised "
                             f"{info.raised} time(s) ten-fold to {info.damp:g}")
        stats["notes"] = notes
        layer.stats = stats
        return layer

    # ------------------------------------------------------------ decoding
    @property
    def config(self) -> dict:
        """JSON-able description (enough to rebuild an empty layer of this shape)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "method": self.method, "bits": self.bits,
                "group": self.group, "scale_dtype": scale_dtype_name(self.scales.dtype),
                "params": self.codec.params, "code_bits": self.codec.code_bits,
                "codebook_size": self.codec.size, **self.rotation.to_config()}

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> LeechQuantizedLinear:
        """An empty layer from :attr:`config` (``ValueError`` naming the field if it is bad).

        A config without ``rotation`` (files written before rotations existed) is
        ``rotation="none"``.  Every field is type-checked as read from JSON: ints
        are ints (not bools, floats or strings), ``bias`` a bool, ``scale_dtype``
        one of the names of ``SCALE_DTYPES``, ``params`` an object, the rotation
        seeds two non-negative ints.
        """
        cfg = _check_config(config)
        try:
            layer = cls(cfg["in_features"], cfg["out_features"], cfg["bias"],
                        method=cfg["method"], bits=cfg["bits"], group=cfg["group"],
                        scale_dtype=SCALE_DTYPES[cfg["scale_dtype"]],
                        params=cfg.get("params"), rotation=cfg.get("rotation", "none"),
                        rotation_seeds=cfg.get("rotation_seeds", (0, 0)), **kwargs)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            msg = str(exc) if not isinstance(exc, (KeyError, IndexError)) else f"{exc!r}"
            raise ValueError(f"quantized layer config: {msg}") from None
        for k in ("code_bits", "codebook_size"):
            mine = layer.config[k]
            if k in cfg and cfg[k] != mine:
                raise ValueError(f"quantized layer config: {k} {cfg[k]} does not match the "
                                 f"codebook ({mine})")
        if cfg.get("params") is not None and cfg["params"] != layer.codec.params:
            raise ValueError(f"quantized layer config: params {cfg['params']} do not match the "
                             f"codebook of {cfg['method']} at bits={cfg['bits']!r} ({layer.codec.params})")
        return layer

    @staticmethod
    def stored_shapes(config: dict) -> dict:
        """``{"packed": shape, "scales": shape}`` of a layer of this config, allocating nothing.

        ``config`` is checked as :meth:`from_config` checks it; the codec is built
        (cheap: its tables are not), not the layer, so that a file's shapes can be
        compared with a config before the layer is made.
        """
        cfg = _check_config(config)
        try:
            codec = get_codec(cfg["method"], cfg["bits"], cfg.get("params"))
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            msg = str(exc) if not isinstance(exc, (KeyError, IndexError)) else f"{exc!r}"
            raise ValueError(f"quantized layer config: {msg}") from None
        out, inf = cfg["out_features"], cfg["in_features"]
        nblocks = -(-inf // codec.block)
        return {"packed": (out, -(-nblocks * codec.code_bits // 8))}

    def codes(self) -> Tensor:
        """The codes, int64 ``(out_features, blocks per row)`` (``ValueError`` if out of range)."""
        c = unpack_bits(self.packed, self.layout.nblocks, self.codec.code_bits)
        if c.numel() and int(c.max()) >= self.codec.size:
            bad = int(c.max())
            raise ValueError(f"layer {self.name or self.method!r}: code {bad} is beyond the "
                             f"codebook ({self.codec.size} codewords)")
        return c

    def validate(self) -> None:
        """Check shapes, code range and scales (``ValueError`` naming the layer)."""
        lbl = self.name or self.method
        L = self.layout
        nbytes = -(-L.nblocks * self.codec.code_bits // 8)
        if self.packed.dtype != torch.uint8 or tuple(self.packed.shape) != (self.out_features, nbytes):
            raise ValueError(f"layer {lbl!r}: packed codes must be uint8 of shape "
                             f"{(self.out_features, nbytes)}, got {self.packed.dtype} "
                             f"{tuple(self.packed.shape)}")
        if tuple(self.scales.shape) != L.scale_shape:
            raise ValueError(f"layer {lbl!r}: scales must have shape {L.scale_shape}, got "
                             f"{tuple(self.scales.shape)}")
        if not bool(torch.isfinite(self.scales).all()):
            raise ValueError(f"layer {lbl!r}: scales contain NaN or inf")
        if self.gains is not None and not bool(torch.isfinite(self.gains).all()):
            raise ValueError(f"layer {lbl!r}: gains contain NaN or inf")
        self.codes()
        self.check_finite()

    @torch.no_grad()
    def check_finite(self) -> None:
        """Refuse a dequantized weight beyond float32 (finite scales and gains whose product is not).

        Cheap in the ordinary case: the bound ``max|scale| * max|codeword entry|``
        (the codec's :meth:`~torch_ext.quantize.codecs.Codec.max_abs`, which
        includes the gains; times ``sqrt(in_features * out_features)`` for a
        rotated layer, the most an orthogonal change of basis can grow an entry)
        is compared with the largest float32; only when it is beyond it (or the
        codec has no bound) is the weight decoded, in float64, and checked
        exactly.

        Raises
        ------
        ValueError
            The weight (stored, or rotated back) has an entry beyond float32;
            the message names the layer.
        """
        lbl = self.name or self.method
        s = float(self.scales.detach().abs().max()) if self.scales.numel() else 0.0
        c = self.codec.max_abs(self.gains)
        grow = math.sqrt(self.in_features * self.out_features) if self.rotation.active else 1.0
        if c is not None and math.isfinite(s * c * grow) and s * c * grow <= _F32_MAX:
            return
        w = self._stored_weight(torch.float64)
        big = float(w.abs().max()) if w.numel() else 0.0
        if self.rotation.active and math.isfinite(big) and big <= _F32_MAX:
            w = self.rotation.unrotate_weight(w)
            big = float(w.abs().max()) if w.numel() else 0.0
        if not (math.isfinite(big) and big <= _F32_MAX):
            gains = "" if self.gains is None else f", largest |gain| {float(self.gains.abs().max()):g}"
            raise ValueError(f"layer {lbl!r}: the dequantized weight is not finite in float32 "
                             f"(largest |scale| {s:g}{gains}): corrupt scales or gains")

    def _check_input(self, x) -> None:
        """The same checks of ``x`` with and without rotation (``TypeError``/``ValueError``)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension {self.in_features}, got shape "
                             f"{tuple(x.shape)}")

    @torch.no_grad()
    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight ``(out_features, in_features)`` from codes and scales (torch ops only).

        In the original basis: with a rotation, the stored weight rotated back
        (``T_outᵀ W' T_in``), so that ``F.linear(x, dequantize(), bias)`` is the layer's
        output up to rounding.  Computed in float64 (float32 on devices without it)
        on the device of the buffers, then cast to ``dtype``.
        """
        if not self.rotation.active:
            return self._stored_weight(dtype)
        work = torch.float64 if self.packed.device.type in ("cpu", "cuda") else torch.float32
        return self.rotation.unrotate_weight(self._stored_weight(work)).to(dtype)

    @torch.no_grad()
    def _stored_weight(self, dtype: torch.dtype) -> Tensor:
        """The stored (rotated) weight ``W'`` from codes and scales."""
        dev = self.packed.device
        if dev.type == "cuda" and (w := layer_weight_cuda(self, dtype)) is not None:
            return w
        if dev.type == "cpu" and dtype in (torch.float32, torch.float64):
            spec = self._packed_spec()
            if spec is not None and spec[3].dequantize:  # the codec's faster way on the CPU
                packed, scales, group, spec = spec
                try:
                    w = packed_weight(packed, scales, group, codebook=spec.codebook, table=spec.table,
                                      width=spec.width,  # one rounding of the exact product
                                      dtype=np.float32 if dtype == torch.float32 else np.float64)
                    return torch.from_numpy(w[:, : self.in_features]).to(dtype)
                except ImportError:  # no Numba here: the torch decode below
                    pass
        work = torch.float64 if dev.type in ("cpu", "cuda") else torch.float32
        L, codec = self.layout, self.codec
        codes = self.codes()
        out = torch.empty((self.out_features, self.in_features), dtype=dtype, device=dev)
        S = self.scales.to(work)
        gains = None if self.gains is None else self.gains.to(work)
        bg = torch.from_numpy(L.block_group).to(dev)
        for a in range(0, self.out_features, _ROW_CHUNK):
            c = codes[a:a + _ROW_CHUNK]
            U = codec.decode_torch(c.reshape(-1), gains, work).reshape(c.shape[0], L.nblocks,
                                                                        codec.block)
            s = S.expand(c.shape[0], L.nblocks) if L.tensor else S[a:a + _ROW_CHUNK][:, bg]
            w = (U * s.unsqueeze(-1)).reshape(c.shape[0], L.padded)[:, : self.in_features]
            out[a:a + c.shape[0]] = w.to(dtype)
        return out

    def _packed_spec(self):
        """``(packed, scales, group, Packed)`` numpy views for leechlib's packed-code kernels, or None.

        The scales are float32 with the codec's ``post`` factor folded in (one per
        row and group; ``group="tensor"`` repeats its one scale per row).
        """
        if self.packed.device.type != "cpu":
            return None
        stamp = tuple((t.data_ptr(), t._version) for t in (self.packed, self.scales, self.gains)
                      if t is not None)
        hit = self._packed_state
        if hit is not None and hit[0] == stamp:
            return hit[1]
        spec = self.codec.packed(self.gains)
        if spec is None:
            return None
        L = self.layout
        S = self.scales.detach().to(torch.float32)
        if L.tensor:
            S = S.expand(self.out_features, 1)
            group = np.zeros(L.nblocks, dtype=np.int64)
        else:
            group = np.ascontiguousarray(L.block_group, dtype=np.int64)
        if spec.post != 1.0:
            S = S * spec.post
        scales = np.ascontiguousarray(S.numpy(), dtype=np.float32)
        out = (np.ascontiguousarray(self.packed.detach().numpy()), scales, group, spec)
        self._packed_state = (stamp, out)  # small: the scales (one per row and group) and views
        return out

    def _codes_forward(self, x: Tensor) -> Tensor | None:
        """``x W'^T`` from the packed codes (CPU: table-decodable methods; CUDA: the trio code), or None.

        None (the caller decodes the weight) for float64 input (the kernel accumulates
        in float32), off the CPU, when ``x`` needs a gradient, and for more than
        :attr:`codes_max_rows` rows (decoding once and multiplying densely is faster).
        """
        if x.is_cuda:  # the trio code on CUDA: leechlib's Numba CUDA kernel (None: decode the weight)
            return layer_codes_forward_cuda(self, x)
        if (x.device.type != "cpu" or x.dtype == torch.float64
                or (torch.is_grad_enabled() and x.requires_grad)
                or x.numel() > self.codes_max_rows * self.in_features):
            return None
        spec = self._packed_spec()
        if spec is None:
            return None
        packed, scales, group, spec = spec
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.float32)
        pad = self.layout.padded - self.in_features
        if pad:
            x2 = F.pad(x2, (0, pad))
        x2 = np.ascontiguousarray(x2.numpy())
        try:
            y = packed_matmul(x2, packed, scales, group, codebook=spec.codebook, table=spec.table,
                              width=spec.width, workers=torch.get_num_threads())
        except ImportError:  # no Numba here: the caller decodes the weight with torch
            return None
        return torch.from_numpy(y).reshape(lead + (self.out_features,))

    def _weight(self, device, dtype) -> Tensor:
        if not self.cache:
            return self._stored_weight(dtype)
        stamp = tuple((t.data_ptr(), t._version) for t in (self.packed, self.scales, self.gains)
                      if t is not None)
        key = (str(device), dtype)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        w = self._stored_weight(dtype)
        self._cache[key] = (stamp, w)
        return w

    def clear_cache(self) -> None:
        """Drop the cached dequantized weights."""
        self._cache.clear()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        dt = x.dtype
        b = None if self.bias is None else self.bias.to(dt)
        if not self.cache:
            xin = self.rotation.inputs(x.to(dt)) if self.rotation.active else x
            y = self._codes_forward(xin)
            if y is not None:
                y = self.rotation.outputs(y.to(dt)) if self.rotation.active else y.to(dt)
                return y if b is None else y + b
        w = self._weight(self.packed.device, dt)
        if not self.rotation.active:
            return F.linear(x, w, b)
        y = self.rotation.outputs(F.linear(self.rotation.inputs(x.to(dt)), w))
        return y if b is None else y + b

    def _apply(self, fn, recurse=True):
        self._cache.clear()
        self._packed_state = None
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------ reporting
    def bits_report(self) -> dict:
        """Stored bits: ``weights``, ``code_bits``, ``scale_bits``, ``gain_bits``, ``bits_per_weight``.

        ``bits_per_weight`` is all of them divided by ``in_features * out_features``
        (padding stored, not counted as weights).
        """
        n = self.in_features * self.out_features
        code = self.packed.numel() * 8
        scale = self.scales.numel() * self.scales.element_size() * 8
        gain = 0 if self.gains is None else self.gains.numel() * self.gains.element_size() * 8
        return {"weights": n, "padded_weights": self.out_features * self.layout.padded,
                "code_bits": code, "scale_bits": scale, "gain_bits": gain,
                "total_bits": code + scale + gain,
                "bits_per_weight": round((code + scale + gain) / n, 6)}

    @property
    def quantizer(self):
        """The leechlib quantizer of the normalised blocks (scale 1; ``None`` for RTN).

        Without rotation, ``dequantize()`` equals ``scale * quantizer.decode(code)``
        block by block (with one, the stored weight does).
        """
        return self.codec.quantizer(None if self.gains is None else self.gains.cpu().numpy())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, method={self.method!r}, bits={self.bits!r}, "
                f"group={self.group!r}, bits_per_weight={self.bits_report()['bits_per_weight']:.4g}"
                + (f", rotation={self.rotation.kind!r}" if self.rotation.active else ""))


def _check_config(config) -> dict:
    """A layer config (parsed JSON) with every field of the right type; ``ValueError`` naming it."""
    if not isinstance(config, dict):
        raise ValueError(f"quantized layer config must be a JSON object, got {type(config).__name__}")
    for k in _REQUIRED:
        if k not in config:
            raise ValueError(f"quantized layer config lacks {k!r}")

    def bad(k, want):
        return ValueError(f"quantized layer config: {k} must be {want}, got {config[k]!r}")

    for k in ("in_features", "out_features"):
        v = config[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(k, "a positive int")
    for k in ("code_bits", "codebook_size"):
        v = config.get(k)
        if k in config and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise bad(k, "a positive int")
    if not isinstance(config["bias"], bool):
        raise bad("bias", "true or false")
    try:
        check_method(config["method"])
    except ValueError as exc:
        raise ValueError(f"quantized layer config: {exc}") from None
    b = config["bits"]
    if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b):
        raise bad("bits", "a finite number")
    g = config["group"]
    if not (g in ("row", "tensor") or (isinstance(g, int) and not isinstance(g, bool) and g >= 1)):
        raise bad("group", "'row', 'tensor' or a positive int")
    if not isinstance(config["scale_dtype"], str) or config["scale_dtype"] not in SCALE_DTYPES:
        raise ValueError(f"quantized layer config: unknown scale_dtype {config['scale_dtype']!r}: "
                         f"must be one of {tuple(SCALE_DTYPES)}")
    p = config.get("params")
    if p is not None:
        if not isinstance(p, dict):
            raise bad("params", "a JSON object or null")
        for k, v in p.items():
            vals = v if isinstance(v, list) else [v]
            if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62
                                   for x in vals):
                raise ValueError(f"quantized layer config: params[{k!r}] must be a non-negative int "
                                 f"or a non-empty list of them, got {v!r}")
    r = config.get("rotation", "none")
    if not isinstance(r, str) or r not in ROTATIONS:
        raise ValueError(f"quantized layer config: rotation must be one of {ROTATIONS}, got {r!r}")
    if "rotation_seeds" in config:
        seeds = config["rotation_seeds"]
        if (not isinstance(seeds, (list, tuple)) or len(seeds) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 63
                           for x in seeds)):
            raise bad("rotation_seeds", "two non-negative ints")
    return config


def layer_checksum(config: dict, tensors: dict) -> str:
    """CRC-32 of a quantized layer: its config (rotation seeds included) and its tensors.

    ``tensors`` maps the layer's state-dict names (``packed``, ``scales``, ``gains``,
    ``bias``) to tensors; each is hashed with its name, dtype and shape.  Written
    by :func:`~torch_ext.quantize.save_quantized`, checked by
    :func:`~torch_ext.quantize.load_quantized`: a flipped byte or swapped seeds
    are caught (an integrity check against corruption, not a signature).
    """
    crc = zlib.crc32(json.dumps(config, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        crc = zlib.crc32(f"{k}:{t.dtype}:{tuple(t.shape)}".encode(), crc)
        if t.numel():
            crc = zlib.crc32(t.contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"crc32:{crc:08x}"
