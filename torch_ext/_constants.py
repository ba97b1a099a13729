"""Constants shared by torch_ext's modules (defined once here)."""

import math

#: :math:`\sqrt8`, the factor between the unit model :math:`\Lambda_{24}` and the
#: integer model :math:`\sqrt8\Lambda_{24}\subset\mathbb Z^{24}`
SQRT8 = math.sqrt(8.0)
