"""The one safetensors reader of torch_ext: metadata and shapes, or metadata and tensors.

:func:`read_safetensors_header` reads the shapes of a file without any tensor (so a
stored config can be checked before anything is allocated); :func:`read_safetensors`
reads the tensors too.  Both raise ``FileNotFoundError`` when there is no file and
``ValueError`` when it is not a readable safetensors file, naming it by ``what``.
Nothing in a file is executed: tensors and JSON metadata only.

``safetensors`` is imported inside the functions, so that importing torch_ext does
not import it.
"""

from __future__ import annotations

import os

__all__ = ["read_safetensors", "read_safetensors_header"]

#: bytes per element of the safetensors dtypes (others count as 1)
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2}


def _read(path, what: str, tensors: bool) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if tensors:
                out = {k: f.get_tensor(k) for k in f.keys()}
            else:
                out = {}
                for k in f.keys():
                    sl = f.get_slice(k)
                    out[k] = (tuple(sl.get_shape()), _DTYPE_BYTES.get(sl.get_dtype(), 1))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors {what}: {exc}") from None
    return meta, out


def read_safetensors(path, *, what: str = "checkpoint") -> tuple[dict, dict]:
    """Metadata and tensors (on the CPU) of a safetensors file.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from torch_ext._safetensors import read_safetensors, read_safetensors_header
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> save_file({"w": torch.zeros(2, 3)}, path, metadata={"format": "pt"})
    >>> read_safetensors_header(path)
    ({'format': 'pt'}, {'w': ((2, 3), 4)})
    >>> read_safetensors(path)[1]["w"].shape
    torch.Size([2, 3])
    """
    return _read(path, what, tensors=True)


def read_safetensors_header(path, *, what: str = "checkpoint") -> tuple[dict, dict[str, tuple[tuple, int]]]:
    """Metadata and ``{name: (shape, bytes per element)}`` of a safetensors file, reading no tensor."""
    return _read(path, what, tensors=False)
