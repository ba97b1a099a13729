"""Frozen orthogonal kernels built from automorphisms of the Leech lattice.

A :class:`LeechKernel` is a ``d_model × d_model`` orthogonal matrix, block-diagonal
over 24-dimensional blocks, that is never trained:

``"leech"``
    block ``b`` is :meth:`leechlib.LeechLattice.random_automorphism` (an element of
    Co0, entries multiples of 1/8, exactly orthogonal), seeded by ``(seed, b)``;
``"random"``
    block ``b`` is Haar-random in O(24) (QR of a Gaussian matrix with the sign fix
    ``Q diag(sign(diag R))``), seeded the same way; the control without lattice
    structure;
``"identity"``
    the identity.

The matrix is held as a *non-persistent* buffer: it is rebuilt deterministically from
``(kind, seed, d_model)``, is not in ``state_dict()`` and is never a ``Parameter``.
It is applied as what it is, ``d_model / 24`` independent 24×24 products
(:func:`diag_blocks`, :func:`blockwise`), never as a dense ``d_model × d_model`` one.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from leechlib import LeechLattice

from ._validation import check_int

__all__ = ["LeechKernel", "kernel_matrix", "diag_blocks", "blockwise", "KINDS"]

KINDS = ("leech", "random", "identity")


def _check_kernel_args(d_model, kind, seed):
    d_model = check_int(d_model, "d_model", 1)
    if d_model % 24:
        raise ValueError(
            f"d_model must be a multiple of 24 (the kernel is block-diagonal over "
            f"24-dimensional Leech blocks), got {d_model}"
        )
    if not isinstance(kind, str):
        raise TypeError(f"kind must be one of {KINDS}, got {type(kind).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    seed = check_int(seed, "seed", 0)
    return d_model, kind, seed


@functools.lru_cache(maxsize=256)
def _blocks(kind: str, seed: int, n_blocks: int) -> np.ndarray:
    """``(n_blocks, 24, 24)`` float64 blocks; deterministic in (kind, seed, block)."""
    out = np.empty((n_blocks, 24, 24))
    if kind == "identity":
        out[:] = np.eye(24)
    elif kind == "leech":
        lat = LeechLattice()
        for b in range(n_blocks):
            out[b] = lat.random_automorphism(rng=np.random.default_rng([seed, b]))
    else:  # random: Haar on O(24)
        for b in range(n_blocks):
            g = np.random.default_rng([seed, b, 1]).standard_normal((24, 24))
            q, r = np.linalg.qr(g)
            out[b] = q * np.sign(np.diag(r))
    out.flags.writeable = False
    return out


def kernel_matrix(d_model: int, kind: str = "leech", seed: int = 0) -> torch.Tensor:
    """The ``d_model × d_model`` block-diagonal orthogonal matrix (float64 tensor).

    Examples
    --------
    >>> import torch
    >>> from torch_ext.kernel import kernel_matrix
    >>> W = kernel_matrix(48, "leech", seed=3)
    >>> W.shape, bool(torch.equal(W @ W.T, torch.eye(48, dtype=torch.float64)))
    (torch.Size([48, 48]), True)
    >>> bool((W[:24, 24:] == 0).all())          # block-diagonal
    True
    """
    d_model, kind, seed = _check_kernel_args(d_model, kind, seed)
    blocks = torch.from_numpy(np.array(_blocks(kind, seed, d_model // 24)))
    return torch.block_diag(*blocks)


def diag_blocks(w: torch.Tensor) -> torch.Tensor:
    """The ``(d / 24, 24, 24)`` diagonal blocks of a ``(d, d)`` matrix (a view, no copy).

    Examples
    --------
    >>> import torch
    >>> from torch_ext.kernel import diag_blocks, kernel_matrix
    >>> W = kernel_matrix(48, "leech", seed=3)
    >>> B = diag_blocks(W)
    >>> B.shape, bool(torch.equal(torch.block_diag(*B), W))
    (torch.Size([2, 24, 24]), True)
    """
    if w.dim() != 2 or w.shape[0] != w.shape[1] or w.shape[0] % 24:
        raise ValueError(f"w must be a square matrix of a multiple of 24 rows, got {tuple(w.shape)}")
    n = w.shape[0] // 24
    return torch.diagonal(w.view(n, 24, n, 24), dim1=0, dim2=2).permute(2, 0, 1)


def blockwise(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``x @ block_diag(*blocks)`` on the last axis, as ``d / 24`` batched 24×24 products.

    ``x`` is ``(..., d)`` and ``blocks`` ``(d / 24, 24, 24)``; block ``b`` maps the
    coordinates ``24 b .. 24 b + 23`` of ``x`` (as a row vector) to the same coordinates
    of the result.  The flops are ``24 d`` per row instead of ``d**2``.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.kernel import blockwise, diag_blocks, kernel_matrix
    >>> W = kernel_matrix(72, "random", seed=1)
    >>> x = torch.randn(5, 72, dtype=torch.float64)
    >>> torch.allclose(blockwise(x, diag_blocks(W)), x @ W)
    True
    """
    n = blocks.shape[0]
    if blocks.shape[1:] != (24, 24) or x.shape[-1] != 24 * n:
        raise ValueError(
            f"x (last axis {x.shape[-1]}) and blocks {tuple(blocks.shape)} do not match: "
            f"expected blocks of shape (d / 24, 24, 24)"
        )
    lead = x.shape[:-1]
    xb = x.reshape(-1, n, 24).transpose(0, 1)  # (n, rows, 24): a strided view
    return torch.bmm(xb, blocks).transpose(0, 1).reshape(*lead, 24 * n)


class LeechKernel(nn.Module):
    """A frozen block-diagonal orthogonal ``d_model × d_model`` matrix.

    Parameters
    ----------
    d_model : int
        A multiple of 24.
    kind : {"leech", "random", "identity"}
        Leech lattice automorphisms, Haar-random orthogonal blocks, or the identity.
    seed : int
        Block ``b`` is drawn from ``numpy.random.default_rng([seed, b])`` (``"leech"``)
        or ``default_rng([seed, b, 1])`` (``"random"``).

    Attributes
    ----------
    weight : torch.Tensor
        The float32 matrix ``W`` (a non-persistent buffer; ``W @ W.T == I`` up to
        1e-6, exactly for ``"leech"``, whose entries are multiples of 1/8).

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LeechKernel
    >>> k = LeechKernel(48, kind="leech", seed=0)
    >>> list(k.parameters()), list(k.state_dict())
    ([], [])
    >>> x = torch.randn(2, 48)
    >>> torch.allclose(k(x).norm(dim=-1), x.norm(dim=-1))     # orthogonal
    True
    """

    def __init__(self, d_model: int, kind: str = "leech", seed: int = 0):
        super().__init__()
        self.d_model, self.kind, self.seed = _check_kernel_args(d_model, kind, seed)
        w = kernel_matrix(self.d_model, self.kind, self.seed).to(torch.float32)
        self.register_buffer("weight", w, persistent=False)

    @property
    def blocks(self) -> torch.Tensor:
        """The ``(d_model / 24, 24, 24)`` diagonal blocks of :attr:`weight` (a view)."""
        return diag_blocks(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` on the last axis (block by block)."""
        if x.dtype != self.weight.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the kernel {self.weight.dtype}")
        return blockwise(x, self.blocks.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, kind={self.kind!r}, seed={self.seed}, frozen=True"
