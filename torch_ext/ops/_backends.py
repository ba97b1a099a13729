"""The three implementations behind :mod:`torch_ext.ops` and the choice between them.

* ``leechlib``: leechlib's Numba kernels through numpy (CPU tensors; no copy for
  contiguous float32/float64 input);
* ``numba``: leechlib's kernels compiled for the GPU by Numba CUDA, launched on
  torch's current stream through :mod:`leechlib.kernels` (CUDA tensors); if Numba
  CUDA fails at run time the ops warn once and use pure torch from then on;
* ``torch``: the pure-torch decoders of :mod:`torch_ext.ops._decoder` (any device),
  optionally ``torch.compile``-d (:func:`set_decoder_compile`).

:func:`cpu_backend` and :func:`cuda_backend` say which runs (both public through
:mod:`torch_ext.ops`).  The kernels here take validated arguments (``coords``,
``scale``) and run the data checks (:func:`_check_values`) themselves, on real
tensors, never while tracing.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch
from torch import Tensor

import leechlib
from leechlib import kernels as _kernels
from leechlib.kernels import MAX_ABS, SQRT8

from . import _decoder

_FLOATS = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------
# data checks and frames
# ---------------------------------------------------------------------------


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


def _factor(coords: str, scale: float) -> float:
    """Multiplier from the caller's frame to the integer model."""
    return (SQRT8 if coords == "unit" else 1.0) / scale


def _to_int_frame(x: Tensor, coords: str, scale: float) -> Tensor:
    factor = _factor(coords, scale)
    y = x.reshape(-1, 24).to(torch.float64)
    return y * factor if factor != 1.0 else y


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


# ---------------------------------------------------------------------------
# backend selection
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


@functools.cache
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


# ---------------------------------------------------------------------------
# pure torch (any device)
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# leechlib's Numba kernels (CPU)
# ---------------------------------------------------------------------------


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
# leechlib's kernels compiled by Numba CUDA (CUDA tensors)
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# the kernels of the custom ops
# ---------------------------------------------------------------------------


def _cpu_nearest(x, coords, scale):
    """CPU kernel of both decoding ops: leechlib's Numba decoder unless disabled."""
    if cpu_backend() == "leechlib":
        return _leechlib_nearest(x, coords, scale)
    return _torch_nearest(x, coords, scale)


def _cpu_minvec(x: Tensor, coords: str):
    """CPU kernel of the minimal-vector op: leechlib's Numba kernel unless disabled."""
    if cpu_backend() == "leechlib":
        return _leechlib_minvec(x, coords)
    return _torch_minvec(x, coords)


def _device_nearest(x: Tensor, coords: str, scale: float) -> Tensor:
    """Kernel of both decoding ops on non-CPU devices."""
    if x.is_cuda and cuda_backend() == "numba":
        return _numba_cuda_or_fallback(_numba_cuda_nearest, _torch_nearest, x, coords, scale)
    return _torch_nearest(x, coords, scale)


def _device_minvec(x: Tensor, coords: str):
    """Kernel of the minimal-vector op on non-CPU devices."""
    if x.is_cuda and cuda_backend() == "numba":
        return _numba_cuda_or_fallback(_numba_cuda_minvec, _torch_minvec, x, coords)
    return _torch_minvec(x, coords)
