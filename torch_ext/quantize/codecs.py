"""The quantization methods of :mod:`torch_ext.quantize`: one codec class per method.

A codec codes *normalised* blocks of weights (a block of ``block`` consecutive
weights of a row divided by its scale) as integers below ``size``, and decodes
them, with numpy and leechlib when encoding and with torch only when decoding.
Each method of :func:`~torch_ext.quantize.quantize_model` is one subclass of
:class:`Codec`, registered under its name by :func:`register`;
:data:`METHODS` lists them in registration order, and :func:`get_codec` builds
the codec of a method.  Adding a method is adding one class here.

The interface (every attribute and method is used by the layer, the scale fit or
save/load; nothing else switches on the method name):

``name``
    The method string (class attribute; the registry key).
``Codec(bits, params=None)``
    Checks ``bits`` and chooses the codebook; ``params`` (JSON-able, stored in the
    layer config) pins it, so that a saved layer is rebuilt with the same codebook
    even if leechlib's defaults change.  Sets ``bits``, ``block`` (weights per
    code), ``size`` (codewords) and ``params``; ``code_bits`` is the stored width
    of a code, ``ceil(log2(size))``.
``quantizer(gains=None)``
    The leechlib quantizer of the normalised blocks (scale 1; ``None`` if there is
    none), its tables built once per process.
``initial_scales(blocks, layout, rms)``
    Method-specific starting scales, or ``None``: start from the RMS of each scale
    group and :meth:`~Codec.fit` the codebook.
``fit(x, max_points, workers)``
    Fit the codebook to normalised blocks; returns ``(alpha, gains)``: a factor for
    the scales and the gain levels (or ``None``).
``encode(x, gains, workers)`` / ``decode(x, gains)``
    Normalised blocks ``(n, block)`` to int64 codes ``(n,)`` and back (numpy).
``decode_torch(codes, gains, dtype)``
    The same decoding with torch operations only, on the device of ``codes``.
``initial_gains(device)``
    The ``gains`` buffer of an empty layer, or ``None`` if the method has none.
``max_abs(gains)``
    A bound on the largest ``|entry|`` of a decoded normalised block (``None``:
    no cheap bound), so that a load can tell, without decoding, that the weight
    ``scale * decode(code)`` is finite (:meth:`LeechQuantizedLinear.check_finite
    <torch_ext.quantize.LeechQuantizedLinear.check_finite>`).
``packed(gains)``
    How :mod:`leechlib.kernels`' ``packed_matmul``/``packed_weight`` decode the packed
    codes (a :class:`Packed`: ``codebook`` ``"table"`` or ``"trio"``, the float32
    ``table`` and a factor ``post`` folded into the scales), or ``None``: the method
    has no such decode (the layer then runs from a dense weight).

Examples
--------
>>> from torch_ext.quantize.codecs import METHODS, get_codec
>>> METHODS
('leech-shape-gain', 'leech-ball', 'e8', 'rtn', 'leech-trio')
>>> c = get_codec("e8", 2)
>>> c.block, c.size, c.code_bits, c.params
(8, 56881, 16, {'max_norm': 10})
>>> get_codec("rtn", 3).size
8
>>> get_codec("gptq", 2)                            # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
ValueError: unknown quantization method 'gptq': method must be one of ('leech-shape-gain', 'leech-ball', ...)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import numbers
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from leechlib.baselines import E8Quantizer
from leechlib.kernels import SQRT8
from leechlib.quantizers import MAX_BITS_PER_DIM, MIN_BITS_PER_DIM, BallQuantizer, ShapeGainQuantizer
from leechlib.trio import TrioCodebook, TrioQuantizer

from .._validation import check_int, subsample
from ..ops.codebook import (
    E8_MAX_BITS,
    E8_MAX_NORM,
    ball_points,
    e8_ball_size,
    e8_norm_for_bits,
    e8_table,
    shell_union_points,
    trio_points,
)

__all__ = ["Codec", "Packed", "register", "get_codec", "check_method", "METHODS"]

#: blocks the E8 fit uses by default: E8Quantizer.fit searches overloaded points by
#: brute force over the ball, so 2000 blocks (not 4000) keep it to seconds per layer
_E8_FIT_POINTS = 2000
#: batches smaller than this are encoded on one thread (starting Numba's thread
#: pool costs milliseconds per call, more than such a batch takes)
_MIN_PARALLEL = 2048

#: a bound on |entry| of a decoded trio point (scale 1): three octets of integer-frame
#: norm at most 143 each, over sqrt(8); sampled points reach 3.54
_TRIO_MAX_ABS = math.sqrt(3 * 143 / 8)

_REGISTRY: dict = {}


def _workers(n: int, workers):
    return workers if n >= _MIN_PARALLEL else None


def register(cls):
    """Class decorator: register a :class:`Codec` subclass under its ``name``."""
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise TypeError(f"only Codec subclasses can be registered, got {cls!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"codec {cls.__name__} has no method name")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def check_method(method) -> str:
    """``method`` if it is a registered method name; ``ValueError`` otherwise."""
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(f"unknown quantization method {method!r}: method must be one of "
                         f"{tuple(_REGISTRY)}")
    return method


def get_codec(method: str, bits, params: dict | None = None) -> Codec:
    """The codec of ``method`` at ``bits`` per weight (``params``: a stored codebook)."""
    return _REGISTRY[check_method(method)](bits, params)


@functools.lru_cache(maxsize=16)
def _prototype(cls, bits, params_json: str):
    """One leechlib quantizer per codebook (scale 1), its tables built."""
    q = cls(bits, json.loads(params_json))._build()
    return None if q is None else q.prepare()


class Packed(NamedTuple):
    """The packed-code decode of a codec, for :func:`leechlib.kernels.packed_matmul`.

    ``W[r, block j] = post * scales[r, group[j]] * U(code)``, ``U`` a row of ``table``
    (``codebook="table"``, float32 ``(2**width, block)``) or the trio code's decode
    (``codebook="trio"``, integer model).  ``dequantize``: leechlib's kernel is also
    the faster way to dequantize on the CPU (otherwise the torch decode is).
    """

    codebook: str
    width: int
    table: np.ndarray | None
    post: float
    dequantize: bool = False


class Codec:
    """Base class of the codecs; see the module docstring for the interface."""

    name = ""
    #: whether a layer keeps a dense copy of its weight by default (``cache=None``):
    #: True where only the slow enumerative decode exists; False for a code built to
    #: run from its codes
    caches_by_default = True

    def __init__(self, bits, params: dict | None = None):
        raise NotImplementedError

    @property
    def code_bits(self) -> int:
        """Bits of one stored code."""
        return max(1, math.ceil(math.log2(self.size)))

    def _build(self):
        """A new leechlib quantizer of this codebook (scale 1), or None."""
        return None

    def quantizer(self, gains=None):
        """The leechlib quantizer of the normalised blocks (scale 1; None if none).

        A shallow copy of one cached instance per codebook, so that the codebook
        tables are built once per process.
        """
        proto = _prototype(type(self), self.bits, json.dumps(self.params, sort_keys=True))
        if proto is None:
            return None
        q = copy.copy(proto)
        if gains is not None:
            q.gains = np.asarray(gains, dtype=np.float64)
        return q

    def initial_scales(self, blocks: np.ndarray, layout, rms: np.ndarray):
        """Starting scales (``layout.scale_shape``), or None: the RMS and :meth:`fit`."""
        return None

    def fit(self, x: np.ndarray, max_points, workers):
        """Fit the codebook to normalised blocks ``x`` (n, block); returns (alpha, gains)."""
        return 1.0, None

    def encode(self, x: np.ndarray, gains, workers) -> np.ndarray:
        """Codes (int64, n) of normalised blocks ``x`` (n, block)."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray, gains) -> np.ndarray:
        """Normalised blocks (n, block) of codes (leechlib's decoders)."""
        return self.quantizer(gains).decode(codes)

    def decode_torch(self, codes: Tensor, gains: Tensor | None, dtype) -> Tensor:
        """Normalised blocks (n, block) of int64 codes, with torch operations only."""
        raise NotImplementedError

    def initial_gains(self, device) -> Tensor | None:
        """The ``gains`` buffer of an empty layer (None: the method has no gains)."""
        return None

    def max_abs(self, gains) -> float | None:
        """A bound on ``|entry|`` of any decoded normalised block (None: no cheap bound)."""
        return None

    def packed(self, gains) -> Packed | None:
        """How leechlib's kernels decode the packed codes (None: no table decode)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits!r}, params={self.params!r})"


@register
class ShapeGainCodec(Codec):
    r""":class:`~leechlib.quantizers.ShapeGainQuantizer`: a direction of a shell of
    :math:`\Lambda_{24}` times one of a few gains (24 weights a code)."""

    name = "leech-shape-gain"

    def __init__(self, bits, params: dict | None = None):
        _leech_bits(self.name, bits)
        p = dict(params or {})
        self.bits = bits
        q = ShapeGainQuantizer(bits, shells=p.get("shells"), gain_levels=p.get("gain_levels"))
        self.block, self.size = 24, int(q.shape_size) * int(q.gain_levels)
        self.params = {"shells": [int(m) for m in q.shells], "gain_levels": int(q.gain_levels)}

    def _build(self):
        return ShapeGainQuantizer(self.bits, shells=self.params["shells"],
                                  gain_levels=self.params["gain_levels"])

    def fit(self, x, max_points, workers):
        kw = {} if max_points is None else {"max_points": int(max_points)}
        n = min(len(x), kw.get("max_points", 20000))
        q = self.quantizer().fit(x, workers=_workers(n, workers), **kw)
        return 1.0, np.asarray(q.gains, dtype=np.float64)

    def encode(self, x, gains, workers):
        q = self.quantizer(gains)
        return q.pack(q.encode(x, workers=_workers(len(x), workers)))

    def decode(self, codes, gains):
        q = self.quantizer(gains)
        return q.decode(q.unpack(codes))

    def decode_torch(self, codes, gains, dtype):
        K = self.params["gain_levels"]
        shape, g = codes // K, codes % K
        v, norms = shell_union_points(shape, tuple(self.params["shells"]))
        return v.to(dtype) * (gains.to(dtype)[g] / torch.sqrt(norms.to(dtype) * 8.0)).unsqueeze(-1)

    def initial_gains(self, device):
        return torch.linspace(0.5, 1.5, self.params["gain_levels"], device=device) * 4.8

    def max_abs(self, gains):
        return None if gains is None else float(gains.detach().abs().max()) if gains.numel() else 0.0


@register
class BallCodec(Codec):
    """:class:`~leechlib.quantizers.BallQuantizer`: the nearest Leech lattice point of
    norm at most ``max_norm`` (24 weights a code)."""

    name = "leech-ball"

    def __init__(self, bits, params: dict | None = None):
        _leech_bits(self.name, bits)
        p = dict(params or {})
        self.bits = bits
        q = BallQuantizer(bits, scale=1.0, max_norm=p.get("max_norm"))
        self.block, self.size = 24, int(q.size)
        self.params = {"max_norm": int(q.max_norm)}

    def _build(self):
        return BallQuantizer(self.bits, scale=1.0, max_norm=self.params["max_norm"])

    def fit(self, x, max_points, workers):
        kw = {} if max_points is None else {"max_points": int(max_points)}
        n = min(len(x), kw.get("max_points", 4000))
        q = self.quantizer().fit(x, workers=_workers(n, workers), **kw)
        return float(q.scale), None

    def encode(self, x, gains, workers):
        return self.quantizer().encode(x, workers=_workers(len(x), workers))

    def decode_torch(self, codes, gains, dtype):
        return ball_points(codes, self.params["max_norm"]).to(dtype) / SQRT8

    def max_abs(self, gains):
        return math.sqrt(self.params["max_norm"])  # |entry| <= norm of a point of norm <= max_norm


def _leech_bits(method: str, bits) -> None:
    """``bits`` of a Leech codebook method, checked here so that the message names ``bits``."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, numbers.Real):
        raise TypeError(f"bits must be a real number, got {type(bits).__name__}")
    b = float(bits)
    if not (math.isfinite(b) and MIN_BITS_PER_DIM - 1e-12 <= b <= MAX_BITS_PER_DIM + 1e-12):
        raise ValueError(f"{method} supports bits from {MIN_BITS_PER_DIM:.4f} (the 196 560 minimal "
                         f"vectors and the origin) to {MAX_BITS_PER_DIM} (codes of 60 bits), got "
                         f"bits={bits!r}")


