"""The per-matrix step of :mod:`torch_ext.quantize`: numpy, one weight matrix at a time.

:class:`BlockLayout` cuts an ``(out, in)`` weight into blocks and scale groups;
:func:`quantize_matrix` fits the scales and encodes (the recipe of the package
docstring, "Blocks, padding and scales"): RMS start, codebook fit, exact encoding,
then least-squares refits of the scales (:func:`_ls_scales`, weighted by the input
second moment ``H`` when given) that are kept only where they lower the error.
Scales are rounded to their storage dtype (:func:`_round_scales`) before use.
:meth:`LeechQuantizedLinear.from_linear
<torch_ext.quantize.LeechQuantizedLinear.from_linear>` is this step on a layer's
(rotated) weight, plus packing.

Examples
--------
>>> from torch_ext.quantize import BlockLayout
>>> L = BlockLayout(4, 50, 24, "row")          # 50 inputs: 3 blocks of 24, padded to 72
>>> L.padded, L.nblocks, L.scale_shape
(72, 3, (4, 1))
>>> L.real.sum(1).tolist()                     # real weights per block
[24, 24, 2]
>>> BlockLayout(4, 50, 24, 48).scale_shape     # groups of 48 inputs: 2 scales a row
(4, 2)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .._validation import check_int
from .codecs import Codec
from .config import QuantizeConfig, check_group, resolve_config
from .feedback import FeedbackInfo, _ldlq, damped_hessian, order_of_diagonal

__all__ = ["BlockLayout", "QuantizedMatrix", "quantize_matrix"]

#: the settings quantize_matrix uses (rotation, seed and skip are the layer's and the model's)
_MATRIX_SETTINGS = ("method", "bits", "group", "feedback", "damp", "act_order", "scale_iters",
                    "scale_dtype", "max_points")


def _round_scales(s: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, torch.dtype]:
    """Scales rounded to ``dtype`` (float32 if some non-zero scale does not fit it)."""
    t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))
    r = t.to(dtype)
    bad = ~torch.isfinite(r) | ((r == 0) & (t != 0))
    if bool(bad.any()) and dtype != torch.float32:
        return _round_scales(s, torch.float32)
    return r.to(torch.float64).numpy(), dtype


class BlockLayout:
    """The blocks and scale groups of an ``(out_features, in_features)`` weight.

    Each row is cut into blocks of ``block`` consecutive weights, the last one
    padded with zeros; each block belongs to one scale group.

    Parameters
    ----------
    out_features, in_features : int
    block : int
        Weights per code (the codec's ``block``: 24, 8 for E8, 1 for RTN).
    group : "row", "tensor" or int
        One scale per row, one for the whole matrix, or one per ``group`` inputs of
        a row (a multiple of ``block``; the last group of a row may be shorter).

    Attributes
    ----------
    padded : int
        Row length with padding (a multiple of ``block``).
    nblocks : int
        Blocks per row.
    gblocks, ngroups : int
        Blocks per scale group, and groups per row.
    tensor : bool
        One scale for the whole matrix (``group="tensor"``).
    scale_shape : tuple of int
        ``(out_features, ngroups)``, or ``(1, 1)`` for ``group="tensor"``.
    block_group : numpy.ndarray of int, shape (nblocks,)
        The scale group of each block of a row.
    group_starts : numpy.ndarray of int
        The first block of each group.
    real : numpy.ndarray of bool, shape (nblocks, block)
        Which positions of a padded row are weights (not padding).

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize import BlockLayout
    >>> L = BlockLayout(2, 20, 8, 16)              # 3 blocks of 8 a row; groups of 2 blocks
    >>> L
    BlockLayout(out_features=2, in_features=20, block=8, group=16)
    >>> L.block_group.tolist(), L.scale_shape
    ([0, 0, 1], (2, 2))
    >>> L.blocks(np.ones((2, 20))).shape          # zero-padded to 24
    (2, 3, 8)
    >>> L.expand(np.array([[1.0, 2.0], [3.0, 4.0]])).tolist()   # the scale of each block
    [[1.0, 1.0, 2.0], [3.0, 3.0, 4.0]]
    """

    def __init__(self, out_features: int, in_features: int, block: int, group="row"):
        self.out_features = check_int(out_features, "out_features", 1)
        self.in_features = check_int(in_features, "in_features", 1)
        self.block = block = check_int(block, "block", 1)
        self.group = group = check_group(group, block)
        self.padded = -(-self.in_features // block) * block
        self.nblocks = self.padded // block
        if group == "row" or group == "tensor":
            self.gblocks = self.nblocks
        else:
            self.gblocks = min(group // block, self.nblocks)
        self.ngroups = -(-self.nblocks // self.gblocks)
        self.tensor = group == "tensor"
        self.scale_shape = (1, 1) if self.tensor else (self.out_features, self.ngroups)
        # group of each block, and the real-weight mask of the padded row
        self.block_group = np.arange(self.nblocks) // self.gblocks
        self.group_starts = np.arange(0, self.nblocks, self.gblocks)
        self.real = (np.arange(self.padded) < self.in_features).reshape(self.nblocks, block)

    def __repr__(self) -> str:
        return (f"BlockLayout(out_features={self.out_features}, in_features={self.in_features}, "
                f"block={self.block}, group={self.group!r})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, BlockLayout):
            return NotImplemented
        return ((self.out_features, self.in_features, self.block, self.group)
                == (other.out_features, other.in_features, other.block, other.group))

    __hash__ = None

    def blocks(self, W: np.ndarray) -> np.ndarray:
        """The ``(out_features, nblocks, block)`` blocks of ``W``, zero-padded (float64, a copy)."""
        P = np.zeros((self.out_features, self.padded))
        P[:, :self.in_features] = W
        return P.reshape(self.out_features, self.nblocks, self.block)

    def expand(self, s: np.ndarray) -> np.ndarray:
        """Per-block scales ``(out_features, nblocks)`` from group scales ``scale_shape``."""
        if self.tensor:
            return np.broadcast_to(s.reshape(1, 1), (self.out_features, self.nblocks))
        return s[:, self.block_group]

    def group_sum(self, v: np.ndarray) -> np.ndarray:
        """Sums of per-block values ``(out_features, nblocks)`` over each scale group -> ``scale_shape``."""
        # groups are runs of gblocks consecutive blocks (the last one maybe shorter)
        out = np.add.reduceat(np.asarray(v, dtype=np.float64), self.group_starts, axis=1)
        if self.tensor:
            return out.sum().reshape(1, 1)
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """What :func:`quantize_matrix` returns: codes, scales and gains of one matrix.

    Block ``j`` of row ``r`` is ``layout.expand(scales)[r, j] * codec.decode(codes[r, j])``
    (:meth:`dequantize`).

    Attributes
    ----------
    codes : numpy.ndarray of int64, shape (out, nblocks)
    scales : numpy.ndarray of float64, shape ``layout.scale_shape``
        Already rounded to ``scale_dtype`` (stored as float64).
    scale_dtype : torch.dtype
        The dtype the scales are stored in: the config's, or float32 where a
        non-zero scale does not fit it.
    gains : numpy.ndarray or None
        The gain levels (``"leech-shape-gain"``), else ``None``.
    mse : float
        Mean squared error of the real weights (padding not counted).
    layout : BlockLayout
    codec : Codec
        The method's codec (:mod:`torch_ext.quantize.codecs`).
    feedback_info : FeedbackInfo or None
        The damping used by the LDLQ feedback (``None`` without feedback).
    """

    codes: np.ndarray
    scales: np.ndarray
    scale_dtype: torch.dtype
    gains: np.ndarray | None
    mse: float
    layout: BlockLayout
    codec: Codec
    feedback_info: FeedbackInfo | None = None

    def dequantize(self) -> np.ndarray:
        """The quantized matrix ``(out, in)``, float64 (padding dropped)."""
        L = self.layout
        U = self.codec.decode(self.codes.reshape(-1), self.gains)
        U = U.reshape(L.out_features, L.nblocks, L.block)
        return (L.expand(self.scales)[:, :, None] * U).reshape(L.out_features, L.padded)[
            :, :L.in_features]

    def __repr__(self) -> str:
        L = self.layout
        return (f"QuantizedMatrix({L.out_features}x{L.in_features}, method={self.codec.name!r}, "
                f"codes={self.codes.shape}, scales={self.scales.shape}, "
                f"scale_dtype={self.scale_dtype}, mse={self.mse:.4g})")


def _float_matrix(x, name: str) -> np.ndarray:
    """``x`` (numpy or torch, floating) as a float64 2-D numpy array."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point matrix, got {x.dtype}")
        x = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            x = np.asarray(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a floating-point matrix (numpy or torch), got "
                            f"{type(x).__name__}") from None
        if x.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating-point matrix, got dtype {x.dtype}")
        x = x.astype(np.float64, copy=False)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def quantize_matrix(W, config: QuantizeConfig | None = None, *, H=None, workers: int | None = -1,
                    **settings) -> QuantizedMatrix:
    """Quantize one weight matrix: fit the scales, encode every block.

    The step :meth:`LeechQuantizedLinear.from_linear
    <torch_ext.quantize.LeechQuantizedLinear.from_linear>` runs on a layer's
    weight (after its rotation): ``W`` is cut row by row into blocks
    (:class:`BlockLayout`), the scales start at each group's RMS, the codebook is
    fitted, the blocks are encoded, and the scales are refitted ``scale_iters``
    times (see :mod:`torch_ext.quantize`).

    Parameters
    ----------
    W : array_like or torch.Tensor, shape (out, in)
        Floating-point weights, finite.  Quantized in the basis given.
    config : QuantizeConfig, optional
        The method, bits, group, scales, feedback, damping and act-order; default
        ``QuantizeConfig()``.  Its ``rotation``, ``seed`` and ``skip`` are not
        used here.  Instead of a config the settings can be keywords
        (``quantize_matrix(W, method="rtn")``).
    H : array_like or torch.Tensor, shape (in, in), optional
        Second moment of the inputs, in ``W``'s basis: damped by ``damp``, it weights
        the scale refit and, with ``feedback`` ``"ldlq"`` (or ``None``, the
        config's default), drives the error feedback.
    workers : int, optional
        Threads of the Leech encoders (-1: all cores).

    Returns
    -------
    QuantizedMatrix

    Raises
    ------
    TypeError
        ``W`` or ``H`` not a floating-point matrix; a config and a setting keyword.
    ValueError
        ``W`` or ``H`` of a bad shape or not finite; ``feedback="ldlq"`` without
        ``H``; a bad setting.
    numpy.linalg.LinAlgError
        ``H`` does not factor at any damping tried (``from_linear`` then quantizes
        without feedback).

    Examples
    --------
    >>> import numpy as np
    >>> from torch_ext.quantize import QuantizeConfig, quantize_matrix
    >>> W = np.random.default_rng(0).standard_normal((3, 40))
    >>> q = quantize_matrix(W, QuantizeConfig(method="rtn", bits=2))
    >>> q.codes.shape, q.scales.shape, q.scale_dtype     # 2-bit codes, one float16 scale a row
    ((3, 40), (3, 1), torch.float16)
    >>> np.unique(q.codes).tolist()                    # the 4 levels
    [0, 1, 2, 3]
    >>> bool(np.isclose(q.mse, np.mean((q.dequantize() - W) ** 2)))
    True
    >>> X = np.random.default_rng(1).standard_normal((500, 40))
    >>> fb = quantize_matrix(W, method="rtn", H=X.T @ X / 500)   # LDLQ feedback
    >>> fb.feedback_info
    FeedbackInfo(damp=0.01, raised=0, dead=0)
    """
    config = resolve_config(config, (), settings, caller="quantize_matrix",
                            accepted=_MATRIX_SETTINGS)
    W = _float_matrix(W, "W")
    out_f, in_f = W.shape
    if H is not None:
        H = _float_matrix(H, "H")
        if H.shape != (in_f, in_f):
            raise ValueError(f"H must be ({in_f}, {in_f}) (the columns of W), got shape {H.shape}")
    feedback = config.feedback if config.feedback is not None else (
        "ldlq" if H is not None else "none")
    if feedback == "ldlq" and H is None:
        raise ValueError("feedback='ldlq' needs H (the second moment of the inputs)")
    return _quantize(W, config.codec(), config.group, H=H, feedback=feedback == "ldlq",
                     scale_iters=config.scale_iters, scale_dtype=config.scale_dtype,
                     max_points=config.max_points, workers=workers, damp=config.damp,
                     act_order=config.act_order)


