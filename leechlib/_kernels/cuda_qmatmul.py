r"""Products with trio-coded weights on CUDA GPUs (Numba CUDA), from the packed codes.

The GPU half of :mod:`leechlib._kernels.qmatmul` for the trio code: with
``W[r, 24j : 24j+24] = scales[r, group[j]] * decode(code[r, j])`` (48-bit codes, six
bytes per block, least significant byte first, as
:func:`~leechlib._kernels.qmatmul.read_code` reads them), the kernels compute

* ``out = x @ W.T`` (:func:`matmul`; ``x`` of shape ``(B, 24 nb)``, float32 or float16;
  ``out`` float32) without ever holding ``W``: one thread block per group of output
  rows, ``lanes`` threads per row (32 by default: a warp per row), each lane decoding
  the blocks ``lane, lane + lanes, ...`` of its row once into 24 floats and using them
  for the ``B <= 16`` rows of ``x`` (float32 products and sums), then a reduction of
  the lanes' partial sums through shared memory (plain loads and stores and
  ``syncthreads``, no warp shuffles, so that Numba's CUDA simulator runs it too).
  Batches beyond 16 are launched 16 rows of ``x`` at a time (each launch decodes the
  codes again: for large batches dequantizing once and calling cuBLAS is the better
  plan).
* ``W`` itself (:func:`dequantize`; float16, float32 or float64 of shape
  ``(R, 24 nb)``): one thread per block of 24 weights, ``float64(scale) * value``
  rounded once to the output type (the CPU kernel's arithmetic: float32 and float64
  results are bitwise the CPU's), written through a shared-memory tile so that the
  stores of a thread block are contiguous.

The decode is one device function, :func:`decode_block_dev` (made by
:func:`make_decode`), a line-by-line mirror of
:func:`leechlib._kernels.trio.decode_block`.  Its tables are the same tables repacked
for the GPU (:func:`gpu_tables`): the class table ``tab`` (12 x 4096 rows of 8 int8,
384 KiB: too large for shared memory) stays in global memory (L2) as one int64 per
row, so that an octet is one 8-byte load; the small tables are copied into each
thread block's shared memory (about 5 KiB): ``perm`` and ``sign`` as one int32 per
``(eps, pattern byte)`` (eight 3-bit positions, eight sign bits), ``cls_of``,
``gen_lo``, ``gen_hi`` and ``combos`` narrowed to int8/int32.

**Not measured.**  No GPU was available when these kernels were written: they are
checked for correctness in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
``tests/test_cuda_qmatmul.py``) and compiled to PTX with NVVM, but their speed is
unknown; ``benchmarks/gpu_qmatmul.py`` measures them against cuBLAS on a GPU.  The
launch shape (``threads``, ``lanes``, ``grid``) is a parameter of :func:`matmul` for
that reason.

Nothing here is imported by ``import leechlib``; the kernels are built on first use
(:func:`kernels`) and compiled on their first launch for each argument type
(seconds; CUDA code is not cached on disk).  The device tables are copied once per
process and device.  Public, validated entries:
:func:`leechlib.kernels.packed_matmul_cuda` and :func:`leechlib.kernels.packed_weight_cuda`.
"""

from __future__ import annotations

import functools
import math
import os
import types

import numpy as np
from numba import float32, float64, int8, int32, int64

from . import cuda as _cuda_mod

try:  # a module global on purpose: the CUDA simulator swaps it inside the kernels
    from numba import cuda
except Exception:  # pragma: no cover - numba.cuda missing or broken
    cuda = None

__all__ = ["BMAX", "MAX_THREADS", "DEQ_THREADS", "available", "gpu_tables", "make_decode", "kernels",
           "device_tables", "matmul", "dequantize", "as_device_array"]

#: rows of ``x`` per launch of the product kernel (per-lane float32 accumulators)
BMAX = 16
#: most threads per block of the product kernel (its shared reduction buffer)
MAX_THREADS = 256
#: threads per block of the product kernel (default)
THREADS = 128
#: lanes (threads) per output row of the product kernel (default: a warp)
LANES = 32
#: threads per block of the dequantization kernel (its shared output tile)
DEQ_THREADS = 128
#: most thread blocks per launch (grid-stride loops beyond: each block copies the
#: small tables to shared memory once and reuses them)
MAX_GRID = 2048
#: most tier triples the shared ``combos`` table holds (``combo_bits <= 9``)
MAX_COMBOS = 512


