"""Vector quantization on Leech lattice shells: :class:`LeechVQ`, :class:`ResidualLeechVQ`.

See :doc:`/vq` for the codebooks, the search, the indices and a benchmark against
FSQ, LFQ and a learned codebook.
"""

from .layer import LeechVQ
from .residual import ResidualLeechVQ

__all__ = ["LeechVQ", "ResidualLeechVQ"]
