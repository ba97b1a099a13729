"""LILA: a nanoGPT-style transformer whose attention scores in fixed Leech-lattice forms.

One file, in the spirit of nanoGPT: :class:`LilaConfig` (with presets), the MLP, the
block, and :class:`LilaTransformer`.  Differences from a plain GPT:

* attention is :class:`~torch_ext.attention.FrozenKernelAttention`; in ``"frozen"``
  mode its query/key projections are frozen Leech kernels (non-persistent buffers,
  rebuilt from the config, never parameters, never in an optimizer); layer ``l`` uses
  kernel seed ``kernel_seed + 2*l`` (and ``+1`` for the key kernel when
  ``shared_qk=False``); in ``"learned"`` mode q, k and v are one fused linear;
* an optional auxiliary :class:`~torch_ext.losses.AlignmentLoss` on the outputs of the
  blocks listed in ``align_layers``; ``loss = CE + align_weight * aux``;
* padding: ``mask`` (``(B, T)``, 1 = token) removes padding keys from attention and
  padding positions from both losses;
* checkpoints are safetensors files with the config as JSON metadata (no pickle);
* :meth:`LilaTransformer.generate` decodes with a key/value cache
  (:class:`~torch_ext.attention.KVCache`, one per layer, :meth:`LilaTransformer.new_cache`).

The LM head is tied to the token embedding (``logits = h @ wte.weight.T``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import tempfile
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._safetensors import read_safetensors, read_safetensors_header
from .attention import MODES, FrozenKernelAttention, KVCache, _fuse_qkv_keys
from .kernel import KINDS, LeechKernel
from .losses import AlignmentLoss

__all__ = ["LilaConfig", "LilaTransformer", "LilaOutput", "ParamCount", "PRESETS"]

CHECKPOINT_FORMAT = "torch_ext.LilaTransformer/1"


# ---------------------------------------------------------------------------
# Atomic files (also torch_ext.lila.checkpoint's: the model pieces import nothing of lila)
# ---------------------------------------------------------------------------


def atomic_replace(path, write) -> None:
    """Fill a temporary file beside ``path`` with ``write(fd, tmp)``, then :func:`os.replace` it onto ``path``.

    The temporary is ``.<name>.<8 random characters>.tmp`` in the folder of ``path``;
    ``write`` gets its open descriptor ``fd`` (which it closes) and its path ``tmp``.
    On any failure the temporary is removed and the error raised: a kill or a failed
    write leaves the old file (or none), never a mix.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        write(fd, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the descriptor ``fd``, flush it to disk and close it."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

PRESETS: dict[str, dict] = {
    # trains in seconds on a CPU (tests, demos)
    "lila-tiny": dict(
        vocab_size=256, block_size=64, d_model=48, n_layer=2, n_head=2, dropout=0.0
    ),
    # the reference shape of the published LILA model (about 20M parameters)
    "lila-20m": dict(
        vocab_size=2048, block_size=512, d_model=384, n_layer=12, n_head=8, dropout=0.1,
        attn_dropout=0.0,
    ),
    # the same shape with learned q/k projections: the baseline
    "lila-20m-learned": dict(
        vocab_size=2048,
        block_size=512,
        d_model=384,
        n_layer=12,
        n_head=8,
        dropout=0.1,
        attn_dropout=0.0,
        attention="learned",
    ),
}


def _int_field(cfg, name, low):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {v!r}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    setattr(cfg, name, int(v))


@dataclass
class LilaConfig:
    """Configuration of :class:`LilaTransformer` (shapes: B batch, T time, C = d_model).

    Examples
    --------
    >>> from torch_ext import LilaConfig
    >>> cfg = LilaConfig.preset("lila-20m")
    >>> cfg.d_model, cfg.n_layer, cfg.n_head, cfg.attention
    (384, 12, 8, 'frozen')
    >>> LilaConfig.preset("lila-tiny", n_layer=3).n_layer
    3
    >>> LilaConfig(d_model=100)
    Traceback (most recent call last):
    ...
    ValueError: d_model must be a multiple of 24 (Leech blocks), got 100
    """

    vocab_size: int = 2048  # V: tokens; logits are (B, T, V)
    block_size: int = 512  # T_max: longest sequence; wpe is (T_max, C)
    d_model: int = 384  # C: width, a multiple of 24 (C / 24 Leech blocks)
    n_layer: int = 12  # transformer blocks
    n_head: int = 8  # heads; head_dim = C / n_head
    dropout: float = 0.0  # embedding, residual (and attention, see attn_dropout) dropout
    attn_dropout: float | None = None  # attention probabilities; None: same as dropout
    bias: bool = False  # biases in Linear layers (LayerNorms always have one)
    attention: str = "frozen"  # "frozen": q/k are frozen kernels; "learned": baseline
    kernel: str = "leech"  # "leech" | "random" | "identity" (frozen mode)
    kernel_seed: int = 0  # layer l uses kernel_seed + 2 l (+1 for a separate key kernel)
    shared_qk: bool = True  # one kernel W: queries W, keys W.T
    align_weight: float = 0.01  # loss = CE + align_weight * aux (0 disables aux)
    align_layers: tuple = (-1,)  # block outputs aligned (negative: from the end)
    align_directions: str = "minimal"  # "minimal" (196560 Leech directions) | "frame"
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * C

    def __post_init__(self):
        for name, low in (
            ("vocab_size", 1),
            ("block_size", 1),
            ("d_model", 24),
            ("n_layer", 1),
            ("n_head", 1),
            ("kernel_seed", 0),
            ("mlp_ratio", 1),
        ):
            _int_field(self, name, low)
        if self.d_model % 24:
            raise ValueError(f"d_model must be a multiple of 24 (Leech blocks), got {self.d_model}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real):
            raise ValueError(f"dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        a = self.attn_dropout
        if a is not None:
            if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0.0 <= float(a) < 1.0:
                raise ValueError(f"attn_dropout must be None or a float in [0, 1), got {a!r}")
            self.attn_dropout = float(a)
        for name in ("bias", "shared_qk"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.attention not in MODES:
            raise ValueError(f"attention must be one of {MODES}, got {self.attention!r}")
        if self.kernel not in KINDS:
            raise ValueError(f"kernel must be one of {KINDS}, got {self.kernel!r}")
        w = self.align_weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (0.0 <= w < math.inf):
            raise ValueError(f"align_weight must be a finite number >= 0, got {w!r}")
        self.align_weight = float(w)
        if self.align_directions not in ("minimal", "frame"):
            raise ValueError(
                f"align_directions must be 'minimal' or 'frame', got {self.align_directions!r}"
            )
        layers = self.align_layers
        if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
            layers = (layers,)
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"align_layers must be a non-empty tuple of ints, got {layers!r}")
        out = []
        for l in layers:
            if isinstance(l, bool) or not isinstance(l, numbers.Integral):
                raise ValueError(f"align_layers must contain ints, got {l!r}")
            if not -self.n_layer <= l < self.n_layer:
                raise ValueError(
                    f"align_layers entry {l} is out of range for n_layer={self.n_layer}"
                )
            out.append(int(l) % self.n_layer)
        self.align_layers = tuple(sorted(set(out)))

    @classmethod
    def preset(cls, name: str, **overrides) -> LilaConfig:
        """A named configuration (``"lila-tiny"``, ``"lila-20m"``, ``"lila-20m-learned"``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> LilaConfig:
        """Build from a dict (e.g. parsed JSON); unknown keys are a ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config fields: {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``align_layers`` as a list)."""
        d = dataclasses.asdict(self)
        d["align_layers"] = list(self.align_layers)
        return d


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class LilaOutput(NamedTuple):
    """Output of :meth:`LilaTransformer.forward`.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, T, V)``.
    loss : torch.Tensor or None
        Mean cross-entropy over the non-padding targets plus ``align_weight * aux``
        (``None`` without targets).
    aux_loss : torch.Tensor or None
        The unweighted alignment loss (``None`` without targets or when
        ``align_weight == 0``).
    """

    logits: Tensor
    loss: Tensor | None
    aux_loss: Tensor | None


class ParamCount(NamedTuple):
    """Numbers of trainable parameters and of frozen (buffer) kernel entries."""

    trainable: int
    frozen: int


class MLP(nn.Module):
    def __init__(self, cfg: LilaConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: LilaConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = FrozenKernelAttention(
            cfg.d_model,
            cfg.n_head,
            cfg.block_size,
            mode=cfg.attention,
            kernel=cfg.kernel,
            kernel_seed=cfg.kernel_seed + 2 * layer,
            shared_qk=cfg.shared_qk,
            dropout=cfg.dropout,
            bias=cfg.bias,
            attn_dropout=cfg.attn_dropout,
        )
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


def _fuse_qkv_shapes(shapes: dict, n_layer: int) -> dict:
    """The header shapes with legacy ``q/k/v_proj`` triples as one ``c_attn`` entry."""
    shapes = dict(shapes)
    for i in range(n_layer):
        for suffix in ("weight", "bias"):
            names = [f"h.{i}.attn.{n}_proj.{suffix}" for n in "qkv"]
            fused = f"h.{i}.attn.c_attn.{suffix}"
            if fused not in shapes and all(n in shapes for n in names):
                parts = [shapes.pop(n) for n in names]
                shape = (sum(p[0][0] for p in parts),) + tuple(parts[0][0][1:])
                shapes[fused] = (shape, parts[0][1])
    return shapes


# ---------------------------------------------------------------------------
# What a stored model file must bear out before anything is built
# ---------------------------------------------------------------------------


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


class LilaTransformer(nn.Module):
    """Decoder-only transformer with frozen Leech-kernel attention.

    Parameters
    ----------
    config : LilaConfig

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LilaConfig, LilaTransformer
    >>> torch.manual_seed(0) and None
    >>> model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    >>> idx = torch.randint(0, 256, (2, 16))
    >>> out = model(idx, targets=idx)
    >>> out.logits.shape, out.loss.ndim, out.aux_loss is not None
    (torch.Size([2, 16, 256]), 0, True)
    >>> model.generate(idx[:, :4], max_new_tokens=3).shape      # with a key/value cache
    torch.Size([2, 7])
    >>> n = model.num_params(); n.trainable > 0 and n.frozen == 2 * 48 * 48
    True
    """

    def __init__(self, config: LilaConfig):
        super().__init__()
        if not isinstance(config, LilaConfig):
            raise TypeError(f"config must be a LilaConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.block_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList([Block(c, l) for l in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.d_model)
        self.align = AlignmentLoss(c.align_directions) if c.align_weight > 0 else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("out_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ info
    def num_params(self) -> ParamCount:
        """Trainable parameters and frozen kernel entries (dense buffer sizes).

        Every parameter is trainable (there are no frozen parameters); the frozen
        kernels are buffers rebuilt from the config, counted here by their size.
        """
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        frozen += sum(m.weight.numel() for m in self.modules() if isinstance(m, LeechKernel))
        return ParamCount(trainable, frozen)

    # --------------------------------------------------------------- forward
    def new_cache(self, batch_size: int, *, dtype: torch.dtype | None = None,
                  device=None) -> list[KVCache]:
        """One empty :class:`~torch_ext.attention.KVCache` per layer, for ``block_size`` positions.

        ``dtype`` and ``device`` default to those of the token embedding.
        """
        c = self.config
        w = self.wte.weight
        return [
            KVCache(batch_size, c.n_head, c.block_size, c.d_model // c.n_head,
                    dtype=w.dtype if dtype is None else dtype,
                    device=w.device if device is None else device)
            for _ in range(c.n_layer)
        ]

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> LilaOutput:
        """Logits and losses for token ids ``idx`` (``(B, T)`` int64).

        ``targets`` (``(B, T)``, -100 ignored) gives the loss; ``mask`` (``(B, T)``,
        1 = token, 0 = padding) excludes padding from attention keys and both losses.
        ``cache`` (from :meth:`new_cache`) holds the keys and values of earlier tokens:
        ``idx`` then continues them (positions start at the cached length), their keys
        and values are added to it, and ``mask`` must be ``None``.
        """
        if not isinstance(idx, Tensor) or idx.dim() != 2:
            raise ValueError("idx must be a (B, T) tensor of token ids")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must be an integer tensor, got {idx.dtype}")
        b, t = idx.shape
        start = 0
        if cache is not None:
            if (not isinstance(cache, (list, tuple)) or len(cache) != len(self.h)
                    or not all(isinstance(c, KVCache) for c in cache)):
                raise TypeError(f"cache must be a list of {len(self.h)} KVCache (see new_cache)")
            if mask is not None:
                raise ValueError("mask and cache cannot be used together")
            start = cache[0].length
        if start + t > self.config.block_size:
            raise ValueError(
                f"sequence length {start + t} exceeds block_size {self.config.block_size}"
            )
        if targets is not None and (not isinstance(targets, Tensor) or targets.shape != idx.shape):
            raise ValueError(f"targets must be a tensor of shape {tuple(idx.shape)}")
        if mask is not None and (not isinstance(mask, Tensor) or mask.shape != idx.shape):
            raise ValueError(f"mask must be a tensor of shape {tuple(idx.shape)}")
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        want_aux = targets is not None and self.align is not None
        hidden = []
        for l, block in enumerate(self.h):
            x = block(x, mask, None if cache is None else cache[l])
            if want_aux and l in self.config.align_layers:
                hidden.append(x)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)  # (B, T, V)
        if targets is None:
            return LilaOutput(logits, None, None)
        tg = targets.long()
        if mask is not None:
            tg = tg.masked_fill(~mask.to(torch.bool), -100)
        flat = tg.reshape(-1)
        ce_sum = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum"
        )
        count = (flat != -100).sum().clamp_min(1)
        loss = ce_sum / count
        aux = None
        if want_aux:
            aux = torch.stack([self.align(hs, mask) for hs in hidden]).mean()
            loss = loss + self.config.align_weight * aux
        return LilaOutput(logits, loss, aux)

    # -------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (``(B, T)``); returns ``(B, T + n)``.

        The context is cropped to the last ``block_size`` tokens.  ``generator`` makes
        sampling reproducible.  With ``use_cache`` (default) the keys and values of the
        context are kept (:meth:`new_cache`) and each new token costs one position of
        computation, while the context fits in ``block_size``; beyond, the positions
        of the cropped context shift at every step, so each step recomputes it, as
        without the cache.  Both ways give the same tokens (up to rounding of the
        logits).
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
            raise TypeError("max_new_tokens must be an int")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise TypeError("temperature must be a real number")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
                raise TypeError("top_k must be an int or None")
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be a bool, got {type(use_cache).__name__}")
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError("idx must be a (B, T) tensor of token ids with T >= 1")
        was_training = self.training
        self.eval()
        cache, fed = None, 0  # fed: tokens of idx already in the cache
        try:
            for _ in range(int(max_new_tokens)):
                if use_cache and idx.shape[1] <= self.config.block_size:
                    if cache is None:
                        cache = self.new_cache(idx.shape[0])
                    logits = self(idx[:, fed:], cache=cache).logits
                    fed = idx.shape[1]
                else:
                    logits = self(idx[:, -self.config.block_size :]).logits
                logits = logits[:, -1, :].float() / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(int(top_k), logits.shape[-1]))
                    logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
                idx = torch.cat([idx, nxt.to(idx.dtype)], dim=1)
        finally:
            self.train(was_training)
        return idx

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Write a safetensors checkpoint: trainable weights + the config as JSON metadata.

        Frozen kernels are not stored; they are rebuilt from the config on load.
        The file is written atomically: to a temporary file ``.<name>.<8
        characters>.tmp`` beside ``path``, flushed to disk and renamed over ``path``
        (:func:`atomic_replace`), so a kill or a failed write leaves the old file (or
        none) and no temporary.  A failed write is an ``OSError``.
        """
        from safetensors import SafetensorError
        from safetensors.torch import save

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"format": "pt", "checkpoint": CHECKPOINT_FORMAT,
                "lila_config": json.dumps(self.config.to_dict())}
        try:
            data = save(state, metadata=meta)
        except SafetensorError as exc:  # pragma: no cover - only for tensors safetensors cannot hold
            raise ValueError(f"cannot serialise the model: {exc}") from None
        atomic_replace(path, lambda fd, tmp: _write_all(fd, data))

    @classmethod
    def load(cls, path, map_location="cpu") -> LilaTransformer:
        """Rebuild a model saved by :meth:`save` (``ValueError`` if corrupt or mismatched).

        Nothing in the file is executed (safetensors and JSON only).  The stored
        config is checked against the shapes in the file's header before the model is
        built (:func:`check_stored_config`), and every weight must be finite.
        """
        path = os.fspath(path)
        meta, shapes = read_safetensors_header(path, what="checkpoint")
        if meta.get("checkpoint") != CHECKPOINT_FORMAT or "lila_config" not in meta:
            raise ValueError(f"{path} is not a LilaTransformer checkpoint (no LILA metadata)")
        try:
            cfg_dict = json.loads(meta["lila_config"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: the stored config is not valid JSON: {exc}") from None
        try:
            config = LilaConfig.from_dict(cfg_dict)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid stored config: {exc}") from None
        check_stored_config(config, shapes, os.path.getsize(path), path)  # before anything is built
        model = cls(config)
        legacy = config.attention == "learned"  # separate q/k/v of earlier versions: fuse
        if legacy:
            shapes = _fuse_qkv_shapes(shapes, config.n_layer)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(shapes))
        unexpected = sorted(set(shapes) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for k, (shape, _) in shapes.items():
            if shape != tuple(expected[k].shape):
                raise ValueError(
                    f"{path}: tensor {k!r} has shape {shape}, expected {tuple(expected[k].shape)}"
                )
        _, tensors = read_safetensors(path, what="checkpoint")
        if legacy:
            for i in range(config.n_layer):
                _fuse_qkv_keys(tensors, f"h.{i}.attn.")
        for k, v in tensors.items():
            if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                raise ValueError(f"{path}: tensor {k!r} is not finite floating point")
        model.load_state_dict(tensors, strict=True)
        return model.to(map_location)
