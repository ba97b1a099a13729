"""``transformers`` loads leechlib folders: ``from_pretrained`` after ``import torch_ext``.

:func:`register` registers the ``"leechlib"`` quantization config and quantizer
with ``transformers`` (its documented extension point,
``register_quantization_config`` / ``register_quantizer``), so that
``AutoModelForCausalLM.from_pretrained(folder)`` on a folder written by
:func:`~torch_ext.quantize.quantize_pretrained` builds the quantized layers on the
meta device and fills them from the shards, never making a float weight.

Importing ``transformers``' quantizers takes seconds, so ``import torch_ext`` does
not: :func:`install` (called by ``import torch_ext``) registers at once if
``transformers`` is already imported, and otherwise as soon as it is (an import
hook that removes itself).  Calling :func:`register` directly is always fine.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

__all__ = ["register", "install", "registered"]

_lock = threading.Lock()
_done = False


def registered() -> bool:
    """Whether the leechlib quantizer is registered with ``transformers``."""
    return _done


def register() -> None:
    """Register leechlib's quantization config and quantizer with ``transformers`` (idempotent).

    Raises
    ------
    ImportError
        ``transformers`` is not installed.
    """
    global _done
    with _lock:
        if _done:
            return
        from transformers.quantizers import auto

        from ._hf_quantizer import LeechlibConfig, LeechlibHfQuantizer
        from .pretrained import QUANT_METHOD

        if QUANT_METHOD not in auto.AUTO_QUANTIZATION_CONFIG_MAPPING:
            auto.register_quantization_config(QUANT_METHOD)(LeechlibConfig)
        if QUANT_METHOD not in auto.AUTO_QUANTIZER_MAPPING:
            auto.register_quantizer(QUANT_METHOD)(LeechlibHfQuantizer)
        _done = True


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``transformers`` so that :func:`register` runs once it is imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            try:
                register()
            except Exception:  # never break the user's import of transformers
                pass

        try:
            loader.exec_module = exec_and_register
        except AttributeError:  # a loader that cannot be wrapped: register() by hand then
            pass
        return spec


_hook = _RegisterOnImport()


def _remove_hook() -> None:
    try:
        sys.meta_path.remove(_hook)
    except ValueError:
        pass


def install() -> None:
    """Register now if ``transformers`` is imported, else as soon as it is (see module docstring)."""
    if "transformers" in sys.modules:
        try:
            register()
        except Exception:
            pass
    elif _hook not in sys.meta_path and importlib.util.find_spec("transformers") is not None:
        sys.meta_path.insert(0, _hook)
