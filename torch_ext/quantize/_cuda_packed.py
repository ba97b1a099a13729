"""Trio-coded weights on CUDA tensors without dequantizing them: leechlib's Numba CUDA kernels.

The torch face of :func:`leechlib.kernels.packed_matmul_cuda` and
:func:`leechlib.kernels.packed_weight_cuda`: :func:`packed_linear_cuda` computes
``x @ W.T`` from the packed 48-bit trio codes, :func:`packed_weight_cuda` decodes
``W``; both launch on torch's current stream of the tensors' device (through
``__cuda_array_interface__``: no copies).  :func:`layer_codes_forward_cuda` and
:func:`layer_weight_cuda` are the hooks of :class:`~torch_ext.quantize.LeechQuantizedLinear`
(``cache=False`` on a CUDA device): they return None where the kernels do not apply
(another codec, float64, a gradient needed, a large batch, no working Numba CUDA), and
the layer then decodes the weight with torch as before.

**Not measured**: the kernels were written and checked without a GPU (Numba's CUDA
simulator); ``benchmarks/gpu_qmatmul.py`` measures them against cuBLAS.  If Numba
CUDA fails at run time (compiler, driver), the hooks warn once and return None from
then on, as the decoders of :mod:`torch_ext.ops` do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leechlib import kernels as _kernels

from ..ops import _backends

__all__ = ["packed_linear_cuda", "packed_weight_cuda", "layer_codes_forward_cuda", "layer_weight_cuda",
           "MAX_CODES_BATCH"]

#: rows of ``x`` (tokens) up to which the layer hook runs the codes kernel; beyond, the
#: layer dequantizes (each launch of the kernel serves 16 rows and decodes every code)
MAX_CODES_BATCH = 16


def _is_cuda(t: Tensor) -> bool:
    """Whether ``t`` lives on a CUDA device (one place, so that the simulator tests can stand in)."""
    return t.is_cuda


def _require_cuda(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not _is_cuda(t):
        raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")


def _group(group, nb_device) -> Tensor:
    """``group`` as a contiguous int64 tensor on ``nb_device`` (numpy or a tensor anywhere)."""
    if isinstance(group, np.ndarray):
        group = torch.from_numpy(np.ascontiguousarray(group))
    if not isinstance(group, Tensor):
        raise TypeError(f"group must be a torch.Tensor or a numpy array, got {type(group).__name__}")
    if group.dtype != torch.int64 or group.ndim != 1:
        raise TypeError(f"group must be a 1-D int64 tensor, got {group.dtype} of shape {tuple(group.shape)}")
    return group.to(nb_device).contiguous()


def _codes_args(packed: Tensor, scales: Tensor, group, check_group: bool):
    _require_cuda(packed, "packed")
    _require_cuda(scales, "scales")
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    if not scales.is_floating_point():
        raise TypeError(f"scales must be a floating-point tensor, got {scales.dtype}")
    if scales.device != packed.device:
        raise ValueError(f"scales must be on packed's device {packed.device}, got {scales.device}")
    host_group = isinstance(group, np.ndarray) or (isinstance(group, Tensor) and group.device.type == "cpu")
    g = _group(group, packed.device)
    if host_group and g.numel() and scales.ndim == 2:  # checked on the host: no synchronisation
        gh = torch.as_tensor(group)
        if int(gh.min()) < 0 or int(gh.max()) >= scales.shape[1]:
            raise ValueError(f"group must index the {scales.shape[1]} scale columns")
        check_group = False
    return packed.contiguous(), scales.detach().to(torch.float32).contiguous(), g, check_group


@torch.no_grad()
def _linear(x: Tensor, packed: Tensor, scales: Tensor, group: Tensor, check_group: bool) -> Tensor:
    nb = group.numel()
    lead, n_in = x.shape[:-1], x.shape[-1]
    if n_in > 24 * nb:
        raise ValueError(f"x has {n_in} features, the codes hold {24 * nb} (24 per block of group)")
    x2 = x.detach().reshape(-1, n_in)
    if x2.dtype not in (torch.float16, torch.float32):
        x2 = x2.to(torch.float32)
    if n_in < 24 * nb:
        x2 = F.pad(x2, (0, 24 * nb - n_in))
    x2 = x2.contiguous()
    out = torch.empty((x2.shape[0], packed.shape[0]), dtype=torch.float32, device=x.device)
    if out.numel():

        def launch(xd, pd, sd, gd, od, stream):
            _kernels.packed_matmul_cuda(xd, pd, sd, gd, out=od, stream=stream, check_group=check_group)

        _backends._numba_cuda_launch(launch, x, x2, packed, scales, group, out)
    return out.reshape(lead + (packed.shape[0],))


def packed_linear_cuda(x: Tensor, packed: Tensor, scales: Tensor, group, *, check_group: bool = True) -> Tensor:
    """``x @ W.T`` of a trio-coded weight ``W`` on a CUDA device, from its packed codes.

    ``W[r, 24j : 24j+24] = scales[r, group[j]] * decode(code[r, j])`` (the trio code's
    decode, integer model: fold any constant factor into ``scales``); computed by
    :func:`leechlib.kernels.packed_matmul_cuda` on torch's current stream, float32
    products and sums.  Not differentiable.  **Not measured** (see the module docstring).

    Parameters
    ----------
    x : torch.Tensor
        CUDA, ``(..., n)`` with ``n <= 24 * blocks`` (the missing columns count as zeros);
        float16 and float32 are read as they are, other dtypes through float32.
    packed : torch.Tensor
        CUDA uint8 ``(R, bytes)``: six bytes per block, least significant first.
    scales : torch.Tensor
        CUDA floating-point ``(R, groups)`` (used as float32).
    group : torch.Tensor or numpy.ndarray
        int64 ``(blocks,)``: the scale column of each block (a CPU tensor or a numpy
        array is checked on the host and copied; a CUDA tensor is checked with a
        synchronising copy unless ``check_group=False``).
    check_group : bool
        Check a CUDA ``group``'s range (see above).

    Returns
    -------
    torch.Tensor
        ``(..., R)`` in ``x``'s dtype.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize._cuda_packed import packed_linear_cuda
    >>> packed = torch.full((1, 6), 255, dtype=torch.uint8, device="cuda")   # doctest: +SKIP
    >>> scales = torch.ones((1, 1), device="cuda")                           # doctest: +SKIP
    >>> x = torch.ones((1, 24), device="cuda")                               # doctest: +SKIP
    >>> with torch.no_grad():                                                # doctest: +SKIP
    ...     packed_linear_cuda(x, packed, scales, torch.zeros(1, dtype=torch.int64))
    tensor([[20.]], device='cuda:0')
    """
    _require_cuda(x, "x")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError("packed_linear_cuda has no backward: call it under torch.no_grad(), or "
                           "dequantize with packed_weight_cuda and use F.linear")
    packed, scales, group, check_group = _codes_args(packed, scales, group, check_group)
    if x.device != packed.device:
        raise ValueError(f"x must be on packed's device {packed.device}, got {x.device}")
    return _linear(x, packed, scales, group, check_group).to(x.dtype)


@torch.no_grad()
def packed_weight_cuda(packed: Tensor, scales: Tensor, group, *, dtype: torch.dtype = torch.float32,
                       columns: int | None = None, check_group: bool = True) -> Tensor:
    """The trio-coded weight ``W`` (``(R, 24 * blocks)``, or its first ``columns``) on ``packed``'s device.

    Arguments as in :func:`packed_linear_cuda`; :func:`leechlib.kernels.packed_weight_cuda`
    on torch's current stream: ``float64(scale) * value`` rounded once to float16,
    float32 or float64 (bitwise leechlib's CPU :func:`~leechlib.kernels.packed_weight`
    for the last two); bfloat16 through float32 (two roundings).  **Not measured**.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize._cuda_packed import packed_weight_cuda
    >>> packed = torch.full((1, 6), 255, dtype=torch.uint8, device="cuda")   # doctest: +SKIP
    >>> w = packed_weight_cuda(packed, torch.ones((1, 1), device="cuda"),
    ...                        torch.zeros(1, dtype=torch.int64), dtype=torch.float16)  # doctest: +SKIP
    >>> w[0, :4]                                                             # doctest: +SKIP
    tensor([-1.,  3.,  3., -5.], device='cuda:0', dtype=torch.float16)
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    packed, scales, group, check_group = _codes_args(packed, scales, group, check_group)
    nb = group.numel()
    if columns is not None and not (0 <= int(columns) <= 24 * nb):
        raise ValueError(f"columns must be in 0..{24 * nb}, got {columns}")
    kdt = dtype if dtype in (torch.float16, torch.float32, torch.float64) else torch.float32
    w = torch.empty((packed.shape[0], 24 * nb), dtype=kdt, device=packed.device)
    if w.numel():

        def launch(pd, sd, gd, wd, stream):
            _kernels.packed_weight_cuda(pd, sd, gd, out=wd, stream=stream, check_group=check_group)

        _backends._numba_cuda_launch(launch, packed, packed, scales, group, w)
    w = w.to(dtype)
    return w if columns is None else w[:, : int(columns)]


