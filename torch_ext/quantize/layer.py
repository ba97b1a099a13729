"""The quantized layer of :mod:`torch_ext.quantize`: :class:`LeechQuantizedLinear`."""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ._unrank import pack_bits, unpack_bits
from .codecs import get_codec
from .scales import _Layout, _quantize_array

__all__ = ["LeechQuantizedLinear"]

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