def available() -> bool:
    """True when ``numba.cuda`` can run kernels here (a GPU, or the simulator)."""
    return _cuda_mod.available()


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------


def gpu_tables(b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos) -> dict:
    """The trio decode tables (the arguments of :func:`~leechlib._kernels.trio.decode_block`)
    repacked for the GPU (numpy, host).

    ``tab64`` (12, rows) int64: the eight int8 of a class-table row, byte ``i`` in bits
    ``8i .. 8i+7``; ``psw`` (2, 256) int32: ``perm[eps, p, i]`` in bits ``3i .. 3i+2``
    and bit ``24 + i`` set where ``sign[eps, p, i] = -1``; ``cls`` (2, 256, 2) int8,
    ``glo``, ``ghi`` (64,) int32, ``combos`` (C, 3) int8.
    """
    tab = np.ascontiguousarray(tab, dtype=np.int8)
    if tab.ndim != 3 or tab.shape[2] != 8:
        raise ValueError(f"tab must have shape (classes, rows, 8), got {tab.shape}")
    perm = np.asarray(perm, dtype=np.int64)
    sign = np.asarray(sign, dtype=np.int64)
    if perm.min() < 0 or perm.max() > 7 or not np.isin(sign, (-1, 1)).all():
        raise ValueError("perm must hold positions 0..7 and sign +-1")
    combos = np.asarray(combos, dtype=np.int64)
    if combos.shape[0] > MAX_COMBOS or combos.min() < 0 or combos.max() > 127:
        raise ValueError(f"combos must hold at most {MAX_COMBOS} triples of tiers below 128")
    bit = np.arange(8, dtype=np.int64)
    psw = ((perm << (3 * bit)).sum(-1) | ((sign < 0).astype(np.int64) << (24 + bit)).sum(-1))
    tab64 = np.ascontiguousarray(tab.view("<i8").reshape(tab.shape[0], tab.shape[1]))
    return {
        "b": int(b), "cb": int(cb),
        "tab64": tab64,
        "psw": psw.astype(np.uint32).view(np.int32).reshape(2, 256),
        "cls": np.ascontiguousarray(cls_of, dtype=np.int8).reshape(2, 256, 2),
        "glo": np.ascontiguousarray(gen_lo, dtype=np.int32).reshape(64),
        "ghi": np.ascontiguousarray(gen_hi, dtype=np.int32).reshape(64),
        "combos": np.ascontiguousarray(combos, dtype=np.int8).reshape(-1, 3),
    }


_TABLES: dict = {}


def device_tables(trio_args: tuple) -> dict:
    """:func:`gpu_tables` of ``trio_args`` on the current device (copied once per process and device)."""
    try:
        dev_id = cuda.get_current_device().id
    except AttributeError:  # the CUDA simulator has a single fake device
        dev_id = 0
    b, cb, tab = trio_args[0], trio_args[1], trio_args[2]
    key = (os.getpid(), dev_id, int(b), int(cb), tab.shape, id(tab))
    t = _TABLES.get(key)
    if t is None:
        host = gpu_tables(*trio_args)
        t = {k: (v if isinstance(v, int) else cuda.to_device(v)) for k, v in host.items()}
        _TABLES[key] = t
    return t


# ---------------------------------------------------------------------------
# device functions and kernels
# ---------------------------------------------------------------------------


