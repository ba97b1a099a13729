"""torch_ext's CUDA path of trio-coded weights (``torch_ext.quantize._cuda_packed``).

Against the CPU path of the same layer: ``packed_linear_cuda`` / ``packed_weight_cuda``
against leechlib's CPU kernels, and the layer hooks (``layer_codes_forward_cuda``,
``layer_weight_cuda``) against the layer's own CPU forward and weight.

Without a GPU, a subprocess runs them in Numba's CUDA simulator with the torch/CUDA
plumbing replaced by CPU stand-ins (as ``test_torch_cuda_numba.py`` does): the checks,
the scale folding, the padding, the launches and the dtypes run for real.  On a GPU
the real thing runs (marker ``cuda``).
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
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
from leechlib.kernels import packed_matmul, packed_weight
from torch_ext.quantize import LeechQuantizedLinear
from torch_ext.quantize import _cuda_packed as cp

# CPU stand-ins for the CUDA plumbing (no copies: the kernels write the tensors' memory)
ncuda.as_cuda_array = lambda t: FakeCUDAArray(t.numpy())
ncuda.external_stream = lambda ptr: 0
ncuda.gpus = {0: contextlib.nullcontext()}
torch.cuda.device = lambda dev: contextlib.nullcontext()
torch.cuda.current_stream = lambda dev=None: types.SimpleNamespace(cuda_stream=0)
cp._is_cuda = lambda t: True

res = {}
g = torch.Generator().manual_seed(5)
R, NB = 4, 3
packed = torch.randint(0, 256, (R, 6 * NB), dtype=torch.uint8, generator=g)
scales = torch.rand(R, 2, generator=g) + 0.5
group = np.array([0, 1, 1], dtype=np.int64)
# the functions against leechlib's CPU kernels
x = torch.randn(2, 3, 70, generator=g)                    # 70 of 72 columns: padded with zeros
want = packed_matmul(np.ascontiguousarray(torch.nn.functional.pad(x.reshape(6, 70), (0, 2)).numpy()),
                     packed.numpy(), scales.numpy(), group, codebook="trio")
with torch.no_grad():
    y = cp.packed_linear_cuda(x, packed, scales, torch.from_numpy(group))
    y16 = cp.packed_linear_cuda(x.half(), packed, scales.half(), group)
res["linear"] = [tuple(y.shape), float((y.reshape(6, R).numpy() - want).__abs__().max()), str(y16.dtype)]
W = packed_weight(packed.numpy(), scales.numpy(), group, codebook="trio", dtype=np.float64)
res["weight"] = [bool(torch.equal(cp.packed_weight_cuda(packed, scales, group, dtype=dt),
                                  torch.from_numpy(W).to(dt))) for dt in (torch.float32, torch.float16)]
res["weight_bf16_cols"] = tuple(cp.packed_weight_cuda(packed, scales, group, dtype=torch.bfloat16, columns=50).shape)
try:
    cp.packed_linear_cuda(x.requires_grad_(), packed, scales, group)
    res["grad"] = "no error"
except RuntimeError as exc:
    res["grad"] = str(exc)
try:
    cp.packed_linear_cuda(x.detach(), packed, scales, group + 1)
    res["range"] = "no error"
except ValueError as exc:
    res["range"] = str(exc)
# the layer hooks against the layer's own CPU paths (rows: one scale per 48 inputs, two columns)
layer = LeechQuantizedLinear(70, 5, method="leech-trio", group=48, cache=False)
layer.packed.copy_(torch.randint(0, 256, tuple(layer.packed.shape), dtype=torch.uint8, generator=g))
layer.scales.copy_(torch.rand(tuple(layer.scales.shape), generator=g) + 0.5)
x = torch.randn(3, 70, generator=g)
with torch.no_grad():
    y = cp.layer_codes_forward_cuda(layer, x)
    want = layer._codes_forward(x)        # the CPU codes kernel
    w = cp.layer_weight_cuda(layer, torch.float32)
    wref = layer._stored_weight(torch.float32)
res["layer"] = [tuple(layer.scales.shape), float((y - want).abs().max()), bool(torch.equal(w, wref)),
                cp.layer_codes_forward_cuda(layer, x.double()) is None,
                cp.layer_codes_forward_cuda(layer, torch.randn(17, 70)) is None,
                cp.layer_codes_forward_cuda(layer, x.requires_grad_()) is None]
layer2 = LeechQuantizedLinear(30, 2, method="e8", cache=False)
res["other_codec"] = cp.layer_weight_cuda(layer2, torch.float32) is None
print(json.dumps(res))
"""


@pytest.mark.slow
def test_cuda_packed_paths_in_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", TORCH_EXT_CUDA_BACKEND="auto")
    out = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + _SCRIPT], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    shape, err, dt16 = res["linear"]
    assert shape == [2, 3, 4] and err < 1e-4 and dt16 == "torch.float16"
    assert res["weight"] == [True, True]
    assert res["weight_bf16_cols"] == [4, 50]
    assert "no backward" in res["grad"]
    assert "group must index the 2 scale columns" in res["range"]
    scale_shape, err, w_equal, none64, none_big, none_grad = res["layer"]
    assert scale_shape == [5, 2] and err < 1e-4 and w_equal
    assert none64 and none_big and none_grad
    assert res["other_codec"]


@pytest.mark.cuda
def test_cuda_packed_layer_on_the_gpu():  # pragma: no cover - needs a GPU
    import torch

    from torch_ext.quantize import LeechQuantizedLinear
    from torch_ext.quantize import _cuda_packed as cp

    g = torch.Generator().manual_seed(1)
    layer = LeechQuantizedLinear(1000, 300, method="leech-trio", group=96, cache=False)
    layer.packed.copy_(torch.randint(0, 256, tuple(layer.packed.shape), dtype=torch.uint8, generator=g))
    layer.scales.copy_(torch.rand(tuple(layer.scales.shape), generator=g) + 0.5)
    with torch.no_grad():
        w_cpu = layer._stored_weight(torch.float32)
        x = torch.randn(5, 1000, generator=g)
        y_cpu = x @ w_cpu.T
        layer.cuda()
        w = cp.layer_weight_cuda(layer, torch.float32)
        assert w is not None and torch.equal(w.cpu(), w_cpu)
        w16 = cp.layer_weight_cuda(layer, torch.float16)
        assert torch.equal(w16.cpu(), layer.cpu()._stored_weight(torch.float64).to(torch.float16))
        layer.cuda()
        y = cp.layer_codes_forward_cuda(layer, x.cuda())
        assert y is not None
        torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-4, atol=1e-3)
        y16 = cp.layer_codes_forward_cuda(layer, x.cuda().half())
        torch.testing.assert_close(y16.float().cpu(), y_cpu, rtol=1e-2, atol=1e-1)
        torch.cuda.synchronize()


def test_cuda_packed_refuses_cpu_tensors():
    import torch

    from torch_ext.quantize import LeechQuantizedLinear
    from torch_ext.quantize import _cuda_packed as cp

    x, p, s = torch.zeros(1, 24), torch.zeros(1, 6, dtype=torch.uint8), torch.ones(1, 1)
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        cp.packed_linear_cuda(x, p, s, torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="packed must be a CUDA tensor"):
        cp.packed_weight_cuda(p, s, torch.zeros(1, dtype=torch.int64))
    layer = LeechQuantizedLinear(24, 2, method="leech-trio", cache=False)  # on the CPU: not for the hooks
    assert cp.layer_codes_forward_cuda(layer, x) is None
    assert cp.layer_weight_cuda(layer, torch.float32) is None