# ---------------------------------------------------------------------------
# the hooks of LeechQuantizedLinear
# ---------------------------------------------------------------------------


def _layer_args(layer):
    """``(scales, group)`` on the layer's device (float32 with the codec's ``post`` folded in,
    as the CPU path's ``_packed_spec``), or None when the codec is not the trio code or Numba
    CUDA cannot run here.  Cached on the layer, keyed by the buffers' pointers and versions."""
    if not _is_cuda(layer.packed) or _backends.cuda_backend() != "numba":
        return None
    stamp = tuple((t.data_ptr(), t._version) for t in (layer.packed, layer.scales, layer.gains)
                  if t is not None) + (str(layer.packed.device),)
    hit = layer.__dict__.get("_cuda_packed_state")
    if hit is not None and hit[0] == stamp:
        return hit[1]
    spec = layer.codec.packed(layer.gains)
    if spec is None or spec.codebook != "trio":
        out = None
    else:
        L = layer.layout
        S = layer.scales.detach().to(torch.float32)
        if L.tensor:
            S = S.reshape(1, 1).expand(layer.out_features, 1)
            group = np.zeros(L.nblocks, dtype=np.int64)
        else:
            group = np.ascontiguousarray(L.block_group, dtype=np.int64)
        if spec.post != 1.0:
            S = S * spec.post
        gt = torch.from_numpy(group)
        if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= S.shape[1]):  # once, on the host
            raise ValueError(f"layer {layer.name or layer.method!r}: block groups beyond the scale columns")
        out = (S.contiguous(), gt.to(layer.packed.device))
    layer.__dict__["_cuda_packed_state"] = (stamp, out)
    return out