@register
class E8Codec(Codec):
    """:class:`~leechlib.baselines.E8Quantizer`: the :math:`E_8` ball of the largest
    even norm whose size fits ``8 * bits`` bits (8 weights a code)."""

    name = "e8"

    def __init__(self, bits, params: dict | None = None):
        p = dict(params or {})
        self.bits = bits
        if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, numbers.Real) or not math.isfinite(bits):
            raise TypeError(f"bits must be a finite real number, got {bits!r}")
        # the largest ball (340 321 points, codes of 19 bits) would silently stand in for more
        if float(bits) > E8_MAX_BITS + 1e-12:
            raise ValueError(f"e8 supports bits from {math.log2(241) / 8:.3f} to {E8_MAX_BITS} (the "
                             f"E8 balls of norm 2 to {E8_MAX_NORM}, codes of at most "
                             f"{int(8 * E8_MAX_BITS)} bits), got bits={bits!r}")
        m = p.get("max_norm")
        if m is None:  # ball sizes from the theta series, no enumeration
            m = e8_norm_for_bits(bits)
            if m == 0:
                raise ValueError(f"bits={bits!r} is too small for the E8 ball of norm 2 "
                                 f"({math.log2(241) / 8:.3f} bits per weight)")
        m = check_int(m, "max_norm", 2, 16)
        self.block, self.size = 8, e8_ball_size(m)
        self.params = {"max_norm": m}

    def _build(self):
        return E8Quantizer(self.params["max_norm"])

    def fit(self, x, max_points, workers):
        n = _E8_FIT_POINTS if max_points is None else int(max_points)
        q = self.quantizer().fit(subsample(x, n), max_points=n)
        return float(q.scale), None

    def encode(self, x, gains, workers):
        return self.quantizer().encode(x).astype(np.int64)

    def decode_torch(self, codes, gains, dtype):
        return e8_table(self.params["max_norm"], codes.device, dtype)[codes]

    def max_abs(self, gains):
        return math.sqrt(self.params["max_norm"])

    def packed(self, gains):
        return _e8_packed(self.params["max_norm"], self.code_bits)


