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
``torch.ops.leech.quantize_ste`` and ``torch.ops.leech.nearest_minimal_vector``:

* CPU tensors go to leechlib's Numba kernels through numpy (no copy for contiguous
  float32/float64 input), unless ``TORCH_EXT_CPU_BACKEND=torch`` selects the
  pure-torch decoder (:func:`cpu_backend` says which);
* CUDA tensors go to leechlib's decoder compiled for the GPU by Numba CUDA
  (launched through :mod:`leechlib.kernels`: the CPU kernel's own source, one thread
  per point)
  when ``numba.cuda`` works here, and otherwise to the pure-torch decoder
  (:func:`cuda_backend` says which; ``TORCH_EXT_CUDA_BACKEND=torch`` or ``numba``
  forces one); the same for the nearest minimal vector;
* the pure-torch decoder of :mod:`torch_ext._decoder` (any device) is the structured algorithm (two cosets, four candidates
  per coordinate, sixteen patterns per MOG column, 64 hexacode words × 2 parities,
  parity repair by a min-plus DP), vectorised over the batch: float64 costs, the
  256-way search in float32 with a certified float64 fallback (exact either way).
  :func:`set_decoder_compile` turns on ``torch.compile`` of its per-chunk function.

Each op has a fake (meta) kernel, so ``torch.compile`` traces through it, and an
autograd formula: :func:`nearest_point` and :func:`nearest_minimal_vector` are
piecewise constant (zero gradient), :func:`quantize_ste` passes the gradient through.
Half-precision input (float16/bfloat16, e.g. under autocast) is decoded in float32
and the result cast back; float64 input is decoded in float64.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings

import torch
from torch import Tensor

import leechlib
from leechlib import kernels as _kernels

from . import _decoder
from ._constants import SQRT8
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

#: inputs with |coordinate| (integer model, after dividing by ``scale``) at or above
#: this bound are rejected: float64 no longer resolves the lattice there
MAX_ABS = 2.0**50

_FLOATS = (torch.float32, torch.float64)


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


def _check_values(y: Tensor, factor: float = 1.0, name: str = "x") -> None:
    """Data checks, run inside the op kernels on real tensors (never traced).

    ``factor`` maps ``y`` to the integer model; no temporary of the size of ``y`` is made.
    """
    if y.numel() == 0:
        return
    lo, hi = torch.aminmax(y)  # NaN propagates to both
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf")
    if max(-lo, hi) * factor >= MAX_ABS:
        raise ValueError(
            f"{name} is too large: |{name}|/scale must stay below 2**50 in the integer model"
        )


# ---------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------


def cpu_backend() -> str:
    """Which implementation the CPU kernels use: ``"leechlib"`` (Numba) or ``"torch"``.

    leechlib's Numba kernels unless the environment variable
    ``TORCH_EXT_CPU_BACKEND=torch`` selects the pure-torch decoder.

    Examples
    --------
    >>> from torch_ext.ops import cpu_backend
    >>> cpu_backend() in ("leechlib", "torch")
    True
    """
    if os.environ.get("TORCH_EXT_CPU_BACKEND", "") == "torch":
        return "torch"
    return "leechlib"


#: errors of the Numba CUDA decoders that switched this process to pure torch
_NUMBA_CUDA_FAILED: list = []


@functools.lru_cache(maxsize=None)
def _numba_cuda_ok() -> bool:
    if _NUMBA_CUDA_FAILED:
        return False
    return _kernels.cuda_available()


def cuda_backend() -> str:
    """Which implementation decodes CUDA tensors: ``"numba"`` or ``"torch"``.

    ``"numba"``: leechlib's decoder compiled for the GPU by Numba CUDA, when
    ``numba.cuda`` can run kernels here; ``"torch"``: the pure-torch decoder.  The
    environment variable ``TORCH_EXT_CUDA_BACKEND`` (``torch`` or ``numba``)
    overrides the choice; ``numba`` where Numba CUDA does not work is an error.  If
    the Numba kernels fail at run time (compiler or driver), the ops warn once
    (``RuntimeWarning``) and use the pure-torch decoder for the rest of the process,
    unless ``numba`` was forced.

    Examples
    --------
    >>> from torch_ext.ops import cuda_backend
    >>> cuda_backend() in ("numba", "torch")
    True
    """
    want = os.environ.get("TORCH_EXT_CUDA_BACKEND", "auto")
    if want not in ("auto", "numba", "torch"):
        raise ValueError(f"TORCH_EXT_CUDA_BACKEND must be 'numba', 'torch' or unset, got {want!r}")
    if want == "torch":
        return "torch"
    ok = _numba_cuda_ok()
    if want == "numba" and not ok:
        raise RuntimeError("TORCH_EXT_CUDA_BACKEND=numba but numba.cuda cannot run kernels here")
    return "numba" if ok else "torch"


_COMPILE = {
    "on": os.environ.get("TORCH_EXT_COMPILE_DECODER", "0") == "1",
    "backend": "inductor",
    "fns": {},
}


