"""The CUDA decoders (``leechlib._kernels.cuda``) against the CPU kernels.

Without a GPU it runs in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which must
be set before ``numba.cuda`` is imported, hence a subprocess): the simulator executes
the same device functions as Python, so these tests check the kernel's logic, its
input checks and the re-use of the CPU functions (the kernel factories).  On a
machine with a GPU the same script runs on the device (marker ``cuda``).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, ROOT)
from numba import cuda
import leechlib
from leechlib._kernels import cuda as lc

assert lc.available()
rng = np.random.default_rng(7)
S8 = np.sqrt(8.0)
res = {}

def run(x, factor, mul, div, dmul, ddiv):
    n = len(x)
    dx = cuda.to_device(np.ascontiguousarray(x))
    out = cuda.device_array((n, 24), dtype=np.float64)
    dist = cuda.device_array(n, dtype=np.float64)
    bad = cuda.device_array(n, dtype=np.int8)
    lc.nearest_int(dx, out, dist, bad, factor=factor, mul=mul, div=div, dmul=dmul, ddiv=ddiv)
    cuda.synchronize()
    return out.copy_to_host(), dist.copy_to_host(), bad.copy_to_host()

# unit coordinates, float32 and float64, against leechlib.nearest_point on the CPU
for dt in ("float32", "float64"):
    x = (rng.standard_normal((N, 24)) * 1.3).astype(dt)
    p, d, b = run(x, S8, 1.0, S8, 1.0, 8.0)
    q, e = leechlib.nearest_point(x, return_distance=True)
    res["unit_" + dt] = [int((p.astype(dt) != q).any(1).sum()),
                         float(np.abs(d - e.astype(np.float64)).max()), int(b.sum())]
# exact ties: integers and halves in the integer frame, deep holes + 8Z^24
x = np.concatenate([rng.integers(-9, 10, (N, 24)), rng.integers(-9, 10, (N, 24)) / 2.0])
h = np.zeros((N, 24)); h[:, 0] = 4.0
x = np.concatenate([x, h + 8.0 * rng.integers(-3, 4, h.shape)]).astype(np.float64)
p, d, b = run(x, 1.0, 1.0, 1.0, 1.0, 1.0)
q = leechlib.nearest_point(x, coords="int")
res["ties"] = [int((p != q).any(1).sum()), int(b.sum())]
# a scale: quantize(x, scale=0.4)
x = rng.standard_normal((N, 24))
f = S8 / 0.4
p, d, b = run(x, f, 1.0 / f, 1.0, (1.0 / f) ** 2, 1.0)
q = leechlib.quantize(x, scale=0.4)
res["scaled"] = [int((p != q).any(1).sum())]
# bad rows are flagged, good rows still decoded
x = rng.standard_normal((6, 24))
x[1, 5] = np.nan; x[3, 0] = np.inf; x[4, 2] = 1e300
p, d, b = run(x, S8, 1.0, S8, 1.0, 8.0)
res["bad"] = b.tolist()
res["bad_dist_nan"] = [bool(np.isnan(v)) for v in d]
q = leechlib.nearest_point(x[[0, 2, 5]])
res["good_rows"] = int((p[[0, 2, 5]] != q).any(1).sum())
# nearest minimal vector, Gaussian and integer (tied) inputs
x = np.concatenate([rng.standard_normal((N, 24)), rng.integers(-2, 3, (N, 24)).astype(float)])
x[(x == 0).all(1), 0] = 1.0
dx = cuda.to_device(x)
vo = cuda.device_array((len(x), 24), dtype=np.float64)
io = cuda.device_array(len(x), dtype=np.int64)
lc.minvec_int(dx, vo, io)
cuda.synchronize()
v, i = leechlib.nearest_minimal_vector(x, coords="int", return_index=True)
res["minvec"] = [int((io.copy_to_host() != i).sum()), int((vo.copy_to_host() != v).any(1).sum())]
print(json.dumps(res))
"""


def _run(env_extra, n):
    env = dict(os.environ, **env_extra)
    code = f"ROOT = {ROOT!r}\nN = {n:d}\n" + _SCRIPT
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=900)
    if out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(res):
    # the simulator and the GPU run the CPU kernels' own functions: same points
    assert res["unit_float64"][0] == 0 and res["unit_float64"][2] == 0
    assert res["unit_float64"][1] < 1e-12
    assert res["unit_float32"][0] == 0 and res["unit_float32"][2] == 0
    assert res["ties"] == [0, 0]
    assert res["scaled"] == [0]
    assert res["bad"] == [0, 1, 0, 1, 1, 0]
    assert res["bad_dist_nan"] == [False, True, False, True, True, False]
    assert res["good_rows"] == 0
    assert res["minvec"] == [0, 0]


@pytest.mark.slow
def test_cuda_kernel_in_the_simulator():
    pytest.importorskip("numba")
    _check(_run({"NUMBA_ENABLE_CUDASIM": "1"}, 40))


@pytest.mark.cuda
def test_cuda_kernel_on_the_gpu():  # pragma: no cover - needs a GPU
    _check(_run({"NUMBA_ENABLE_CUDASIM": "0"}, 20000))


def test_numpy_compat_restores_row_stack(monkeypatch):
    # numba-cuda registers np.row_stack when it first compiles; NumPy 2.5 removed it
    import numpy as np

    from leechlib._kernels import cuda

    monkeypatch.delattr(np, "row_stack", raising=False)
    cuda._numpy_compat()
    assert np.row_stack is np.vstack
