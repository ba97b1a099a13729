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

    How it is computed: when ``head_dim`` is a multiple of 24 (every head made of
    whole blocks, as in the presets), the form of each head is folded into the keys:
    the queries are ``x_h`` itself and the keys ``k'_h = x_h M_h^T`` with ``M_h``
    block-diagonal of blocks ``Wq_b^T Wk_b``, so ``q k'^T = x_h M_h x_h^T``: one
    product of ``head_dim`` multiply-adds per coordinate instead of two dense
    ``d_model``-wide ones, the same scores up to rounding.  Otherwise both sides are
    applied block by block.  The folded blocks are cached per dtype and device (the
    cache is dropped by ``.to()``).

``mode="learned"``
    Standard attention with learned ``W_q, W_k, W_v`` in one fused linear ``c_attn``
    (``3 d_model`` outputs: queries, keys, values), the baseline.  State dicts with
    the separate ``q_proj``/``k_proj``/``v_proj`` of earlier versions still load.

Both modes are causal, take an optional key padding mask ``(B, T)`` or a
:class:`KVCache` for incremental decoding, and compute attention either with
:func:`torch.nn.functional.scaled_dot_product_attention` (``use_sdpa=True``) or with
an explicit softmax (``use_sdpa=False``); the two agree.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_int
from .kernel import KINDS, LeechKernel, blockwise, diag_blocks

__all__ = ["FrozenKernelAttention", "KVCache", "MODES"]

MODES = ("frozen", "learned")


