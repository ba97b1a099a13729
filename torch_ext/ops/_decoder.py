"""Pure-torch exact decoders (any device): nearest Leech point and nearest minimal vector.

These are the device-agnostic implementations behind :mod:`torch_ext.ops`
(:func:`torch_ext.ops.nearest_point_torch`, :func:`torch_ext.ops.nearest_minimal_vector_torch`):
the CUDA path of the custom ops where Numba CUDA does not work, and the CPU path under
``TORCH_EXT_CPU_BACKEND=torch``.  Both work in the integer model :math:`\\sqrt8\\Lambda_{24}` in MOG
coordinates (coordinate ``4*column + row``) on float64 tensors, vectorised over the
batch: there is no Python loop over points, only over the six MOG columns.

Nearest point (the algorithm of ``docs/decoding.rst``, vectorised)
-------------------------------------------------------------------
1. Translate by :math:`8\\mathbb Z^{24}` (a sublattice): ``r = y - 8*floor(y/8 + 1/2)``
   is exact in floating point and lies in ``[-4, 4)``, as in leechlib.
2. :math:`\\sqrt8\\Lambda_{24} = E \\cup O` with ``x_i = eps + 2 b_i + 4 y_i``, ``b`` a
   Golay word and ``sum(y) = eps (mod 2)``.  Per coordinate the eight residues
   ``a = eps + 2b + 4p`` (``p = y_i mod 2``) give eight candidate values (the point of
   ``8Z + a`` nearest to ``r_i``) and their squared distances: both cosets at once.
3. Per MOG column and each of its 16 bit patterns: the cost with the best ``p`` per
   coordinate, the column's ``p``-parity and the cheapest single ``p`` switch; so per
   (column, score ``s``, parity ``pi``) four options ``(t, rho)`` (top bit, ``p``-parity).
4. Per (``eps``, ``pi``, hexacode word ``h``) a min-plus dynamic programme over the six
   columns on the four states of :math:`\\mathbb Z_2^2` (parity of the top bits, parity
   of the ``p``'s) whose final state must be ``(pi, eps)``.  It meets in the middle:
   columns 0-2 run forward over the 64 prefixes ``(h0, h1, h2)``, columns 5-3 backward
   over the 64 suffixes ``(h3, h4, h5)`` (the hexacode is MDS: either triple
   determines the word), and each word combines the two for its one target state.
5. ``argmin`` over the 256 (``eps``, ``h``, ``pi``) in leechlib's enumeration order;
   the winner is rebuilt by leechlib's rule (cheaper top bit per column, then the
   parity repair by one or two columns), not by a backtrack of the DP.

Costs are computed in float64 and the algorithm is exact maximum-likelihood decoding
(the same distances as a brute force over the 8192 cosets of :math:`4D_{24}`).  Ties are
broken by leechlib's documented rule (:mod:`leechlib.decode`), so wherever the
arithmetic is exact (e.g. integer or half-integer inputs in the integer frame, deep
holes) the answer is bitwise leechlib's.  When the input must be rounded on the way
to the integer frame (unit coordinates, a scale), two lattice points whose distances
differ only by rounding (about 1e-15 relative) may be ordered differently by the two
implementations, which sum in different orders; both are nearest up to rounding.

By default (:func:`leech_nearest_int` with ``dp32=True``) the 256-way search of step 4 runs in
float32, which halves its memory traffic: every float32 total is within a relative
``12 * 2**-24`` of the exact one, so a winner whose runner-up is further than that is
certainly optimal, and the few points without that certificate (about 1 in 10^5 random
points; exact ties between classes) are decoded again in float64.  The rebuild of the
winner is float64 in both cases, so both settings give the same points.

Nearest minimal vector
----------------------
The largest inner product with the 196 560 minimal vectors, shape by shape (integer
model), with leechlib's tie-breaking: ``(±4², 0²²)`` on the two largest ``|x_i|`` (first
indices); ``(±2⁸, 0¹⁶)`` per octad (759, first best octad) with the even-sign repair;
``(∓3, ±1²³)``: for each of the 24 positions k of the -3 a soft (maximum-likelihood)
Golay decode of x with x_k replaced by -3 x_k, vectorised over k (only column k // 4
changes), the first k of the best value winning.  Shapes are compared in the order
1, 2, 3 (first maximum).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from leechlib import LeechLattice
from leechlib.kernels import mog_tables

__all__ = [
    "leech_nearest_int",
    "nearest_minvec_int",
    "minimal_vectors_int",
    "DEFAULT_CHUNK",
    "DEFAULT_CHUNK_MINVEC",
]

#: points per chunk of the vectorised nearest-point decoder (bounds the scratch memory:
#: the widest DP step holds a few (n, 2, 2, 16, 4, 4) float64 tensors, about 25 kB per
#: point)
DEFAULT_CHUNK = {"cpu": 1024, "cuda": 1 << 17}
#: the same for the nearest minimal vector (24 soft Golay decodes per point hold a few
#: (n, 24, 64, 2) tensors, about 200 kB per point)
DEFAULT_CHUNK_MINVEC = {"cpu": 256, "cuda": 1 << 13}


# ---------------------------------------------------------------------------
# Tables (from leechlib's MOG tables, built once per device)
# ---------------------------------------------------------------------------


def _np_tables() -> dict:
    """The decoders' tables as numpy arrays, from :func:`leechlib.kernels.mog_tables`."""
    mog = mog_tables()
    hexa = mog["hexa"].astype(np.int64)  # (64, 6)
    cp = mog["column_pattern"].astype(np.int64)  # (4 s, 2 pi, 2 t) -> pattern
    pb = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(np.int64)  # (16, 4)
    octads = mog["octads"].astype(np.int64)  # (759, 8)
    octad_matrix = np.zeros((24, 759), dtype=np.int8)
    octad_matrix[octads, np.arange(759)[:, None]] = 1
    info = mog["information_set"].astype(np.int64)  # (12,)
    iu, ju = np.triu_indices(24, k=1)
    pair = np.full((24, 24), -1, dtype=np.int64)
    pair[iu, ju] = np.arange(len(iu))
    back = 16 * hexa[:, 3] + 4 * hexa[:, 4] + hexa[:, 5]  # a bijection onto 0..63
    if sorted(back.tolist()) != list(range(64)):  # pragma: no cover - the hexacode is MDS
        raise RuntimeError("hexacode symbols 3..5 do not determine the word")
    eps_pi = (np.arange(2)[None, :] + 2 * np.arange(2)[:, None])  # [eps, pi] -> pi + 2 eps
    xor_target = (np.arange(4)[None, None, :] ^ eps_pi[:, :, None]).reshape(1, 2, 2, 1, 4)
    return dict(hexa=hexa, cp=cp, pb=pb, octads=octads, info=info, pair=pair,
                back=back, xor_target=xor_target,
                octad_matrix=octad_matrix)


