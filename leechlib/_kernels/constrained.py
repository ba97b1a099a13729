r"""The exact nearest Leech lattice point under a norm constraint: a best-first search
over the cosets of 4*D24 (Numba kernels).

Problem
-------
Given ``y`` in R^24 in the integer frame (the lattice is sqrt(8)*Lambda24, MOG
coordinates) and integers ``n_lo <= n_hi``, find

    v* = argmin { ||y - v||^2 : v in sqrt(8)*Lambda24, n_lo <= ||v||^2 <= n_hi }.

``n_lo = 0`` is a ball (spherical shaping, :class:`~leechlib.BallQuantizer`),
``n_lo = n_hi`` a shell (the shapes of :class:`~leechlib.ShapeGainQuantizer`: for
points of one norm, the nearest one is the one of largest inner product).
:func:`search_one` solves it for one point; the batch loop, with the decode that
answers first whenever the nearest lattice point satisfies the constraint, is
:func:`leechlib._kernels.encode.encode_kernel`.

Coset structure
---------------
The lattice is the union of 8192 cosets (eps, u) of 4*D24, eps in {0, 1}, u a Golay
codeword: ``v_i = eps + 2 u_i + 4 k_i`` with ``sum(k) = eps (mod 2)``.  Inside one
coset the coordinates are independent except for two *additive* couplings: the
parity of ``sum(k)`` and the norm ``sum(v_i^2)``.  Each coordinate takes the values
of its residue class ``c = eps + 2 u_i (mod 4)`` with ``v^2 <= n_hi`` (the tables
``vals, nv, step, vpar`` of :func:`~leechlib._kernels.coset.class_tables`).
Through the MOG a codeword is a hexacode word h, a parity pi and six top bits of
parity pi (``docs/decoding.rst``, section "The derivation"), so a coset is numbered
``g * 64 + tops`` in the *group* ``g = (eps * 64 + h) * 2 + pi`` of its 32 cosets;
the pattern of column j is ``pat[(hexa[6 h + j] * 2 + pi) * 2 + (bit j of tops)]``.

Lagrangian bounds
-----------------
For ``t > 0`` put ``lam = 1/t - 1`` and ``n_ref = n_hi`` if ``lam >= 0``, ``n_lo``
otherwise.  Every feasible ``v`` satisfies ``lam (||v||^2 - n_ref) <= 0``, hence

    ||y - v||^2 >= ||y - v||^2 + lam (||v||^2 - n_ref)
                = (1/t) ||v - t y||^2 + (1 - t) ||y||^2 - lam n_ref,

and the minimum of the right side over a whole coset (the norm constraint dropped,
only ``v_i^2 <= n_hi`` per coordinate kept, which every feasible ``v`` satisfies) is
a lower bound of the coset's constrained optimum: per coordinate the value of its
class nearest to ``t y_i``, plus, if the parity of ``sum(k)`` is wrong, the cheapest
change of one coordinate to a neighbouring value (changing three or more is never
cheaper: penalties are >= 0).  Per (eps, column, 4-bit pattern) the column's sum,
parity and cheapest parity change are tabulated (16 patterns = 4 x 4 sums of pairs
of rows), so a coset bound is six lookups per multiplier.  The caller passes the
multipliers ``ts`` (T >= 1) and a bound is the maximum over them: for a ball the
scale probe of largest dual value, for a shell ``t = 0.93 t0`` and ``1.07 t0``
(multipliers of both signs, both valid for an equality).

* *Group keys*: a group is keyed by the sum over the columns of the cheaper top bit
  at the first multiplier (parities ignored), a lower bound of every coset bound of
  the group.
* *Pruned expansion*: the cosets of a group differ from its key by the differences
  ``d_j`` between the two top bits of the columns they flip.  A coset whose flips
  cost more than ``(best - constant) / multiplier - key sum`` cannot beat ``best``;
  with the ``d_j`` sorted, only the few flip sets below that budget (of the parity
  the group needs) are looked at, and only their cosets get a full bound.

Best-first search
-----------------
One heap (:mod:`leechlib._kernels.heap`) holds groups and cosets keyed by their
bounds.  Popping a group pushes its cosets; popping a coset visits it; the search
stops when the smallest key is ``>= best``: everything left is no better.  ``best``
starts at the caller's feasible point, if any (for a ball, a scale probe
``nearest(t y)`` inside it).  Without one, the coset of least bound of the group of
least key is visited first (the start), and then a *key window* keeps only the
groups and cosets with keys below the start's key + 2 (then + 4, 8, ..., never above
``best``) in the heap, with a sentinel entry of the window's key: when the sentinel
comes first the window widens, and the groups already expanded push their cosets of
the new band.  Every coset with a bound below ``best`` is still visited, but the
many far above the answer never enter the heap.

Per coset: dual, then DP
------------------------
A visited coset first gets its own Lagrangian dual, maximised over the multiplier
(:func:`~leechlib._kernels.coset._dual`): it prunes the coset (a dual value
``>= best``), or solves it (a feasible minimiser with complementary slackness is the
coset's optimum), or raises its key; then the coset goes back into the heap with
that key and gets its DP only if it comes first again -- usually a better point has
been found by then and the DP runs with a tight threshold, or never.

The DP (:func:`~leechlib._kernels.coset._dp`) is exact over the coordinates,
with the state (partial norm, partial parity of ``sum(k)``).  Norm steps are
multiples of 4 (eps = 0: every ``v_i`` is even) or ``v_i^2 = 1 (mod 8)`` (eps = 1);
the state index is ``norm / 4`` (eps = 0) or ``(norm - i) / 8`` after ``i``
coordinates (eps = 1), so there are at most ``n_hi / 4 + 1`` norms times 2
parities.  Per coordinate the candidate values are visited in increasing cost (the
tables are built the first time a DP needs that coordinate and class) and the loop
stops at the first that reaches the threshold.  A partial state after coordinate
``i`` with cost ``c`` and partial norm ``R`` is dropped when ``c`` plus a lower bound
of every completion reaches the threshold: the least cost of each remaining
coordinate, and for each multiplier ``lam`` of the search
``sum_{j>i} min_v [(y_j - v)^2 + lam v^2] - lam (n_ref - R)`` (the remaining norm
lies in ``[n_lo - R, n_hi - R]``); and when its norm cannot stay within ``n_hi`` (the
remaining coordinates of class 2 add at least 4 each, the odd ones 1).  With no
feasible point yet the thresholds are the key + 16, + 64, then none: a DP below a
threshold is exact among the points below it.

Exactness
---------
Every key is a lower bound of the distances it stands for, so every coset whose
constrained optimum is strictly below the final ``best`` is visited, and the dual
and DP of a visited coset find every point strictly better than the ``best``
current when they run: the result is a constrained nearest point.  Floating point:
bounds and partial sums are compared with a slack of ``1e-9 (1 + ||y||^2 + n_hi)``,
far above the rounding error, so rounding can only make the search visit more, never
skip.  Final distances are sums of ``(y_i - v_i)^2`` in coordinate order, the same
for every candidate.  Ties: the first coset in visiting order reaching the minimum
wins, and within a coset the DP keeps the first partial solution of least cost
(values in increasing cost, ties to the smaller value): deterministic, but not a
documented order.

Every table of a point lives in flat buffers allocated once per chunk of points
(:func:`scratch`).  References in the tests: the same DP over all 8192 cosets in
plain numpy (:func:`~leechlib._kernels.reference.constrained_reference`), brute
force over explicit codebooks (``tests/test_quantizers.py``) and the original
kernel and wrappers (``benchmarks/original_encoders.py``, ``tests/test_encode.py``).
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import jit
from .coset import _dp, _dual
from .heap import heap_pop, heap_push, sift_down

__all__ = ["search_one", "scratch", "hoff4_table"]

_INF = np.inf
#: first width of the search window above the start's key (see :func:`search_one`)
_WIN0 = 2.0
#: heap value of the window's sentinel (groups are -1 - g >= -256, cosets >= 0)
_SENTINEL = -1000
#: added to a coset's number when its dual is done and its DP is due
_DEFERRED = 16384


@jit
def scratch(T, K, n_hi):
    """Scratch buffers of :func:`search_one` (``T`` multipliers, ``K`` values per class)."""
    S = n_hi // 4 + 1
    return (
        np.zeros(96, dtype=np.int64),  # 0 k0[4i + c]: the value at or below y_i (clipped)
        np.empty(96),  # 1 mincost[4i + c]
        np.zeros(96, dtype=np.int64),  # 2 built[4i + c]: 1 k0 and mincost, 2 the candidates too
        np.empty(96 * K),  # 3 cst[(4i + c) K + k]
        np.zeros(96 * K, dtype=np.int64),  # 4 order
        np.empty(96 * 3),  # 5 per coordinate at t: min cost, its flip penalty, parity
        np.empty(384 * T),  # 6 col[384 r + 192 eps + 16 j + P]: column sums
        np.empty(384 * T),  # 7 cfl: cheapest parity flip of the column
        np.zeros(384 * T, dtype=np.int64),  # 8 cpa: parity of the column
        np.empty(96 * T),  # 9 gm[96 r + 4 (4 j + sym) + 2 eps + pi]: cheaper top bit
        np.empty(4 * T),  # 10 coef[4 r + .]: 1/t, constant, lambda, n_ref
        np.empty(96 * T),  # 11 lag[96 r + 4 i + c]: per-coordinate Lagrangian minima
        np.empty(8192 + 256),  # 12 heap keys
        np.zeros(8192 + 256, dtype=np.int64),  # 13 heap values
        np.empty(2 * (S + 1) * 2),  # 14 DP costs [(cur, s, p)]
        np.zeros(24 * (S + 1) * 2, dtype=np.int64),  # 15 DP choices [(i, s, p)]
        np.empty(25),  # 16 suf
        np.empty(25 * T),  # 17 lsuf[25 r + i]
        np.zeros(25, dtype=np.int64),  # 18 minrem
        np.zeros(24, dtype=np.int64),  # 19 vout
        np.empty(12),  # 20 expansion: d_j, a_j
        np.zeros(6, dtype=np.int64),  # 21 expansion: order of the columns
        np.empty(24),  # 22 column pairs
        np.zeros(8, dtype=np.int64),  # 23 expansion stack: next position
        np.zeros(8, dtype=np.int64),  # 24 expansion stack: flip mask
        np.empty(8),  # 25 expansion stack: sum of differences
        np.zeros(2 * (S + 1) + 1, dtype=np.int64),  # 26 DP stamps [(cur, s)], then the step count
        np.zeros(2 * (S + 1), dtype=np.int64),  # 27 DP live states [(cur, .)]
        np.empty(24),  # 28 the minimiser of a coset's Lagrangian
        np.empty(256),  # 29 group keys
        np.zeros(12, dtype=np.int64),  # 30 column patterns of the group being expanded
        np.zeros(256, dtype=np.int64),  # 31 groups expanded
    )


@jit(inline="always")
def _prepare(y, n_lo, n_hi, ts, vals, nv, vpar, pat, sc):
    """Per-point tables (see :func:`scratch`); returns ``||y||^2``."""
    built = sc[2]
    mt = sc[5]
    col = sc[6]
    cfl = sc[7]
    cpa = sc[8]
    gm = sc[9]
    coef = sc[10]
    lag = sc[11]
    pr = sc[22]
    T = ts.shape[0]
    ynorm = 0.0
    for i in range(24):
        yi = y[i]
        ynorm += yi * yi
        for c in range(4):
            built[4 * i + c] = 0  # k0, mincost and the candidates: on a DP's demand
    for r in range(T):
        t = ts[r]
        lam = 1.0 / t - 1.0
        n_ref = n_hi if lam >= 0.0 else n_lo
        coef[4 * r] = 1.0 / t
        coef[4 * r + 1] = (1.0 - t) * ynorm - lam * n_ref
        coef[4 * r + 2] = lam
        coef[4 * r + 3] = n_ref
        # per coordinate and class at t y: least (t y_i - v)^2, the penalty to flip
        # the parity of k (a neighbouring value), that parity
        for i in range(24):
            z = t * y[i]
            e = (1.0 - t) * y[i] * y[i]
            for c in range(4):
                q = 4 * i + c
                n = nv[c]
                if n == 0:
                    mt[3 * q] = _INF
                    mt[3 * q + 1] = _INF
                    mt[3 * q + 2] = 0.0
                    lag[96 * r + q] = _INF
                    continue
                k = int(math.floor((z - vals[c, 0]) * 0.25 + 0.5))
                k = min(max(k, 0), n - 1)
                d = z - vals[c, k]
                d0 = d * d
                d1 = _INF
                if k > 0:
                    d = z - vals[c, k - 1]
                    d1 = d * d
                if k < n - 1:
                    d = z - vals[c, k + 1]
                    d1 = min(d1, d * d)
                mt[3 * q] = d0
                mt[3 * q + 1] = d1 - d0
                mt[3 * q + 2] = vpar[c, k]
                lag[96 * r + q] = d0 / t + e

        # column tables: pattern P = bits (b0, b1, b2, b3) of the rows; the sums of
        # rows 0-1 and of rows 2-3 first (pr), then the 16 patterns
        for eps in range(2):
            for j in range(6):
                o = 384 * r + 192 * eps + 16 * j
                for h in range(2):
                    for a in range(4):
                        qa = 3 * (4 * (4 * j + 2 * h) + eps + 2 * (a & 1))
                        qb = 3 * (4 * (4 * j + 2 * h + 1) + eps + 2 * (a >> 1))
                        pr[4 * h + a] = mt[qa] + mt[qb]
                        pr[8 + 4 * h + a] = min(mt[qa + 1], mt[qb + 1])
                        pr[16 + 4 * h + a] = int(mt[qa + 2]) ^ int(mt[qb + 2])
                for P in range(16):
                    a = P & 3
                    b = 4 + (P >> 2)
                    col[o + P] = pr[a] + pr[b]
                    cfl[o + P] = min(pr[8 + a], pr[8 + b])
                    cpa[o + P] = int(pr[16 + a]) ^ int(pr[16 + b])
        # per (column, symbol, eps, pi) the cheaper top bit: the group keys' terms
        for eps in range(2):
            for pi in range(2):
                for j in range(6):
                    for sym in range(4):
                        b = (sym * 2 + pi) * 2
                        o = 384 * r + 192 * eps + 16 * j
                        gm[96 * r + 4 * (4 * j + sym) + 2 * eps + pi] = min(col[o + pat[b]],
                                                                             col[o + pat[b + 1]])
    return ynorm


@jit(inline="always")
def _push_groups(gk, hk, hv, nh, lo, hi):
    """Append the groups with key in ``[lo, hi)`` and re-heapify."""
    for g in range(256):
        if lo <= gk[g] < hi:
            hk[nh] = gk[g]
            hv[nh] = -1 - g
            nh += 1
    for i in range(nh // 2 - 1, -1, -1):
        sift_down(hk, hv, nh, i)
    return nh


@jit(inline="always")
def _coset_key(eps, tops, T, colpat, col, cfl, cpa, coef):
    """Lagrangian bound of the coset with top bits ``tops`` (max over the multipliers)."""
    val = -_INF
    for r in range(T):
        s = 0.0
        par = eps
        fl = _INF
        for j in range(6):
            o = 384 * r + 192 * eps + colpat[2 * j + ((tops >> j) & 1)]
            s += col[o]
            par ^= cpa[o]
            fl = min(fl, cfl[o])
        if par != 0:
            s += fl
        val = max(val, coef[4 * r] * s + coef[4 * r + 1])
    return val


@jit(inline="always")
def _columns(g, hexa, pat, sc):
    """The columns of group ``g`` at the first multiplier: their two pattern offsets
    into ``sc[30]``, the difference between their two top bits' sums into ``sc[20]``;
    returns the cheaper top bits and the sum of the cheaper columns."""
    col = sc[6]
    dd = sc[20]
    colpat = sc[30]
    eps = g // 128
    h = (g % 128) // 2
    pi = g % 2
    bits = 0
    base = 0.0
    for j in range(6):
        b = (hexa[6 * h + j] * 2 + pi) * 2
        colpat[2 * j] = 16 * j + pat[b]
        colpat[2 * j + 1] = 16 * j + pat[b + 1]
        a0 = col[192 * eps + colpat[2 * j]]
        a1 = col[192 * eps + colpat[2 * j + 1]]
        if a1 < a0:
            bits |= 1 << j
            base += a1
            dd[j] = a0 - a1
        else:
            base += a0
            dd[j] = a1 - a0
    return bits, base


@jit(inline="always")
def _expand(g, hexa, pat, T, sc, lo, hi, nh, skip):
    """Push the cosets of group ``g`` with a bound in ``[lo, hi)``.

    Returns the heap size.  Only the flip sets (columns moved off their cheaper top
    bit at the first multiplier) whose differences fit the budget of ``hi`` are
    looked at: a depth-first enumeration over the differences sorted ascending, cut
    at the first that overflows (with ``hi = inf``, all 32).  The coset ``skip``
    (the start, already visited) is left out.
    """
    col = sc[6]
    cfl = sc[7]
    cpa = sc[8]
    coef = sc[10]
    hk = sc[12]
    hv = sc[13]
    dd = sc[20]
    iw = sc[21]
    eps = g // 128
    pi = g % 2
    colpat = sc[30]
    bits, base = _columns(g, hexa, pat, sc)
    for j in range(6):
        # insertion sort of the columns by difference (iw[0:6])
        k = j
        while k > 0 and dd[iw[k - 1]] > dd[j]:
            iw[k] = iw[k - 1]
            k -= 1
        iw[k] = j
    pc = 0
    for j in range(6):
        pc += (bits >> j) & 1
    need = (pc + pi) & 1  # parity of the number of flips
    budget = _INF
    if hi < _INF:
        budget = (hi - coef[1]) / coef[0] - base
        budget += 1e-12 * (1.0 + abs(budget) + base)  # a pre-filter: err on the wide side
    if need == 0:
        val = _coset_key(eps, bits, T, colpat, col, cfl, cpa, coef)
        if lo <= val < hi and g * 64 + bits != skip:
            nh = heap_push(hk, hv, nh, val, g * 64 + bits)
    # depth-first over the sorted differences: stack of (next position, sum, mask)
    ks = sc[23]
    ms = sc[24]
    tots = sc[25]
    top = 0
    ks[0] = 0
    ms[0] = 0
    tots[0] = 0.0
    while top >= 0:
        k = ks[top]
        if k >= 6:
            top -= 1
            continue
        t2 = tots[top] + dd[iw[k]]
        if t2 > budget:
            top -= 1
            continue
        ks[top] = k + 1
        m2 = ms[top] | (1 << iw[k])
        if ((top + 1) & 1) == need:
            tops = bits ^ m2
            val = _coset_key(eps, tops, T, colpat, col, cfl, cpa, coef)
            if lo <= val < hi and g * 64 + tops != skip:
                nh = heap_push(hk, hv, nh, val, g * 64 + tops)
        top += 1
        ks[top] = k + 1
        ms[top] = m2
        tots[top] = t2
    return nh


@jit(inline="always")
def _seed(g, hexa, pat, sc):
    """The coset of group ``g`` with the least bound at the first multiplier, the
    parity of ``sum(k)`` aside: each column's cheaper top bit, and if their number of
    ones has the wrong parity, the column of least difference flipped.  Returns its
    top bits; fills the column patterns of the group (``sc[30]``)."""
    dd = sc[20]
    bits, _ = _columns(g, hexa, pat, sc)
    pc = 0
    dmin = _INF
    jmin = 0
    for j in range(6):
        pc += (bits >> j) & 1
        if dd[j] < dmin:
            dmin = dd[j]
            jmin = j
    if (pc & 1) != g % 2:
        bits ^= 1 << jmin
    return bits


@jit(inline="always")
def search_one(y, n_lo, n_hi, ts, ub_pt, has_ub, hexa, pat, hoff4, vals, nv, step, vpar, out,
               sc):
    """Constrained nearest point of one point into ``out``; returns (distance, cosets visited).

    Cosets are numbered ``g * 64 + tops`` with the group ``g = (eps * 64 + h) * 2 +
    pi`` (see the module docstring); ``hoff4[6 h + j] = 4 j + hexa[6 h + j]``.
    """
    T = ts.shape[0]
    ynorm = _prepare(y, n_lo, n_hi, ts, vals, nv, vpar, pat, sc)
    gm = sc[9]
    coef = sc[10]
    hk = sc[12]
    hv = sc[13]
    vout = sc[19]
    dv = sc[28]
    slack = 1e-9 * (1.0 + ynorm + n_hi)
    best = _INF
    if has_ub:
        d = 0.0
        for i in range(24):
            e = y[i] - ub_pt[i]
            d += e * e
            out[i] = ub_pt[i]
        best = d
    # group keys, four lanes (eps, pi) per hexacode word as in the Leech decoder
    gk = sc[29]
    for g in range(256):
        gk[g] = -_INF
    for r in range(T):
        o = 96 * r
        c0 = coef[4 * r]
        c1 = coef[4 * r + 1]
        for h in range(64):
            o0 = o + 4 * hoff4[6 * h]
            o1 = o + 4 * hoff4[6 * h + 1]
            o2 = o + 4 * hoff4[6 * h + 2]
            o3 = o + 4 * hoff4[6 * h + 3]
            o4 = o + 4 * hoff4[6 * h + 4]
            o5 = o + 4 * hoff4[6 * h + 5]
            for lane in range(4):
                sg = gm[o0 + lane] + gm[o1 + lane] + gm[o2 + lane] + gm[o3 + lane] \
                    + gm[o4 + lane] + gm[o5 + lane]
                g = 128 * (lane >> 1) + 2 * h + (lane & 1)
                gk[g] = max(gk[g], c0 * sg + c1)
    gmin = _INF
    garg = 0
    for g in range(256):
        if g >= 128 and n_hi < 24:
            gk[g] = _INF
        if gk[g] < gmin:
            gmin = gk[g]
            garg = g
    # with no upper bound, the coset of least bound (first multiplier) of the group
    # of least key is visited first (the start; it is not visited again).  Then a
    # window: only the groups and cosets with keys below ``lim`` (the start's key +
    # 2, 4, 8, ... and never above best) are in the heap, with a sentinel of key
    # ``lim``; when the sentinel comes first, the window widens (the groups with keys
    # in the new band are pushed, the groups already expanded push their cosets in
    # it).  So every coset with a bound below best is visited, as without a window,
    # but the many groups and cosets far above the answer never enter the heap.
    nh = 0
    pending = not (best < _INF)
    seed = -1
    gexp = sc[31]
    for g in range(256):
        gexp[g] = 0
    lim = _INF
    wid = _WIN0
    if pending:
        tops = _seed(garg, hexa, pat, sc)
        seed = garg * 64 + tops
        hk[0] = _coset_key(garg // 128, tops, T, sc[30], sc[6], sc[7], sc[8], coef)
        hv[0] = seed
        nh = 1
    else:
        nh = _push_groups(gk, hk, hv, nh, -_INF, best + slack)
    visited = 0
    while nh > 0:
        key = hk[0]
        item = hv[0]
        if key >= best + slack:
            break
        nh = heap_pop(hk, hv, nh)
        if item == _SENTINEL:
            new = min(lim + wid, best + slack)
            wid *= 2.0
            for g in range(256):
                if gexp[g] != 0:
                    nh = _expand(g, hexa, pat, T, sc, lim, new, nh, seed)
            nh = _push_groups(gk, hk, hv, nh, lim, new)
            lim = new
            if lim < best + slack:
                nh = heap_push(hk, hv, nh, lim, _SENTINEL)
            continue
        if item < 0:
            gexp[-1 - item] = 1
            nh = _expand(-1 - item, hexa, pat, T, sc, -_INF, min(best + slack, lim), nh, seed)
            continue
        deferred = item >= _DEFERRED
        if deferred:
            item -= _DEFERRED
        g = item // 64
        tops = item % 64
        eps = g // 128
        h = (g % 128) // 2
        pi = g % 2
        w = 0
        for j in range(6):
            w |= pat[(hexa[6 * h + j] * 2 + pi) * 2 + ((tops >> j) & 1)] << (4 * j)
        if not deferred:
            # the coset's own Lagrangian dual first: it may exceed best (no DP), have a
            # feasible minimiser (the coset's optimum, no DP), or raise the coset's
            # key: then it goes back into the heap with that key, and gets its DP only
            # when it comes first again (often never: a better point is found first)
            visited += 1
            code, d = _dual(y, eps, w, T, n_lo, n_hi, vals, nv, vpar, best + slack, dv, sc)
            if pending:
                lim = max(key, d) + wid
            if code == 1:
                if d < best:
                    best = d
                    for i in range(24):
                        out[i] = dv[i]
            elif code == 2:
                nh = heap_push(hk, hv, nh, max(key, d), item + _DEFERRED)
        else:
            # with no upper bound yet the thresholds are the key + 16, + 64, then
            # none (a DP below a threshold is exact among the points below it)
            delta = 16.0
            while True:
                if best < _INF:
                    thr = best + slack
                else:
                    thr = key + delta if delta < 100.0 else _INF
                d = _dp(y, eps, w, n_lo, n_hi, vals, nv, step, vpar, sc, T, thr)
                if best < _INF or d < _INF or thr == _INF:
                    break
                delta *= 4.0
            if d < best:
                best = d
                for i in range(24):
                    out[i] = vout[i]
        if pending:
            pending = False
            nh = _push_groups(gk, hk, hv, nh, -_INF, min(best + slack, lim))
            if lim < best + slack:
                nh = heap_push(hk, hv, nh, lim, _SENTINEL)
    return best, visited


@jit
def hoff4_table(hexa):
    """``4 j + hexa[6 h + j]`` for the 64 hexacode words (flat, 384)."""
    out = np.zeros(384, dtype=np.int64)
    for h in range(64):
        for j in range(6):
            out[6 * h + j] = 4 * j + hexa[6 * h + j]
    return out
