"""Old import paths of modules that moved into the wings, kept for one release.

``import torch_ext.train`` (and ``from torch_ext import train``) still works: it
gives the module's new home, :mod:`torch_ext.lila.train`, and emits a
``DeprecationWarning`` naming it.  ``python -m torch_ext.train ARGS`` (and
``.evaluate``, ``.cli``) still run the command line, with the same warning.  A
meta-path finder does this, so no stub file stands at the old paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module name -> new module name
MOVED = {
    **{f"torch_ext.{m}": f"torch_ext.lila.{m}" for m in (
        "train", "train_config", "checkpoint", "distributed", "evaluate", "results", "data",
        "corpora", "tokenizer", "cli")},
    "torch_ext.quantize.lila": "torch_ext.lila.quantize",
    "torch_ext.hadamard": "torch_ext.quantize.hadamard",
}

#: old ``python -m`` targets -> the ``lila`` command they ran
_COMMANDS = {"torch_ext.train": ["train"], "torch_ext.evaluate": ["eval"], "torch_ext.cli": []}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path is deprecated and will be removed in the next "
                  "release", DeprecationWarning, stacklevel=3)  # the importer (warnings skips importlib's frames)


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        _warn(self.old, self.new)
        return importlib.import_module(self.new)

    def exec_module(self, module):
        pass  # the new module has run already

    def get_code(self, fullname):
        """The code ``python -m OLD`` runs: the ``lila`` command line, after the warning."""
        if fullname not in _COMMANDS:
            raise ImportError(f"{fullname} cannot be run with python -m; use python -m torch_ext.lila")
        source = (f"import sys, warnings\n"
                  f"warnings.warn('python -m {fullname} is deprecated; use python -m torch_ext.lila "
                  f"{' '.join(_COMMANDS[fullname])}', DeprecationWarning)\n"
                  f"from torch_ext.lila.cli import main\n"
                  f"sys.exit(main({_COMMANDS[fullname]!r} + sys.argv[1:]))\n")
        return compile(source, f"<{fullname}>", "exec")

    def is_package(self, fullname):
        return False


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(fullname, new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
