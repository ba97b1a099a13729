r"""Post-training weight quantization of PyTorch models with Leech lattice codebooks.

:func:`quantize_model` replaces the ``nn.Linear`` layers of a model by
:class:`LeechQuantizedLinear` layers that store, instead of the float weight,

* ``packed`` -- one code per block of consecutive weights along the input
  dimension, bit-packed row by row into ``uint8`` (least significant bit first);
* ``scales`` -- one scale per output row (``group="row"``, the default), per group
  of ``group`` inputs of a row, or one per layer (``group="tensor"``), in float16;
* ``gains`` -- the gain levels of the shape--gain codebook (float32, 3 values at
  2 bits), for ``method="leech-shape-gain"`` only;

and dequantize them with torch operations only (any device, no Numba): the code of
a block is unranked to its lattice point by a vectorised torch version of
:class:`~leechlib.BallCodebook` / :class:`~leechlib.ShellCodebook` ``point`` (the
same enumerative coding, checked bitwise against leechlib), multiplied by its
scale.  The dequantized weight is computed once, lazily, on the first forward on a
device, and cached; with ``cache=False`` (the default of ``"leech-trio"``) no dense
copy of the weight is kept: small inputs multiply from the packed codes, larger ones
decode the weight for that forward only.

Methods (2 bits per weight, blocks along the input dimension)
-------------------------------------------------------------
``"leech-shape-gain"``
    :class:`~leechlib.quantizers.ShapeGainQuantizer`: a block of 24 weights is a
    direction of the norm-24 shell of :math:`\Lambda_{24}` times one of 3 gains;
    ``log2(70 486 236 999 360 * 3) = 47.58`` bits, stored in 48.
``"leech-ball"``
    :class:`~leechlib.quantizers.BallQuantizer`: the nearest of the 280 974 212 784 721
    lattice points of norm at most 26 (:class:`~leechlib.BallCodebook` index,
    47.997 bits, stored in 48).
``"e8"``
    :class:`~leechlib.baselines.E8Quantizer` on blocks of 8: the ball of the
    :math:`E_8` lattice of norm at most 10 (56 881 points, 15.8 bits, stored in 16).
``"rtn"``
    Round to nearest, uniform scalar: levels ``scale * (k - 1.5)``, ``k = 0..3``; the
    scale of each group is chosen for the **MSE** (not the absmax): a grid search of
    96 steps between 0.1 and 2 times the group's RMS, then the least-squares refit
    below.

Blocks, padding and scales
--------------------------
A row of ``in_features`` weights is cut into blocks of 24 (8 for ``"e8"``, 1 for
``"rtn"``); when ``in_features`` is not a multiple of the block, the row is padded
with zeros to the next multiple.  The encoder sees the zeros (the padded block is
coded as a whole); the decoded pad values are dropped.  Pad positions are not
weights, but their share of the codes is stored, so it is counted in the bits per
weight of :func:`model_bits_report`.

Scales are fitted for the mean squared error of the weights:

1. start from the RMS of each scale group (``s0``); the codebook is fitted once per
   layer to the normalised blocks ``w / s0`` (the ball and :math:`E_8` scale by
   golden-section search, the shape--gain levels by Lloyd--Max; on at most
   ``max_points`` evenly spaced blocks, by default 4000 for the ball, 20000 for
   shape--gain, 2000 for E8), and the scale becomes ``s0 * codebook scale``;
2. encode ``w / scale`` (exact nearest codeword);
3. ``scale_iters`` times: refit each scale by least squares for the codes found,
   ``s = <w, u> / <u, u>`` (``u`` the decoded normalised blocks), keep it where it
   lowers the error, and encode again with it, keeping the better code of each
   block.  Every step can only lower the error.

Scales are rounded to float16 before they are used for encoding, so the stored
layer reproduces exactly what was measured; a layer whose scales do not fit
float16 keeps them in float32 (and is charged 32 bits per scale).  A scale group
whose weights are all zero gets scale 0 (its weights dequantize to exactly 0).

With ``data`` (calibration inputs), the least-squares refit and the error it
minimises are weighted by the second moment ``H = E[x x^T]`` of each layer's
inputs: ``||W x - W_hat x||^2`` on average over the calibration tokens instead of
``||W - W_hat||^2``; the codes themselves are still the nearest codewords.

Storage and true bits
---------------------
:func:`model_bits_report` counts every stored bit: the packed codes (bytes, pad
blocks included), the scales (16 bits each), the gains (32 bits each), divided by
the number of real weights; and, for the whole model, every other tensor of the
state dict (embeddings, LayerNorms, biases) at its own dtype.  At 2 bits, a layer
with ``in_features = 96`` and row scales costs ``2 + 16 / 96 = 2.17`` bits per
weight.  In LILA models the embeddings (and the LM head, tied to the token
embedding) are ``nn.Embedding`` weights, not ``nn.Linear``: they stay in float;
the frozen Leech attention kernels are rebuilt from the config and are not stored
at all.

Modules
-------
One concept each; this package re-exports the public names.

``codecs``
    The methods: one :class:`~torch_ext.quantize.codecs.Codec` class per method,
    registered by name (:data:`METHODS`); adding a method is adding one class.
``config``
    :class:`QuantizeConfig`: every setting of a quantization run, validated once.
``scales``
    The per-matrix step :func:`quantize_matrix` (numpy scale fit and encoding of
    one weight matrix; a :class:`QuantizedMatrix`) and :class:`BlockLayout`
    (blocks, padding, scale groups).
``layer``
    :class:`LeechQuantizedLinear`.
``calibrate``
    The calibration of :func:`quantize_model` (sequential, with a held-out guard);
    its :class:`~torch_ext.quantize.calibrate.CalibrationPlan` quantizes each
    layer and puts it into the model.
``apply``
    :func:`quantize_model` and :func:`model_bits_report`.
``io``
    :func:`save_quantized` and :func:`load_quantized` (safetensors);
    :func:`register_architecture` for models that rebuild themselves from the file.
``folders``, ``pretrained``, ``hf``
    Hugging Face model folders: :func:`quantize_pretrained` quantizes one a block
    at a time from its shards into a new folder, :func:`load_pretrained` loads it
    back, and ``transformers``' ``from_pretrained`` does too once ``torch_ext`` is
    imported (:mod:`torch_ext.quantize.hf`).  ``perplexity`` evaluates a folder on
    a text file.
``rotation``, ``hadamard``
    Seeded randomized Hadamard rotations of the weights (incoherence processing).
``calibrate``, ``feedback``
    Second moments of each layer's inputs, gathered block by block; LDLQ error
    feedback and act-order.

The torch decoding primitives (shell unranking, per-device tables, bit packing) are
:mod:`torch_ext.ops.codebook`'s, shared with :mod:`torch_ext.vq`.  This package
knows no model class: LILA checkpoints are quantized by :mod:`torch_ext.lila.quantize`.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from torch_ext.quantize import quantize_model, model_bits_report
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4))
>>> x = torch.randn(5, 48)
>>> ref = net(x)
>>> _ = quantize_model(net, method="rtn")
>>> net[0]
LeechQuantizedLinear(in_features=48, out_features=32, bias=True, method='rtn', bits=2, group='row',
    bits_per_weight=2.333, rotation='hadamard')
>>> net(x).shape
torch.Size([5, 4])
>>> round(model_bits_report(net).bits_per_quantized_weight, 3)
2.346
"""

from .apply import BitsReport, model_bits_report, quantize_model
from .codecs import METHODS
from .config import QuantizeConfig
from .io import QUANTIZED_FORMAT, load_quantized, register_architecture, save_quantized
from .layer import LeechQuantizedLinear
from .pretrained import QuantizedFolder, load_pretrained, quantize_pretrained
from .scales import BlockLayout, QuantizedMatrix, quantize_matrix

__all__ = [
    "METHODS",
    "QuantizeConfig",
    "LeechQuantizedLinear",
    "quantize_model",
    "quantize_matrix",
    "QuantizedMatrix",
    "BlockLayout",
    "model_bits_report",
    "BitsReport",
    "save_quantized",
    "load_quantized",
    "QUANTIZED_FORMAT",
    "register_architecture",
    "quantize_pretrained",
    "load_pretrained",
    "QuantizedFolder",
]

