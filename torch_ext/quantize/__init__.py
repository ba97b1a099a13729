r"""Post-training weight quantization of PyTorch models with Leech lattice codebooks.

:func:`quantize_model` replaces the ``nn.Linear`` layers of a model by
:class:`LeechQuantizedLinear` layers that store, instead of the float weight,

* ``packed`` -- one code per block of consecutive weights along the input
  dimension, bit-packed row by row into ``uint8`` (least significant bit first);
* ``scales`` -- one scale per output row (``group="row"``, the default), per group
  of ``group`` inputs of a row, or one per layer (``group="tensor"``), in float16;
* ``gains`` -- the gain levels of the shape--gain codebook (float32, 3 values at
  2 bits), for ``method="leech-shape-gain"`` only;

and dequantize them with torch operations only (any device, no Numba): the code of
a block is unranked to its lattice point by a vectorised torch version of
:class:`~leechlib.BallCodebook` / :class:`~leechlib.ShellCodebook` ``point`` (the
same enumerative coding, checked bitwise against leechlib), multiplied by its
scale.  The dequantized weight is computed once, lazily, on the first forward on a
device, and cached (``cache=False`` dequantizes at every forward instead: no dense
copy of the weight is kept).

Methods (2 bits per weight, blocks along the input dimension)
-------------------------------------------------------------
``"leech-shape-gain"``
    :class:`~leechlib.quantizers.ShapeGainQuantizer`: a block of 24 weights is a
    direction of the norm-24 shell of :math:`\Lambda_{24}` times one of 3 gains;
    ``log2(70 486 236 999 360 * 3) = 47.58`` bits, stored in 48.
``"leech-ball"``
    :class:`~leechlib.quantizers.BallQuantizer`: the nearest of the 280 974 212 784 721
    lattice points of norm at most 26 (:class:`~leechlib.BallCodebook` index,
    47.997 bits, stored in 48).
``"e8"``
    :class:`~leechlib.baselines.E8Quantizer` on blocks of 8: the ball of the
    :math:`E_8` lattice of norm at most 10 (56 881 points, 15.8 bits, stored in 16).
``"rtn"``
    Round to nearest, uniform scalar: levels ``scale * (k - 1.5)``, ``k = 0..3``; the
    scale of each group is chosen for the **MSE** (not the absmax): a grid search of
    96 steps between 0.1 and 2 times the group's RMS, then the least-squares refit
    below.

Blocks, padding and scales
--------------------------
A row of ``in_features`` weights is cut into blocks of 24 (8 for ``"e8"``, 1 for
``"rtn"``); when ``in_features`` is not a multiple of the block, the row is padded
with zeros to the next multiple.  The encoder sees the zeros (the padded block is
coded as a whole); the decoded pad values are dropped.  Pad positions are not
weights, but their share of the codes is stored, so it is counted in the bits per
weight of :func:`model_bits_report`.

Scales are fitted for the mean squared error of the weights:

1. start from the RMS of each scale group (``s0``); the codebook is fitted once per
   layer to the normalised blocks ``w / s0`` (the ball and :math:`E_8` scale by
   golden-section search, the shape--gain levels by Lloyd--Max; on at most
   ``max_points`` evenly spaced blocks, by default 4000 for the ball, 20000 for
   shape--gain, 2000 for E8), and the scale becomes ``s0 * codebook scale``;
2. encode ``w / scale`` (exact nearest codeword);
3. ``scale_iters`` times: refit each scale by least squares for the codes found,
   ``s = <w, u> / <u, u>`` (``u`` the decoded normalised blocks), keep it where it
   lowers the error, and encode again with it, keeping the better code of each
   block.  Every step can only lower the error.

Scales are rounded to float16 before they are used for encoding, so the stored
layer reproduces exactly what was measured; a layer whose scales do not fit
float16 keeps them in float32 (and is charged 32 bits per scale).  A scale group
whose weights are all zero gets scale 0 (its weights dequantize to exactly 0).

With ``data`` (calibration inputs), the least-squares refit and the error it
minimises are weighted by the second moment ``H = E[x x^T]`` of each layer's
inputs: ``||W x - W_hat x||^2`` on average over the calibration tokens instead of
``||W - W_hat||^2``; the codes themselves are still the nearest codewords.

Storage and true bits
---------------------
:func:`model_bits_report` counts every stored bit: the packed codes (bytes, pad
blocks included), the scales (16 bits each), the gains (32 bits each), divided by
the number of real weights; and, for the whole model, every other tensor of the
state dict (embeddings, LayerNorms, biases) at its own dtype.  At 2 bits, a layer
with ``in_features = 96`` and row scales costs ``2 + 16 / 96 = 2.17`` bits per
weight.  In LILA models the embeddings (and the LM head, tied to the token
embedding) are ``nn.Embedding`` weights, not ``nn.Linear``: they stay in float;
the frozen Leech attention kernels are rebuilt from the config and are not stored
at all.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from torch_ext.quantize import quantize_model, model_bits_report
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4))
>>> x = torch.randn(5, 48)
>>> ref = net(x)
>>> _ = quantize_model(net, method="rtn")
>>> net[0]
LeechQuantizedLinear(in_features=48, out_features=32, bias=True, method='rtn', bits=2, group='row', bits_per_weight=2.333)
>>> net(x).shape
torch.Size([5, 4])
>>> round(model_bits_report(net).bits_per_quantized_weight, 3)
2.346
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import numbers
import os
import time
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ._unrank import pack_bits, unpack_bits
from .codecs import METHODS, check_method, get_codec
from .scales import _Layout, _quantize_array

__all__ = [
    "METHODS",
    "LeechQuantizedLinear",
    "quantize_model",
    "model_bits_report",
    "BitsReport",
    "save_quantized",
    "load_quantized",
    "QUANTIZED_FORMAT",
]

#: ``checkpoint`` metadata value of files written by :func:`save_quantized`
QUANTIZED_FORMAT = "torch_ext.quantized/1"

_SCALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_ROW_CHUNK = 4096  # rows dequantized at once


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------


def _dtype_name(dtype) -> str:
    for k, v in _SCALE_DTYPES.items():
        if v == dtype:
            return k
    raise ValueError(f"scale_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {dtype!r}")


def _check_group(group, block: int):
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


# ---------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------


class LeechQuantizedLinear(nn.Module):
    r"""A linear layer whose weight is stored as lattice codes and scales.

    ``y = x W_hat^T + b`` with ``W_hat`` the dequantized weight (:meth:`dequantize`):
    row ``r`` is cut into blocks (24 weights for the Leech methods, 8 for E8, 1 for
    RTN), and block ``j`` is ``scale[r, group(j)] * decode(code[r, j])``.  See
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
    cache : bool
        Keep the dequantized weight of each device after the first forward.
    name : str
        Name used in error messages (set by :func:`quantize_model`).
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
    stats : dict
        After :meth:`from_linear`: ``mse`` (weight MSE), ``seconds``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import LeechQuantizedLinear
    >>> torch.manual_seed(0) and None
    >>> lin = nn.Linear(50, 3)                         # 50 = 2 blocks of 24 + 2: padded
    >>> q = LeechQuantizedLinear.from_linear(lin, "leech-ball", max_points=64)
    >>> q
    LeechQuantizedLinear(in_features=50, out_features=3, bias=True, method='leech-ball', bits=2, group='row', bits_per_weight=3.2)
    >>> q.packed.shape, q.packed.dtype, q.codes().shape   # 3 blocks x 48 bits = 18 bytes
    (torch.Size([3, 18]), torch.uint8, torch.Size([3, 3]))
    >>> w = q.dequantize()
    >>> x = torch.randn(4, 50)
    >>> torch.equal(q(x), torch.nn.functional.linear(x, w, q.bias))
    True
    >>> q.bits_report()["bits_per_weight"]                # (3*18*8 + 3*16) / 150
    3.2
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 method: str = "leech-shape-gain", bits=2, group="row",
                 scale_dtype: torch.dtype = torch.float16, params: dict | None = None,
                 cache: bool = True, name: str = "", device=None):
        super().__init__()
        in_features = check_int(in_features, "in_features", 1)
        out_features = check_int(out_features, "out_features", 1)
        self.codec = get_codec(method, bits, params)
        self.group = _check_group(group, self.codec.block)
        _dtype_name(scale_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.method, self.bits = self.codec.name, bits
        self.layout = _Layout(out_features, in_features, self.codec.block, self.group)
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
        self.cache = bool(cache)
        self.name = str(name)
        self.stats: dict = {}
        self._cache: dict = {}

    # ------------------------------------------------------------ building
    @classmethod
    def from_linear(cls, linear: nn.Linear, method: str = "leech-shape-gain", bits=2, *,
                    group="row", scale_iters: int = 1, scale_dtype: torch.dtype = torch.float16,
                    max_points: int | None = None, workers: int | None = -1,
                    hessian: Tensor | None = None, cache: bool = True,
                    name: str = "") -> "LeechQuantizedLinear":
        """Quantize an ``nn.Linear`` (its weight and bias are copied, not modified).

        Parameters
        ----------
        linear : torch.nn.Linear
        method, bits, group, scale_dtype, cache, name
            As in the constructor.
        scale_iters : int
            Least-squares refits of the scales, each followed by a second encoding
            (0: the scales from the RMS and the codebook fit only).
        max_points : int, optional
            Blocks used to fit the codebook (default: leechlib's, 4000 or 20000).
        workers : int, optional
            Threads of the Leech encoders (-1: all cores).
        hessian : torch.Tensor, optional
            ``(in_features, in_features)`` second moment of the inputs: weights the
            scale refit (see the module docstring).

        Raises
        ------
        ValueError
            If the weight holds NaN or inf (the message names the layer), or for a bad
            argument.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        scale_iters = check_int(scale_iters, "scale_iters", 0, 100)
        if max_points is not None:
            max_points = check_int(max_points, "max_points", 1)
        label = name or "the linear layer"
        w = linear.weight.detach()
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"layer {label!r}: weight contains NaN or inf")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    method=method, bits=bits, group=group, scale_dtype=scale_dtype, cache=cache,
                    name=name)
        H = None
        if hessian is not None:
            H = torch.as_tensor(hessian).detach().to("cpu", torch.float64).numpy()
            if H.shape != (linear.in_features,) * 2 or not np.all(np.isfinite(H)):
                raise ValueError(f"layer {label!r}: hessian must be a finite "
                                 f"({linear.in_features}, {linear.in_features}) matrix")
        t0 = time.perf_counter()
        res = _quantize_array(w.to("cpu", torch.float64).numpy(), layer.codec, layer.group,
                              scale_iters=scale_iters, scale_dtype=scale_dtype, H=H,
                              max_points=max_points, workers=workers)
        dev = w.device
        codes = torch.from_numpy(res["codes"])
        layer.packed = pack_bits(codes, layer.codec.code_bits).to(dev)
        layer.scales = torch.from_numpy(res["scales"]).to(res["scale_dtype"]).to(dev)
        if res["gains"] is not None:
            layer.gains = torch.from_numpy(res["gains"]).to(torch.float32).to(dev)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone(),
                                      requires_grad=linear.bias.requires_grad)
        layer.stats = {"mse": res["mse"], "seconds": time.perf_counter() - t0}
        return layer

    # ------------------------------------------------------------ decoding
    @property
    def config(self) -> dict:
        """JSON-able description (enough to rebuild an empty layer of this shape)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "method": self.method, "bits": self.bits,
                "group": self.group, "scale_dtype": _dtype_name(self.scales.dtype),
                "params": self.codec.params, "code_bits": self.codec.code_bits,
                "codebook_size": self.codec.size}

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "LeechQuantizedLinear":
        """An empty layer from :attr:`config` (``ValueError`` if inconsistent)."""
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        try:
            layer = cls(config["in_features"], config["out_features"], bool(config["bias"]),
                        method=config["method"], bits=config["bits"], group=config["group"],
                        scale_dtype=_SCALE_DTYPES[config["scale_dtype"]],
                        params=config.get("params"), **kwargs)
        except KeyError as exc:
            raise ValueError(f"quantized layer config lacks {exc}") from None
        for k in ("code_bits", "codebook_size"):
            mine = layer.config[k]
            if k in config and config[k] != mine:
                raise ValueError(f"quantized layer config: {k} {config[k]} does not match the "
                                 f"codebook ({mine})")
        return layer

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

    @torch.no_grad()
    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The weight ``(out_features, in_features)`` from codes and scales (torch ops only).

        Computed in float64 (float32 on devices without it) on the device of the
        buffers, then cast to ``dtype``.
        """
        dev = self.packed.device
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

    def _weight(self, device, dtype) -> Tensor:
        if not self.cache:
            return self.dequantize(dtype)
        stamp = tuple((t.data_ptr(), t._version) for t in (self.packed, self.scales, self.gains)
                      if t is not None)
        key = (str(device), dtype)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        w = self.dequantize(dtype)
        self._cache[key] = (stamp, w)
        return w

    def clear_cache(self) -> None:
        """Drop the cached dequantized weights."""
        self._cache.clear()

    def forward(self, x: Tensor) -> Tensor:
        dt = x.dtype if x.is_floating_point() else torch.float32
        w = self._weight(self.packed.device, dt)
        b = None if self.bias is None else self.bias.to(dt)
        return F.linear(x, w, b)

    def _apply(self, fn, recurse=True):
        self._cache.clear()
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

        ``dequantize()`` equals ``scale * quantizer.decode(code)`` block by block.
        """
        return self.codec.quantizer(None if self.gains is None else self.gains.cpu().numpy())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, method={self.method!r}, bits={self.bits!r}, "
                f"group={self.group!r}, bits_per_weight={self.bits_report()['bits_per_weight']:.4g}")


