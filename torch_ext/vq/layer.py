"""``LeechVQ``: a vector-quantization layer whose codebooks are Leech lattice shells."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ..ops.codebook import e8_table
from ._codebooks import _check_real, parse_codebook
from ._estimators import LEECH_G, draw, voronoi_bank

#: codebooks up to this size keep an EMA histogram of their codes by default
AUTO_TRACK_MAX = 1 << 21
#: codebooks above this size never keep a histogram (memory)
TRACK_MAX = 1 << 25
_MAX_GAIN_LEVELS = 1 << 16
_EPS = 1e-12
#: the learned (and fixed) gain normalises a block by ``max(||block||, _NORM_EPS)``:
#: the gradient of the output with respect to a block is at most ``scale /
#: _NORM_EPS`` per unit of output gradient, also for an all-zero block
_NORM_EPS = 1e-4
#: the gradient estimators of training mode
ESTIMATORS = ("ste", "rotation", "noise", "soft")


def _mse(a: Tensor, b: Tensor, w: Tensor | None = None) -> Tensor:
    """``F.mse_loss``, and 0 (not NaN) for empty tensors; ``w`` (the blocks' shape)
    weights the blocks (0: left out)."""
    if a.numel() == 0:
        return (a.sum() + b.sum()) * 0.0
    if w is None:
        return F.mse_loss(a, b)
    sq = ((a - b) ** 2).sum(-1)
    return (sq * w).sum() / (w.sum() * a.shape[-1]).clamp_min(1.0)


def _unit(v: Tensor) -> Tensor:
    """``v / ||v||`` along the last axis (0 for a zero row), without underflow or
    overflow: divided by the largest entry first, so tiny rows are unit vectors too."""
    m = v.abs().amax(dim=-1, keepdim=True)
    w = v / torch.where(m > 0, m, 1.0)
    return w / w.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def _quantiles(c: Tensor, K: int, valid: Tensor | None = None) -> Tensor:
    """The ``(k + 1/2) / K`` quantiles of the valid entries of the 1-d ``c`` (linear
    interpolation, as ``torch.quantile``, which refuses half precision and more than
    2**24 values), with tensor operations only (no host sync); meaningless (the
    caller discards them) when no entry is valid."""
    if valid is None:
        valid = torch.ones_like(c, dtype=torch.bool)
    s = torch.sort(torch.where(valid, c, torch.full_like(c, math.inf))).values
    n = valid.sum().to(torch.float64)
    pos = (torch.arange(K, dtype=torch.float64, device=c.device) + 0.5) / K * (n - 1).clamp_min(0)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    w = (pos - lo).to(s.dtype)
    return s[lo] + (s[hi] - s[lo]) * w


class LeechVQ(nn.Module):
    r"""Vector quantization on the Leech lattice: exact search, no stored codebook.

    The input ``(..., dim)`` is (projected to ``codebook_dim`` if needed and) cut into
    blocks of 24 numbers; each block is replaced by its codeword and gets one int64
    index.  The call returns ``(quantized, indices, aux_loss)`` as the quantizers of
    vector-quantize-pytorch do.

    Parameters
    ----------
    dim : int
        Size of the last input dimension.
    codebook : {"minimal", "ball", "shape-gain", "e8"} or int, optional
        ``"minimal"`` (default): the 196 560 minimal vectors (squared norm 4, 17.58
        bits per block).  An even ``int`` ``m`` from 4 to 56: the shell of squared
        norm ``m`` in unit coordinates, leechlib's convention (:class:`leechlib.ShellCodebook`;
        it is coefficient ``m / 2`` of the theta series): 6 gives 16 773 120 vectors
        (24.00 bits), 8 gives 398 034 000 (28.57 bits); ``4`` is ``"minimal"``.
        ``"ball"``: the lattice vectors of squared norm at most ``max_norm``, origin
        included, times a scale.  ``"shape-gain"``: the shells of
        :class:`leechlib.ShapeGainQuantizer` ``(bits)`` (the codebook of the weight
        quantizer's ``leech-shape-gain``; at 2 bits the norm-24 shell with 3 gain
        levels, 47.59 bits per block) times gain levels fitted in training: it sets
        ``gain="block"`` and ``gain_levels``.  ``"e8"``: the 8-dimensional baseline,
        each block of 24 cut into three blocks of 8 quantized to the :math:`E_8`
        ball of squared norm at most ``max_norm`` (unit coordinates, minimal norm
        2), times a scale as for the ball.
    max_norm : int, optional
        For ``codebook="ball"``: the largest squared norm (even, 4 to 56; default
        4, i.e. 196 561 points); for ``"e8"`` (even, 2 to 16; default 10, 56 881
        points per 8 numbers, 47.39 bits per block).
    bits : float, optional
        Bits per dimension instead of ``max_norm`` (not both): ``"ball"`` takes the
        ball of :class:`leechlib.BallQuantizer` ``(bits)`` (the largest that fits: 1.5
        gives ``max_norm=12``, 35.20 bits per block; 2 gives 26, 48.00 bits; 2.5 gives
        52, 59.71 bits), ``"shape-gain"`` the shells and levels of
        :class:`leechlib.ShapeGainQuantizer` ``(bits)`` (default 2; 2.5 gives the
        norm-50 shell with 5 levels, 59.97 bits), ``"e8"`` the largest E8 ball with
        ``log2(size) <= 8 * bits`` (at most 19/8).  At most 2.5 (indices below 2**62).
    gain : {"learned", None, "block"}, optional
        Spherical codebooks quantize the direction of a block; the output is
        ``g * v / ||v||`` with ``v`` the codeword of largest inner product and
        ``g``: ``"learned"`` (default) a learned scalar per block position, initialised
        to ``scale``; ``None`` the constant ``scale``; ``"block"`` the block's own
        optimal gain ``<x, v> / ||v||`` (``||x|| cos θ``), continuous, or quantized to
        ``gain_levels`` levels.  For ``"ball"`` the codebook is ``s * B`` with ``s`` the
        learned (``"learned"``) or fixed (``None``) scale per block position.
    gain_levels : int, optional
        With ``gain="block"``: the number of gain levels (1 to 65536), fitted by EMA
        Lloyd updates during training; the index becomes ``direction * K + level``.
        ``None`` (default): continuous gains, which the indices do not carry.
    scale : float, optional
        Initial (or fixed) gain or ball scale.  Default: codewords of root mean square
        1 per number, i.e. ``sqrt(24)`` for spherical codebooks,
        ``sqrt(24 / max_norm)`` for the ball (its outermost shell) and
        ``sqrt(8 / max_norm)`` for ``"e8"``.
    codebook_dim : int, optional
        Width of the quantized space, a multiple of 24.  Default: ``dim`` if it is a
        multiple of 24, else the next multiple; learned linear projections map
        ``dim`` to it and back when the two differ.
    commitment_weight : float, optional
        Weight of the commitment loss, the mean squared distance between the blocks
        (normalised, for spherical codebooks with a scalar gain) and their detached
        codewords.  Default 0: the codebook is fixed, so no loss is needed to train
        it, and in the benchmark of :doc:`/vq` a weight of 0.25 pulled blocks onto
        the codewords they already had and lowered the codebook usage.
    estimator : {"ste", "rotation", "noise", "soft"}, optional
        How training passes gradients through the quantizer (eval mode always
        returns the hard codeword):

        * ``"ste"`` (default): straight-through, value the codeword, gradient the
          identity;
        * ``"rotation"``: the rotation trick (Fifty et al., 2024): the block is
          rotated and rescaled onto its codeword by a detached linear map, so the
          gradient keeps the angle between them;
        * ``"noise"``: noise substitution: the training output is ``x + e`` with
          ``e`` uniform on the Voronoi cell of the scaled lattice (ball: Leech
          times the ball's scale, second moment ``0.065771 * scale**2`` per number;
          ``"e8"``: three E8 cells, ``0.071682 * scale**2``), drawn from a bank of
          2**16 exact cell points (see below); for spherical codebooks, an
          approximation (below);
        * ``"soft"``: the value is the hard codeword, the gradient that of a
          softmax-weighted mix of ``soft_k`` nearby codewords (below).
    rotation_trick : bool, optional
        The old switch of ``estimator="rotation"`` (``True`` with another
        ``estimator`` than ``"ste"`` or ``"rotation"`` is a ValueError).
    soft_k : int, optional
        Candidates of ``estimator="soft"`` (2 to 64, default 8).
    soft_temperature : float, optional
        Temperature of ``estimator="soft"`` (positive, default 1), relative to the
        batch's mean squared quantization error.
    track_usage : bool, optional
        Keep an EMA histogram of the codes (one float per code) for
        :meth:`usage_stats`.  Default: when the codebook has at most 2**21 codes.
    usage_decay, gain_decay : float, optional
        EMA decays of the code histogram and of the gain levels (default 0.99).

    Attributes
    ----------
    codebook_size : int
        Number of codes per block (directions times gain levels).
    bits : float
        ``log2(codebook_size)``: bits per block (continuous gains not counted).
    num_blocks : int
        Blocks per input vector (``codebook_dim / 24``); ``indices`` has this last
        dimension.

    Notes
    -----
    *Search.*  Exact: the codeword of largest inner product (spherical, equivalently
    the nearest one for any positive gain) or the nearest point of the scaled ball.
    ``"minimal"`` uses :func:`torch_ext.nearest_minimal_vector`, so CPU tensors go to
    leechlib's Numba kernel and CUDA tensors to its Numba CUDA (or pure-torch)
    version, without leaving the GPU.  Other shells and the ball use
    :func:`leechlib.constrained_nearest_point` on the CPU: CUDA tensors make a device
    round trip (blocks copied to the host, searched, codewords and indices copied
    back), documented in :doc:`/vq`.

    ``"shape-gain"`` searches each of its shells as the shells above and keeps the
    vector of largest ``<x, v> / ||v||``; ``"e8"`` uses the exact encoder of
    :class:`leechlib.baselines.E8Quantizer` (the nearest E8 point, and a search over
    the ball when it falls outside) on the CPU.

    *Indices* are int64, ``(..., num_blocks)``: for ``"minimal"`` the order of
    :meth:`leechlib.LeechLattice.minimal_vectors` (the index of
    :func:`torch_ext.nearest_minimal_vector`), for other shells that of
    :class:`leechlib.ShellCodebook`, for the ball that of :class:`leechlib.BallCodebook`,
    all computed from the lattice's structure; for ``"shape-gain"`` ``shape *
    gain_levels + level`` with ``shape`` the index of :class:`leechlib.ShapeGainQuantizer`
    (the :class:`leechlib.ShellCodebook` index plus the sizes of the shells before it),
    as the weight quantizer's ``ShapeGainCodec``; for ``"e8"`` one index per block of
    24, ``(a * S + b) * S + c`` with ``a, b, c`` the indices of its three 8-blocks in
    :func:`leechlib.baselines.e8_ball` order and ``S`` the ball's size
    (``codebook_size = S**3``).  A masked position (``forward(x, mask)``) has index -1
    in every block.  :meth:`indices_to_codes` reproduces the output of the call in eval
    mode exactly (zeros for -1), and :meth:`codes_to_indices` inverts it.  Codewords
    are unranked on the indices' device with torch operations
    (:mod:`torch_ext.ops.codebook`; on the CPU the ball and shells may take leechlib's
    numpy unranking): CUDA indices never go through numpy.

    *Noise estimator.*  A point ``e = u - Q(u)``, ``u = r G`` with ``r`` uniform in
    ``[0, 1)^24``, ``G`` a lattice basis and ``Q`` the exact decoder, is exactly
    uniform on the Voronoi cell.  A bank of 2**16 such points (leechlib's generator
    matrix and :func:`leechlib.nearest_point`; for ``"e8"`` Conway and Sloane's
    basis and :func:`leechlib.baselines.e8_nearest_point`) is drawn once per process
    (seeded; about 0.3 s) and kept as a non-persistent buffer ``noise_bank`` (6 MiB,
    moves with the module, not saved); each step draws rows at random with a random
    sign, so no decoding runs in the training step.  Spherical codebooks have no
    lattice cell: there the noise is the Leech cell's, added to the normalised block
    (or to the block for ``gain="block"``), rescaled per block position so that its
    mean squared norm is the batch's mean squared quantization error there.  This is
    an approximation: it matches the error's size, not its distribution (the shell's
    error is neither uniform on a cell nor independent of the block).

    *Soft estimator.*  Candidates: the hard codeword and the codewords of ``soft_k -
    1`` perturbed copies of the block (Gaussian, of per-number standard deviation
    ``||x - c_0|| / sqrt(24)``, so the perturbations reach the neighbouring cells),
    duplicates dropped; weights ``softmax(-(d_k - d_0) / (T * mean d_0))`` with
    ``d_k`` the squared distances of the (normalised) block to the candidates and
    ``T = soft_temperature``.  The forward value is the hard codeword, the gradient
    that of the weighted mix.  Cost: ``soft_k`` searches per block instead of one
    (one batched search call), training mode only.

    *Precision.*  The quantizer runs in float32 (float64 for float64 input) with
    autocast disabled; the output is cast back to the input's dtype.

    *Compilation.*  ``torch.compile(vq, fullgraph=True)`` traces the forward of every
    codebook and estimator, with a mask or without (the searches are custom ops with
    fake kernels; the gain-level and usage updates are tensor operations).  The
    eager checks that need the host (finite scale and gains) are skipped when
    compiling: a compiled forward does not validate finiteness.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LeechVQ
    >>> vq = LeechVQ(48)                                # two blocks, minimal vectors
    >>> x = torch.randn(4, 10, 48)
    >>> quantized, indices, aux_loss = vq(x)
    >>> quantized.shape, indices.shape, indices.dtype
    (torch.Size([4, 10, 48]), torch.Size([4, 10, 2]), torch.int64)
    >>> round(vq.bits, 2), vq.codebook_size
    (17.58, 196560)
    >>> _ = vq.eval()
    >>> bool(torch.equal(vq.indices_to_codes(vq(x)[1]), vq(x)[0]))
    True
    """

    def __init__(self, dim, *, codebook="minimal", max_norm=None, bits=None, gain="learned",
                 gain_levels=None, scale=None, codebook_dim=None, commitment_weight=0.0,
                 estimator="ste", rotation_trick=False, soft_k=8, soft_temperature=1.0,
                 track_usage=None, usage_decay=0.99, gain_decay=0.99):
        super().__init__()
        self.dim = check_int(dim, "dim", 1)
        self.cb, sg_levels = parse_codebook(codebook, max_norm, bits)
        if gain not in ("learned", None, "block"):
            raise ValueError(f"gain must be 'learned', None or 'block', got {gain!r}")
        if sg_levels is not None:  # shape-gain: block gains quantized to the levels of bits
            if gain not in ("learned", "block") or gain_levels is not None:
                raise ValueError("codebook='shape-gain' sets gain='block' and gain_levels from "
                                 "bits: leave gain and gain_levels out")
            gain, gain_levels = "block", sg_levels
        if gain == "block" and not self.cb.spherical:
            raise ValueError(f"gain='block' needs a spherical codebook (a shell), not "
                             f"{self.cb.kind!r}")
        if not isinstance(estimator, str) or estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if not isinstance(rotation_trick, bool):
            raise TypeError(f"rotation_trick must be a bool, got {type(rotation_trick).__name__}")
        if rotation_trick:
            if estimator not in ("ste", "rotation"):
                raise ValueError(f"rotation_trick=True is estimator='rotation': it conflicts with "
                                 f"estimator={estimator!r}")
            estimator = "rotation"
        self.estimator = estimator
        self.rotation_trick = estimator == "rotation"
        self.soft_k = check_int(soft_k, "soft_k", 2, 64)
        self.soft_temperature = _check_real(soft_temperature, "soft_temperature", 0.0, math.inf,
                                            lo_open=True, hi_open=True)
        if gain_levels is not None:
            if gain != "block":
                raise ValueError("gain_levels only applies to gain='block'")
            gain_levels = check_int(gain_levels, "gain_levels", 1, _MAX_GAIN_LEVELS)
        self.gain_mode = gain
        self.gain_levels = gain_levels
        if scale is None:  # codewords (outermost shell) of RMS 1 per number
            scale = math.sqrt(24.0) if self.cb.spherical else math.sqrt(
                (8.0 if self.cb.kind == "e8" else 24.0) / self.cb.norm)
        s = _check_real(scale, "scale", 0.0, math.inf, lo_open=True, hi_open=True)
        if codebook_dim is None:
            codebook_dim = 24 * math.ceil(self.dim / 24)
        codebook_dim = check_int(codebook_dim, "codebook_dim", 24)
        if codebook_dim % 24:
            raise ValueError(f"codebook_dim must be a multiple of 24, got {codebook_dim}")
        self.codebook_dim = codebook_dim
        self.num_blocks = codebook_dim // 24
        if codebook_dim != self.dim:
            self.project_in = nn.Linear(self.dim, codebook_dim)
            self.project_out = nn.Linear(codebook_dim, self.dim)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()
        self.commitment_weight = _check_real(commitment_weight, "commitment_weight", 0.0,
                                             math.inf, hi_open=True)
        self.usage_decay = _check_real(usage_decay, "usage_decay", 0.0, 1.0, hi_open=True)
        self.gain_decay = _check_real(gain_decay, "gain_decay", 0.0, 1.0, hi_open=True)
        K = gain_levels or 1
        self.codebook_size = self.cb.size * K
        self.bits = math.log2(self.codebook_size)
        init = torch.full((self.num_blocks,), s)
        if gain == "learned":
            self.scale = nn.Parameter(init)
        elif gain is None:
            self.register_buffer("scale", init)
        else:
            self.scale = None
        if gain_levels is not None:
            self.register_buffer("levels", s * (2 * torch.arange(K) + 1.0) / K)
            self.register_buffer("levels_ready", torch.zeros((), dtype=torch.bool))
        else:
            self.levels = None
        if track_usage is None:
            track_usage = self.codebook_size <= AUTO_TRACK_MAX
        if not isinstance(track_usage, bool):
            raise TypeError(f"track_usage must be a bool or None, got {type(track_usage).__name__}")
        if track_usage and self.codebook_size > TRACK_MAX:
            raise ValueError(f"track_usage=True needs one float per code: {self.codebook_size} "
                             f"codes is more than the limit {TRACK_MAX}")
        self.track_usage = track_usage
        if track_usage:
            self.register_buffer("usage_ema", torch.zeros(self.codebook_size))
        self._last_indices = None
        if self.cb.kind == "e8":  # the ball's points: index -> point by a gather (any device)
            self.register_buffer("e8_points", e8_table(self.cb.norm, "cpu", torch.float64),
                                 persistent=False)
        if estimator == "noise":  # cell points of the lattice, drawn once (not saved)
            self.register_buffer("noise_bank", voronoi_bank("e8" if self.cb.kind == "e8"
                                                            else "leech"), persistent=False)

    def extra_repr(self) -> str:
        cb = self.cb.kind if self.cb.kind != "shell" else f"shell {self.cb.norm}"
        if self.cb.kind in ("ball", "e8"):
            cb = f"{self.cb.kind} max_norm={self.cb.norm}"
        elif self.cb.kind == "union":
            cb = f"shape-gain shells={self.cb.shells}"
        return (f"dim={self.dim}, codebook={cb!r}, codebook_size={self.codebook_size}, "
                f"bits={self.bits:.2f}, num_blocks={self.num_blocks}, gain={self.gain_mode!r}"
                + (f", gain_levels={self.gain_levels}" if self.gain_levels else "")
                + (f", estimator={self.estimator!r}" if self.estimator != "ste" else ""))

    # ------------------------------------------------------------------ helpers
    def _param_dtype(self) -> torch.dtype:
        if self.scale is not None:
            return self.scale.dtype
        if self.levels is not None:
            return self.levels.dtype
        return torch.float32

    def _straight(self, src: Tensor, tgt: Tensor, src_floor: float = _EPS) -> Tensor:
        """The value ``tgt`` (detached) with the gradient of ``src``: identity
        (straight-through) or the rotation trick.

        ``src_floor``: the rotation trick rescales by ``||tgt|| / max(||src||,
        src_floor)``; the learned gain passes 1 (its ``src`` is a unit vector, or
        shorter only for a block below ``_NORM_EPS``), so the rescaling stays at
        most 1 and a tiny block's gradient stays bounded.
        """
        if not self.rotation_trick:
            return tgt + (src - src.detach())
        with torch.no_grad():
            ns = src.norm(dim=-1, keepdim=True)
            nt = tgt.norm(dim=-1, keepdim=True)
            sh = _unit(src)
            th = _unit(tgt)
            r = sh + th
            r = r / r.norm(dim=-1, keepdim=True).clamp_min(_EPS)
            lam = nt / ns.clamp_min(src_floor)
        rot = src - 2.0 * r * (r * src).sum(-1, keepdim=True) + 2.0 * th * (sh * src).sum(
            -1, keepdim=True)
        t = lam * rot
        return tgt + (t - t.detach())

    def _level_index(self, c: Tensor, levels: Tensor | None = None) -> Tensor:
        lv = self.levels if levels is None else levels
        mids = 0.5 * lv[1:] + 0.5 * lv[:-1]  # no overflow for levels near the dtype's max
        return torch.bucketize(c.to(mids.dtype).contiguous(), mids)

    @torch.no_grad()
    def _update_levels(self, c: Tensor, w: Tensor | None = None) -> None:
        """One EMA Lloyd step of the gain levels on the block gains ``c`` (>= 0).

        ``w`` (bool, the shape of ``c``): the blocks that count (masked ones do not).
        Nothing changes on an empty batch.  Gains that the levels' dtype cannot hold
        (e.g. a float64 batch of 1e200 with float32 levels) are refused before any
        state changes (in eager mode; a compiled forward does not check).  The work
        runs in at least float32 (``quantile`` and sums in half precision would fail
        or overflow), the bucket means on gains divided by a power of two (exact), so
        sums of huge gains do not overflow, and the EMA as ``level + (1 - decay) *
        (mean - level)``, which stays between the two.  Tensor operations only: no
        host sync, so ``torch.compile`` keeps one graph.
        """
        c = c.reshape(-1)
        if c.numel() == 0:
            return
        valid = torch.ones_like(c, dtype=torch.bool) if w is None else w.reshape(-1)
        ldt = self.levels.dtype
        wdt = torch.promote_types(ldt, torch.float32)
        if not torch.compiler.is_compiling() and not bool(
                (torch.isfinite(c.to(ldt)) | ~valid).all()):
            big = float(torch.where(valid, c.abs(), 0).max())
            raise ValueError(f"x has blocks whose gains overflow the gain levels' dtype {ldt} "
                             f"(largest gain {big:.3g}): rescale x, or use "
                             f"a module of a wider dtype")
        c = torch.where(valid, c.to(wdt), 0)
        fv = valid.to(wdt)
        n = fv.sum()
        old = self.levels.to(wdt)
        K = old.shape[0]
        levels = torch.where(self.levels_ready, old, _quantiles(c, K, valid))
        k = self._level_index(c, levels)
        top = c.abs().amax()
        unit = torch.where(top > 0, torch.exp2(torch.ceil(torch.log2(top))), 1.0)
        sums = torch.zeros_like(levels).scatter_add_(0, k, c / unit * fv)
        cnt = torch.zeros_like(levels).scatter_add_(0, k, fv)
        target = torch.where(cnt > 0, sums / cnt.clamp_min(1.0) * unit, levels)
        new = levels + (1.0 - self.gain_decay) * (target - levels)
        new = torch.where(n > 0, new, old)
        self.levels.copy_(torch.sort(new).values.to(ldt))
        self.levels_ready.copy_(self.levels_ready | (n > 0))

    @torch.no_grad()
    def _update_usage(self, idx: Tensor) -> None:
        flat = idx.reshape(-1)
        valid = (flat >= 0).to(self.usage_ema.dtype)  # -1: a masked block
        counts = torch.zeros_like(self.usage_ema).scatter_add_(0, flat.clamp_min(0), valid)
        self.usage_ema.mul_(self.usage_decay).add_(counts, alpha=1.0 - self.usage_decay)

    def _ball_scale(self, dtype: torch.dtype) -> Tensor:
        """The ball's scale per block position, ``(num_blocks, 1)``: positive and finite.

        Not checked inside ``torch.compile`` (a data-dependent branch would break the
        graph); there a bad scale shows as non-finite blocks in the search.
        """
        s = self.scale.to(dtype)[:, None]
        if torch.compiler.is_compiling() or s.device.type == "meta":
            return s
        if not bool(((s > 0) & torch.isfinite(s)).all()):
            raise ValueError(f"scale must be positive and finite (the ball's scale per block "
                             f"position), got {self.scale.detach().flatten().tolist()}")
        return s

    def _check_x(self, x) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got shape {tuple(x.shape)}")

    def _check_mask(self, mask, x: Tensor) -> None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask must have shape x.shape[:-1] = {tuple(x.shape[:-1])}, got "
                             f"shape {tuple(mask.shape)}")
        if mask.device != x.device:
            raise ValueError(f"mask must be on x's device {x.device}, got {mask.device}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, mask: Tensor | None = None, *, return_gains: bool = False):
        """Quantize ``x`` (``(..., dim)``).

        Parameters
        ----------
        x : torch.Tensor
            Floating-point input ``(..., dim)``.
        mask : torch.Tensor, optional
            bool, ``x.shape[:-1]``; True = quantize.  A masked (False) position is
            returned unchanged (``quantized`` equals ``x`` there, gradient identity),
            gets index -1 in all its blocks, and is left out of the commitment loss,
            the usage histogram and the gain-level updates.
        return_gains : bool, optional
            Also return the gains (below).

        Returns
        -------
        quantized : torch.Tensor
            ``(..., dim)``, the dtype of ``x``; its gradient reaches ``x`` (and the
            learned gains) by the layer's ``estimator``.
        indices : torch.Tensor
            int64, ``(..., num_blocks)`` (-1 at masked positions).
        aux_loss : torch.Tensor
            Scalar: ``commitment_weight`` times the commitment loss.
        gains : torch.Tensor
            Only with ``return_gains=True``: the gain of each block ``(...,
            num_blocks)`` (the ball's scale for ``"ball"`` and ``"e8"``), what
            :meth:`indices_to_codes` needs for continuous gains.

        Notes
        -----
        In eager mode the input, the scale and the gains are checked (finite, in
        range) with clear errors; under ``torch.compile`` these checks, which would
        need host syncs, are skipped, so a compiled forward does not validate
        finiteness.
        """
        self._check_x(x)
        if not isinstance(return_gains, bool):
            raise TypeError(f"return_gains must be a bool, got {type(return_gains).__name__}")
        if mask is not None:
            self._check_mask(mask, x)
        if x.device.type == "meta":  # shape inference: meta outputs, nothing computed
            core = torch.float64 if x.dtype == torch.float64 else self._param_dtype()
            lead = x.shape[:-1]
            out = (x.new_empty(x.shape), x.new_empty(lead + (self.num_blocks,), dtype=torch.int64),
                   x.new_empty((), dtype=core))
            return out + (x.new_empty(lead + (self.num_blocks,), dtype=core),) if return_gains \
                else out
        z = self.project_in(x)
        kb = None if mask is None else mask[..., None].expand(mask.shape + (self.num_blocks,))
        with torch.autocast(device_type=z.device.type, enabled=False):
            core = torch.float64 if z.dtype == torch.float64 else self._param_dtype()
            zb = z.to(core).reshape(z.shape[:-1] + (self.num_blocks, 24))
            if kb is not None:  # masked blocks are searched as zeros (finite), then dropped
                zb = torch.where(kb[..., None], zb, 0.0)
            q, idx, commit, g = self._quantize(zb, kb)
            q = q.reshape(z.shape[:-1] + (self.codebook_dim,))
        out = self.project_out(q).to(x.dtype)
        if mask is not None:
            out = torch.where(mask[..., None], out, x)
            idx = torch.where(kb, idx, -1)
        if self.commitment_weight == 0.0:  # no 0 * nan (empty batch) or 0 * inf (overflow)
            loss = torch.zeros((), dtype=commit.dtype, device=commit.device)
        else:
            loss = commit * self.commitment_weight
        if self.training:
            self._last_indices = idx.detach()
            if self.track_usage:
                self._update_usage(idx)
        if return_gains:
            return out, idx, loss, g
        return out, idx, loss

    # ------------------------------------------------------------------ estimators
    def _estimate(self, src: Tensor, tgt: Tensor, idx: Tensor, cands, w, floor: float = _EPS):
        """The output of the blocks: the value ``tgt`` (or noise) with the gradient of
        the estimator.  ``cands(points)``: targets and indices of the codewords of
        perturbed ``src`` (``"soft"``); ``w``: weights of the blocks (mask) or None."""
        if self.training and self.estimator == "noise":
            return self._noise(src, tgt, w)
        if self.training and self.estimator == "soft":
            return self._soft(src, tgt, idx, cands, w)
        return self._straight(src, tgt, floor)

    def _noise(self, src: Tensor, tgt: Tensor, w) -> Tensor:
        e = draw(self.noise_bank, src.shape[:-1], src.dtype)
        if not self.cb.spherical:  # the lattice's own Voronoi noise (src in lattice units)
            return src + e
        # spherical codebooks: the Leech cell's noise, scaled per block position so that
        # its mean squared norm is the batch's mean squared quantization error there
        with torch.no_grad():
            err = ((src - tgt) ** 2).sum(-1)
            dims = tuple(range(err.dim() - 1))
            if w is None:
                msq = err.mean(dim=dims) if err.numel() else err.sum(dim=dims)
            else:
                msq = (err * w).sum(dim=dims) / w.sum(dim=dims).clamp_min(1.0)
            a = torch.sqrt(msq / (24.0 * LEECH_G))
        return src + a[:, None] * e

    def _soft(self, src: Tensor, tgt: Tensor, idx: Tensor, cands, w) -> Tensor:
        K = self.soft_k
        with torch.no_grad():
            s0 = src.detach()
            d0 = ((s0 - tgt) ** 2).sum(-1)
            sigma = torch.sqrt(d0 / 24.0)[..., None]
            pert = s0 + sigma * torch.randn((K - 1,) + src.shape, dtype=src.dtype,
                                            device=src.device)
            tk, ik = cands(pert)
            tgts = torch.cat([tgt.detach()[None], tk])
            ids = torch.cat([idx[None], ik])
            dup = [torch.zeros_like(idx, dtype=torch.bool)]
            for a in range(1, K):
                dup.append((ids[a][None] == ids[:a]).any(0))
            dup = torch.stack(dup)
            if w is None:
                dref = d0.mean() if d0.numel() else d0.sum()
            else:
                dref = (d0 * w).sum() / w.sum().clamp_min(1.0)
            dref = dref.clamp_min(_EPS)
        dk = ((src[None] - tgts) ** 2).sum(-1)
        logits = -(dk - d0[None]) / (self.soft_temperature * dref)
        wts = torch.softmax(logits.masked_fill(dup, -math.inf), dim=0)
        soft = (wts[..., None] * tgts).sum(0)
        return tgt + (soft - soft.detach())

    def _quantize(self, zb: Tensor, kb: Tensor | None):
        cb = self.cb
        flat = zb.detach().reshape(-1, 24)
        lead = zb.shape[:-1]
        w = None if kb is None else kb.to(zb.dtype)

        def search(t: Tensor):
            p_int, i = cb.search(t.reshape(-1, 24), getattr(self, "e8_points", None))
            return p_int.reshape(t.shape), i.reshape(t.shape[:-1])

        if not cb.spherical:
            s = self._ball_scale(zb.dtype)
            y = zb / s
            p_int, idx = search(y.detach())
            p = (p_int / cb.int_scale).to(zb.dtype)

            def ball_cands(t):
                pk, ik = search(t)
                return (pk / cb.int_scale).to(zb.dtype), ik

            out = s * self._estimate(y, p, idx, ball_cands, w)
            commit = _mse(zb, (s * p).detach(), w)
            return out, idx, commit, s[:, 0].expand(lead)
        p_int, idx = search(flat.reshape(zb.shape))
        u = cb.unit(p_int).to(zb.dtype)

        def dirs(t):
            pk, ik = search(t)
            return cb.unit(pk).to(zb.dtype), ik

        if self.gain_mode == "block":
            c = (zb.detach() * u).sum(-1)
            shape_idx = idx
            if self.levels is not None:
                if self.training:
                    self._update_levels(c, kb)
                k = self._level_index(c)
                g = self.levels.to(zb.dtype)[k]
                idx = idx * self.levels.shape[0] + k
            else:
                g = c
            tgt = g[..., None] * u

            def block_cands(t):
                uk, ik = dirs(t)
                return g.detach()[..., None] * uk, ik

            out = self._estimate(zb, tgt, shape_idx, block_cands, w)
            commit = _mse(zb, tgt, w)
            return out, idx, commit, g
        r = zb.norm(dim=-1, keepdim=True)
        xh = zb / r.clamp_min(_NORM_EPS)  # a bounded gradient for tiny blocks
        s = self.scale.to(zb.dtype)[:, None]
        out = s * self._estimate(xh, u, idx, dirs, w, 1.0)
        commit = _mse(xh, u, w)
        return out, idx, commit, s[:, 0].expand(lead)

    # ------------------------------------------------------------------ codes
    def _check_indices(self, indices) -> Tensor:
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype != torch.int64:
            raise TypeError(f"indices must be an int64 tensor, got dtype {indices.dtype} "
                            f"(convert with .long())")
        if indices.dim() == 0 or indices.shape[-1] != self.num_blocks:
            raise ValueError(f"indices must have shape (..., {self.num_blocks}), got shape "
                             f"{tuple(indices.shape)}")
        if indices.numel() and not torch.compiler.is_compiling():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < -1 or hi >= self.codebook_size:
                bad = lo if lo < -1 else hi
                raise ValueError(f"indices out of range [0, {self.codebook_size}): got {bad} (-1, a "
                                 f"masked block, is allowed)")
        return indices

    def indices_to_codes(self, indices: Tensor, *, gains: Tensor | None = None,
                         project_out: bool = True) -> Tensor:
        """The codewords of ``indices`` (int64, ``(..., num_blocks)``).

        Parameters
        ----------
        indices : torch.Tensor
            int64 indices in ``[0, codebook_size)``.
        gains : torch.Tensor, optional
            ``(..., num_blocks)``; required for ``gain="block"`` without
            ``gain_levels`` (continuous gains, from ``forward(..., return_gains=True)``),
            not accepted otherwise.
        project_out : bool, optional
            Apply the output projection (default), giving what the call returns (in
            eval mode, exactly); ``False`` gives the codes of the quantized space,
            ``(..., codebook_dim)``, the input of :meth:`codes_to_indices`.

        Returns
        -------
        torch.Tensor
            ``(..., dim)`` (or ``(..., codebook_dim)``).
        """
        idx = self._check_indices(indices)
        if not isinstance(project_out, bool):
            raise TypeError(f"project_out must be a bool, got {type(project_out).__name__}")
        continuous = self.gain_mode == "block" and self.levels is None
        if continuous and gains is None:
            raise ValueError("gains is required: gain='block' without gain_levels has "
                             "continuous gains that the indices do not carry")
        if gains is not None and not continuous:
            raise ValueError("gains only applies to gain='block' without gain_levels")
        dt = self._param_dtype()
        K = self.levels.shape[0] if self.levels is not None else 1
        keep = idx >= 0
        idx = idx.clamp_min(0)
        p_int = self.cb.points(idx // K, getattr(self, "e8_points", None))
        if not self.cb.spherical:
            q = self.scale.to(dt)[:, None] * (p_int / self.cb.int_scale).to(dt)
        else:
            u = self.cb.unit(p_int).to(dt)
            if continuous:
                if not isinstance(gains, Tensor) or not gains.is_floating_point():
                    raise TypeError("gains must be a floating-point tensor")
                if gains.shape != idx.shape:
                    raise ValueError(f"gains must have the shape of indices {tuple(idx.shape)}, "
                                     f"got {tuple(gains.shape)}")
                g = gains.to(dt)[..., None]
            elif self.levels is not None:
                g = self.levels.to(dt)[idx % K][..., None]
            else:
                g = self.scale.to(dt)[:, None]
            q = g * u
        q = q.reshape(idx.shape[:-1] + (self.codebook_dim,))
        if project_out:
            q = self.project_out(q)
            return torch.where(keep.all(-1, keepdim=True), q, 0.0)
        return torch.where(keep[..., None], q.reshape(keep.shape + (24,)), 0.0).reshape(q.shape)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Indices (int64, ``(..., num_blocks)``) of codes ``(..., codebook_dim)``.

        The inverse of ``indices_to_codes(indices, project_out=False)``: exact for
        every index (with positive gains).  For continuous gains the indices are
        those of the directions and the gains are the norms of the code blocks.

        Raises
        ------
        ValueError
            If a block of ``codes`` is not a codeword of this quantizer.
        """
        if not isinstance(codes, Tensor):
            raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if not codes.is_floating_point():
            raise TypeError(f"codes must be a floating-point tensor, got dtype {codes.dtype}")
        if codes.dim() == 0 or codes.shape[-1] != self.codebook_dim:
            raise ValueError(f"codes must have shape (..., {self.codebook_dim}), got shape "
                             f"{tuple(codes.shape)}")
        zb = codes.detach().to(torch.float64).reshape(codes.shape[:-1] + (self.num_blocks, 24))
        if zb.numel() and not bool(torch.isfinite(zb).all()):
            raise ValueError("codes contains NaN or inf")
        k = None
        if not self.cb.spherical:
            z = zb / self._ball_scale(torch.float64).detach() * self.cb.int_scale
        else:
            if self.gain_mode == "block" and self.levels is None:
                g = zb.norm(dim=-1, keepdim=True)
                g = torch.where(g > 0, g, 1.0)
            elif self.levels is not None:
                k = self._level_index(zb.norm(dim=-1))
                g = self.levels.to(torch.float64)[k][..., None]
            else:
                g = self.scale.detach().to(torch.float64)[:, None]
            z = zb / g * math.sqrt(self.cb.int_norm)
            if self.cb.kind == "union":
                return self._union_indices(zb / g, k)
            if self.gain_mode == "block" and self.levels is None:
                zero = (zb == 0).all(dim=-1, keepdim=True)
                z = torch.where(zero, self.cb.points(torch.zeros_like(zero[..., 0],
                                                                      dtype=torch.int64)), z)
        zi = torch.round(2.0 * z) / 2.0 if self.cb.kind == "e8" else torch.round(z)
        idx = self.cb.indices(zi)
        bad = (idx < 0) | ((z - zi).abs().amax(dim=-1) > 0.05)
        if bool(bad.any()):
            raise ValueError("codes are not codewords of this quantizer (a block is not "
                             "a codeword times its gain)")
        if k is not None:
            idx = idx * self.levels.shape[0] + k
        return idx

    def _union_indices(self, d: Tensor, k: Tensor) -> Tensor:
        """Indices of the shape-gain codes whose directions are ``d`` (levels ``k``)."""
        cb = self.cb
        idx = torch.full(d.shape[:-1], -1, dtype=torch.int64, device=d.device)
        for m in cb.shells:
            z = d * math.sqrt(8.0 * m)
            zi = torch.round(z)
            r = cb.indices(zi)
            ok = (r >= 0) & ((z - zi).abs().amax(dim=-1) <= 0.05) & (idx < 0)
            idx = torch.where(ok, r, idx)
        if bool((idx < 0).any()):
            raise ValueError("codes are not codewords of this quantizer (a block is not "
                             "a codeword times its gain)")
        return idx * self.levels.shape[0] + k

    # ------------------------------------------------------------------ usage
    @torch.no_grad()
    def usage_stats(self, indices: Tensor | None = None) -> dict:
        """Codebook usage and perplexity.

        Parameters
        ----------
        indices : torch.Tensor, optional
            Indices to measure (e.g. those of a whole evaluation set); -1 (masked
            blocks) are left out.  Default: the last batch seen in training mode.

        Returns
        -------
        dict
            ``distinct`` (codes used), ``usage`` (``distinct / codebook_size``),
            ``perplexity`` (``exp`` of the entropy of the codes' empirical
            distribution, at most the number of blocks), ``dead_codes`` and
            ``dead_fraction`` (codes never used, and their fraction of
            ``codebook_size``), ``max_min_ratio`` (the count of the most used code
            over that of the least used among the used ones; 0.0 if none is used).
            With a histogram (``track_usage``) the last three are taken from it
            (EMA counts: a code is dead if its count is 0, i.e. it was never used in
            training), without one from ``indices``; with a histogram also
            ``ema_perplexity`` and ``ema_usage``: the fraction of codes whose EMA
            count is at least ``(1 - usage_decay) / e``, roughly those used in the last
            ``1 / (1 - usage_decay)`` batches.

        Examples
        --------
        >>> import torch
        >>> from torch_ext import LeechVQ
        >>> vq = LeechVQ(24, codebook=6)                    # 16 773 120 codes: no histogram
        >>> s = vq.usage_stats(torch.tensor([[0], [0], [5], [-1]]))
        >>> s["distinct"], s["dead_codes"], s["max_min_ratio"]
        (2, 16773118, 2.0)
        """
        if indices is None:
            indices = self._last_indices
            if indices is None:
                raise RuntimeError("no batch seen in training mode yet: pass indices")
        idx = self._check_indices(indices).reshape(-1)
        idx = idx[idx >= 0]
        out = {}
        if idx.numel():
            _, counts = torch.unique(idx, return_counts=True)
            p = counts.to(torch.float64) / idx.numel()
            out["distinct"] = int(counts.numel())
            out["perplexity"] = float(torch.exp(-(p * p.log()).sum()))
            ratio = float(counts.max()) / float(counts.min())
        else:
            out["distinct"], out["perplexity"], ratio = 0, 0.0, 0.0
        out["usage"] = out["distinct"] / self.codebook_size
        dead = self.codebook_size - out["distinct"]
        if self.track_usage:
            h = self.usage_ema.to(torch.float64)
            tot = float(h.sum())
            used = h[h > 0]
            if tot > 0:
                p = used / tot
                out["ema_perplexity"] = float(torch.exp(-(p * p.log()).sum()))
                ratio = float(used.max() / used.min())
            else:
                out["ema_perplexity"], ratio = 0.0, 0.0
            thr = (1.0 - self.usage_decay) / math.e
            out["ema_usage"] = float((h >= thr).to(torch.float64).mean())
            dead = int((h == 0).sum())
        out["dead_codes"] = dead
        out["dead_fraction"] = dead / self.codebook_size
        out["max_min_ratio"] = ratio
        return out
