"""torch_ext's lowest wing: Leech lattice operations on tensors (any device).

Everything above (the model pieces, :mod:`torch_ext.quantize`, :mod:`torch_ext.vq`,
:mod:`torch_ext.lila`) reaches the lattice through this package; it imports none of
them.

Modules
-------
``nearest``
    The custom ops :func:`nearest_point`, :func:`quantize_ste`,
    :func:`nearest_minimal_vector` and the pure-torch decoders (re-exported here).
``_backends``
    Their CPU (leechlib's Numba kernels), Numba CUDA and pure-torch implementations.
``_decoder``
    The pure-torch exact decoders (the structured algorithm, vectorised).
``codebook``
    The one torch-side index -> point path of every Leech map on any device: ball and
    shell unranking, the :math:`E_8` ball table, bit packing; and the custom ops that
    search, rank and unrank the shell and ball codebooks of :class:`torch_ext.LeechVQ`.
``minimal``
    Rank and unrank of the 196 560 minimal vectors in pure torch.

Examples
--------
>>> import torch
>>> from torch_ext import ops
>>> ops.nearest_point(torch.zeros(2, 24)).abs().sum().item()
0.0
"""

from .nearest import (
    MAX_ABS,
    cpu_backend,
    cuda_backend,
    decode_torch,
    nearest_minimal_vector,
    nearest_minimal_vector_torch,
    nearest_point,
    nearest_point_torch,
    quantize_ste,
    set_decoder_compile,
)

__all__ = [
    "nearest_point",
    "quantize_ste",
    "nearest_minimal_vector",
    "nearest_point_torch",
    "nearest_minimal_vector_torch",
    "decode_torch",
    "cpu_backend",
    "cuda_backend",
    "set_decoder_compile",
    "MAX_ABS",
]
