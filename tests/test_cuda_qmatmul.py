"""The CUDA kernels of trio-coded weights (``leechlib._kernels.cuda_qmatmul``) against numpy.

Without a GPU the checks run in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
which must be set before ``numba.cuda`` is imported, hence a subprocess): it executes
the kernels as Python, thread by thread, shared memory and barriers included, so it
checks their logic (indexing, the decode, the reduction, the grid-stride loops, the
input checks), not their speed or their compilation for a real device.  The sizes
are tiny for that reason.  On a machine with a GPU the same script runs on the
device, larger (marker ``cuda``).

The reference is :func:`leechlib._kernels.qmatmul.trio_weight_ref` with the numpy
decode :func:`leechlib._kernels.trio.trio_point_ref` (no Numba kernel involved).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, ROOT)
from numba import cuda
from leechlib.kernels import _trio_args, packed_matmul_cuda, packed_weight_cuda
from leechlib._kernels import cuda_qmatmul as cq
from leechlib._kernels.qmatmul import trio_weight_ref
from leechlib._kernels.trio import trio_point_ref

assert cq.available()
ta = _trio_args()
points = lambda c: trio_point_ref(c, *ta)
rng = np.random.default_rng(11)
res = {}

def pack48(codes):
    R, n = codes.shape
    bits = ((codes[:, :, None] >> np.arange(48)) & 1).astype(np.uint8).reshape(R, n * 48)
    return np.packbits(bits, axis=1, bitorder="little")

def case(R, nb, G, extra_bytes=0):
    codes = (rng.integers(0, 1 << 24, size=(R, nb), dtype=np.int64) << 24) | rng.integers(0, 1 << 24, size=(R, nb))
    adversarial = [0, (1 << 48) - 1,          # the first and the last codeword
                   (1 << 24) - 1,             # the largest row of every tier (i1 = i2 = i3 = 255)
                   (1 << 33) - 1,             # ... and the last tier triple (combo 511)
                   1 << 47,                   # eps = 1 alone
                   ((1 << 48) - 1) ^ ((1 << 24) - 1)]  # every bit above the rows
    flat = codes.reshape(-1)
    flat[: min(len(flat), len(adversarial))] = adversarial[: len(flat)]
    packed = pack48(codes)
    if extra_bytes:  # rows longer than the codes (ignored)
        packed = np.concatenate([packed, rng.integers(0, 256, (R, extra_bytes), dtype=np.uint8)], 1)
    scales = rng.uniform(0.5, 2.0, size=(R, G)).astype(np.float32)
    group = np.sort(rng.integers(0, G, size=nb)).astype(np.int64)
    group[0], group[-1] = 0, G - 1
    return packed, scales, group, trio_weight_ref(packed, scales, group, points)

D = cuda.to_device
packed, scales, group, W = case(R, NB, 2)
dp, ds, dg = D(packed), D(scales), D(group)
# W: float64 and float32 bitwise (one rounding of the exact product), float16 too
res["weight"] = [bool(np.array_equal(packed_weight_cuda(dp, ds, dg, dtype=dt).copy_to_host(), W.astype(dt)))
                 for dt in (np.float64, np.float32, np.float16)]
# several rounds of the grid-stride loop and a partial last tile (grid=1), into a given out
p2, s2, g2, W2 = case(R2, 3, 2, extra_bytes=5)
o2 = cuda.device_array(W2.shape, dtype=np.float32)
cq.dequantize(D(p2), D(s2), D(g2), ta, out=o2, grid=1)
res["weight_rounds"] = bool(np.array_equal(o2.copy_to_host(), W2.astype(np.float32)))

def rel(y, want):
    return float(np.abs(y.astype(np.float64) - want).max() / max(1.0, np.abs(want).max()))

errs = {}
for B in BATCHES:
    x = rng.standard_normal((B, 24 * NB)).astype(np.float32)
    errs[f"B{B}"] = rel(packed_matmul_cuda(D(x), dp, ds, dg).copy_to_host(), x.astype(np.float64) @ W.T)
x = rng.standard_normal((3, 24 * NB)).astype(np.float16)
errs["float16"] = rel(packed_matmul_cuda(D(x), dp, ds, dg).copy_to_host(), x.astype(np.float64) @ W.T)
# another launch shape: 8 lanes per row, 4 rows per block, one block (several rounds)
x = rng.standard_normal((3, 24 * NB)).astype(np.float32)
out = cuda.device_array((3, R), dtype=np.float32)
cq.matmul(D(x), dp, ds, dg, ta, out=out, threads=32, lanes=8, grid=1)
errs["lanes8"] = rel(out.copy_to_host(), x.astype(np.float64) @ W.T)
# more than BMAX rows of x: launched BMAX rows at a time
x = rng.standard_normal((BIG_B, 24 * 3)).astype(np.float32)
errs["chunked"] = rel(cq.matmul(D(x), D(p2), D(s2), D(g2), ta, threads=32, lanes=4).copy_to_host(),
                      x.astype(np.float64) @ W2.T)
res["matmul"] = errs
# empty shapes
no_rows = (D(np.zeros((0, 6), np.uint8)), D(np.ones((0, 1), np.float32)), D(np.zeros(1, np.int64)))
no_blocks = (D(np.zeros((4, 0), np.uint8)), D(np.ones((4, 1), np.float32)), D(np.zeros(0, np.int64)))
res["empty"] = [
    packed_matmul_cuda(D(np.zeros((0, 24 * NB), np.float32)), dp, ds, dg).shape == (0, R),
    packed_weight_cuda(*no_rows).shape == (0, 24),
    bool((packed_matmul_cuda(D(np.ones((2, 0), np.float32)), *no_blocks).copy_to_host() == 0).all()),
]
# bad input: the error names the argument
x = D(np.zeros((1, 24 * NB), np.float32))
bad = {
    "x64": lambda: packed_matmul_cuda(D(np.zeros((1, 24 * NB))), dp, ds, dg),
    "xshape": lambda: packed_matmul_cuda(D(np.zeros((1, 24 * NB + 1), np.float32)), dp, ds, dg),
    "xstrided": lambda: packed_matmul_cuda(D(np.zeros((1, 48 * NB), np.float32))[:, ::2], dp, ds, dg),
    "xhost": lambda: packed_matmul_cuda(np.zeros((1, 24 * NB), np.float32), dp, ds, dg),
    "packed": lambda: packed_matmul_cuda(x, D(packed.astype(np.int16)), ds, dg),
    "packed_short": lambda: packed_matmul_cuda(x, D(packed[:, :-1].copy()), ds, dg),
    "scales": lambda: packed_matmul_cuda(x, dp, D(scales.astype(np.float64)), dg),
    "scales_rows": lambda: packed_matmul_cuda(x, dp, D(scales[:-1].copy()), dg),
    "group": lambda: packed_matmul_cuda(x, dp, ds, D(group.astype(np.int32))),
    "group_range": lambda: packed_matmul_cuda(x, dp, ds, D(group + 1)),
    "out": lambda: packed_matmul_cuda(x, dp, ds, dg, out=cuda.device_array((1, R + 1), np.float32)),
    "out_dtype": lambda: packed_weight_cuda(dp, ds, dg, out=cuda.device_array(W.shape, np.int32)),
    "dtype": lambda: packed_weight_cuda(dp, ds, dg, dtype=np.int32),
    "codebook": lambda: packed_matmul_cuda(x, dp, ds, dg, codebook="table"),
    "lanes": lambda: cq.matmul(x, dp, ds, dg, ta, lanes=5, threads=32),
}
msgs = {}
for k, f in bad.items():
    try:
        f()
        msgs[k] = ["no error", ""]
    except (TypeError, ValueError) as exc:
        msgs[k] = [type(exc).__name__, str(exc)]
res["errors"] = msgs
print(json.dumps(res))
"""