#: the one cache: per device (``str(torch.device)``), the tables as tensors there, and
#: the minimal vectors (key ``"minvec"``) once :func:`minimal_vectors_int` asked for them
_PER_DEVICE: dict = {}


def _tables(device) -> dict:
    key = str(torch.device(device))
    tab = _PER_DEVICE.get(key)
    if tab is None:
        tab = {k: torch.as_tensor(v, device=device) for k, v in _np_tables().items()}
        _PER_DEVICE[key] = tab
    return tab


def minimal_vectors_int(device="cpu") -> torch.Tensor:
    """The 196 560 minimal vectors (integer model, int8) on ``device``, leechlib's order."""
    tab = _tables(device)
    t = tab.get("minvec")
    if t is None:
        mv = np.array(LeechLattice().minimal_vectors(coords="int"), dtype=np.int8, copy=True)
        t = tab["minvec"] = torch.as_tensor(mv).to(device)
    return t


def _chunked(fn, y: torch.Tensor, chunk: int | None, *, pad: bool = False):
    """Apply ``fn`` to row chunks of ``y`` and concatenate.

    With ``pad=True`` every call sees a power-of-two number of rows (zero rows are
    appended and their results dropped), so a ``torch.compile``-d ``fn`` with static
    shapes compiles once per power of two instead of once per batch size.
    """
    n = y.shape[0]
    if chunk is None:
        chunk = DEFAULT_CHUNK.get(y.device.type, 4096)
    outs = []
    for i in range(0, n, chunk):
        part = y[i : i + chunk]
        m = part.shape[0]
        if pad:
            size = min(chunk, 1 << max(m - 1, 1).bit_length())
            if size > m:
                part = torch.cat([part, part.new_zeros(size - m, part.shape[1])])
        res = fn(part)
        outs.append(tuple(r[:m] for r in res) if isinstance(res, tuple) else res[:m])
    if len(outs) == 1:
        return outs[0]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


