"""Alignment of hidden states with lattice directions.

:class:`AlignmentLoss` splits a hidden state ``(..., d)`` into 24-dimensional blocks
and returns ``weight * (1 - mean |cos|)``, where ``|cos|`` is the absolute cosine of
each block with its nearest direction among

``"minimal"``
    the 196 560 minimal vectors of the Leech lattice, found exactly with the
    structured op :func:`torch_ext.nearest_minimal_vector` (it maximises the inner
    product, and since ``-v`` is minimal whenever ``v`` is, this is the largest
    ``|cos|``);
``"frame"``
    the 48 vectors ``±e_i`` (``|cos| = max_i |x_i| / ||x||``);
a tensor ``(k, 24)``
    ``k`` user directions, compared up to sign.

The nearest direction is chosen without gradient (it is piecewise constant); the
gradient flows through the cosine.  Padding positions are excluded with an optional
``mask`` of the leading shape (``1`` = keep); blocks that are exactly zero have no
direction and are excluded too (so no NaN ever appears, in value or gradient).  If
nothing is left, the loss is ``weight * 1``.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from .ops import nearest_minimal_vector

__all__ = ["AlignmentLoss", "block_abs_cosine"]


def _check_directions(directions):
    if isinstance(directions, str):
        if directions not in ("minimal", "frame"):
            raise ValueError(
                f"directions must be 'minimal', 'frame' or a (k, 24) tensor, got {directions!r}"
            )
        return directions, None
    if isinstance(directions, Tensor):
        if directions.dim() != 2 or directions.shape[1] != 24 or directions.shape[0] == 0:
            raise ValueError(
                f"directions must have shape (k, 24) with k >= 1, got {tuple(directions.shape)}"
            )
        if not directions.is_floating_point():
            raise TypeError(f"directions must be a floating-point tensor, got {directions.dtype}")
        d = directions.detach().to(torch.float32)
        if not bool(torch.isfinite(d).all()):
            raise ValueError("directions contains NaN or inf")
        norms = d.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("directions contains a zero vector")
        return "tensor", d / norms
    raise TypeError(
        f"directions must be 'minimal', 'frame' or a torch.Tensor, got {type(directions).__name__}"
    )


def block_abs_cosine(blocks: Tensor, directions="minimal", unit_dirs: Tensor | None = None):
    """``|cos|`` of each 24-block ``(..., 24)`` with its nearest direction, and a validity mask.

    Returns ``(cos, valid)``: ``cos`` has shape ``blocks.shape[:-1]`` (0 where the block
    is zero), ``valid`` is False for zero blocks.  Computed in float32 (float64 input
    stays float64).

    Examples
    --------
    >>> import torch
    >>> from torch_ext.losses import block_abs_cosine
    >>> b = torch.zeros(2, 24); b[0, 5] = -3.0
    >>> cos, valid = block_abs_cosine(b, "frame")
    >>> cos.tolist(), valid.tolist()
    ([1.0, 0.0], [True, False])
    """
    kind, unit = _check_directions(directions) if unit_dirs is None else ("tensor", unit_dirs)
    x = blocks if blocks.dtype == torch.float64 else blocks.float()
    sq = (x * x).sum(-1)
    valid = sq > 0
    safe = torch.where(valid.unsqueeze(-1), x, torch.ones_like(x))
    norm = safe.norm(dim=-1)
    if kind == "frame":
        num = safe.abs().amax(dim=-1)
    elif kind == "minimal":
        v = nearest_minimal_vector(safe.detach(), coords="unit")  # norm 2
        num = (safe * v.to(safe.dtype)).sum(-1).abs() / 2.0
    else:
        u = unit.to(device=safe.device, dtype=safe.dtype)
        with torch.no_grad():
            best = (safe @ u.T).abs().argmax(dim=-1)
        num = (safe * u[best]).sum(-1).abs()
    cos = torch.where(valid, num / norm, torch.zeros_like(norm))
    return cos, valid


class AlignmentLoss(nn.Module):
    """``weight * (1 - mean |cos|)`` of the 24-blocks of a hidden state with lattice directions.

    Parameters
    ----------
    directions : "minimal", "frame" or torch.Tensor
        Minimal vectors of the Leech lattice, the coordinate frame ``±e_i``, or a
        ``(k, 24)`` tensor of directions (normalised; compared up to sign).
    weight : float
        Multiplies the loss.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import AlignmentLoss
    >>> h = torch.zeros(2, 3, 48); h[..., 0] = 1.0; h[..., 24] = 2.0      # on the frame
    >>> float(AlignmentLoss("frame")(h))
    0.0
    >>> mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    >>> loss = AlignmentLoss("minimal", weight=0.5)(torch.randn(2, 3, 48), mask)
    >>> 0.0 <= float(loss) <= 0.5
    True
    """

    def __init__(self, directions="minimal", weight: float = 1.0):
        super().__init__()
        kind, unit = _check_directions(directions)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"weight must be a real number, got {type(weight).__name__}")
        if not float(weight) >= 0.0 or float(weight) == float("inf"):
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        self.kind = kind
        self.weight = float(weight)
        if unit is not None:
            self.register_buffer("directions", unit, persistent=False)
        else:
            self.directions = None

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """Loss of ``hidden`` (``(..., d)``, ``d`` a multiple of 24); ``mask`` of shape ``hidden.shape[:-1]``."""
        if not isinstance(hidden, Tensor) or not hidden.is_floating_point():
            raise TypeError("hidden must be a floating-point torch.Tensor")
        if hidden.dim() == 0 or hidden.shape[-1] % 24 or hidden.shape[-1] == 0:
            raise ValueError(
                f"hidden must have shape (..., d) with d a multiple of 24, got {tuple(hidden.shape)}"
            )
        lead = hidden.shape[:-1]
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
            if mask.shape != lead:
                raise ValueError(f"mask must have shape {tuple(lead)}, got {tuple(mask.shape)}")
        blocks = hidden.reshape(*lead, hidden.shape[-1] // 24, 24)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            if self.kind == "tensor":
                cos, valid = block_abs_cosine(blocks, unit_dirs=self.directions)
            else:
                cos, valid = block_abs_cosine(blocks, self.kind)
            w = valid.to(cos.dtype)
            if mask is not None:
                w = w * mask.to(device=cos.device, dtype=cos.dtype).unsqueeze(-1)
            mean = (cos * w).sum() / w.sum().clamp_min(1.0)
        return self.weight * (1.0 - mean)

    def extra_repr(self) -> str:
        return f"directions={self.kind!r}, weight={self.weight}"