#: (exception, start of the message) of each bad input of the script
_ERRORS = {
    "x64": ("TypeError", "x must be float32 or float16, got float64"),
    "xshape": ("ValueError", "x must have shape (B, "),
    "xstrided": ("ValueError", "x must be C-contiguous"),
    "xhost": ("TypeError", "x must be a CUDA device array"),
    "packed": ("TypeError", "packed must be uint8, got int16"),
    "packed_short": ("ValueError", "packed rows hold"),
    "scales": ("TypeError", "scales must be float32, got float64"),
    "scales_rows": ("ValueError", "scales must have one row per row of packed"),
    "group": ("TypeError", "group must be int64, got int32"),
    "group_range": ("ValueError", "group must index the 2 scale columns"),
    "out": ("ValueError", "out must have shape"),
    "out_dtype": ("TypeError", "out must be float16 or float32 or float64, got int32"),
    "dtype": ("ValueError", "dtype must be float16, float32 or float64"),
    "codebook": ("ValueError", "codebook must be 'trio'"),
    "lanes": ("ValueError", "lanes must be in 1..32 and threads a multiple of lanes"),
}


def _run(env_extra, **sizes):
    env = dict(os.environ, **env_extra)
    head = f"ROOT = {ROOT!r}\n" + "".join(f"{k} = {v!r}\n" for k, v in sizes.items())
    out = subprocess.run([sys.executable, "-c", head + _SCRIPT], env=env, capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(res):
    assert res["weight"] == [True, True, True]
    assert res["weight_rounds"]
    for k, err in res["matmul"].items():  # float32 products and sums (float16 x is exact in float64)
        assert err < 2e-5, (k, err)
    assert res["empty"] == [True, True, True]
    for k, (exc, start) in _ERRORS.items():
        got_exc, msg = res["errors"][k]
        assert got_exc == exc and msg.startswith(start), (k, got_exc, msg)


def test_cuda_qmatmul_in_the_simulator():
    pytest.importorskip("numba")
    _check(_run({"NUMBA_ENABLE_CUDASIM": "1"}, R=5, NB=3, R2=45, BATCHES=(1, 3), BIG_B=17))


@pytest.mark.cuda
def test_cuda_qmatmul_on_the_gpu():  # pragma: no cover - needs a GPU
    _check(_run({"NUMBA_ENABLE_CUDASIM": "0"}, R=300, NB=40, R2=1000, BATCHES=(1, 3, 8, 16), BIG_B=40))


def test_host_arrays_and_other_codebooks_are_refused():
    # no simulator needed: the checks come before any CUDA call
    from leechlib.kernels import packed_matmul_cuda, packed_weight_cuda

    x = np.zeros((1, 24), dtype=np.float32)
    p, s, g = np.zeros((1, 6), np.uint8), np.ones((1, 1), np.float32), np.zeros(1, np.int64)
    with pytest.raises(TypeError, match="x must be a CUDA device array"):
        packed_matmul_cuda(x, p, s, g)
    with pytest.raises(TypeError, match="packed must be a CUDA device array"):
        packed_weight_cuda(p, s, g)
    with pytest.raises(ValueError, match="codebook must be 'trio'"):
        packed_weight_cuda(p, s, g, codebook="table")


def test_gpu_tables_repack_the_decode_tables():
    # the GPU tables hold exactly the CPU decode's tables
    from leechlib._kernels.cuda_qmatmul import gpu_tables
    from leechlib.kernels import _trio_args

    b, cb, tab, perm, sign, cls_of, glo, ghi, combos = _trio_args()
    t = gpu_tables(b, cb, tab, perm, sign, cls_of, glo, ghi, combos)
    sh = 8 * np.arange(8, dtype=np.int64)
    back = (((t["tab64"][..., None] >> sh) & 255) ^ 128) - 128
    assert np.array_equal(back, tab)
    ps = t["psw"].astype(np.int64)[..., None]
    assert np.array_equal((ps >> (3 * np.arange(8))) & 7, perm)
    assert np.array_equal(np.where((ps >> (24 + np.arange(8))) & 1, -1, 1), sign)
    assert np.array_equal(t["cls"], cls_of) and np.array_equal(t["combos"], combos)
    assert np.array_equal(t["glo"], glo) and np.array_equal(t["ghi"], ghi)


_PTX_SCRIPT = r"""
import sys, types
sys.path.insert(0, ROOT)
import numba.cuda.dispatcher as dispatcher
from numba.cuda.cudadrv import nvvm
if not nvvm.is_available():
    print("no NVVM")
    sys.exit(0)
# no driver needed: device functions ask the current device for its capability
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from numba import cuda, types as nt
from leechlib._kernels import cuda_qmatmul as cq
k = cq.kernels()
A = lambda t, d=1: nt.Array(t, d, "C")
tabs = (nt.int64, nt.int64, A(nt.int64, 2), A(nt.int32, 2), A(nt.int8, 3), A(nt.int32), A(nt.int32), A(nt.int8, 2))
for xt in (nt.float32, nt.float16):
    sig = (A(xt, 2), A(nt.uint8, 2), A(nt.float32, 2), A(nt.int64)) + tabs + (nt.int64, A(nt.float32, 2))
    ptx, _ = cuda.compile_ptx(k.matmul_kernel.py_func, sig, cc=(9, 0))
    assert "call.uni" not in ptx  # the device functions are inlined
for ot in (nt.float16, nt.float32, nt.float64):
    sig = (A(nt.uint8, 2), A(nt.float32, 2), A(nt.int64)) + tabs + (A(ot),)
    ptx, _ = cuda.compile_ptx(k.dequantize_kernel.py_func, sig, cc=(9, 0))
print("compiled")
"""


@pytest.mark.slow
def test_kernels_compile_for_a_real_gpu():
    # the simulator runs the kernels as Python: typing and lowering for the device are
    # only checked by compiling to PTX (NVVM, no GPU or driver needed; skipped without NVVM)
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + _PTX_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    if out.stdout.strip().endswith("no NVVM"):
        pytest.skip("no NVVM (CUDA toolkit) here")
    assert out.stdout.strip().endswith("compiled")