def _or_none(fn, *args):
    """``fn(*args)``, or None (with one warning, and the pure-torch decoders from then on)
    where Numba CUDA itself fails; input errors are raised."""
    return _backends._numba_cuda_or_fallback(fn, lambda *a: None, *args)


def layer_codes_forward_cuda(layer, x: Tensor) -> Tensor | None:
    """``x W'^T`` of a :class:`~torch_ext.quantize.LeechQuantizedLinear` from its codes on CUDA, or None.

    ``x`` ``(..., in_features)`` in the stored (rotated) basis; float32 ``(..., out_features)``.
    None (the caller decodes the weight) off CUDA, for float64 ``x``, when ``x`` needs a
    gradient, for more than :data:`MAX_CODES_BATCH` rows, for codecs other than the trio
    code, and where Numba CUDA does not work.
    """
    if (not _is_cuda(x) or x.dtype == torch.float64 or not x.is_floating_point()
            or (torch.is_grad_enabled() and x.requires_grad) or x.device != layer.packed.device
            or x.numel() > MAX_CODES_BATCH * layer.in_features):
        return None
    args = _layer_args(layer)
    if args is None:
        return None
    scales, group = args
    return _or_none(_linear, x, layer.packed, scales, group, False)


def layer_weight_cuda(layer, dtype: torch.dtype) -> Tensor | None:
    """The stored (rotated) weight ``W'`` ``(out_features, in_features)`` of a trio-coded layer on
    CUDA, decoded by the CUDA kernel, or None (as :func:`layer_codes_forward_cuda`)."""
    if not dtype.is_floating_point:
        return None
    args = _layer_args(layer)
    if args is None:
        return None
    scales, group = args
    return _or_none(lambda: packed_weight_cuda(layer.packed, scales, group, dtype=dtype,
                                               columns=layer.in_features, check_group=False))