def set_decoder_compile(enabled: bool, backend: str = "inductor") -> None:
    """Use ``torch.compile`` for the per-chunk functions of the pure-torch decoders.

    Off by default.  On a GPU the compiled decoder fuses the dynamic programme into a
    few kernels (the eager one is memory-bound: about 250 kB of intermediates written
    per point), see ``benchmarks/bench_torch_ops.py``; the first call per device and
    power-of-two batch size compiles (a minute or more).  Chunks are padded to a
    power of two so that static shapes recompile rarely.  The environment variable
    ``TORCH_EXT_COMPILE_DECODER=1`` sets the default.

    Parameters
    ----------
    enabled : bool
    backend : str
        ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` for tests).

    Examples
    --------
    >>> from torch_ext.ops import set_decoder_compile
    >>> set_decoder_compile(False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend != _COMPILE["backend"]:
        _COMPILE["fns"].clear()
    _COMPILE["on"] = enabled
    _COMPILE["backend"] = backend


_CHUNK_FNS = {
    "nearest32": _decoder._leech_nearest_chunk32,
    "nearest": _decoder._leech_nearest_chunk,
    "minvec": _decoder._nearest_minvec_chunk,
}


def _chunk_fn(kind: str):
    base = _CHUNK_FNS[kind]
    if not _COMPILE["on"]:
        return base
    fn = _COMPILE["fns"].get(kind)
    if fn is None:
        fn = torch.compile(base, dynamic=False, backend=_COMPILE["backend"])
        _COMPILE["fns"][kind] = fn
    return fn


def _factor(coords: str, scale: float) -> float:
    """Multiplier from the caller's frame to the integer model."""
    return (SQRT8 if coords == "unit" else 1.0) / scale


def _to_int_frame(x: Tensor, coords: str, scale: float) -> Tensor:
    factor = _factor(coords, scale)
    y = x.reshape(-1, 24).to(torch.float64)
    return y * factor if factor != 1.0 else y


def _torch_nearest(x: Tensor, coords: str, scale: float) -> Tensor:
    _check_values(x, _factor(coords, scale))
    y = _to_int_frame(x, coords, scale)
    if y.shape[0] == 0:
        v = y
    else:
        fns = (_chunk_fn("nearest32"), _chunk_fn("nearest"))
        v = _decoder.leech_nearest_int(y, fns=fns, pad=_COMPILE["on"])
    mul, div = _out_frame(coords, scale)  # back to the caller's frame, as leechlib
    return _true_div(v * mul, div).to(x.dtype).reshape(x.shape)


def _true_div(v: Tensor, d: float) -> Tensor:
    """``v / d`` correctly rounded on every device, as numpy computes it.

    On CUDA, torch divides by a Python (CPU) scalar as ``v * (1 / d)``, which can be
    one unit in the last place off the quotient; dividing by a 0-d tensor on ``v``'s
    device is a true division everywhere.
    """
    if d == 1.0:
        return v
    return v / torch.tensor(d, dtype=v.dtype, device=v.device)


def _out_frame(coords: str, scale: float) -> tuple[float, float]:
    """``(mul, div)`` taking integer-model points ``z`` to the caller's frame as
    ``z * mul / div``, with leechlib's arithmetic (bitwise-equal results): ``z / sqrt8``
    (unit coordinates), ``z`` (integer model), ``z * (1 / factor)`` (with a scale)."""
    if scale == 1.0:
        return (1.0, SQRT8) if coords == "unit" else (1.0, 1.0)
    return 1.0 / _factor(coords, scale), 1.0


def _kernel_rows(x: Tensor) -> Tensor:
    """``x`` as contiguous (n, 24) float32/float64 rows for leechlib's CUDA kernels."""
    y = x.detach().reshape(-1, 24)
    if y.dtype not in _FLOATS:
        y = y.to(torch.float32)
    return y.contiguous()


def _numba_cuda_launch(launch, x: Tensor, *arrays: Tensor, **kwargs) -> None:
    """Call ``launch`` (a :mod:`leechlib.kernels` CUDA launcher) on ``arrays`` on
    ``x``'s device and torch's current stream there."""
    from numba import cuda as ncuda

    with torch.cuda.device(x.device):
        stream = ncuda.external_stream(torch.cuda.current_stream(x.device).cuda_stream)
        with ncuda.gpus[x.device.index if x.device.index is not None else 0]:
            launch(*(ncuda.as_cuda_array(a) for a in arrays), stream=stream, **kwargs)


def _numba_cuda_nearest(x: Tensor, coords: str, scale: float) -> Tensor:
    """Nearest points of a CUDA tensor by leechlib's kernel compiled with Numba CUDA."""
    factor = _factor(coords, scale)
    _check_values(x, factor)
    y = _kernel_rows(x)
    n = y.shape[0]
    out = torch.empty((n, 24), dtype=torch.float64, device=x.device)
    if n:
        dist = torch.empty(n, dtype=torch.float64, device=x.device)
        bad = torch.empty(n, dtype=torch.int8, device=x.device)
        mul, div = _out_frame(coords, scale)
        _numba_cuda_launch(_kernels.cuda_nearest_int, x, y, out, dist, bad, factor=factor, mul=mul, div=div)
    return out.to(x.dtype).reshape(x.shape)


