"""leechlib: the Leech lattice and the extended binary Golay code, exact and fast."""
__version__ = "0.1.0"
from .golay import GolayCode