def _rtn_scales(blocks, L, rms, levels: int) -> np.ndarray:
    """MSE-optimal uniform step per scale group: 96-point grid in [0.1, 2] x RMS.

    Row groups are searched a chunk of rows at a time (the grid loop inside, on
    arrays that stay in cache, in place): the same arithmetic per row as
    :func:`_rtn_scales_reference`, so the same scales, several times faster.
    """
    if L.tensor:
        return _rtn_scales_reference(blocks, L, rms, levels)
    w = blocks[:, :, 0]  # (out, n) with block length 1
    real = L.real[:, 0]
    masked = not real.all()
    best = np.full(L.scale_shape, np.inf)
    S = np.where(rms > 0, rms, 1.0).copy()
    half, mid = levels / 2.0, (levels - 1) / 2.0
    rows = max(1, (1 << 15) // max(1, w.shape[1]))
    for a in range(0, w.shape[0], rows):
        wc, rc, bc, sc = w[a:a + rows], rms[a:a + rows], best[a:a + rows], S[a:a + rows]
        for c in np.linspace(0.1, 2.0, 96):
            step = np.where(rc > 0, rc * c, 1.0)
            st = step[:, L.block_group]
            e = np.divide(wc, st)
            e += half
            np.floor(e, out=e)
            np.clip(e, 0, levels - 1, out=e)
            e -= mid
            e *= st
            np.subtract(wc, e, out=e)
            e *= e
            if masked:
                e *= real
            err = np.add.reduceat(e, L.group_starts, axis=1)
            up = err < bc
            bc[up] = err[up]
            sc[up] = step[up]
    return S


def _rtn_scales_reference(blocks, L, rms, levels: int) -> np.ndarray:
    """The whole-array form of :func:`_rtn_scales` (also the ``group="tensor"`` path)."""
    w = blocks[:, :, 0]  # (out, n) with block length 1
    mask = L.real[:, 0][None, :]
    best = np.full(L.scale_shape, np.inf)
    S = np.where(rms > 0, rms, 1.0).copy()
    for c in np.linspace(0.1, 2.0, 96):
        step = np.where(rms > 0, rms * c, 1.0)
        st = L.expand(step)
        k = np.clip(np.floor(w / st + levels / 2.0), 0, levels - 1)
        e = (w - st * (k - (levels - 1) / 2.0)) ** 2 * mask
        err = L.group_sum(e)
        up = err < best
        best = np.where(up, err, best)
        S = np.where(up, step, S)
    return S


@register
class RtnCodec(Codec):
    """Round to nearest: the uniform levels ``k - (L - 1) / 2``, ``k < L = 2**bits``
    (one weight a code), with MSE-optimal starting scales."""

    name = "rtn"

    def __init__(self, bits, params: dict | None = None):
        if isinstance(bits, (float, np.floating)) and float(bits).is_integer():
            bits = int(bits)
        self.bits = check_int(bits, "bits", 1, 8)
        self.block, self.size = 1, 1 << self.bits
        self.params = {"levels": 1 << self.bits}

    def initial_scales(self, blocks, layout, rms):
        return _rtn_scales(blocks, layout, rms, self.size)

    def encode(self, x, gains, workers):
        L = self.size
        return np.clip(np.floor(x[:, 0] + L / 2.0), 0, L - 1).astype(np.int64)

    def decode(self, codes, gains):
        return (codes.astype(np.float64) - (self.size - 1) / 2.0)[:, None]

    def decode_torch(self, codes, gains, dtype):
        return (codes.to(dtype) - (self.size - 1) / 2.0).unsqueeze(-1)

    def max_abs(self, gains):
        return (self.size - 1) / 2.0

    def packed(self, gains):
        levels = (np.arange(self.size) - (self.size - 1) / 2.0).astype(np.float32)[:, None]
        return Packed("table", self.code_bits, levels, 1.0, dequantize=True)


@functools.lru_cache(maxsize=8)
def _e8_packed(max_norm: int, width: int) -> Packed:
    """The E8 ball as a float32 table of ``2**width`` rows (zero rows past the ball: a code
    past the codebook cannot read out of bounds), built once."""
    table = e8_table(max_norm, "cpu", torch.float32).numpy()
    out = np.zeros((1 << width, table.shape[1]), dtype=np.float32)
    out[: len(table)] = table
    out.flags.writeable = False
    return Packed("table", width, out, 1.0, dequantize=True)


@register
class TrioCodec(Codec):
    """:class:`~leechlib.trio.TrioQuantizer`: the trio code, 48-bit codes of Leech lattice
    points decoded by table lookups (24 weights a code; 2 bits per weight exactly)."""

    name = "leech-trio"
    caches_by_default = False

    def __init__(self, bits, params: dict | None = None):
        if isinstance(bits, bool) or not isinstance(bits, numbers.Real):
            raise TypeError(f"bits must be a real number, got {type(bits).__name__}")
        if float(bits) != 2.0:
            raise ValueError(f"leech-trio has 2 bits per weight (48-bit codes of 24 weights), got bits={bits!r}")
        p = dict(params or {})
        self.bits = bits
        cb = TrioCodebook(p.get("tier_size", 256), p.get("n_tiers", 16), p.get("n_combos", 512))
        self.block, self.size = 24, cb.size
        self.params = {"tier_size": cb.tier_size, "n_tiers": cb.n_tiers, "n_combos": cb.n_combos}
        if self.params != {"tier_size": 256, "n_tiers": 16, "n_combos": 512}:
            raise ValueError(f"leech-trio runs the default trio code only (tier_size=256, n_tiers=16, "
                             f"n_combos=512), got {self.params}")

    def _build(self):
        return TrioQuantizer(scale=1.0, **self.params)

    def fit(self, x, max_points, workers):
        n = 2000 if max_points is None else int(max_points)
        q = TrioQuantizer(**self.params).fit(x, max_points=n, workers=_workers(min(len(x), n), workers))
        return float(q.scale), None

    def encode(self, x, gains, workers):
        return self.quantizer().encode(x, workers=_workers(len(x), workers))

    def decode_torch(self, codes, gains, dtype):
        return trio_points(codes).to(dtype) / SQRT8

    def max_abs(self, gains):
        return _TRIO_MAX_ABS

    def packed(self, gains):
        return Packed("trio", 48, None, 1.0 / SQRT8, dequantize=True)  # the torch gathers are slower


#: quantization methods of :func:`~torch_ext.quantize.quantize_model` (the registered codecs)
METHODS = tuple(_REGISTRY)
