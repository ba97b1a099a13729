"""leechlib: the Leech lattice and the extended binary Golay code, exact and fast.

``import leechlib`` is light: it imports numpy only; Numba kernels compile on
first use and tables are built on first use.
"""

__version__ = "0.1.0"

from .codebook import BallCodebook, ShellCodebook
from .decode import LeechQuantizer, nearest_minimal_vector, nearest_point, quantize
from .golay import GolayCode, find_isomorphism, hexacode_words
from .lattice import LeechLattice, shell_count, theta_series
from .quantizers import BallQuantizer, Quantizer, ShapeGainQuantizer, constrained_nearest_point

__all__ = [
    "BallCodebook",
    "BallQuantizer",
    "Quantizer",
    "ShapeGainQuantizer",
    "constrained_nearest_point",
    "ShellCodebook",
    "GolayCode",
    "LeechLattice",
    "LeechQuantizer",
    "nearest_minimal_vector",
    "nearest_point",
    "quantize",
    "find_isomorphism",
    "hexacode_words",
    "shell_count",
    "theta_series",
    "__version__",
]