def make_decode(jit):
    """``(read_code48, decode_block_dev, load_tables)`` compiled with ``jit`` (``cuda.jit(device=True)``).

    ``decode_block_dev(x, b, cb, tab64, psw, cls_of, gen_lo, gen_hi, combos, out)`` is
    :func:`leechlib._kernels.trio.decode_block` with the GPU tables of
    :func:`gpu_tables` (``out[0:24]``, a float32 local array).
    """

    @jit
    def read_code48(packed, r, j):
        """The ``j``-th 48-bit code of row ``r`` (six bytes, least significant first)."""
        a = 6 * j
        return (int64(packed[r, a]) | (int64(packed[r, a + 1]) << 8) | (int64(packed[r, a + 2]) << 16)
                | (int64(packed[r, a + 3]) << 24) | (int64(packed[r, a + 4]) << 32)
                | (int64(packed[r, a + 5]) << 40))

    @jit
    def decode_block_dev(x, b, cb, tab64, psw, cls_of, gen_lo, gen_hi, combos, out):
        mask = (int64(1) << b) - 1
        S = int64(1) << b
        i3 = x & mask
        i2 = (x >> b) & mask
        i1 = (x >> (2 * b)) & mask
        q = x >> (3 * b)
        c = q & ((int64(1) << cb) - 1)
        q >>= cb
        pi2 = q & 1
        pi1 = (q >> 1) & 1
        m = (q >> 2) & 4095
        eps = q >> 14
        word = int64(gen_lo[m & 63]) ^ int64(gen_hi[m >> 6])
        for j in range(3):
            p = (word >> (8 * j)) & 255
            pij = pi1 if j == 0 else (pi2 if j == 1 else eps ^ pi1 ^ pi2)
            row = int64(combos[c, j]) * S + (i1 if j == 0 else (i2 if j == 1 else i3))
            cl = int64(cls_of[eps, p, pij])
            t = int64(tab64[cl, row])  # the octet: eight int8, one load
            ps = int64(psw[eps, p])  # positions (3 bits each) and sign bits (24 + i)
            for i in range(8):
                v = ((t >> (8 * i)) & 255) ^ 128
                v -= 128
                if (ps >> (24 + i)) & 1:
                    v = -v
                out[8 * j + ((ps >> (3 * i)) & 7)] = v

    @jit
    def load_tables(tid, nthr, psw, cls, glo, ghi, combos, s_psw, s_cls, s_glo, s_ghi, s_comb):
        """The block's threads copy the small tables to shared memory (the caller syncs)."""
        for k in range(tid, 512, nthr):
            s_psw[k >> 8, k & 255] = psw[k >> 8, k & 255]
        for k in range(tid, 1024, nthr):
            s_cls[k >> 9, (k >> 1) & 255, k & 1] = cls[k >> 9, (k >> 1) & 255, k & 1]
        for k in range(tid, 64, nthr):
            s_glo[k] = glo[k]
            s_ghi[k] = ghi[k]
        for k in range(tid, 3 * combos.shape[0], nthr):
            s_comb[k // 3, k % 3] = combos[k // 3, k % 3]

    return read_code48, decode_block_dev, load_tables


def _device_jit(fn):
    return cuda.jit(device=True)(fn)


@functools.cache
def kernels() -> types.SimpleNamespace:
    """The device functions and the two kernels (built on first use, compiled on first launch)."""
    _cuda_mod._numpy_compat()
    read_code48, decode_block_dev, load_tables = make_decode(_device_jit)
    bmax, max_combos = BMAX, MAX_COMBOS
    red_n, tile_n = MAX_THREADS * BMAX, DEQ_THREADS * 24  # shared array sizes: compile-time constants

    @cuda.jit
    def matmul_kernel(x, packed, scales, group, b, cb, tab64, psw, cls, glo, ghi, combos, lanes, out):
        """``out[bb, r] = sum_j scales[r, group[j]] * <decode(code[r, j]), x[bb, block j]>``."""
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        s_psw = cuda.shared.array((2, 256), int32)
        s_cls = cuda.shared.array((2, 256, 2), int8)
        s_glo = cuda.shared.array(64, int32)
        s_ghi = cuda.shared.array(64, int32)
        s_comb = cuda.shared.array((max_combos, 3), int8)
        red = cuda.shared.array(red_n, float32)
        load_tables(tid, nthr, psw, cls, glo, ghi, combos, s_psw, s_cls, s_glo, s_ghi, s_comb)
        cuda.syncthreads()
        w = cuda.local.array(24, float32)
        acc = cuda.local.array(bmax, float32)
        B = x.shape[0]
        R = packed.shape[0]
        nb = group.shape[0]
        slot = tid // lanes  # the row of this thread within the block's group of rows
        lane = tid - slot * lanes
        per = nthr // lanes  # rows per block and round
        for base in range(cuda.blockIdx.x * per, R, cuda.gridDim.x * per):  # uniform over the block
            r = base + slot
            for bb in range(B):
                acc[bb] = float32(0.0)
            if slot < per and r < R:
                for j in range(lane, nb, lanes):
                    decode_block_dev(read_code48(packed, r, j), b, cb, tab64, s_psw, s_cls, s_glo, s_ghi,
                                     s_comb, w)
                    sc = float32(scales[r, group[j]])
                    o = 24 * j
                    for bb in range(B):
                        s = float32(0.0)
                        for i in range(24):
                            s += w[i] * float32(x[bb, o + i])
                        acc[bb] += sc * s
            for bb in range(B):
                red[tid * bmax + bb] = acc[bb]
            cuda.syncthreads()
            if slot < per and r < R:
                for bb in range(lane, B, lanes):
                    t = float32(0.0)
                    for k in range(lanes):
                        t += red[(slot * lanes + k) * bmax + bb]
                    out[bb, r] = t
            cuda.syncthreads()

    @cuda.jit
    def dequantize_kernel(packed, scales, group, b, cb, tab64, psw, cls, glo, ghi, combos, out):
        """``out[r*P + 24j + i] = float64(scales[r, group[j]]) * decode(code[r, j])[i]`` (``out`` flat)."""
        tid = cuda.threadIdx.x
        nthr = cuda.blockDim.x
        s_psw = cuda.shared.array((2, 256), int32)
        s_cls = cuda.shared.array((2, 256, 2), int8)
        s_glo = cuda.shared.array(64, int32)
        s_ghi = cuda.shared.array(64, int32)
        s_comb = cuda.shared.array((max_combos, 3), int8)
        tile = cuda.shared.array(tile_n, float64)
        load_tables(tid, nthr, psw, cls, glo, ghi, combos, s_psw, s_cls, s_glo, s_ghi, s_comb)
        cuda.syncthreads()
        w = cuda.local.array(24, float32)
        nb = group.shape[0]
        n = packed.shape[0] * nb  # blocks of 24 weights, row-major: block t at out[24t : 24t + 24]
        for base in range(cuda.blockIdx.x * nthr, n, cuda.gridDim.x * nthr):  # uniform over the block
            t = base + tid
            if t < n:
                r = t // nb
                j = t - r * nb
                decode_block_dev(read_code48(packed, r, j), b, cb, tab64, s_psw, s_cls, s_glo, s_ghi, s_comb, w)
                sc = float64(scales[r, group[j]])  # exact product, one rounding to out's dtype
                for i in range(24):
                    tile[24 * tid + i] = sc * w[i]
            cuda.syncthreads()
            lim = 24 * (n - base if n - base < nthr else nthr)  # (no builtin min: numba 0.68's CUDA target rejects it)
            o = 24 * base
            for k in range(tid, lim, nthr):  # contiguous stores
                out[o + k] = tile[k]
            cuda.syncthreads()

    return types.SimpleNamespace(read_code48=read_code48, decode_block_dev=decode_block_dev,
                                 load_tables=load_tables, matmul_kernel=matmul_kernel,
                                 dequantize_kernel=dequantize_kernel)


# ---------------------------------------------------------------------------
# launchers (validated)
# ---------------------------------------------------------------------------


def as_device_array(a, name: str):
    """``a`` as a Numba device array (no copy): a Numba device array itself, or any object
    with ``__cuda_array_interface__`` (a torch CUDA tensor, a CuPy array).  ``TypeError``
    naming the argument otherwise (a numpy array included: no implicit transfers)."""
    if getattr(a, "__cuda_ndarray__", False):  # numba device arrays (the simulator's too)
        return a
    if hasattr(a, "__cuda_array_interface__"):
        if not hasattr(cuda, "as_cuda_array"):  # pragma: no cover - the simulator has none
            raise TypeError(f"{name}: __cuda_array_interface__ objects need a real numba.cuda, "
                            "not the simulator")
        return cuda.as_cuda_array(a)
    raise TypeError(f"{name} must be a CUDA device array (a numba device array or an object with "
                    f"__cuda_array_interface__, e.g. a torch CUDA tensor), got {type(a).__name__}")


def _check(a, name: str, dtypes: tuple, ndim: int):
    a = as_device_array(a, name)
    dt = np.dtype(a.dtype)
    if dt not in dtypes:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must be {names}, got {dt.name}")
    if len(a.shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if not a.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _check_codes(packed, scales, group, check_group: bool):
    """Validated ``(packed, scales, group, R, nb)`` of the trio code (48-bit codes)."""
    packed = _check(packed, "packed", (np.uint8,), 2)
    scales = _check(scales, "scales", (np.float32,), 2)
    group = _check(group, "group", (np.int64,), 1)
    R, nb = packed.shape[0], group.shape[0]
    if scales.shape[0] != R:
        raise ValueError(f"scales must have one row per row of packed ({R}), got {scales.shape[0]}")
    if packed.shape[1] < 6 * nb:
        raise ValueError(f"packed rows hold {packed.shape[1]} bytes, {nb} codes of 48 bits need {6 * nb}")
    if nb and scales.shape[1] == 0:
        raise ValueError("scales must have at least one column")
    if check_group and nb:
        g = group.copy_to_host()  # small; synchronises
        if g.min() < 0 or g.max() >= scales.shape[1]:
            raise ValueError(f"group must index the {scales.shape[1]} scale columns")
    return packed, scales, group, R, nb


def _grid(units: int, per_block: int, grid) -> int:
    g = max(1, math.ceil(units / per_block))
    cap = MAX_GRID if grid is None else int(grid)
    if cap < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return min(g, cap)


def matmul(x, packed, scales, group, trio_args, *, out=None, stream=0, check_group=True, threads=None,
           lanes=None, grid=None):
    """``x @ W.T`` of trio-coded ``W`` on the GPU (see the module docstring); returns ``out``.

    ``x`` (B, 24 nb) float32/float16, ``packed`` (R, >= 6 nb) uint8, ``scales`` (R, G)
    float32, ``group`` (nb,) int64, ``out`` (B, R) float32 (allocated if None), all
    C-contiguous device arrays; ``trio_args`` the decode arguments
    (:func:`leechlib.kernels._trio_args`).  ``check_group``: copy ``group`` to the host
    and check its range (a synchronising copy; pass False when it is known valid).
    ``threads`` per block (a multiple of ``lanes``, at most :data:`MAX_THREADS`) and
    ``lanes`` per row: the launch shape (tuning; defaults :data:`THREADS`, :data:`LANES`).
    """
    x = _check(x, "x", (np.float32, np.float16), 2)
    packed, scales, group, R, nb = _check_codes(packed, scales, group, check_group)
    B = x.shape[0]
    if x.shape[1] != 24 * nb:
        raise ValueError(f"x must have shape (B, {24 * nb}) (24 columns per block of group), got {tuple(x.shape)}")
    if out is None:
        out = cuda.device_array((B, R), dtype=np.float32, stream=stream)
    else:
        out = _check(out, "out", (np.float32,), 2)
        if tuple(out.shape) != (B, R):
            raise ValueError(f"out must have shape {(B, R)}, got {tuple(out.shape)}")
    lanes = LANES if lanes is None else int(lanes)
    threads = THREADS if threads is None else int(threads)
    if not (1 <= lanes <= 32 and lanes <= threads <= MAX_THREADS and threads % lanes == 0):
        raise ValueError(f"lanes must be in 1..32 and threads a multiple of lanes up to {MAX_THREADS}, "
                         f"got lanes={lanes}, threads={threads}")
    if R == 0 or B == 0:
        return out
    t = device_tables(trio_args)
    kern = kernels().matmul_kernel
    blocks = _grid(R, threads // lanes, grid)
    for b0 in range(0, B, BMAX):  # BMAX rows of x per launch
        b1 = min(B, b0 + BMAX)
        xs, os_ = (x, out) if (b0 == 0 and b1 == B) else (x[b0:b1], out[b0:b1])
        kern[blocks, threads, stream](xs, packed, scales, group, t["b"], t["cb"], t["tab64"], t["psw"], t["cls"],
                                      t["glo"], t["ghi"], t["combos"], lanes, os_)
    return out


def dequantize(packed, scales, group, trio_args, *, out=None, dtype=np.float32, stream=0, check_group=True,
               grid=None):
    """``W`` (R, 24 nb) of trio codes on the GPU into ``out`` (float16/float32/float64,
    allocated with ``dtype`` if None); returns ``out``.  Arguments as in :func:`matmul`."""
    packed, scales, group, R, nb = _check_codes(packed, scales, group, check_group)
    if out is None:
        dt = np.dtype(dtype)
        if dt not in (np.float16, np.float32, np.float64):
            raise ValueError(f"dtype must be float16, float32 or float64, got {dt}")
        out = cuda.device_array((R, 24 * nb), dtype=dt, stream=stream)
    else:
        out = _check(out, "out", (np.float16, np.float32, np.float64), 2)
        if tuple(out.shape) != (R, 24 * nb):
            raise ValueError(f"out must have shape {(R, 24 * nb)}, got {tuple(out.shape)}")
    n = R * nb
    if n == 0:
        return out
    t = device_tables(trio_args)
    kern = kernels().dequantize_kernel
    kern[_grid(n, DEQ_THREADS, grid), DEQ_THREADS, stream](
        packed, scales, group, t["b"], t["cb"], t["tab64"], t["psw"], t["cls"], t["glo"], t["ghi"], t["combos"],
        out.reshape(R * 24 * nb))
    return out