#: weights a row chunk of :func:`_quantize` holds (its temporaries, the encoders' included,
#: are a few times this size, 4 MB of float64, whatever the size of the matrix)
_CHUNK_WEIGHTS = 1 << 19


def _row_chunks(L: BlockLayout):
    """``slice``s of rows of about :data:`_CHUNK_WEIGHTS` padded weights each."""
    step = max(1, _CHUNK_WEIGHTS // L.padded)
    return [slice(a, min(a + step, L.out_features)) for a in range(0, L.out_features, step)]


def _quantize(W: np.ndarray, codec, group, *, scale_iters: int, scale_dtype,
              H: np.ndarray | None, max_points, workers, feedback: bool = False,
              damp: float = 0.01, act_order: bool = False) -> QuantizedMatrix:
    """:func:`quantize_matrix` on checked arguments (``W`` float64).

    Besides ``W``, the padded blocks and their decoded values (each the size of
    ``W``), every step works a chunk of rows at a time (:func:`_row_chunks`): blocks
    are coded independently and every per-block or per-row quantity is row-local, so
    the results are those of whole-array arithmetic, with temporaries of a chunk.
    """
    out_f, in_f = W.shape
    if H is not None and not feedback:
        H = damped_hessian(H, damp)[0]
    L = BlockLayout(out_f, in_f, codec.block, group)
    blocks = L.blocks(W)
    P = blocks.reshape(out_f, L.padded)
    real = L.real[None, :, :]
    chunks = _row_chunks(L)
    sq = np.empty((out_f, L.nblocks))  # (out, nblocks)
    for r in chunks:
        b = blocks[r] * real
        b *= b
        sq[r] = b.sum(-1)
    if L.tensor:
        n_real = float(L.real.sum()) * out_f
    else:  # the real weights of each group: the same in every row (one row, broadcast)
        n_real = L.group_sum(L.real.sum(-1)[None, :])
    rms = np.sqrt(L.group_sum(sq) / np.maximum(n_real, 1.0))
    del sq
    zero = rms == 0

    def rows(S, r):
        """The scale of every block of rows ``r`` (``L.expand(S)[r]``, a view for one scale)."""
        if L.tensor:
            return np.broadcast_to(S.reshape(1, 1), (len(range(*r.indices(out_f))), L.nblocks))
        return S[r][:, L.block_group]

    def block_scales(S):
        return L.expand(np.where(S > 0, S, 1.0))

    # 1. initial scales and the codebook fit on the normalised blocks
    gains = None
    S = codec.initial_scales(blocks, L, rms)
    if S is not None:
        S, dt = _round_scales(S, scale_dtype)
    else:
        S0, dt = _round_scales(np.where(zero, 1.0, rms), scale_dtype)
        x0 = (blocks / block_scales(S0)[:, :, None]).reshape(-1, codec.block)
        if not np.any(x0):  # an all-zero weight: fit the codebook to a unit Gaussian
            x0 = np.random.default_rng(0).standard_normal((256, codec.block))
        alpha, gains = codec.fit(x0, max_points, workers)
        del x0
        S, dt = _round_scales(S0 * alpha, scale_dtype)
    S = np.where(zero, 0.0, S)

    # 2. encode
    def encode_rows(S, r):
        """Codes and decoded blocks of rows ``r`` with the scales ``S`` (``scale_shape``)."""
        n = len(range(*r.indices(out_f)))
        Sb = rows(np.where(S > 0, S, 1.0), r)
        c = codec.encode((blocks[r] / Sb[:, :, None]).reshape(-1, codec.block), gains, workers)
        return c.reshape(n, L.nblocks), codec.decode(c, gains).reshape(n, L.nblocks, codec.block)

    def encode(S):
        codes = np.empty((out_f, L.nblocks), dtype=np.int64)
        U = np.empty_like(blocks)
        for r in chunks:
            codes[r], U[r] = encode_rows(S, r)
        return codes, U

    def errors_rows(S, r, U_r):
        """Squared errors of rows ``r``: per block ``(n, nblocks)`` (Euclidean), or per
        row ``(n,)`` (weighted by ``H``: each row's error over its number of blocks)."""
        E = rows(S, r)[:, :, None] * U_r
        np.subtract(blocks[r], E, out=E)
        E *= real
        if H is None:
            E *= E
            return E.sum(-1)
        e = E.reshape(len(E), L.padded)[:, :in_f]
        eH = e @ H
        eH *= e
        return eH.sum(1) / L.nblocks

    def errors(S, U):
        err = np.empty((out_f, L.nblocks) if H is None else (out_f,))
        for r in chunks:
            err[r] = errors_rows(S, r, U[r])
        return err

    def per_block(err):
        """Per-block errors: a row's error spread evenly over its blocks with ``H`` (a view)."""
        return err if H is None else np.broadcast_to(err[:, None], (out_f, L.nblocks))

    info = None
    if feedback:
        codes, U, info = _encode_ldlq(P, H, codec, L, S, gains, damp, workers, act_order)
        H = damped_hessian(H, info.damp)[0]
    else:
        codes, U = encode(S)
    err = errors(S, U)
    # 3. least-squares scales, then encode again (with feedback: refit only, once)
    for _ in range(min(scale_iters, 1) if feedback else scale_iters):
        S_ls = _ls_scales(blocks, U, L, H, real, S, chunks)
        S_new, dt2 = _round_scales(np.where(zero, 0.0, S_ls), dt)
        if dt2 != dt:  # the refit left float16: keep the old scales
            break
        err_new = errors(S_new, U)
        unit = _accept_unit(L, H)
        better = unit(per_block(err_new)) < unit(per_block(err))
        S = np.where(better, S_new, S)
        # the errors of the blocks under the accepted scales (with H, every group of a row
        # is accepted or none: their errors are those of err_new or of err, exactly)
        took = L.expand(better) if H is None else better[:, 0]
        np.copyto(err, err_new, where=took)
        del err_new
        if feedback:
            break
        # encode again with the new scales; keep the better code per block (per row with H:
        # the weighted errors of a row's blocks do not add up separately)
        for r in chunks:
            c2, U2 = encode_rows(S, r)
            err2 = errors_rows(S, r, U2)
            pick = err2 < err[r]
            err[r] = np.where(pick, err2, err[r])
            if H is not None:
                pick = np.broadcast_to(pick[:, None], c2.shape)
            codes[r] = np.where(pick, c2, codes[r])
            U[r] = np.where(pick[:, :, None], U2, U[r])
    sse = 0.0
    for r in chunks:  # the squared error of the real weights
        d = (rows(S, r)[:, :, None] * U[r]).reshape(-1, L.padded)[:, :in_f] - W[r]
        d *= d
        sse += float(d.sum())
    return QuantizedMatrix(codes=codes, scales=S.reshape(L.scale_shape), scale_dtype=dt, gains=gains,
                           mse=sse / W.size, layout=L, codec=codec, feedback_info=info)


def _encode_ldlq(P: np.ndarray, H: np.ndarray, codec, L: BlockLayout, S: np.ndarray, gains, damp,
                 workers, act_order: bool = False):
    """Codes and decoded normalised blocks of the padded weight ``P`` with LDLQ feedback.

    The scales ``S`` are fixed; block ``j`` of every row is normalised by its scale,
    encoded by the codec and decoded, and its error is fed back onto the later
    columns (:func:`~torch_ext.quantize.feedback.ldlq`).  The padding columns are
    dead inputs of the padded ``H``.  Returns ``(codes, U, info)``.
    """
    out_f, in_f = L.out_features, L.in_features
    H = np.asarray(H, dtype=np.float64)  # ldlq reads it, never writes it, and pads it itself
    # the scale of block j: column L.block_group[j] of S (not expanded: as large as W at block 1)
    Sg = np.broadcast_to(S.reshape(1, 1), (out_f, 1)) if L.tensor else S
    codes = np.zeros((out_f, L.nblocks), dtype=np.int64)
    U = np.zeros((out_f, L.nblocks, codec.block))

    def quantize_block(j, Wj):
        s = Sg[:, 0 if L.tensor else L.block_group[j]][:, None]
        x = Wj / np.where(s > 0, s, 1.0)
        c = codec.encode(np.ascontiguousarray(x), gains, workers)
        u = codec.decode(c, gains).reshape(out_f, codec.block)
        codes[:, j], U[:, j] = c, u
        return s * u

    order = None
    if act_order:  # the padding columns: dead inputs, diagonal 0
        d = np.zeros(L.padded)
        d[:in_f] = np.diagonal(H)
        order = order_of_diagonal(d, codec.block)
    _, info = _ldlq(P, H, quantize_block, block=codec.block, damp=damp, order=order, keep=False)
    return codes, U, info


def _accept_unit(L: BlockLayout, H):
    """Reduce per-block errors to the units whose scales are chosen independently."""
    if L.tensor:
        return lambda e: np.full((1, 1), e.sum())
    if H is not None:  # weighted errors couple the groups of a row
        return lambda e: np.broadcast_to(e.sum(1, keepdims=True), (L.out_features, L.ngroups))
    return L.group_sum


def _ls_scales(blocks, U, L: BlockLayout, H, real, S_old, chunks=None) -> np.ndarray:
    """Least-squares scales (scale_shape) of the weights for fixed decoded blocks ``U``
    (sums a chunk of rows at a time: ``chunks``, default :func:`_row_chunks`)."""
    chunks = _row_chunks(L) if chunks is None else chunks
    if H is None:  # the group sums of each row (L.group_sum, a chunk of rows at a time)
        num = np.empty((L.out_features, L.ngroups))
        den = np.empty((L.out_features, L.ngroups))
        for r in chunks:
            Ur = U[r] * real
            num[r] = np.add.reduceat((blocks[r] * Ur).sum(-1), L.group_starts, axis=1)
            Ur *= Ur
            den[r] = np.add.reduceat(Ur.sum(-1), L.group_starts, axis=1)
        if L.tensor:
            num, den = num.sum().reshape(1, 1), den.sum().reshape(1, 1)
        ok = den > 0
        s = np.where(ok, num / np.where(ok, den, 1.0), S_old)
        return np.where(s > 0, s, S_old)
    in_f = L.in_features
    w = blocks.reshape(L.out_features, L.padded)[:, :in_f]

    def u_rows(a, b):  # the decoded weights of rows a:b, padding zeroed
        return (U[a:b] * real).reshape(-1, L.padded)[:, :in_f]

    if L.tensor:
        num = den = 0.0
        for r in chunks:
            u = u_rows(r.start, r.stop)
            uH = u @ H
            num += float((uH * w[r]).sum())
            den += float((uH * u).sum())
        s = num / den if den > 0 else float(S_old.ravel()[0])
        return np.full((1, 1), s if s > 0 else float(S_old.ravel()[0]))
    # per row: the G x G normal equations of the group scales (rows in chunks)
    gidx = np.repeat(L.block_group, L.block)[:in_f]
    G = L.ngroups
    s = S_old.copy()
    chunk = max(1, (1 << 21) // max(1, G * in_f))  # M and M H: 16 MB each a chunk
    for a in range(0, L.out_features, chunk):
        uu, ww = u_rows(a, a + chunk), w[a:a + chunk]
        M = np.zeros((len(uu), G, in_f))
        M[:, gidx, np.arange(in_f)] = uu
        MH = (M.reshape(-1, in_f) @ H).reshape(M.shape)  # (rows, G, in), one product
        A = MH @ M.transpose(0, 2, 1)  # (rows, G, G)
        b = (MH @ ww[:, :, None])[:, :, 0]
        for i in range(len(uu)):
            try:
                sol = np.linalg.solve(A[i] + 1e-12 * np.trace(A[i]) * np.eye(G), b[i])
            except np.linalg.LinAlgError:
                continue
            if np.all(np.isfinite(sol)) and np.all(sol > 0):
                s[a + i] = sol
    return s