def _numba_cuda_or_fallback(numba_fn, torch_fn, *args):
    """Run ``numba_fn``; if Numba CUDA itself fails (not our input checks), warn once,
    use the pure-torch decoders from then on (unless the backend was forced) and
    run ``torch_fn``."""
    try:
        return numba_fn(*args)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # numba compile/driver errors: keep decoding, say why
        if os.environ.get("TORCH_EXT_CUDA_BACKEND", "auto") == "numba":
            raise
        _numba_cuda_ok.cache_clear()
        _NUMBA_CUDA_FAILED.append(repr(exc))
        warnings.warn(
            "torch_ext: the Numba CUDA decoder failed "
            f"({type(exc).__name__}: {exc}); using the pure-torch decoder from now on",
            RuntimeWarning, stacklevel=3,
        )
        return torch_fn(*args)


def _device_nearest(x: Tensor, coords: str, scale: float) -> Tensor:
    """Kernel of both decoding ops on non-CPU devices."""
    if x.is_cuda and cuda_backend() == "numba":
        return _numba_cuda_or_fallback(_numba_cuda_nearest, _torch_nearest, x, coords, scale)
    return _torch_nearest(x, coords, scale)


def _numba_cuda_minvec(x: Tensor, coords: str):
    """Nearest minimal vectors of a CUDA tensor by leechlib's kernel (Numba CUDA)."""
    _check_values(x)
    y = _kernel_rows(x)
    n = y.shape[0]
    idx = torch.zeros(n, dtype=torch.int64, device=x.device)
    v = torch.zeros((n, 24), dtype=torch.float64, device=x.device)  # integer model
    if n:
        _numba_cuda_launch(_kernels.cuda_minvec_int, x, y, v, idx)
    if coords == "unit":
        v = _true_div(v, SQRT8)
    return v.to(x.dtype).reshape(x.shape), idx.reshape(x.shape[:-1])


def _device_minvec(x: Tensor, coords: str):
    """Kernel of the minimal-vector op on non-CPU devices."""
    if x.is_cuda and cuda_backend() == "numba":
        return _numba_cuda_or_fallback(_numba_cuda_minvec, _torch_minvec, x, coords)
    return _torch_minvec(x, coords)


def _torch_minvec(x: Tensor, coords: str):
    _check_values(x)
    y = x.reshape(-1, 24).to(torch.float64)
    if y.shape[0] == 0:
        idx = torch.zeros(0, dtype=torch.int64, device=x.device)
    else:
        chunk = _decoder.DEFAULT_CHUNK_MINVEC.get(y.device.type, 256)
        idx = _decoder._chunked(_chunk_fn("minvec"), y, chunk, pad=_COMPILE["on"])
    table = _decoder.minimal_vectors_int(x.device)
    v = table[idx].to(torch.float64)
    if coords == "unit":
        v = _true_div(v, SQRT8)
    return v.to(x.dtype).reshape(x.shape), idx.reshape(x.shape[:-1])


def _leechlib_nearest(x: Tensor, coords: str, scale: float) -> Tensor:
    arr = x.detach().contiguous().reshape(-1, 24)
    if arr.shape[0] == 0:
        return x.detach().clone()
    _check_values(arr, _factor(coords, scale))
    workers = max(1, torch.get_num_threads())
    a = arr.numpy()  # shares memory with a contiguous CPU tensor
    if scale == 1.0:
        out = leechlib.nearest_point(a, coords=coords, workers=workers)
    else:
        out = leechlib.quantize(a, scale=scale, coords=coords, workers=workers)
    return torch.from_numpy(out).to(x.dtype).reshape(x.shape)


def _leechlib_minvec(x: Tensor, coords: str):
    arr = x.detach().contiguous().reshape(-1, 24)
    if arr.shape[0] == 0:
        return x.detach().clone(), torch.zeros(x.shape[:-1], dtype=torch.int64)
    _check_values(arr)
    workers = max(1, torch.get_num_threads())
    v, idx = leechlib.nearest_minimal_vector(
        arr.numpy(), coords=coords, workers=workers, return_index=True
    )
    v = torch.from_numpy(v).to(x.dtype).reshape(x.shape)
    idx = torch.from_numpy(idx).to(torch.int64).reshape(x.shape[:-1])
    return v, idx


# ---------------------------------------------------------------------------
# custom ops
# ---------------------------------------------------------------------------


@torch.library.custom_op("leech::nearest_point", mutates_args=())
def _nearest_point_op(x: Tensor, coords: str, scale: float) -> Tensor:
    """Nearest lattice point (default implementation: CUDA via Numba, else pure torch)."""
    return _device_nearest(x, coords, scale)


def _cpu_nearest(x, coords, scale):
    """CPU kernel of both decoding ops: leechlib's Numba decoder unless disabled."""
    if cpu_backend() == "leechlib":
        return _leechlib_nearest(x, coords, scale)
    return _torch_nearest(x, coords, scale)


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


@_nearest_minvec_op.register_kernel("cpu")
def _(x, coords):
    if cpu_backend() == "leechlib":
        return _leechlib_minvec(x, coords)
    return _torch_minvec(x, coords)


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
