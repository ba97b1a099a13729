"""What a stored model file must bear out before anything is built: its header against its config.

:func:`read_safetensors_header` reads the shapes of a safetensors file without any
tensor; :func:`check_stored_config` refuses a config that those shapes (and the
file's size) do not bear out.  Used by :meth:`LilaTransformer.load
<torch_ext.model.LilaTransformer.load>` and :func:`torch_ext.checkpoint.load_checkpoint`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .model import LilaConfig


def read_safetensors_header(path, *, what: str = "checkpoint") -> tuple[dict, dict[str, tuple[tuple, int]]]:
    """Metadata and ``{name: (shape, bytes per element)}`` of a safetensors file, reading no tensor.

    Raises like :func:`read_safetensors`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            shapes = {}
            for k in f.keys():
                sl = f.get_slice(k)
                shapes[k] = (tuple(sl.get_shape()), _DTYPE_BYTES.get(sl.get_dtype(), 1))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors {what}: {exc}") from None
    return meta, shapes


#: bytes per element of the safetensors dtypes (others count as 1)
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2}


def check_stored_config(config: LilaConfig, shapes: dict, file_size: int, where: str, prefix: str = "") -> None:
    """Refuse a stored config that the file's tensors do not bear out, before any allocation.

    A config fixes the shapes of the weights; a file fixes their sizes.  Checked
    here, from the header alone: the token and position embeddings, every block's
    MLP and LayerNorms and the final LayerNorm must be stored with the shapes the
    config gives (``n_layer`` blocks, no more), and the bytes those weights need
    must fit in the file.  So a crafted config (``d_model=96000, n_layer=64`` next
    to small tensors) is a ``ValueError`` in microseconds, not 74 GB of
    allocations; what remains to build is bounded by the file's size.

    Parameters
    ----------
    config : LilaConfig
        The stored config, parsed.
    shapes : dict
        ``{name: (shape, bytes per element)}`` (:func:`read_safetensors_header`).
    file_size : int
        Size of the file in bytes.
    where : str
        The file, for the messages.
    prefix : str
        Prefix of the model's tensors in the file (``"model/"`` in training checkpoints).
    """
    c = config
    d, hidden = c.d_model, c.mlp_ratio * c.d_model
    wte = shapes.get(prefix + "wte.weight")
    item = wte[1] if wte is not None else 1
    need = item * (c.vocab_size * d + c.block_size * d + c.n_layer * 2 * hidden * d)
    if need > file_size:
        raise ValueError(
            f"{where} does not match its config: vocab_size={c.vocab_size}, block_size={c.block_size}, "
            f"d_model={d}, n_layer={c.n_layer}, mlp_ratio={c.mlp_ratio} need at least {need:,} bytes of "
            f"weights, the file has {file_size:,} bytes"
        )
    blocks = set()
    for k in shapes:
        parts = k[len(prefix):].split(".") if k.startswith(prefix + "h.") else ()
        if len(parts) > 2 and parts[1].isdigit():
            blocks.add(int(parts[1]))
    if blocks != set(range(c.n_layer)):
        raise ValueError(f"{where} does not match its config: it stores blocks {sorted(blocks)[:8]}"
                         f"{'...' if len(blocks) > 8 else ''}, the config has n_layer={c.n_layer}")
    want = {"wte.weight": (c.vocab_size, d), "wpe.weight": (c.block_size, d), "ln_f.weight": (d,)}
    for i in range(c.n_layer):
        want.update({f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_2.weight": (d,),
                     f"h.{i}.mlp.c_fc.weight": (hidden, d), f"h.{i}.mlp.c_proj.weight": (d, hidden)})
    for k, shape in want.items():
        got = shapes.get(prefix + k)
        if got is None:
            raise ValueError(f"{where} does not match its config: tensor {prefix + k!r} is missing")
        if got[0] != shape:
            raise ValueError(f"{where}: tensor {prefix + k!r} has shape {got[0]}, the config implies {shape}")
