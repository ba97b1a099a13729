"""torch_ext's top wing: the LILA run stack, its command line, the demo and LILA quantization.

Everything LILA-specific lives here, above the model pieces
(:class:`~torch_ext.LilaTransformer`, :class:`~torch_ext.FrozenKernelAttention`, ...),
:mod:`torch_ext.quantize` and :mod:`torch_ext.vq`, none of which imports it.

Modules
-------
``train_config``, ``train``
    :class:`~torch_ext.lila.train_config.TrainConfig` and :func:`~torch_ext.lila.train.train`
    (single process or DDP; checkpoints, resume, time budgets, step timing).
``_run_setup``, ``_rundir``, ``_signals``
    Preparing a run (its directory, resume, data, parameter groups), the run
    directory's layout and marker, SIGINT/SIGTERM handling.
``checkpoint``, ``distributed``
    Training checkpoints (safetensors, atomic, checked before anything is built);
    the DDP helpers.
``corpora``, ``tokenizer``, ``data``, ``_textfiles``
    Text sources, the byte and BPE tokenizers, the token cache and splits, strict
    decoding of local text.
``evaluate``, ``results``
    Honest evaluation (bits per character over a whole split) and the result records.
``quantize``
    LILA checkpoint -> quantized checkpoint (``leechlib lila quantize``), calibrated on
    the training split; it also teaches :func:`torch_ext.quantize.load_quantized` to
    rebuild a :class:`~torch_ext.LilaTransformer` from its stored config.
``demo``, ``cli``, ``__main__``
    The one-minute demo; every ``lila`` command (``leechlib lila ARGS`` and
    ``python -m torch_ext.lila ARGS``).

Examples
--------
>>> from torch_ext.lila.train_config import TrainConfig
>>> TrainConfig(preset="lila-tiny", steps=10).steps
10
"""

from ..model import LilaConfig, LilaTransformer, check_stored_config
from ..quantize.io import register_architecture


def _rebuild(config: dict) -> LilaTransformer:
    return LilaTransformer(LilaConfig.from_dict(config))


def _check(config: dict, shapes: dict, file_size: int) -> None:
    """The stored config against the file's header, before anything is built.

    The shapes bound every tensor by the file; the byte count is left out (the
    quantized layers' weights are codes, not the float bytes it counts).
    """
    check_stored_config(LilaConfig.from_dict(dict(config)), shapes, 1 << 62, "the file")


# quantized files of LILA models carry their config ("lila_config") and rebuild themselves
register_architecture("lila_config", LilaTransformer, _rebuild, name="LILA config", check=_check)
