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

from .folders import FolderError
from .layer import LeechQuantizedLinear
from .pretrained import QUANT_METHOD, replace_quantized_layers

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

        LeechlibConfig, LeechlibHfQuantizer = _classes()
        if QUANT_METHOD not in auto.AUTO_QUANTIZATION_CONFIG_MAPPING:
            auto.register_quantization_config(QUANT_METHOD)(LeechlibConfig)
        if QUANT_METHOD not in auto.AUTO_QUANTIZER_MAPPING:
            auto.register_quantizer(QUANT_METHOD)(LeechlibHfQuantizer)
        _done = True


def _classes():
    """The ``transformers`` config and quantizer classes (made here: they subclass ``transformers``').

    ``LeechlibConfig`` is the ``quantization_config`` of a folder written by
    :func:`~torch_ext.quantize.quantize_pretrained`; ``LeechlibHfQuantizer`` puts
    empty :class:`~torch_ext.quantize.LeechQuantizedLinear` layers (on the meta
    device) into the model that ``from_pretrained`` builds, before the weights are
    loaded, so that ``transformers`` fills their codes, scales and gains from the
    shards; afterwards it checks that every one was filled.
    """
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin

    class LeechlibConfig(QuantizationConfigMixin):
        """``quantization_config`` of a leechlib folder: the settings and every quantized layer's config."""

        def __init__(self, layers=None, settings=None, format=None, blocks=None, **kwargs):
            self.quant_method = QUANT_METHOD
            self.layers = dict(layers or {})
            self.settings = dict(settings or {})
            self.format = format
            self.blocks = blocks
            for k, v in kwargs.items():
                if k != "quant_method":
                    setattr(self, k, v)

    class LeechlibHfQuantizer(HfQuantizer):
        """Loads leechlib folders (pre-quantized only: quantize with ``leechlib quantize``)."""

        requires_calibration = True

        def validate_environment(self, *args, **kwargs):
            return None

        def _process_model_before_weight_loading(self, model, **kwargs):
            cache = getattr(self.quantization_config, "cache", None)
            if cache is not None and not isinstance(cache, bool):
                raise FolderError(f"quantization_config.cache must be true, false or null, got {cache!r}")
            replace_quantized_layers(model, self.quantization_config.layers, cache=cache)
            # transformers initializes the weights of modules it did not see loaded, and a
            # model's own init may reach into a child's ``weight`` (GPT-2 rescales
            # ``c_proj.weight``), which a quantized layer does not have: such a parent, with
            # no tensor of its own, is marked done
            for name in self.quantization_config.layers:
                layer = model.get_submodule(name)
                layer._is_hf_initialized = True
                parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
                own = list(parent.parameters(recurse=False)) + list(parent.buffers(recurse=False))
                if parent is not model and not own:
                    parent._is_hf_initialized = True

        def _process_model_after_weight_loading(self, model, **kwargs):
            for name in self.quantization_config.layers:
                layer = model.get_submodule(name)
                if not isinstance(layer, LeechQuantizedLinear):
                    raise FolderError(f"layer {name!r} was not replaced by a quantized layer")
                for b in ("packed", "scales", "gains"):
                    t = getattr(layer, b, None)
                    if t is not None and t.is_meta:
                        raise FolderError(f"the folder has no tensor {name + '.' + b!r}")
                layer.validate()
            return model

        def param_needs_quantization(self, model, param_name, **kwargs) -> bool:
            return False

        def is_serializable(self, *args, **kwargs):
            return True

        @property
        def is_trainable(self) -> bool:
            return False

    return LeechlibConfig, LeechlibHfQuantizer


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