class KVCache:
    """Keys and values of the tokens already seen, for incremental decoding.

    One cache per attention layer; :meth:`append` writes the keys and values of new
    tokens after the stored ones and returns all of them.  Memory is allocated once,
    for ``max_len`` positions.  It is for inference: gradients do not flow into the
    stored keys and values.

    Parameters
    ----------
    batch_size, n_head, max_len, head_dim : int
        Shape ``(batch_size, n_head, max_len, head_dim)`` of the key and value stores.
    dtype : torch.dtype
        Floating dtype of the stores.
    device : torch.device or str, optional

    Examples
    --------
    >>> import torch
    >>> from torch_ext.attention import KVCache
    >>> c = KVCache(2, n_head=4, max_len=10, head_dim=6)
    >>> k, v = c.append(torch.randn(2, 4, 3, 6), torch.randn(2, 4, 3, 6))
    >>> k.shape, c.length
    (torch.Size([2, 4, 3, 6]), 3)
    >>> k, v = c.append(torch.randn(2, 4, 1, 6), torch.randn(2, 4, 1, 6))
    >>> k.shape, c.length
    (torch.Size([2, 4, 4, 6]), 4)
    """

    def __init__(self, batch_size: int, n_head: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device=None):
        batch_size = check_int(batch_size, "batch_size", 1)
        n_head = check_int(n_head, "n_head", 1)
        max_len = check_int(max_len, "max_len", 1)
        head_dim = check_int(head_dim, "head_dim", 1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        """Positions the cache can hold."""
        return self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k, v`` (``(B, H, t, head_dim)``) after the cached tokens; return all keys and values."""
        b, h, _, hd = self.k.shape
        if not isinstance(k, Tensor) or not isinstance(v, Tensor):
            raise TypeError("k and v must be torch.Tensor")
        if k.shape != v.shape or k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (b, h, hd):
            raise ValueError(
                f"k and v must both have shape ({b}, {h}, t, {hd}), got {tuple(k.shape)} "
                f"and {tuple(v.shape)}"
            )
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {end} were asked for")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        """Forget the cached tokens (the memory is kept)."""
        self.length = 0

    def __repr__(self) -> str:
        b, h, n, hd = self.k.shape
        return (f"KVCache(batch_size={b}, n_head={h}, max_len={n}, head_dim={hd}, "
                f"length={self.length}, dtype={self.k.dtype})")


_QKV = ("q_proj", "k_proj", "v_proj")


def _fuse_qkv_keys(state_dict: dict, prefix: str = "") -> dict:
    """Rewrite ``{prefix}{q,k,v}_proj.{weight,bias}`` as ``{prefix}c_attn.*`` (in place).

    State dicts written before the learned projections were fused into one linear
    have separate query, key and value tensors; a complete triple is concatenated
    (queries, keys, values: the row order of ``c_attn``).  Anything else is left for
    ``load_state_dict`` to judge.  Returns ``state_dict``.
    """
    for suffix in ("weight", "bias"):
        names = [f"{prefix}{n}.{suffix}" for n in _QKV]
        fused = f"{prefix}c_attn.{suffix}"
        if fused not in state_dict and all(n in state_dict for n in names):
            state_dict[fused] = torch.cat([state_dict.pop(n) for n in names], dim=0)
    return state_dict


def _fuse_legacy_qkv(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook of the learned attention (see :func:`_fuse_qkv_keys`)."""
    _fuse_qkv_keys(state_dict, prefix)


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
        Residual dropout (after the output projection), and the dropout of the
        attention probabilities unless ``attn_dropout`` is given.
    attn_dropout : float, optional
        Dropout of the attention probabilities (``None``: ``dropout``).  With 0,
        :func:`~torch.nn.functional.scaled_dot_product_attention` can use its fused
        kernels when training; with dropout it falls back to the unfused math path,
        which on the CPU costs about 4× as much (``benchmarks/lila_speed.py``).
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
    >>> lrn = FrozenKernelAttention(48, n_head=2, block_size=16, mode="learned")
    >>> sorted(n for n, _ in lrn.named_parameters())       # fused q/k/v
    ['c_attn.weight', 'out_proj.weight']
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
        attn_dropout: float | None = None,
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
        for name, v in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if v is None and name == "attn_dropout":
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must be a float, got {type(v).__name__}")
            if not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
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
        self.attn_dropout = self.dropout if attn_dropout is None else float(attn_dropout)
        self.use_sdpa = use_sdpa
        if mode == "frozen":
            self.q_kernel = LeechKernel(d_model, kernel, kernel_seed)
            self.k_kernel = None if shared_qk else LeechKernel(d_model, kernel, kernel_seed + 1)
            self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        else:
            self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)  # q, k, v rows
            self.register_load_state_dict_pre_hook(_fuse_legacy_qkv)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)
        # frozen mode: derived kernel tensors in other dtypes; see _frozen()
        self._frozen_cache: dict = {}
        if self.folded:  # rebuilt from the kernels by _apply, never stored
            self.register_buffer("k_fold", self._derive("fold"), persistent=False)

    # ------------------------------------------------------- frozen kernels
    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), .double(), ... replace the kernel buffers: derive again from them
        # (not by converting k_fold, which would round the float32 form once more)
        self._frozen_cache = {}
        out = super()._apply(fn, recurse)
        if self.folded:
            with torch.inference_mode(False), torch.no_grad():
                self.k_fold = self._derive("fold").to(self.k_fold.dtype)
        return out

    @property
    def folded(self) -> bool:
        """Whether the frozen form of each head is folded into the keys.

        True in ``"frozen"`` mode when ``head_dim`` is a multiple of 24 (every head is
        made of whole kernel blocks); see the module docstring.
        """
        return self.mode == "frozen" and self.head_dim % 24 == 0

    def _derive(self, name: str) -> Tensor:
        """A tensor derived from the kernels, in their dtype (at least float32).

        ``"wq"``, ``"wk"``: ``(d/24, 24, 24)`` blocks ``B`` with ``q = blockwise(x, B)``;
        ``"fold"``: ``(n_head, head_dim, head_dim)`` per-head matrices ``M_h^T``,
        block-diagonal of ``(Wq_b^T Wk_b)^T = Wk_b^T Wq_b``, with ``k'_h = x_h M_h^T``.
        """
        wq = self.q_kernel.weight
        wk = wq.T if self.k_kernel is None else self.k_kernel.weight
        work = torch.promote_types(wq.dtype, torch.float32)
        bq = diag_blocks(wq).to(work)  # Wq_b
        bk = diag_blocks(wk).to(work)  # Wk_b
        if name == "wq":
            return bq.transpose(1, 2)
        if name == "wk":
            return bk.transpose(1, 2)
        m = bk.transpose(1, 2) @ bq  # (d/24, 24, 24): (Wq_b^T Wk_b)^T
        r = self.head_dim // 24
        if r == 1:
            return m
        eye = torch.eye(r, dtype=work, device=m.device)
        m = torch.einsum("hiab,ij->hiajb", m.reshape(self.n_head, r, 24, 24), eye)
        return m.reshape(self.n_head, self.head_dim, self.head_dim)

    def _frozen(self, name: str, x: Tensor) -> Tensor:
        """A derived kernel tensor in the dtype ``x`` computes in (the autocast dtype if on).

        ``"fold"`` is the buffer ``k_fold`` itself when the dtypes agree; any other
        dtype, and the blocks ``"wq"``, ``"wk"``, are made once and cached per dtype
        and device (the cache is dropped by ``.to()``).
        """
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type) and dtype == torch.float32:
            dtype = torch.get_autocast_dtype(x.device.type)
        if name == "fold":
            src = self.k_fold
            if src.dtype == dtype:
                return src
            if torch.compiler.is_compiling():  # a cast in the graph (autocast), no Python cache
                return src.to(dtype)
        else:
            if torch.compiler.is_compiling():
                return self._derive(name).to(dtype)
            src = self.q_kernel.weight
        stamp = (src.data_ptr(), src._version, src.dtype)
        key = (name, dtype, src.device)
        hit = self._frozen_cache.get(key)
        if hit is None or hit[0] != stamp:
            # a plain tensor, also when built under inference_mode: training may follow
            with torch.inference_mode(False), torch.no_grad():
                t = src if name == "fold" else self._derive(name)
                hit = (stamp, t.to(dtype))
            self._frozen_cache[key] = hit
        return hit[1]

    # ------------------------------------------------------------------ pieces
    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {shape}")
        if x.shape[1] > self.block_size:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds block_size {self.block_size}"
            )

    def qk_matrices(self) -> tuple[Tensor, Tensor]:
        """The ``(d_model, d_model)`` matrices ``Wq, Wk`` with ``q = x @ Wq.T``, ``k = x @ Wk.T``."""
        if self.mode == "learned":
            return self.c_attn.weight[: self.d_model], self.c_attn.weight[self.d_model : 2 * self.d_model]
        wq = self.q_kernel.weight
        wk = wq.T if self.k_kernel is None else self.k_kernel.weight
        return wq, wk

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries ``x @ Wq.T``, keys ``x @ Wk.T`` and values, each ``(B, n_head, T, head_dim)``.

        These are the projections themselves; :meth:`forward` and :meth:`scores` use
        :meth:`project`, which in ``"frozen"`` mode may fold both kernels into the
        keys (same scores).
        """
        self._check_x(x)
        if self.mode == "learned":
            q, k, v = self.c_attn(x).split(self.d_model, dim=2)
        else:
            q = blockwise(x, self._frozen("wq", x))
            k = blockwise(x, self._frozen("wk", x))
            v = self.v_proj(x)
        return self._split(q), self._split(k), self._split(v)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What attention uses: ``(q, k, v)``, each ``(B, n_head, T, head_dim)``, with ``q k^T`` the scores.

        Learned mode and frozen mode with heads not made of whole 24-blocks: the same
        as :meth:`qkv`.  Frozen mode with whole-block heads (:attr:`folded`):
        ``q = x_h`` and ``k = x_h M_h^T`` with ``M_h = Wq_h^T Wk_h``, so that
        ``q k^T = (x Wq_h^T)(x Wk_h^T)^T`` exactly, up to rounding.  (Keys rather than
        queries carry the form so that the queries, and with them the attention
        output, keep the memory layout of ``x``: no copy before the output projection.)
        """
        if not self.folded:
            return self.qkv(x)
        self._check_x(x)
        b, t, _ = x.shape
        xh = x.reshape(b * t, self.n_head, self.head_dim).transpose(0, 1)  # (H, B*T, hd)
        k = torch.bmm(xh, self._frozen("fold", x))  # (H, B*T, hd)
        k = k.view(self.n_head, b, t, self.head_dim).transpose(0, 1)
        return self._split(x), k, self._split(self.v_proj(x))

    @staticmethod
    def _allowed(tq: int, tk: int, mask: Tensor | None, device) -> Tensor:
        """Boolean ``(B or 1, 1, tq, tk)``: causal, and keys that are not padding.

        The ``tq`` queries are the last ``tq`` of the ``tk`` positions.  A query always
        sees itself, so a row is never fully masked (no NaN).
        """
        j = torch.arange(tk, device=device)
        i = torch.arange(tk - tq, tk, device=device).view(tq, 1)
        causal = j <= i
        if mask is None:
            return causal.view(1, 1, tq, tk)
        keys = mask.to(torch.bool).view(mask.shape[0], 1, 1, tk)
        return causal & (keys | (j == i))

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
        q, k, _ = self.project(x)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        t = x.shape[1]
        return att.masked_fill(~self._allowed(t, t, mask, x.device), float("-inf"))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Causal attention of ``(B, H, Tq, hd)`` queries on ``(B, H, Tk, hd)`` keys and values.

        With ``Tk > Tq`` (a cache) the queries are the last ``Tq`` positions;
        ``mask`` (``(B, Tk)``) marks the keys that are tokens.  Returns ``(B, H, Tq, hd)``.
        """
        tq, tk = q.shape[-2], k.shape[-2]
        p = self.attn_dropout if self.training else 0.0
        if self.use_sdpa:
            if mask is None and tq == tk:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            if mask is None and tq == 1:  # one new token sees every key
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            allowed = self._allowed(tq, tk, mask, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        att = att.masked_fill(~self._allowed(tq, tk, mask, q.device), float("-inf"))
        att = F.softmax(att, dim=-1)
        if p > 0:
            att = F.dropout(att, p=p)
        return att @ v

    def merge(self, y: Tensor) -> Tensor:
        """Concatenate heads ``(B, H, T, hd)`` and apply the output projection and dropout."""
        b, _, t, _ = y.shape
        y = y.transpose(1, 2).reshape(b, t, self.d_model)
        return self.resid_dropout(self.out_proj(y))

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Self-attention of ``x`` (``(B, T, d_model)``); ``mask`` (``(B, T)``, 1 = token).

        With a :class:`KVCache`, ``x`` holds the tokens after the cached ones: their
        keys and values are appended to the cache and they attend to all of it (no
        ``mask`` then).
        """
        mask = self._check_mask(mask, x)
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
            if mask is not None:
                raise ValueError("mask and cache cannot be used together")
        q, k, v = self.project(x)
        if cache is not None:
            k, v = cache.append(k, v)
        return self.merge(self.attend(q, k, v, mask))

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, n_head={self.n_head}, mode={self.mode!r}"
        if self.mode == "frozen":
            s += f", kernel={self.kernel!r}, kernel_seed={self.kernel_seed}, shared_qk={self.shared_qk}"
        return s
