"""``python -m torch_ext.lila ARGS`` is ``leechlib lila ARGS`` (torchrun: ``torchrun -m torch_ext.lila train``)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