# ---------------------------------------------------------------------------
# Nearest point of sqrt(8) * Lambda24
# ---------------------------------------------------------------------------


def _xor_shifts(state: torch.Tensor):
    """``state[..., s ^ o]`` for o = 0..3 (a state s = bit0 + 2*bit1 is a (2, 2) view)."""
    s = state.unflatten(-1, (2, 2))  # [bit1][bit0]
    return (
        state,
        s.flip(-1).flatten(-2),
        s.flip(-2).flatten(-2),
        s.flip(-1, -2).flatten(-2),
    )


def _xor_combine(state: torch.Tensor, opt: torch.Tensor) -> torch.Tensor:
    """Min-plus step on Z2^2: ``new[..., s] = min_o state[..., s ^ o] + opt[..., o]``.

    ``state`` and ``opt`` broadcast against each other (the state's last axis and the
    options' last axis both have 4 entries).
    """
    sh = _xor_shifts(state)
    out = sh[0] + opt[..., 0:1]
    for o in range(1, 4):
        out = torch.minimum(out, sh[o] + opt[..., o : o + 1])
    return out


#: relative error bound of a float32 DP total: 6 roundings of float64 column costs and
#: 5 float32 additions of non-negative terms, (1 + 2**-24)**11 - 1 < 12 * 2**-24
_GAMMA32 = 12.0 * 2.0**-24


def _leech_nearest_chunk(y: torch.Tensor) -> torch.Tensor:
    """Nearest points (float64 DP throughout)."""
    return _leech_nearest_impl(y, False)[0]


def _leech_nearest_chunk32(y: torch.Tensor):
    """Nearest points with the 256-way DP in float32, and the points to redo in float64.

    The per-coordinate and per-column costs and the rebuild of the winner are float64;
    only the search over (eps, pi, h) runs in float32.  Every float32 total ``T~``
    satisfies ``|T~ - T| <= gamma * T`` (``gamma = _GAMMA32``), so the float32 winner is
    certainly optimal unless the runner-up total is below ``T~_min * (1 + 4 gamma)``;
    those points are flagged (``unsure``) and must be decoded by the float64 path.
    """
    return _leech_nearest_impl(y, True)


