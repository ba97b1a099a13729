"""Vector quantization on Leech lattice shells: :class:`LeechVQ`.

See :doc:`/vq` for the codebooks, the search, the indices and a benchmark against
FSQ, LFQ and a learned codebook.
"""

from .layer import LeechVQ

__all__ = ["LeechVQ"]
