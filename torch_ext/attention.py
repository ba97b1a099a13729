"""Causal self-attention whose query/key projections are frozen Leech kernels.

``mode="frozen"``
    The query and key projections *are* frozen :class:`~torch_ext.kernel.LeechKernel`
    matrices: ``q = x @ Wq.T``, ``k = x @ Wk.T``, sliced into heads.  Each head ``h``
    therefore scores with the fixed bilinear form ``x_i^T Wq_h^T Wk_h x_j``, defined by
    the lattice and not learned; only the value and output projections (and the
    LayerNorm gains in front) are trained.

    With ``shared_qk=True`` there is one kernel ``W`` and the keys use ``Wk = W.T``,
    so the form is ``W_h^T (W^T)_h`` (on heads aligned with the 24-blocks: the Co0
    element ``(W_b^2)^T`` of each block).  Using ``W`` for both sides would give
    ``W_h^T W_h``, which for heads made of whole 24-blocks is the identity: the kernel
    would cancel and the scores would not depend on it (the mistake of the published
    LILA code, which rotated learned q and k by the same orthogonal matrix).  With
    ``shared_qk=False`` the keys use a second kernel with seed ``kernel_seed + 1``.

``mode="learned"``
    Standard attention with learned ``W_q, W_k`` (the baseline).

Both modes are causal, take an optional key padding mask ``(B, T)``, and compute
attention either with :func:`torch.nn.functional.scaled_dot_product_attention`
(``use_sdpa=True``) or with an explicit softmax (``use_sdpa=False``); the two agree.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_int
from .kernel import KINDS, LeechKernel

__all__ = ["FrozenKernelAttention", "MODES"]

MODES = ("frozen", "learned")


class FrozenKernelAttention(nn.Module):
    """Causal multi-head self-attention with frozen (lattice) or learned q/k projections.

    Parameters
    ----------
    d_model : int
        Model width; a multiple of 24 in ``"frozen"`` mode and divisible by ``n_head``.
    n_head : int
        Number of heads.
    block_size : int
        Longest sequence accepted.
    mode : {"frozen", "learned"}
        Frozen kernel q/k projections, or learned ones (baseline).
    kernel : {"leech", "random", "identity"}
        Kind of frozen kernel (``"frozen"`` mode only).
    kernel_seed : int
        Seed of the query kernel (the key kernel uses ``kernel_seed + 1`` when
        ``shared_qk=False``).
    shared_qk : bool
        One kernel ``W`` for queries and ``W.T`` for keys (see the module docstring).
    dropout : float
        Attention and residual dropout.
    bias : bool
        Biases in the learned projections.
    use_sdpa : bool
        Use ``scaled_dot_product_attention`` (else the explicit softmax path).

    Examples
    --------
    >>> import torch
    >>> from torch_ext import FrozenKernelAttention
    >>> attn = FrozenKernelAttention(48, n_head=2, block_size=16)
    >>> x = torch.randn(3, 10, 48)
    >>> attn(x).shape
    torch.Size([3, 10, 48])
    >>> sorted(n for n, _ in attn.named_parameters())      # q/k are not parameters
    ['out_proj.weight', 'v_proj.weight']
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        block_size: int,
        mode: str = "frozen",
        kernel: str = "leech",
        kernel_seed: int = 0,
        shared_qk: bool = True,
        dropout: float = 0.0,
        bias: bool = False,
        use_sdpa: bool = True,
    ):
        super().__init__()
        d_model = check_int(d_model, "d_model", 1)
        n_head = check_int(n_head, "n_head", 1)
        block_size = check_int(block_size, "block_size", 1)
        kernel_seed = check_int(kernel_seed, "kernel_seed", 0)
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(kernel, str) or kernel not in KINDS:
            raise ValueError(f"kernel must be one of {KINDS}, got {kernel!r}")
        for name, v in (("shared_qk", shared_qk), ("bias", bias), ("use_sdpa", use_sdpa)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if mode == "frozen" and d_model % 24:
            raise ValueError(
                f"d_model must be a multiple of 24 in 'frozen' mode (Leech blocks), got {d_model}"
            )
        self.d_model = d_model
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.block_size = block_size
        self.mode = mode
        self.kernel = kernel
        self.kernel_seed = kernel_seed
        self.shared_qk = shared_qk
        self.dropout = float(dropout)
        self.use_sdpa = use_sdpa
        if mode == "frozen":
            self.q_kernel = LeechKernel(d_model, kernel, kernel_seed)
            self.k_kernel = None if shared_qk else LeechKernel(d_model, kernel, kernel_seed + 1)
        else:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)

    # ------------------------------------------------------------------ pieces
    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def qk_matrices(self) -> tuple[Tensor, Tensor]:
        """The ``(d_model, d_model)`` matrices ``Wq, Wk`` with ``q = x @ Wq.T``, ``k = x @ Wk.T``."""
        if self.mode == "learned":
            return self.q_proj.weight, self.k_proj.weight
        wq = self.q_kernel.weight
        wk = wq.T if self.k_kernel is None else self.k_kernel.weight
        return wq, wk

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values, each ``(B, n_head, T, head_dim)``."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        if x.shape[1] > self.block_size:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds block_size {self.block_size}"
            )
        if self.mode == "learned":
            q, k = self.q_proj(x), self.k_proj(x)
        else:
            wq, wk = self.qk_matrices()
            q = F.linear(x, wq.to(x.dtype))
            k = F.linear(x, wk.to(x.dtype))
        v = self.v_proj(x)
        return self._split(q), self._split(k), self._split(v)

    @staticmethod
    def _allowed(t: int, mask: Tensor | None, device) -> Tensor:
        """Boolean ``(B or 1, 1, T, T)``: causal, and keys that are not padding.

        A query always sees itself, so a row is never fully masked (no NaN).
        """
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
        if mask is None:
            return causal.view(1, 1, t, t)
        keys = mask.to(torch.bool).view(mask.shape[0], 1, 1, t)
        eye = torch.eye(t, dtype=torch.bool, device=device)
        return causal & (keys | eye)

    def _check_mask(self, mask, x):
        if mask is None:
            return None
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        return mask

    def scores(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention logits ``q k^T / sqrt(head_dim)`` with ``-inf`` where masked, ``(B, H, T, T)``."""
        mask = self._check_mask(mask, x)
        q, k, _ = self.qkv(x)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        return att.masked_fill(~self._allowed(x.shape[1], mask, x.device), float("-inf"))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Causal attention of ``(B, H, T, hd)`` heads; returns ``(B, H, T, hd)``."""
        t = q.shape[-2]
        p = self.dropout if self.training else 0.0
        if self.use_sdpa:
            if mask is None:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            allowed = self._allowed(t, mask, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        att = att.masked_fill(~self._allowed(t, mask, q.device), float("-inf"))
        att = F.softmax(att, dim=-1)
        if p > 0:
            att = F.dropout(att, p=p)
        return att @ v

    def merge(self, y: Tensor) -> Tensor:
        """Concatenate heads ``(B, H, T, hd)`` and apply the output projection and dropout."""
        b, _, t, _ = y.shape
        y = y.transpose(1, 2).reshape(b, t, self.d_model)
        return self.resid_dropout(self.out_proj(y))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Self-attention of ``x`` (``(B, T, d_model)``); ``mask`` (``(B, T)``, 1 = token)."""
        mask = self._check_mask(mask, x)
        q, k, v = self.qkv(x)
        return self.merge(self.attend(q, k, v, mask))

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, n_head={self.n_head}, mode={self.mode!r}"
        if self.mode == "frozen":
            s += f", kernel={self.kernel!r}, kernel_seed={self.kernel_seed}, shared_qk={self.shared_qk}"
        return s