def _leech_nearest_impl(y: torch.Tensor, fast: bool):
    tab = _tables(y.device)
    hexa, cp, pb = tab["hexa"], tab["cp"], tab["pb"]
    n = y.shape[0]
    dt = y.dtype
    dev = y.device

    # 1-2. exactly leechlib's arithmetic and conventions: r = y - 8 floor(y/8 + 1/2) in
    # [-4, 4); for a = eps + 2b the candidate of 8Z + a is a itself at distance
    # exactly 4, and that of 8Z + a + 4 is z0 + 4 when r - z0 >= 0, else z0 - 4
    base = torch.floor(y * 0.125 + 0.5)
    r = y - 8.0 * base  # exact
    a4 = torch.arange(4, device=dev, dtype=dt)
    t = r.unsqueeze(-1) - a4  # (n, 24, 4)
    wrap = t < -4.0
    t = torch.where(wrap, t + 8.0, t)
    z0 = torch.where(wrap, a4 - 8.0, a4)
    z4 = torch.where(t >= 0.0, z0 + 4.0, z0 - 4.0)
    cand = torch.cat([z0, z4], dim=-1)  # (n, 24, 8), residue a = eps + 2b + 4p
    d = (r.unsqueeze(-1) - cand).square()
    d = d.view(n, 24, 2, 2, 2)  # [p][b][eps]
    d0, d1 = d[:, :, 0], d[:, :, 1]  # (n, 24, b, eps)
    cmin = torch.minimum(d0, d1)
    pbest = (d1 < d0).to(torch.int64)  # ties -> p = 0
    delta = (d1 - d0).abs()

    # per column j, pattern P, coset eps: gather rows r with bit b = PB[P, r]
    def per_pattern(t):  # (n, 24, b, eps) -> (n, eps, 6, 16, 4 rows)
        t = t.view(n, 6, 4, 2, 2).permute(0, 4, 1, 2, 3)  # (n, eps, 6, r, b)
        return t[:, :, :, torch.arange(4, device=dev), pb]

    cost0 = per_pattern(cmin).sum(-1)  # (n, eps, 6, 16)
    rho0 = per_pattern(pbest).sum(-1) & 1
    mdelta = per_pattern(delta).amin(-1)
    rho = torch.arange(2, device=dev)
    c16 = cost0.unsqueeze(-1) + (rho != rho0.unsqueeze(-1)).to(dt) * mdelta.unsqueeze(-1)
    # (n, eps, 6, 16, rho) -> patterns by (s, pi, t) -> (n, eps, 6, s, pi, t, rho)
    c = c16[:, :, :, cp]
    # options o = t + 2 rho, arranged (n, eps, pi, 6, s, o)
    c = c.permute(0, 1, 4, 2, 3, 6, 5).reshape(n, 2, 2, 6, 4, 4)

    cd = c.to(torch.float32) if fast else c
    # DP; states are (parity of top bits) + 2 * (parity of p's).  Meet in the middle:
    # columns 0-2 forward over the prefixes (a, b, c) = (h0, h1, h2), columns 5-3
    # backward over (h3, h4, h5) (any three hexacode symbols determine the word), then
    # one combine per word for the single target state (pi, eps).
    fwd = _xor_combine(cd[:, :, :, 0].unsqueeze(-2), cd[:, :, :, 1].unsqueeze(-3))  # (.,a,b,s)
    fwd = _xor_combine(fwd.reshape(n, 2, 2, 16, 1, 4), cd[:, :, :, 2].unsqueeze(-3))
    fwd = fwd.reshape(n, 2, 2, 64, 4)  # word index 16 h0 + 4 h1 + h2
    bwd = _xor_combine(cd[:, :, :, 5].unsqueeze(-3), cd[:, :, :, 4].unsqueeze(-2))  # (.,h4,h5,s)
    bwd = _xor_combine(bwd.reshape(n, 2, 2, 1, 16, 4), cd[:, :, :, 3].unsqueeze(-2))
    bwd = bwd.reshape(n, 2, 2, 64, 4)[:, :, :, tab["back"]]  # by word, 16 h3 + 4 h4 + h5
    # total[w] = min_s fwd[w, s] + bwd[w, s ^ target(eps, pi)]
    bwd = bwd.gather(-1, tab["xor_target"].expand(n, 2, 2, 64, 4))
    # index eps*128 + 2h + pi: leechlib's enumeration order, so that the first minimum
    # is leechlib's winner on exact ties
    total = (fwd + bwd).amin(dim=-1).transpose(2, 3).reshape(n, 256)
    if fast:
        two, top2 = total.topk(2, dim=1, largest=False)
        best = top2[:, 0]
        unsure = two[:, 1].double() < two[:, 0].double() * (1.0 + 4.0 * _GAMMA32)
    else:
        best = total.argmin(dim=1)
        unsure = None
    eps = best // 128
    h = (best // 2) % 64
    pi = best % 2

    # 5. rebuild the winner by leechlib's rule (so exact ties agree): per column the
    #    cheaper top bit t (0 on ties) with its natural p-parity; then the parity
    #    deficit in Z2^2 is repaired by one column (first of least cost) or, if
    #    strictly cheaper, two (see ``leechlib._kernels.leech._repair``)
    ar = torch.arange(n, device=dev)
    hw = hexa[h]  # (n, 6)
    c0w = cost0[ar, eps]  # (n, 6, 16)
    r0w = rho0[ar, eps]
    pnw = mdelta[ar, eps]
    P0 = cp[hw, pi.view(n, 1), 0]  # (n, 6)
    P1 = cp[hw, pi.view(n, 1), 1]

    def at(tab6, P):
        return tab6.gather(2, P.unsqueeze(-1)).squeeze(-1)

    B0, B1 = at(c0w, P0), at(c0w, P1)
    R0, R1 = at(r0w, P0), at(r0w, P1)
    E0, E1 = at(pnw, P0), at(pnw, P1)
    ts = B1 < B0
    g = ts.to(torch.int64) + 2 * torch.where(ts, R1, R0)
    df = (B1 - B0).abs()
    eo = torch.where(ts, E0, E1)
    zero = torch.zeros_like(df)
    same = R0 == R1
    dd = torch.stack([zero, df + torch.where(same, zero, eo), torch.where(ts, E1, E0),
                      df + torch.where(same, eo, zero)], dim=-1)  # (n, 6, 4)
    lane = pi + 2 * eps
    deficit = lane ^ g[:, 0] ^ g[:, 1] ^ g[:, 2] ^ g[:, 3] ^ g[:, 4] ^ g[:, 5]
    dv = deficit.clamp(min=1)  # rows without a deficit are masked below
    x1 = torch.where(dv == 1, 2, 1)
    x2 = x1 ^ dv

    def cols(a):
        return dd.gather(2, a.view(n, 1, 1).expand(n, 6, 1)).squeeze(-1)  # (n, 6)

    sv, sj = cols(dv).min(dim=1)  # first minimum: the first column of least cost
    bv = cols(x1)
    cv = cols(x2)
    b1, b1j = bv.min(dim=1)
    c1, c1j = cv.min(dim=1)
    inf = torch.full_like(bv, math.inf)
    b2, b2j = torch.where(torch.arange(6, device=dev) == b1j.view(n, 1), inf, bv).min(dim=1)
    c2, c2j = torch.where(torch.arange(6, device=dev) == c1j.view(n, 1), inf, cv).min(dim=1)
    u = b1 + c2
    w = b2 + c1
    distinct = b1j != c1j
    pc = torch.where(distinct, b1 + c1, torch.minimum(u, w))
    pj1 = torch.where(distinct | (u <= w), b1j, b2j)
    pj2 = torch.where(distinct, c1j, torch.where(u <= w, c2j, c1j))
    single = sv <= pc
    moves = torch.zeros(n, 6, dtype=torch.int64, device=dev)
    has = deficit != 0
    moves[ar, sj] ^= torch.where(has & single, dv, 0)
    moves[ar, pj1] ^= torch.where(has & ~single, x1, 0)
    moves[ar, pj2] ^= torch.where(has & ~single, x2, 0)
    opt = g ^ moves  # (n, 6)
    t_bits = opt & 1
    rho_want = opt >> 1
    pat = cp[hw, pi.view(n, 1), t_bits]  # (n, 6)
    b = (pat.unsqueeze(-1) >> torch.arange(4, device=dev)) & 1  # (n, 6, 4)
    b = b.reshape(n, 24)
    e24 = eps.view(n, 1).expand(n, 24)
    idx = (b * 2 + e24).unsqueeze(-1)  # flat (b, eps) index
    p = pbest.reshape(n, 24, 4).gather(2, idx).squeeze(-1)  # (n, 24)
    dl = delta.reshape(n, 24, 4).gather(2, idx).squeeze(-1).view(n, 6, 4)
    flip_row = dl.argmin(dim=-1)  # (n, 6): the first row of least penalty
    need = (p.view(n, 6, 4).sum(-1) & 1) != rho_want  # (n, 6)
    flip = torch.zeros(n, 6, 4, dtype=torch.int64, device=dev)
    flip.scatter_(2, flip_row.unsqueeze(-1), need.to(torch.int64).unsqueeze(-1))
    p = p ^ flip.view(n, 24)
    a = e24 + 2 * b + 4 * p
    v = cand.gather(2, a.unsqueeze(-1)).squeeze(-1)
    return v + 8.0 * base, unsure


def leech_nearest_int(
    y: torch.Tensor, *, chunk: int | None = None, dp32: bool = True, fns=None, pad=False
) -> torch.Tensor:
    """Nearest points of :math:`\\sqrt8\\Lambda_{24}` to the rows of ``y`` (float64, (n, 24)).

    ``dp32=True`` runs the 256-way search in float32 and redoes the (rare) points it
    cannot certify with the float64 search: the result is the same as with
    ``dp32=False``, with half the memory traffic.  ``fns`` = ``(fn32, fn64)`` replaces
    the chunk functions (e.g. compiled ones); ``pad`` is passed to :func:`_chunked`.
    """
    if y.shape[0] == 0:
        return y.clone()
    fn32, fn64 = fns if fns is not None else (_leech_nearest_chunk32, _leech_nearest_chunk)
    if not dp32:
        return _chunked(fn64, y, chunk, pad=pad)
    v, unsure = _chunked(fn32, y, chunk, pad=pad)
    redo = unsure.nonzero().squeeze(1)
    if redo.numel():
        v = v.index_copy(0, redo, _chunked(fn64, y[redo], chunk, pad=pad))
    return v


# ---------------------------------------------------------------------------
# Nearest minimal vector (largest inner product)
# ---------------------------------------------------------------------------


def _nearest_minvec_chunk(x: torch.Tensor):
    tab = _tables(x.device)
    hexa, cp, pb = tab["hexa"], tab["cp"], tab["pb"]
    octads, info, pair = tab["octads"], tab["info"], tab["pair"]
    n = x.shape[0]
    dt = x.dtype
    dev = x.device
    ar = torch.arange(n, device=dev)
    ax = x.abs()
    neg = x < 0

    # shape 1: (±4, ±4) on the two largest |x_i|
    # leechlib's rule: the first largest |x_i|, then the first largest of the others
    m1, t1 = ax.max(dim=1)
    m2, t2 = ax.scatter(1, t1.view(n, 1), -1.0).max(dim=1)
    score1 = 4.0 * (m1 + m2)
    i1 = torch.minimum(t1, t2)
    j1 = torch.maximum(t1, t2)
    s1 = neg[ar, i1].to(torch.int64) + 2 * neg[ar, j1].to(torch.int64)
    idx1 = 4 * pair[i1, j1] + s1

    # shape 2: ±2 on an octad, even number of minus signs (sums and sign counts by a
    # matmul with the 0/1 octad matrix; only the minimum needs the (n, 759, 8) gather)
    om = tab["octad_matrix"].to(dt)  # (24, 759)
    osum = ax @ om
    odd = (neg.to(dt) @ om).to(torch.int64) & 1
    mn, mr = ax[:, octads].min(dim=-1)
    score2_all = 2.0 * (osum - 2.0 * odd.to(dt) * mn)
    score2, k2 = score2_all.max(dim=1)
    minus = neg[ar.view(n, 1), octads[k2]].to(torch.int64)  # (n, 8)
    fix = odd[ar, k2]
    minus[ar, mr[ar, k2]] ^= fix
    bits = (minus[:, :7] << torch.arange(7, device=dev)).sum(1)
    idx2 = 1104 + 128 * k2 + bits

    # shape 3: signs (-1)^c with -3 at one coordinate k.  As in leechlib: for each k a
    # soft (maximum-likelihood) Golay decode of x with x_k replaced by -3 x_k, whose
    # value is sum(x') - 2 min_c sum_{c_i = 1} x'_i; the first k of the largest value
    # wins, and its codeword is the first minimiser in leechlib's (w, pi) order, each
    # column taking its cheaper top bit (0 on ties) and, on a parity mismatch, the
    # first column of least gap flipping it.  Only column k // 4 changes with k.
    pbf = pb.to(dt)  # (16, 4)
    xc = x.view(n, 6, 4)
    c16 = xc @ pbf.T  # (n, 6, 16): cost of each column pattern, sum of its set rows
    kk = torch.arange(24, device=dev)
    jk = kk // 4
    c16k = c16[:, jk] - 4.0 * x.unsqueeze(-1) * pbf[:, kk % 4].T  # (n, 24, 16)

    def golay_tables(c):  # (..., 16) -> min, top bit, gap, each (..., 4 s, 2 pi)
        c0 = c[..., cp[:, :, 0]]
        c1 = c[..., cp[:, :, 1]]
        return torch.minimum(c0, c1), (c1 < c0).to(torch.int64), (c1 - c0).abs()

    gm, gg, gd = golay_tables(c16)  # (n, 6, 4, 2)
    gmk, ggk, gdk = golay_tables(c16k)  # (n, 24, 4, 2)
    cols = torch.arange(6, device=dev)
    # per column j and word w (symbol hexa[w, j]): (n, 6, 64, 2)
    GM = gm[:, cols.view(6, 1), hexa.T]
    GG = gg[:, cols.view(6, 1), hexa.T]
    GD = gd[:, cols.view(6, 1), hexa.T]
    S = GM.sum(1)  # (n, 64, 2)
    G = GG.sum(1)
    inf = torch.full_like(GD[:, :1], math.inf)
    pre = torch.cat([inf, GD[:, :-1]], 1).cummin(1).values  # min over columns < j
    suf = torch.cat([GD[:, 1:], inf], 1).flip(1).cummin(1).values.flip(1)  # > j
    DEX = torch.minimum(pre, suf)  # min gap over the columns other than j
    hk = hexa.T[jk]  # (24, 64): the symbol of column k // 4 in each word
    GMK = gmk[:, kk.view(24, 1), hk]  # (n, 24, 64, 2)
    GGK = ggk[:, kk.view(24, 1), hk]
    GDK = gdk[:, kk.view(24, 1), hk]
    Sk = S.unsqueeze(1) - GM[:, jk] + GMK
    mism = ((G.unsqueeze(1) - GG[:, jk] + GGK) & 1) != torch.arange(2, device=dev)
    cost = Sk + torch.where(mism, torch.minimum(DEX[:, jk], GDK), torch.zeros_like(Sk))
    cbest, wp = cost.reshape(n, 24, 128).min(dim=-1)  # index 2 w + pi: leechlib's order
    val = (x.sum(1, keepdim=True) - 4.0 * x) - 2.0 * cbest  # (n, 24)
    score3, k3 = val.max(dim=1)  # first k of the largest value
    wpk = wp[ar, k3]
    w3 = wpk // 2
    pi3 = wpk % 2
    j3 = k3 // 4
    hw = hexa[w3]  # (n, 6)
    tb = GG[ar, :, w3, pi3]  # (n, 6) top bits of the unmodified columns
    gp = GD[ar, :, w3, pi3]
    tb[ar, j3] = GGK[ar, k3, w3, pi3]
    gp[ar, j3] = GDK[ar, k3, w3, pi3]
    rj = gp.argmin(dim=1)  # the first column of least gap
    flip = (tb.sum(1) & 1) != pi3
    tb[ar, rj] ^= flip.to(torch.int64)
    pat = cp[hw, pi3.view(n, 1), tb]  # (n, 6)
    cbits = ((pat.unsqueeze(-1) >> torch.arange(4, device=dev)) & 1).reshape(n, 24)
    msg = (cbits[:, info] << torch.arange(12, device=dev)).sum(1)
    idx3 = 98256 + 24 * msg + k3

    scores = torch.stack([score1, score2, score3], dim=1)
    which = scores.argmax(dim=1)  # first maximum: lower shape (lower index) wins ties
    idx = torch.stack([idx1, idx2, idx3], dim=1).gather(1, which.view(n, 1)).squeeze(1)
    return idx


def nearest_minvec_int(x: torch.Tensor, *, chunk: int | None = None):
    """Index (leechlib order) of the minimal vector with the largest inner product with each row."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=x.device)
    if chunk is None:
        chunk = DEFAULT_CHUNK_MINVEC.get(x.device.type, 256)
    return _chunked(_nearest_minvec_chunk, x, chunk)
