"""torch_ext's Numba CUDA paths (``_backends._numba_cuda_nearest``, ``_numba_cuda_minvec``)
without a GPU.

In a subprocess with Numba's CUDA simulator, the torch/CUDA plumbing (streams, device
selection, ``as_cuda_array``) is replaced by CPU stand-ins, so that the rest of the
path -- checks, output frame, dtypes, shapes -- runs for real and is compared bitwise
with the CPU op.  The real plumbing runs in ``benchmarks/gpu_check.py`` on a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r"""
import contextlib, json, sys, types
sys.path.insert(0, ROOT)
import numpy as np
import torch
from numba import cuda as ncuda
import torch_ext
from torch_ext import ops
from torch_ext.ops import _backends

# CPU stand-ins for the CUDA plumbing
ncuda.as_cuda_array = lambda t: t.numpy()
ncuda.external_stream = lambda ptr: 0
ncuda.gpus = {0: contextlib.nullcontext()}
torch.cuda.device = lambda dev: contextlib.nullcontext()
torch.cuda.current_stream = lambda dev=None: types.SimpleNamespace(cuda_stream=0)

res = {"backend": ops.cuda_backend()}
g = torch.Generator().manual_seed(3)
cases = []
for dtype in (torch.float32, torch.float64):
    x = torch.randn(2, 30, 24, generator=g).to(dtype)
    for coords, scale in (("unit", 1.0), ("int", 1.0), ("unit", 0.37), ("int", 3.0)):
        got = _backends._numba_cuda_nearest(x, coords, scale)
        want = torch_ext.nearest_point(x, coords=coords, scale=scale)  # CPU op: leechlib
        cases.append([str(dtype), coords, scale, got.dtype == x.dtype,
                      tuple(got.shape) == tuple(x.shape), bool(torch.equal(got, want))])
res["cases"] = cases
mv = []
for dtype in (torch.float32, torch.float64):
    xs = [torch.randn(50, 24, generator=g), torch.randint(-2, 3, (50, 24), generator=g).double()]
    for x in xs:
        x = x.to(dtype)
        x[(x == 0).all(1), 0] = 1.0
        for coords in ("unit", "int"):
            v, i = _backends._numba_cuda_minvec(x, coords)
            w, j = torch_ext.nearest_minimal_vector(x, coords=coords, return_index=True)
            mv.append([str(dtype), coords, bool(torch.equal(i, j)), bool(torch.equal(v, w)),
                       v.dtype == x.dtype])
res["minvec"] = mv
errs = []
for bad in (torch.full((3, 24), float("nan")), torch.full((2, 24), 1e30)):
    try:
        _backends._numba_cuda_nearest(bad, "unit", 1.0)
        errs.append("no error")
    except ValueError as e:
        errs.append(str(e))
res["errors"] = errs
res["empty"] = tuple(_backends._numba_cuda_nearest(torch.zeros(0, 24), "unit", 1.0).shape)
print(json.dumps(res))
"""


@pytest.mark.slow
def test_numba_cuda_paths_match_cpu_ops_in_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", TORCH_EXT_CUDA_BACKEND="auto")
    out = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + _SCRIPT], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["backend"] == "numba"  # the simulator counts as a working numba.cuda
    assert len(res["cases"]) == 8
    for dtype, coords, scale, same_dtype, same_shape, equal in res["cases"]:
        assert same_dtype and same_shape and equal, (dtype, coords, scale)
    assert "NaN or inf" in res["errors"][0]
    assert "too large" in res["errors"][1]
    assert res["empty"] == [0, 24]
    assert len(res["minvec"]) == 8
    for dtype, coords, same_idx, same_vec, same_dtype in res["minvec"]:
        assert same_idx and same_vec and same_dtype, (dtype, coords)


def test_cuda_backend_env_override(monkeypatch):
    from torch_ext import ops
    from torch_ext.ops import _backends

    monkeypatch.setenv("TORCH_EXT_CUDA_BACKEND", "torch")
    assert ops.cuda_backend() == "torch"
    monkeypatch.setenv("TORCH_EXT_CUDA_BACKEND", "cupy")
    with pytest.raises(ValueError, match="TORCH_EXT_CUDA_BACKEND"):
        ops.cuda_backend()
    monkeypatch.setenv("TORCH_EXT_CUDA_BACKEND", "numba")
    if not _backends._numba_cuda_ok():
        with pytest.raises(RuntimeError, match="numba"):
            ops.cuda_backend()


def test_numba_cuda_failure_falls_back_to_pure_torch_with_a_warning(monkeypatch):
    import torch

    from torch_ext import ops
    from torch_ext.ops import _backends

    def broken(*args):
        raise RuntimeError("NVVM exploded")

    def bad_input(*args):
        raise ValueError("x contains NaN or inf")

    x = torch.randn(5, 24, dtype=torch.float64)
    monkeypatch.setattr(_backends, "_NUMBA_CUDA_FAILED", [])
    monkeypatch.setenv("TORCH_EXT_CUDA_BACKEND", "auto")
    try:
        with pytest.warns(RuntimeWarning, match="NVVM exploded"):
            got = _backends._numba_cuda_or_fallback(broken, _backends._torch_nearest, x, "unit", 1.0)
        assert torch.equal(got, _backends._torch_nearest(x, "unit", 1.0))
        assert _backends._NUMBA_CUDA_FAILED and not _backends._numba_cuda_ok()
        assert ops.cuda_backend() == "torch"
        # input errors are the caller's, not a reason to switch
        with pytest.raises(ValueError, match="NaN"):
            _backends._numba_cuda_or_fallback(bad_input, _backends._torch_nearest, x, "unit", 1.0)
        # a forced backend re-raises
        monkeypatch.setenv("TORCH_EXT_CUDA_BACKEND", "numba")
        with pytest.raises(RuntimeError, match="NVVM"):
            _backends._numba_cuda_or_fallback(broken, _backends._torch_nearest, x, "unit", 1.0)
    finally:
        _backends._numba_cuda_ok.cache_clear()
