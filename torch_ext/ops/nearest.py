"""Leech lattice operations as PyTorch custom ops.

Public functions
----------------
:func:`nearest_point`
    The nearest point of ``scale * Λ24`` (``coords="unit"``) or ``scale * √8Λ24``
    (``coords="int"``) to each row of a ``(..., 24)`` tensor: exact maximum-likelihood
    decoding, not an approximation.
:func:`quantize_ste`
    The same forward, with the straight-through gradient ``x + (Q(x) - x).detach()``.
:func:`nearest_minimal_vector`
    The minimal vector (norm 4 in unit coordinates; one of 196 560) with the largest
    inner product with each row, and its index in
    :meth:`leechlib.LeechLattice.minimal_vectors` order.
:func:`nearest_point_torch`, :func:`nearest_minimal_vector_torch`
    The pure-torch decoders, usable on any device (the fallback path of the ops);
    :func:`decode_torch` is the deprecated old name of the first.

The arguments after ``x`` are keyword-only and named and ordered as leechlib's
(:func:`leechlib.quantize`, :func:`leechlib.nearest_minimal_vector`).  Positional
use (the old order) still works for one release, with a ``DeprecationWarning``.

Backends
--------
The functions dispatch to the custom ops ``torch.ops.leech.nearest_point``,
``torch.ops.leech.quantize_ste`` and ``torch.ops.leech.nearest_minimal_vector``
(whose schemas keep the order ``x, coords, scale``), whose kernels live in
:mod:`torch_ext.ops._backends`:

* CPU tensors go to leechlib's Numba kernels through numpy (no copy for contiguous
  float32/float64 input), unless ``TORCH_EXT_CPU_BACKEND=torch`` selects the
  pure-torch decoder (:func:`cpu_backend` says which);
* CUDA tensors go to leechlib's decoder compiled for the GPU by Numba CUDA
  (launched through :mod:`leechlib.kernels`: the CPU kernel's own source, one thread
  per point) when ``numba.cuda`` works here, and otherwise to the pure-torch decoder
  (:func:`cuda_backend` says which; ``TORCH_EXT_CUDA_BACKEND=torch`` or ``numba``
  forces one); the same for the nearest minimal vector;
* the pure-torch decoder of :mod:`torch_ext.ops._decoder` (any device) is the structured
  algorithm (two cosets, four candidates per coordinate, sixteen patterns per MOG
  column, 64 hexacode words × 2 parities, parity repair by a min-plus DP), vectorised
  over the batch: float64 costs, the 256-way search in float32 with a certified
  float64 fallback (exact either way).
  :func:`set_decoder_compile` turns on ``torch.compile`` of its per-chunk function.

Each op has a fake (meta) kernel, so ``torch.compile`` traces through it, and an
autograd formula: :func:`nearest_point` and :func:`nearest_minimal_vector` are
piecewise constant (zero gradient), :func:`quantize_ste` passes the gradient through.
Half-precision input (float16/bfloat16, e.g. under autocast) is decoded in float32
and the result cast back; float64 input is decoded in float64.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor

from ._backends import (
    _FLOATS,
    _cpu_minvec,
    _cpu_nearest,
    _device_minvec,
    _device_nearest,
    _torch_minvec,
    _torch_nearest,
    cpu_backend,
    cuda_backend,
    set_decoder_compile,
)
from ._backends import MAX_ABS as MAX_ABS  # re-exported: the input bound of the ops
from ._deprecation import keywords_after_x

__all__ = [
    "nearest_point",
    "quantize_ste",
    "nearest_minimal_vector",
    "nearest_point_torch",
    "nearest_minimal_vector_torch",
    "decode_torch",
    "cpu_backend",
    "cuda_backend",
    "set_decoder_compile",
]


# ---------------------------------------------------------------------------
# validation (static: shape, dtype and argument values; never data-dependent)
# ---------------------------------------------------------------------------


def _check_x(x, name="x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != 24:
        raise ValueError(f"{name} must have shape (..., 24), got shape {tuple(x.shape)}")


def _check_coords(coords) -> str:
    if not isinstance(coords, str):
        raise TypeError(f"coords must be 'unit' or 'int', got {type(coords).__name__}")
    if coords not in ("unit", "int"):
        raise ValueError(f"coords must be 'unit' or 'int', got {coords!r}")
    return coords


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a positive real number, got {type(scale).__name__}")
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return s


# ---------------------------------------------------------------------------
# custom ops
# ---------------------------------------------------------------------------


@torch.library.custom_op("leech::nearest_point", mutates_args=())
def _nearest_point_op(x: Tensor, coords: str, scale: float) -> Tensor:
    """Nearest lattice point (default implementation: CUDA via Numba, else pure torch)."""
    return _device_nearest(x, coords, scale)


def _fake_nearest(x, coords, scale):
    return torch.empty_like(x)


_nearest_point_op.register_kernel("cpu")(_cpu_nearest)
_nearest_point_op.register_fake(_fake_nearest)


def _setup_none(ctx, inputs, output):
    return None


def _zero_backward(ctx, grad):
    return torch.zeros_like(grad), None, None


_nearest_point_op.register_autograd(_zero_backward, setup_context=_setup_none)


@torch.library.custom_op("leech::quantize_ste", mutates_args=())
def _quantize_ste_op(x: Tensor, coords: str, scale: float) -> Tensor:
    """Nearest lattice point; the gradient is passed straight through."""
    return _device_nearest(x, coords, scale)


_quantize_ste_op.register_kernel("cpu")(_cpu_nearest)
_quantize_ste_op.register_fake(_fake_nearest)


def _identity_backward(ctx, grad):
    return grad, None, None


_quantize_ste_op.register_autograd(_identity_backward, setup_context=_setup_none)


@torch.library.custom_op("leech::nearest_minimal_vector", mutates_args=())
def _nearest_minvec_op(x: Tensor, coords: str) -> tuple[Tensor, Tensor]:
    """Nearest minimal vector and its index (default: CUDA via Numba, else pure torch)."""
    return _device_minvec(x, coords)


_nearest_minvec_op.register_kernel("cpu")(_cpu_minvec)


@_nearest_minvec_op.register_fake
def _(x, coords):
    return torch.empty_like(x), x.new_empty(x.shape[:-1], dtype=torch.int64)


def _minvec_backward(ctx, grad_v, grad_idx):
    return torch.zeros_like(grad_v), None


_nearest_minvec_op.register_autograd(_minvec_backward, setup_context=_setup_none)


# ---------------------------------------------------------------------------
# public wrappers
# ---------------------------------------------------------------------------


def _core_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in _FLOATS else torch.float32


def _run(op, x: Tensor, *args):
    """Run ``op`` on float32/float64 input, outside autocast; cast back to x.dtype."""
    core = _core_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = op(x.to(core), *args)
    return out


@keywords_after_x("coords", "scale")
def nearest_point(x: Tensor, *, scale: float = 1.0, coords: str = "unit") -> Tensor:
    r"""Exact nearest point of the (scaled) Leech lattice to each row of ``x``.

    The arguments are those of :func:`leechlib.quantize` (keyword-only after ``x``).

    Parameters
    ----------
    x : torch.Tensor
        ``(..., 24)`` floating-point tensor (MOG coordinates), on any device.
    scale : float
        Decode in ``scale`` times the lattice: ``scale * Q(x / scale)``.
    coords : {"unit", "int"}
        ``"unit"``: the lattice is :math:`\Lambda_{24}` (minimal norm 4);
        ``"int"``: :math:`\sqrt8\Lambda_{24}\subset\mathbb Z^{24}` (minimal norm 32).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``.  float32 and float64 are decoded as they are;
        float16/bfloat16 are decoded in float32 and cast back (the lattice point is
        then rounded to the half-precision grid).  The gradient is zero (the map is
        piecewise constant); use :func:`quantize_ste` to train through it.

    Raises
    ------
    TypeError
        ``x`` not a floating-point tensor, ``coords``/``scale`` of the wrong type.
    ValueError
        Wrong last dimension, unknown ``coords``, non-positive ``scale``, NaN/inf
        input or coordinates beyond ``2**50`` (integer model).

    Warns
    -----
    DeprecationWarning
        ``coords`` or ``scale`` passed by position (the old order ``x, coords,
        scale``); this still works until the next release.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import nearest_point
    >>> x = torch.zeros(2, 24, dtype=torch.float64)
    >>> x[0, :2] = 3.5; x[1, 0] = 1.0          # integer model
    >>> q = nearest_point(x, coords="int")
    >>> q[0, :3].tolist(), float(q[1].abs().sum())
    ([4.0, 4.0, 0.0], 0.0)
    >>> y = torch.randn(5, 24)
    >>> bool(((y - nearest_point(y)) ** 2).sum(-1).le(2.0 + 1e-5).all())   # covering radius √2
    True
    """
    _check_x(x)
    _check_coords(coords)
    s = _check_scale(scale)
    return _run(torch.ops.leech.nearest_point, x, coords, s).to(x.dtype)


@keywords_after_x("scale", "coords")
def quantize_ste(x: Tensor, *, scale: float = 1.0, coords: str = "unit") -> Tensor:
    r"""Lattice quantisation with a straight-through gradient.

    The forward is :func:`nearest_point` (``scale * Q(x / scale)``); the backward
    passes the incoming gradient unchanged, i.e. ``x + (Q(x) - x).detach()``.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., 24)`` floating-point tensor, on any device.
    scale : float
        Quantize to ``scale`` times the lattice.
    coords : {"unit", "int"}
        :math:`\Lambda_{24}` or :math:`\sqrt8\Lambda_{24}`, as in :func:`nearest_point`.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``; its gradient is the identity.

    Warns
    -----
    DeprecationWarning
        ``scale`` or ``coords`` passed by position; this still works until the next
        release.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import quantize_ste
    >>> x = torch.randn(3, 24, requires_grad=True)
    >>> y = quantize_ste(x, scale=0.5)
    >>> y.sum().backward()
    >>> bool((x.grad == 1).all())
    True
    """
    _check_x(x)
    _check_coords(coords)
    s = _check_scale(scale)
    return _run(torch.ops.leech.quantize_ste, x, coords, s).to(x.dtype)


@keywords_after_x("coords", "return_index")
def nearest_minimal_vector(x: Tensor, *, coords: str = "unit", return_index: bool = False):
    """The minimal vector with the largest inner product with each row of ``x``.

    Since the set of minimal vectors is symmetric (``-v`` is one whenever ``v`` is), this
    is also the minimal vector of largest ``|cos|`` with ``x``.  The arguments are
    those of :func:`leechlib.nearest_minimal_vector` (keyword-only after ``x``).

    Parameters
    ----------
    x : torch.Tensor
        ``(..., 24)`` floating-point tensor.
    coords : {"unit", "int"}
        Scale of the returned vectors: norm 4 (``"unit"``) or 32 (``"int"``); the
        choice does not depend on it.
    return_index : bool
        Also return the index (int64, shape ``x.shape[:-1]``) in
        :meth:`leechlib.LeechLattice.minimal_vectors` order.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        Vectors of the shape and dtype of ``x`` (and the indices).  Ties (e.g. ``x = 0``)
        are broken by the implementation; the inner product is always the maximum.

    Warns
    -----
    DeprecationWarning
        ``coords`` or ``return_index`` passed by position; this still works until the
        next release.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import nearest_minimal_vector
    >>> x = torch.zeros(24, dtype=torch.float64); x[3] = -1.0; x[7] = 0.9
    >>> v, i = nearest_minimal_vector(x, coords="int", return_index=True)
    >>> v[[3, 7]].tolist(), int((v != 0).sum())
    ([-4.0, 4.0], 2)
    """
    _check_x(x)
    _check_coords(coords)
    if not isinstance(return_index, bool):
        raise TypeError(f"return_index must be a bool, got {type(return_index).__name__}")
    v, idx = _run(torch.ops.leech.nearest_minimal_vector, x, coords)
    v = v.to(x.dtype)
    return (v, idx) if return_index else v


def nearest_point_torch(x: Tensor, *, scale: float = 1.0, coords: str = "unit") -> Tensor:
    """The pure-torch exact decoder on any device (no custom op, no leechlib kernels).

    Same contract as :func:`nearest_point`; the pure-torch backend of the ops.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.ops import nearest_point_torch
    >>> x = torch.randn(4, 24, dtype=torch.float64)
    >>> bool((nearest_point_torch(x) == torch.ops.leech.nearest_point(x, "unit", 1.0)).all())
    True
    """
    _check_x(x)
    _check_coords(coords)
    s = _check_scale(scale)
    core = _core_dtype(x)
    return _torch_nearest(x.detach().to(core), coords, s).to(x.dtype)


def decode_torch(x: Tensor, coords: str = "unit", scale: float = 1.0) -> Tensor:
    """Deprecated alias of :func:`nearest_point_torch` (old argument order).

    Warns ``DeprecationWarning`` on every call; it will be removed in the next release.

    Examples
    --------
    >>> import torch, warnings
    >>> from torch_ext.ops import decode_torch, nearest_point_torch
    >>> x = torch.randn(4, 24, dtype=torch.float64)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     q = decode_torch(x, "int", 2.0)
    >>> bool((q == nearest_point_torch(x, scale=2.0, coords="int")).all())
    True
    >>> caught[0].category.__name__
    'DeprecationWarning'
    """
    warnings.warn(
        "torch_ext.ops.decode_torch is deprecated and will be removed in the next release; "
        "use torch_ext.ops.nearest_point_torch(x, scale=..., coords=...)",
        DeprecationWarning,
        stacklevel=2,
    )
    return nearest_point_torch(x, scale=scale, coords=coords)


@keywords_after_x("coords")
def nearest_minimal_vector_torch(x: Tensor, *, coords: str = "unit"):
    """Pure-torch :func:`nearest_minimal_vector` (vectors and indices), any device.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.ops import nearest_minimal_vector_torch
    >>> v, i = nearest_minimal_vector_torch(torch.ones(1, 24))
    >>> round(float((v * v).sum()), 4)
    4.0
    """
    _check_x(x)
    _check_coords(coords)
    core = _core_dtype(x)
    v, idx = _torch_minvec(x.detach().to(core), coords)
    return v.to(x.dtype), idx