# ---------------------------------------------------------------------------
# whole models
# ---------------------------------------------------------------------------


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], p)
               for p in patterns)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, new)


def _targets(model: nn.Module, skip) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules()
            if type(m) is nn.Linear and not _matches(n, skip)]


@torch.no_grad()
def _hessians(model: nn.Module, targets, data) -> dict:
    """Second moments E[x x^T] (float64, CPU) of the inputs of the target layers."""
    sums = {n: None for n, _ in targets}
    counts = {n: 0 for n, _ in targets}
    hooks = []

    def hook_for(name):
        def hook(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            h = (x.T @ x).cpu()
            sums[name] = h if sums[name] is None else sums[name] + h
            counts[name] += x.shape[0]
        return hook

    for n, m in targets:
        hooks.append(m.register_forward_pre_hook(hook_for(n)))
    was = model.training
    model.eval()
    try:
        batches = [data] if isinstance(data, Tensor) else list(data)
        if not batches:
            raise ValueError("data holds no calibration batch")
        for b in batches:
            if isinstance(b, dict):
                model(**b)
            elif isinstance(b, (tuple, list)):
                model(*b)
            else:
                model(b)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = {}
    for n, _ in targets:
        if sums[n] is None:
            continue
        H = sums[n] / max(counts[n], 1)
        H = H + 1e-2 * float(torch.diagonal(H).mean()) * torch.eye(H.shape[0], dtype=H.dtype)
        out[n] = H
    return out


def quantize_model(model: nn.Module, bits=2, method: str = "leech-shape-gain", *,
                   skip: Iterable[str] = ("lm_head",), group="row", data=None,
                   scale_iters: int = 1, scale_dtype: torch.dtype = torch.float16,
                   max_points: int | None = None, workers: int | None = -1, cache: bool = True,
                   callback: Callable[[str, dict], None] | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`LeechQuantizedLinear`.

    Parameters
    ----------
    model : torch.nn.Module
    bits : float
        Bits per weight of the codes (2: the 48-bit Leech codebooks, the 16-bit E8
        ball, 2-bit RTN).  Scales come on top (see :func:`model_bits_report`).
    method : {"leech-shape-gain", "leech-ball", "e8", "rtn"}
    skip : iterable of str
        ``fnmatch`` patterns of module names (full dotted name, or its last part) to
        leave in float.  Default ``("lm_head",)``: an untied output head stays in
        float.  Embeddings are never quantized (they are not ``nn.Linear``; in LILA the
        LM head is the token embedding).
    group : "row", "tensor" or int
        Scale groups (see :class:`LeechQuantizedLinear`).
    data : torch.Tensor or iterable, optional
        Calibration inputs: ``data`` itself if it is a tensor, else each of its items,
        is fed to the model (``model(b)``; a tuple as ``model(*b)``, a dict as
        ``model(**b)``) to measure the second moment ``E[x x^T]`` of every layer's
        inputs (``in_features**2`` float64 numbers kept per layer), which then weights
        the scale refit.
    scale_iters, scale_dtype, max_points, workers, cache
        As in :meth:`LeechQuantizedLinear.from_linear`.
    callback : callable, optional
        ``callback(name, info)`` after each layer; ``info`` has ``index``, ``total``,
        ``mse``, ``seconds``, ``bits_per_weight``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        Unknown method, a weight with NaN or inf (naming the layer; checked before
        anything is replaced), or a bad argument.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LilaConfig, LilaTransformer
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> torch.manual_seed(0) and None
    >>> model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    >>> _ = quantize_model(model, method="leech-ball", max_points=64)
    >>> type(model.h[0].mlp.c_fc).__name__
    'LeechQuantizedLinear'
    >>> model(torch.randint(0, 256, (1, 8))).logits.shape
    torch.Size([1, 8, 256])
    >>> r = model_bits_report(model)
    >>> r.quantized_weights, round(r.bits_per_quantized_weight, 3)
    (46080, 2.233)
    """
    method = check_method(method)
    get_codec(method, bits)  # validates bits early
    if isinstance(skip, str):
        skip = (skip,)
    skip = tuple(skip)
    if not all(isinstance(p, str) for p in skip):
        raise TypeError("skip must be an iterable of str patterns")
    targets = _targets(model, skip)
    for n, m in targets:  # fail before replacing anything
        if not bool(torch.isfinite(m.weight.detach()).all()):
            raise ValueError(f"layer {n!r}: weight contains NaN or inf")
    H = _hessians(model, targets, data) if data is not None else {}
    for i, (n, m) in enumerate(targets):
        q = LeechQuantizedLinear.from_linear(m, method, bits, group=group, scale_iters=scale_iters,
                                             scale_dtype=scale_dtype, max_points=max_points,
                                             workers=workers, hessian=H.get(n), cache=cache, name=n)
        _set_module(model, n, q)
        if callback is not None:
            callback(n, {"index": i, "total": len(targets), "mse": q.stats["mse"],
                         "seconds": q.stats["seconds"],
                         "bits_per_weight": q.bits_report()["bits_per_weight"]})
    return model


@dataclasses.dataclass
class BitsReport:
    """Stored bits of a (partly) quantized model; see :func:`model_bits_report`.

    Attributes
    ----------
    layers : list of dict
        One per :class:`LeechQuantizedLinear`: ``name``, ``method`` and its
        :meth:`~LeechQuantizedLinear.bits_report`.
    quantized_weights, quantized_bits : int
        Weights of the quantized layers, and the bits of their codes, scales, gains.
    bits_per_quantized_weight : float
    other_params, other_bits : int
        Every other tensor of the state dict (embeddings, norms, biases, float
        linears), at its dtype.
    total_params, total_bits : int
    bits_per_param : float
        ``total_bits / total_params`` (the whole stored model).
    dense_bits : int
        The same parameters all in float32.
    """

    layers: list
    quantized_weights: int
    quantized_bits: int
    bits_per_quantized_weight: float
    other_params: int
    other_bits: int
    total_params: int
    total_bits: int
    bits_per_param: float
    dense_bits: int

    @property
    def compression(self) -> float:
        """``dense_bits / total_bits``."""
        return self.dense_bits / self.total_bits if self.total_bits else float("nan")

    def to_markdown(self) -> str:
        """A markdown table, one row per quantized layer and the totals."""
        rows = ["| layer | method | weights | code bits | scale bits | gain bits | bits/weight |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for l in self.layers:
            rows.append(f"| {l['name']} | {l['method']} | {l['weights']} | {l['code_bits']} | "
                        f"{l['scale_bits']} | {l['gain_bits']} | {l['bits_per_weight']:.4f} |")
        rows.append(f"| **quantized layers** | | {self.quantized_weights} | | | | "
                    f"{self.bits_per_quantized_weight:.4f} |")
        rows.append(f"| **whole model** ({self.other_params} other params) | | {self.total_params} "
                    f"| | | | {self.bits_per_param:.4f} |")
        return "\n".join(rows)


def model_bits_report(model: nn.Module) -> BitsReport:
    """Count the stored bits of ``model``: quantized layers, and everything else.

    Quantized layers are charged their packed codes (pad blocks included), scales
    and gains; every other tensor of the state dict is charged its size at its own
    dtype.  Parameters are counted once even if shared (tied); buffers that are
    not saved (e.g. frozen kernels rebuilt from the config) are not counted.

    Returns
    -------
    BitsReport

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> net = nn.Sequential(nn.Linear(96, 10, bias=False))
    >>> r = model_bits_report(quantize_model(net, method="rtn"))
    >>> r.quantized_bits == 10 * 96 * 2 + 10 * 16        # 2-bit codes + one float16 scale a row
    True
    >>> r.bits_per_quantized_weight, r.other_params
    (2.1666666666666665, 0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = []
    qw = qb = 0
    owned = set()
    for n, m in model.named_modules():
        if isinstance(m, LeechQuantizedLinear):
            r = m.bits_report()
            layers.append({"name": n, "method": m.method, **r})
            qw += r["weights"]
            qb += r["total_bits"]
            for t in (m.packed, m.scales, m.gains):
                if t is not None:
                    owned.add(id(t))
    seen = set()
    other_n = other_b = 0
    sd = model.state_dict(keep_vars=True)
    for t in sd.values():
        if id(t) in owned or id(t) in seen:
            continue
        seen.add(id(t))
        other_n += t.numel()
        other_b += t.numel() * t.element_size() * 8
    total_p = qw + other_n
    total_b = qb + other_b
    return BitsReport(layers=layers, quantized_weights=qw, quantized_bits=qb,
                      bits_per_quantized_weight=qb / qw if qw else float("nan"),
                      other_params=other_n, other_bits=other_b, total_params=total_p,
                      total_bits=total_b, bits_per_param=total_b / total_p if total_p else float("nan"),
                      dense_bits=32 * total_p)


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------


def save_quantized(model: nn.Module, path) -> None:
    """Write a quantized model to one safetensors file (no pickle).

    The state dict (packed codes, scales, gains, and every other tensor) plus JSON
    metadata: the config of each quantized layer and, for a
    :class:`~torch_ext.model.LilaTransformer`, the model config, so that
    :func:`load_quantized` can rebuild it.

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
    cfg = getattr(model, "config", None)
    from ..model import LilaConfig, LilaTransformer

    if isinstance(model, LilaTransformer) and isinstance(cfg, LilaConfig):
        meta["lila_config"] = json.dumps(cfg.to_dict())
    save_file(state, os.fspath(path), metadata=meta)


def load_quantized(path, model: nn.Module | None = None, map_location="cpu") -> nn.Module:
    """Rebuild a model written by :func:`save_quantized`.

    Parameters
    ----------
    path : str or Path
    model : torch.nn.Module, optional
        A float model of the same architecture to load into (its ``nn.Linear``
        layers named in the file are replaced).  Default: rebuild the
        :class:`~torch_ext.model.LilaTransformer` from the stored config.
    map_location : str or torch.device

    Raises
    ------
    ValueError
        Not a quantized checkpoint, a mismatch with ``model``, codes beyond the
        codebook, or non-finite values (messages name the layer or tensor).
    """
    from ..model import read_safetensors

    p = os.fspath(path)
    meta, tensors = read_safetensors(p, what="quantized checkpoint")
    if meta.get("checkpoint") != QUANTIZED_FORMAT or "quantized_layers" not in meta:
        raise ValueError(f"{p} is not a quantized checkpoint (format {meta.get('checkpoint')!r})")
    try:
        layers = json.loads(meta["quantized_layers"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: quantized layer metadata is not valid JSON: {exc}") from None
    if model is None:
        if "lila_config" not in meta:
            raise ValueError(f"{p} holds no LILA config: pass model= (a float model of the same "
                             "architecture)")
        from ..model import LilaConfig, LilaTransformer

        try:
            model = LilaTransformer(LilaConfig.from_dict(json.loads(meta["lila_config"])))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: invalid stored LILA config: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, cfg in layers.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{p}: quantized layer {name!r} is not in the model") from None
        if not isinstance(old, (nn.Linear, LeechQuantizedLinear)):
            raise ValueError(f"{p}: {name!r} is a {type(old).__name__}, not a linear layer")
        if (old.in_features, old.out_features) != (cfg.get("in_features"), cfg.get("out_features")):
            raise ValueError(f"{p}: layer {name!r} is {old.out_features}x{old.in_features} in the "
                             f"model but {cfg.get('out_features')}x{cfg.get('in_features')} in the file")
        _set_module(model, name, LeechQuantizedLinear.from_config(cfg, name=name))
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
