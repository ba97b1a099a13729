"""``ResidualLeechVQ``: residual vector quantization with :class:`LeechVQ` stages."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_int
from .layer import LeechVQ, _check_real

__all__ = ["ResidualLeechVQ"]


class ResidualLeechVQ(nn.Module):
    r"""Residual quantization: ``num_quantizers`` :class:`LeechVQ` stages in a row.

    Stage 0 quantizes the input, stage ``k`` the residual ``x - (q_0 + ... +
    q_{k-1})`` (detached, as in vector-quantize-pytorch); the output is the sum of
    the stages' outputs.  With ``estimator="noise"`` the training output of a stage
    is its input plus noise, so the next stage takes the residual of the stage's hard
    codewords (:meth:`LeechVQ.indices_to_codes`) instead.

    Parameters
    ----------
    dim : int
        Size of the last input dimension.
    num_quantizers : int, optional
        Number of stages (1 to 64; default 2).
    scale_decay : float, optional
        Stage ``k`` starts with ``scale`` (its gain or ball scale) ``scale_decay**k``
        times that of stage 0 (default 0.5), as the residuals shrink from stage to
        stage; the scales are then learned (``gain="learned"``) or fixed.
    **leechvq_kwargs
        Passed to every stage's :class:`LeechVQ` (``codebook``, ``bits``,
        ``estimator``, ...); ``scale`` is stage 0's.

    Attributes
    ----------
    layers : torch.nn.ModuleList
        The stages.
    codebook_size : int
        Codes per block and stage.
    bits : float
        Bits per block, all stages together.
    num_blocks : int

    Notes
    -----
    The call returns ``(quantized, indices, aux_loss)`` with ``indices`` int64 of shape
    ``(..., num_blocks, num_quantizers)`` and ``aux_loss`` the sum of the stages'.
    With ``mask``, masked positions get index -1 in every block and stage and the
    input back unchanged.  :meth:`indices_to_codes` is the sum of the stages' codes
    (zeros for -1): it reproduces the eval-mode output exactly.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import ResidualLeechVQ
    >>> rvq = ResidualLeechVQ(48, num_quantizers=3, codebook="ball", bits=1.5).eval()
    >>> x = torch.randn(4, 48)
    >>> q, idx, aux = rvq(x)
    >>> idx.shape, round(rvq.bits, 1)
    (torch.Size([4, 2, 3]), 105.6)
    >>> bool(torch.equal(rvq.indices_to_codes(idx), q))
    True
    """

    def __init__(self, dim, *, num_quantizers=2, scale_decay=0.5, **leechvq_kwargs):
        super().__init__()
        self.num_quantizers = check_int(num_quantizers, "num_quantizers", 1, 64)
        self.scale_decay = _check_real(scale_decay, "scale_decay", 0.0, 1.0, lo_open=True)
        first = LeechVQ(dim, **leechvq_kwargs)
        if first.gain_mode == "block" and first.levels is None:
            raise ValueError("ResidualLeechVQ needs codes that the indices carry: gain='block' "
                             "needs gain_levels (continuous gains are not in the indices)")
        s0 = float(first.scale.detach()[0]) if first.scale is not None else None
        layers = [first]
        for k in range(1, self.num_quantizers):
            kw = dict(leechvq_kwargs)
            if s0 is not None:
                kw["scale"] = s0 * self.scale_decay**k
            layers.append(LeechVQ(dim, **kw))
        self.layers = nn.ModuleList(layers)
        self.dim = first.dim
        self.num_blocks = first.num_blocks
        self.codebook_size = first.codebook_size
        self.bits = first.bits * self.num_quantizers

    def forward(self, x: Tensor, mask: Tensor | None = None):
        """Quantize ``x`` (``(..., dim)``); ``mask`` as :meth:`LeechVQ.forward`.

        Returns
        -------
        quantized : torch.Tensor
            ``(..., dim)``, the sum of the stages' outputs.
        indices : torch.Tensor
            int64, ``(..., num_blocks, num_quantizers)``.
        aux_loss : torch.Tensor
            The sum of the stages' auxiliary losses.
        """
        self.layers[0]._check_x(x)
        residual = x
        total = None
        idx, aux = [], None
        for layer in self.layers:
            q, i, a = layer(residual, mask)
            total = q if total is None else total + q
            if layer.training and layer.estimator == "noise":
                # the output is residual + noise: the next stage takes the hard residual
                hard = layer.indices_to_codes(i)
                residual = residual - hard.detach().to(residual.dtype)
            else:
                residual = residual - q.detach()
            idx.append(i)
            aux = a if aux is None else aux + a
        if mask is not None:
            total = torch.where(mask[..., None], total, x)
        return total, torch.stack(idx, dim=-1), aux

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """The sum of the stages' codewords of ``indices`` (``(..., num_blocks,
        num_quantizers)``; -1 gives zeros), ``(..., dim)``."""
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dim() < 2 or indices.shape[-2:] != (self.num_blocks, self.num_quantizers):
            raise ValueError(f"indices must have shape (..., {self.num_blocks}, "
                             f"{self.num_quantizers}), got shape {tuple(indices.shape)}")
        total = None
        for k, layer in enumerate(self.layers):
            c = layer.indices_to_codes(indices[..., k])
            total = c if total is None else total + c
        return total

    def usage_stats(self, indices: Tensor | None = None) -> list:
        """:meth:`LeechVQ.usage_stats` of each stage (``indices[..., k]`` for stage ``k``)."""
        if indices is None:
            return [layer.usage_stats() for layer in self.layers]
        return [layer.usage_stats(indices[..., k]) for k, layer in enumerate(self.layers)]
