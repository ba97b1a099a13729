"""The package's constants, each defined once (a leaf: imports nothing of the package).

Kernel modules, the validators and :mod:`leechlib.kernels` (the seam torch_ext uses)
all take them from here.
"""

import math

#: sqrt(8): the integer model sqrt(8)*Lambda24 (``coords="int"``) is the unit model
#: (``coords="unit"``) scaled by it
SQRT8 = math.sqrt(8.0)

#: the decoders' input bound: coordinates (integer model) at or above it in absolute
#: value are refused, since float64 no longer resolves the lattice there
MAX_ABS = 2.0**50
