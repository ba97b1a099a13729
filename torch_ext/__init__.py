"""torch_ext: the Leech lattice in PyTorch, in three wings by layer.

1. :mod:`torch_ext.ops`: exact lattice ops as custom ops, their backends, the
   pure-torch decoder, and the one torch-side rank/unrank/search of every Leech map.
2. Above it, knowing no LILA run: the model pieces -- frozen orthogonal kernels
   built from Leech lattice automorphisms (:mod:`torch_ext.kernel`), attention whose
   query/key projections are those frozen kernels (:mod:`torch_ext.attention`), the
   alignment loss to lattice directions (:mod:`torch_ext.losses`), a nanoGPT-style
   LILA transformer (:mod:`torch_ext.model`) -- the general weight quantizer
   (:mod:`torch_ext.quantize`) and the vector quantizer layer (:mod:`torch_ext.vq`).
3. :mod:`torch_ext.lila` on top: training, evaluation, data, checkpoints, the
   ``lila`` command line, the demo, LILA checkpoint quantization.

``import torch_ext`` needs torch; it imports leechlib (never the other way round).
Modules that moved into the wings keep their old import paths for one release, with
a ``DeprecationWarning`` (``torch_ext.train`` is :mod:`torch_ext.lila.train`).

Examples
--------
>>> import torch, torch_ext
>>> x = torch.randn(4, 24)
>>> q = torch_ext.nearest_point(x)                 # exact nearest Leech points
>>> q.shape, q.dtype
(torch.Size([4, 24]), torch.float32)
"""

from . import _moved
from .attention import FrozenKernelAttention
from .kernel import LeechKernel
from .lila.results import EvalResult, TrainResult
from .losses import AlignmentLoss
from .model import LilaConfig, LilaOutput, LilaTransformer, ParamCount
from .ops import nearest_minimal_vector, nearest_point, quantize_ste
from .quantize import (
    METHODS,
    BitsReport,
    LeechQuantizedLinear,
    QuantizeConfig,
    load_pretrained,
    load_quantized,
    model_bits_report,
    quantize_model,
    quantize_pretrained,
    save_quantized,
)
from .quantize import hf as _hf
from .vq import LeechVQ, ResidualLeechVQ

_moved.install()
_hf.install()  # transformers' from_pretrained loads leechlib folders (registers once it is imported)

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
    "QuantizeConfig",
    "LeechQuantizedLinear",
    "model_bits_report",
    "save_quantized",
    "load_quantized",
    "quantize_pretrained",
    "load_pretrained",
    "BitsReport",
    "METHODS",
    "EvalResult",
    "TrainResult",
    "LeechVQ",
    "ResidualLeechVQ",
]
