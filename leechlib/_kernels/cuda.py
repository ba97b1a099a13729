"""The exact Leech decoders on CUDA GPUs (Numba CUDA), from the same functions as the CPU kernels.

The per-point functions of :mod:`leechlib._kernels.leech` and
:mod:`leechlib._kernels.minvec` (``leech_one``, ``minvec_one`` and their helpers) come
from kernel factories, ``make_kernels(jit)``.  :func:`kernels` calls them with
``numba.cuda.jit(device=True)``, so the GPU runs the very same algorithm and
tie-breaking as the CPU, one thread per point, with the scratch tables in
thread-local arrays.  Nothing here is imported by ``import leechlib``; the module
needs ``numba.cuda`` (the ``numba-cuda`` package with a CUDA driver, or the CUDA
simulator ``NUMBA_ENABLE_CUDASIM=1``, which the test suite uses on machines without a
GPU).

Floating point: NVVM contracts ``a*b + c`` into fused multiply-adds, so where the
input is rounded on its way to the integer frame, two lattice points whose distances
differ by rounding only (about 1e-15 relative) may be ordered differently than on the
CPU.  Where the arithmetic is exact (integer and half-integer points in the integer
frame, deep holes) the answer is bitwise the CPU's.

Use :func:`nearest_int` with arrays that expose ``__cuda_array_interface__`` (Numba
device arrays, CuPy arrays, torch CUDA tensors through ``numba.cuda.as_cuda_array``).
The kernel compiles on first use (a few seconds; CUDA code is not cached on disk) and
the lookup tables are copied once per process and device.
"""

from __future__ import annotations

import functools
import math
import os
import types

import numpy as np
from numba import float64, int64

from .._mog import kernel_tables
from . import leech, minvec

try:  # a module global on purpose: the CUDA simulator swaps it inside the kernels
    from numba import cuda
except Exception:  # pragma: no cover - numba.cuda missing or broken
    cuda = None

__all__ = ["available", "kernels", "nearest_int", "minvec_int", "THREADS_PER_BLOCK"]

#: threads per block of the decoding kernel (each thread holds about 11.6 kB of
#: local scratch, so occupancy is bounded by local memory, not by this number)
THREADS_PER_BLOCK = 128


def _numpy_compat() -> None:
    """Let ``numba-cuda`` compile under NumPy >= 2.5.

    Some ``numba-cuda`` releases register an overload for ``np.row_stack`` when their
    typing registries load (at the first kernel compilation); NumPy 2.5 removed that
    name, a deprecated alias of ``np.vstack`` since NumPy 2.0, and the compilation then
    fails with ``AttributeError``.  Restoring the alias (only when it is missing)
    changes nothing for NumPy's own users: it is the same function.
    """
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def available() -> bool:
    """True when ``numba.cuda`` can run kernels here (a GPU, or the simulator)."""
    _numpy_compat()
    if cuda is None:  # pragma: no cover - numba.cuda missing or broken
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors
        return False


def _device_jit(fn):
    """The jit of the device functions: ``numba.cuda.jit(device=True)``."""
    return cuda.jit(device=True)(fn)


