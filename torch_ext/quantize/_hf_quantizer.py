"""The ``transformers`` quantizer of leechlib folders (imported only once ``transformers`` is).

:class:`LeechlibConfig` is the ``quantization_config`` of a folder written by
:func:`~torch_ext.quantize.quantize_pretrained`; :class:`LeechlibHfQuantizer` puts
empty :class:`~torch_ext.quantize.LeechQuantizedLinear` layers (on the meta device)
into the model that ``from_pretrained`` builds, before the weights are loaded, so
that ``transformers`` fills their codes, scales and gains from the shards.  Both
are registered under ``quant_method="leechlib"`` by :func:`torch_ext.quantize.hf.register`.
"""

from __future__ import annotations

from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .folders import FolderError
from .layer import LeechQuantizedLinear
from .pretrained import QUANT_METHOD, replace_quantized_layers


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

    def post_init(self):
        if not isinstance(self.layers, dict):
            raise FolderError("quantization_config.layers must map layer names to layer configs")


class LeechlibHfQuantizer(HfQuantizer):
    """Loads leechlib folders (pre-quantized only: quantize with ``leechlib quantize``)."""

    requires_calibration = True

    def validate_environment(self, *args, **kwargs):
        return None

    def _process_model_before_weight_loading(self, model, **kwargs):
        replace_quantized_layers(model, self.quantization_config.layers)
        # transformers initializes the weights of modules it did not see loaded; a model's own
        # init may reach into a child's ``weight`` (GPT-2 rescales ``c_proj.weight``), which a
        # quantized layer does not have: such a parent, with no tensor of its own, is marked done
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
