"""torch_ext: the Leech lattice in PyTorch.

Exact lattice ops as custom ops (:mod:`torch_ext.ops`), frozen orthogonal kernels
built from Leech lattice automorphisms (:mod:`torch_ext.kernel`), attention whose
query/key projections are those frozen kernels (:mod:`torch_ext.attention`), the
alignment loss to lattice directions (:mod:`torch_ext.losses`) and a nanoGPT-style
LILA transformer (:mod:`torch_ext.model`).

``import torch_ext`` needs torch; it imports leechlib (never the other way round).

Examples
--------
>>> import torch, torch_ext
>>> x = torch.randn(4, 24)
>>> q = torch_ext.nearest_point(x)                 # exact nearest Leech points
>>> q.shape, q.dtype
(torch.Size([4, 24]), torch.float32)
"""

from .attention import FrozenKernelAttention
from .kernel import LeechKernel
from .losses import AlignmentLoss
from .model import LilaConfig, LilaOutput, LilaTransformer, ParamCount
from .ops import nearest_minimal_vector, nearest_point, quantize_ste
from .quantize import (
    METHODS,
    BitsReport,
    LeechQuantizedLinear,
    load_quantized,
    model_bits_report,
    quantize_model,
    save_quantized,
)
from .results import EvalResult, TrainResult
from .vq import LeechVQ

__all__ = [
    "nearest_point",
    "quantize_ste",
    "nearest_minimal_vector",
    "LeechKernel",
    "FrozenKernelAttention",
    "AlignmentLoss",
    "LilaConfig",
    "LilaOutput",
    "LilaTransformer",
    "ParamCount",
    "quantize_model",
    "LeechQuantizedLinear",
    "model_bits_report",
    "save_quantized",
    "load_quantized",
    "BitsReport",
    "METHODS",
    "EvalResult",
    "TrainResult",
    "LeechVQ",
]