@functools.cache
def kernels() -> types.SimpleNamespace:
    """The device functions (from the CPU kernels' factories) and the two CUDA kernels.

    Built on first use; nothing is compiled until a kernel is launched.
    """
    _numpy_compat()
    leech_one = leech.make_kernels(_device_jit).leech_one
    minvec_one = minvec.make_kernels(_device_jit).minvec_one
    scratch_f, scratch_i, max_abs = leech.SCRATCH_F, leech.SCRATCH_I, leech.MAX_ABS

    @cuda.jit
    def nearest_kernel(x, factor, mul, div, dmul, ddiv, pat, hexa, hoff, out, dist, bad):
        k = cuda.grid(1)
        if k >= x.shape[0]:
            return
        fs = cuda.local.array(scratch_f, float64)
        js = cuda.local.array(scratch_i, int64)
        yb = cuda.local.array(24, float64)
        ob = cuda.local.array(24, float64)
        ok = True
        for i in range(24):
            v = float64(x[k, i]) * factor
            yb[i] = v
            if not abs(v) < max_abs:  # also NaN and inf
                ok = False
        if not ok:
            bad[k] = 1
            dist[k] = math.nan
            return
        bad[k] = 0
        d = leech_one(yb, ob, pat, hexa, hoff, fs, js)
        for i in range(24):
            out[k, i] = ob[i] * mul / div
        dist[k] = d * dmul / ddiv

    @cuda.jit
    def minvec_kernel(x, pat, hoff, octads, info, out, idx):
        k = cuda.grid(1)
        if k >= x.shape[0]:
            return
        xb = cuda.local.array(24, float64)
        ob = cuda.local.array(24, float64)
        gm = cuda.local.array(48, float64)
        gg = cuda.local.array(48, int64)
        gd = cuda.local.array(48, float64)
        sv = cuda.local.array(24, float64)
        rr = cuda.local.array(24, float64)
        word = cuda.local.array(24, int64)
        ax = cuda.local.array(24, float64)
        base = cuda.local.array(16, float64)
        for i in range(24):
            xb[i] = float64(x[k, i])
        idx[k] = minvec_one(xb, pat, hoff, octads, info, ob, gm, gg, gd, sv, rr, word, ax, base)
        for i in range(24):
            out[k, i] = ob[i]

    return types.SimpleNamespace(leech_one=leech_one, minvec_one=minvec_one,
                                 nearest_kernel=nearest_kernel, minvec_kernel=minvec_kernel)


_TABLES: dict = {}


def _device_tables():
    # one copy per process and GPU (launches run on the current device)
    try:
        dev_id = cuda.get_current_device().id
    except AttributeError:  # the CUDA simulator has a single fake device
        dev_id = 0
    key = (os.getpid(), dev_id)
    t = _TABLES.get(key)
    if t is None:
        host = kernel_tables()
        t = {name: cuda.to_device(np.ascontiguousarray(host[name]))
             for name in ("pat", "hexa", "hoff_leech", "hoff_golay", "octads", "info")}
        _TABLES[key] = t
    return t


def nearest_int(x, out, dist, bad, *, factor=1.0, mul=1.0, div=1.0, dmul=1.0, ddiv=1.0,
                stream=0):
    """Launch the decoder on device arrays: ``x`` (n, 24) float32/float64 in, ``out``
    (n, 24) float64, ``dist`` (n,) float64 and ``bad`` (n,) int8 out.

    Row k is decoded as ``y = x[k] * factor`` in the integer frame and written as
    ``out[k] = z * mul / div``, ``dist[k] = d * dmul / ddiv`` (as the CPU wrapper
    :func:`leechlib._kernels.leech.leech_nearest` does); ``bad[k] = 1`` where ``y``
    has an entry that is not finite or not below ``2**50`` in absolute value.  The
    caller checks ``bad`` and synchronises ``stream``.
    """
    n = x.shape[0]
    if n == 0:
        return
    t = _device_tables()
    kern = kernels().nearest_kernel
    blocks = (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kern[blocks, THREADS_PER_BLOCK, stream](
        x, float(factor), float(mul), float(div), float(dmul), float(ddiv),
        t["pat"], t["hexa"], t["hoff_leech"], out, dist, bad,
    )


def minvec_int(x, out, idx, *, stream=0):
    """Launch the nearest-minimal-vector search on device arrays: ``x`` (n, 24)
    float32/float64 (integer frame; finite, checked by the caller) in, ``out`` (n, 24)
    float64 (the vector, integer frame) and ``idx`` (n,) int64 (its index in
    :meth:`leechlib.LeechLattice.minimal_vectors` order) out; as the CPU kernel
    :func:`leechlib._kernels.leech.nearest_minvec`, ties included."""
    n = x.shape[0]
    if n == 0:
        return
    t = _device_tables()
    kern = kernels().minvec_kernel
    blocks = (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kern[blocks, THREADS_PER_BLOCK, stream](
        x, t["pat"], t["hoff_golay"], t["octads"], t["info"], out, idx
    )
