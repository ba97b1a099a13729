r"""Per coset of the constrained search: the Lagrangian dual and the dynamic programme.

The two exact per-coset solvers of :func:`leechlib._kernels.constrained.search_one`
(the problem, the bounds and the exactness argument are in that module's docstring),
for the coset ``(eps, w)`` of :math:`4D_{24}` (``w`` a Golay codeword as a 24-bit
int):

* :func:`_dual`: the coset's Lagrangian dual, maximised over the multiplier of the
  norm constraint (concave, piecewise linear; each value costs one pass over the 24
  coordinates, :func:`_lagrangian`).  It prunes the coset, solves it (a feasible
  minimiser with complementary slackness is the coset's optimum), or gives a lower
  bound;
* :func:`_dp`: the exact DP over the coordinates with the partial norm as state,
  pruned by the search's threshold (see "Per coset: dual, then DP" in
  :mod:`leechlib._kernels.constrained`); :func:`_candidates` builds its per-coordinate
  candidate tables lazily.

:func:`class_tables` builds the values each coordinate of a coset can take (per
residue class mod 4, with the norm step and the parity of each value): plain Python,
run once per norm by :mod:`leechlib.constrained`.  The rest is plain numeric code
compiled inline into the search (``NUMBA_DISABLE_JIT=1`` runs it as Python); the
scratch buffers ``sc`` are those of
:func:`leechlib._kernels.constrained.scratch`.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import jit

__all__ = ["class_tables"]

_INF = float("inf")


def class_tables(n_hi: int):
    """Values of each residue class ``c`` mod 4 with ``v^2 <= n_hi`` and their data.

    Returns ``(vals, nv, step, vpar)``: int64 arrays of shape (4, K), (4,), (4, K),
    (4, K): the values ascending, their count, the norm step (``v^2 / 4`` for even
    classes, ``(v^2 - 1) / 8`` for odd ones) and the parity of ``k = (v - c) / 4``.
    """
    b = math.isqrt(max(int(n_hi), 0))
    lists = [[v for v in range(-b, b + 1) if v % 4 == c and v * v <= n_hi] for c in range(4)]
    K = max(1, max(len(lst) for lst in lists))
    vals = np.zeros((4, K), dtype=np.int64)
    nv = np.zeros(4, dtype=np.int64)
    step = np.zeros((4, K), dtype=np.int64)
    vpar = np.zeros((4, K), dtype=np.int64)
    for c, lst in enumerate(lists):
        nv[c] = len(lst)
        for k, v in enumerate(lst):
            vals[c, k] = v
            step[c, k] = v * v // 4 if c % 2 == 0 else (v * v - 1) // 8
            vpar[c, k] = ((v - c) // 4) & 1
    return vals, nv, step, vpar


@jit(inline="always")
def _coord_min(y, i, c, vals, nv, k0, mincost):
    """The value of class ``c`` at or below ``y_i`` (clipped) and the least cost."""
    q = 4 * i + c
    n = nv[c]
    if n == 0:
        mincost[q] = _INF
        k0[q] = 0
        return
    yi = y[i]
    k = int(math.floor((yi - vals[c, 0]) * 0.25))
    k = min(max(k, 0), n - 1)
    k0[q] = k
    d = yi - vals[c, k]
    mc = d * d
    if k + 1 < n:
        d = yi - vals[c, k + 1]
        mc = min(mc, d * d)
    mincost[q] = mc


@jit(inline="always")
def _candidates(y, i, c, vals, nv, K, k0, cst, order):
    """Costs of the values of class ``c`` at ``y_i`` and their order by cost.

    A zig-zag from the value at or below ``y_i`` (the values of a class are an
    arithmetic progression), ties to the smaller value.
    """
    n = nv[c]
    yi = y[i]
    b = (4 * i + c) * K
    for k in range(n):
        d = yi - vals[c, k]
        cst[b + k] = d * d
    lo = k0[4 * i + c]
    hi = lo + 1
    for r in range(n):
        if hi >= n or (lo >= 0 and cst[b + lo] <= cst[b + hi]):
            order[b + r] = lo
            lo -= 1
        else:
            order[b + r] = hi
            hi += 1


@jit(inline="always")
def _dp(y, eps, w, n_lo, n_hi, vals, nv, step, vpar, sc, T, thr0):
    """Exact constrained optimum of coset (eps, w) if below ``thr0``, else inf.

    ``w``: the Golay codeword as a 24-bit int.  On success the point is in
    ``sc[19]`` and its distance (sum of (y_i - v_i)^2 in coordinate order) returned.
    """
    k0 = sc[0]
    mincost = sc[1]
    built = sc[2]
    cst = sc[3]
    order = sc[4]
    coef = sc[10]
    lag = sc[11]
    buf = sc[14]
    choice = sc[15]
    stamp = sc[26]
    live = sc[27]
    suf = sc[16]
    lsuf = sc[17]
    minrem = sc[18]
    vout = sc[19]
    K = vals.shape[1]
    W = n_hi // 4 + 2  # stride of the state axis
    if eps == 0:
        S = n_hi // 4
        s_lo = (n_lo + 3) // 4
    else:
        if n_hi < 24:
            return _INF
        S = (n_hi - 24) // 8
        s_lo = (n_lo - 24 + 7) // 8 if n_lo > 24 else 0
    if s_lo > S:
        return _INF
    suf[24] = 0.0
    minrem[24] = 0
    for r in range(T):
        lsuf[25 * r + 24] = 0.0
    for i in range(23, -1, -1):
        c = eps + 2 * ((w >> i) & 1)
        if built[4 * i + c] == 0:
            _coord_min(y, i, c, vals, nv, k0, mincost)
            built[4 * i + c] = 1
        suf[i] = suf[i + 1] + mincost[4 * i + c]
        minrem[i] = minrem[i + 1] + (0 if c == 0 else (4 if c == 2 else 1))
        for r in range(T):
            lsuf[25 * r + i] = lsuf[25 * r + i + 1] + lag[96 * r + 4 * i + c]
    if suf[0] >= thr0 or minrem[0] > n_hi:
        return _INF
    # states (partial norm index s, parity p of sum(k)) kept in lists of live s per
    # step; a state's slots are initialised on first write (stamp = step number)
    gen = stamp[2 * W]
    buf[0] = 0.0
    buf[1] = _INF
    live[0] = 0
    nl = 1
    cur = 0
    for i in range(24):
        gen += 1
        c = eps + 2 * ((w >> i) & 1)
        n = nv[c]
        q = 4 * i + c
        if built[q] == 1:
            _candidates(y, i, c, vals, nv, K, k0, cst, order)
            built[q] = 2
        b = q * K
        nx = 1 - cur
        thr = thr0 - suf[i + 1]
        mc = mincost[q]
        rem = minrem[i + 1]
        nn = 0
        for li in range(nl):
            s = live[W * cur + li]
            for p in range(2):
                base = buf[2 * (W * cur + s) + p]
                if base + mc >= thr:
                    continue
                for kk in range(n):
                    k = order[b + kk]
                    cc = base + cst[b + k]
                    if cc >= thr:
                        break
                    s2 = s + step[c, k]
                    if s2 > S:
                        continue
                    nrm = 4 * s2 if eps == 0 else 8 * s2 + i + 1
                    if nrm + rem > n_hi:
                        continue
                    ok = True
                    for r in range(T):
                        if cc + lsuf[25 * r + i + 1] - coef[4 * r + 2] * (coef[4 * r + 3] - nrm) \
                                >= thr0:
                            ok = False
                            break
                    if not ok:
                        continue
                    o2 = W * nx + s2
                    if stamp[o2] != gen:
                        stamp[o2] = gen
                        buf[2 * o2] = _INF
                        buf[2 * o2 + 1] = _INF
                        live[W * nx + nn] = s2
                        nn += 1
                    p2 = p ^ vpar[c, k]
                    if cc < buf[2 * o2 + p2]:
                        buf[2 * o2 + p2] = cc
                        choice[2 * (W * i + s2) + p2] = k
        cur = nx
        nl = nn
        if nl == 0:
            stamp[2 * W] = gen
            return _INF
    stamp[2 * W] = gen
    best = _INF
    bs = -1
    for li in range(nl):
        s = live[W * cur + li]
        if s < s_lo:
            continue
        v = buf[2 * (W * cur + s) + eps]
        if v < best or (v == best and s < bs):
            best = v
            bs = s
    if bs < 0 or best == _INF:
        return _INF
    s = bs
    p = eps
    for i in range(23, -1, -1):
        c = eps + 2 * ((w >> i) & 1)
        k = choice[2 * (W * i + s) + p]
        vout[i] = vals[c, k]
        s -= step[c, k]
        p ^= vpar[c, k]
    return best


@jit(inline="always")
def _lagrangian(y, eps, w, lam, n_lo, n_hi, vals, nv, vpar, v):
    """The Lagrangian of coset (eps, w) at ``lam``: its minimiser over the coset into
    ``v`` and ``(value, slope, norm)``; ``value = -inf`` if the coset has no point.

    ``min_v ||y - v||^2 + lam (||v||^2 - n_ref)`` (``n_ref = n_hi`` for ``lam >= 0``, else
    ``n_lo``): per coordinate the value of the class nearest to ``y_i / (1 + lam)``
    (the values of a class are ``vals[c, 0] + 4k``), then, if ``sum(k)`` has the
    wrong parity, the cheapest change of one coordinate to a neighbouring value (the
    one on the side of ``y_i / (1 + lam)``: the cost is convex in the value) -- exact,
    as for the coset bounds.  ``slope = ||v||^2 - n_ref``.
    """
    zs = 1.0 / (1.0 + lam)
    tot = 0.0
    nrm = 0.0
    par = 0
    fl = _INF
    fi = -1
    fv = 0.0
    c0 = eps
    c1 = eps + 2
    a0 = float(vals[c0, 0])
    a1 = float(vals[c1, 0])
    m0 = nv[c0] - 1
    m1 = nv[c1] - 1
    for i in range(24):
        bit = (w >> i) & 1
        c = c1 if bit else c0
        v0 = a1 if bit else a0
        mk = m1 if bit else m0
        yi = y[i]
        z = yi * zs
        k = int(math.floor((z - v0) * 0.25 + 0.5))
        k = min(max(k, 0), mk)
        x = v0 + 4.0 * k
        d = yi - x
        cost = d * d + lam * x * x
        tot += cost
        nrm += x * x
        par ^= vpar[c, k]
        v[i] = x
        # the neighbour of the other parity towards z (or the only one); branch-free
        up = ((z > x) & (k < mk)) | (k == 0)
        u = x + 4.0 if up else x - 4.0
        ok = (k < mk) if up else (k > 0)
        d = yi - u
        f = d * d + lam * u * u - cost
        f = f if ok else _INF
        better = f < fl
        fl = min(fl, f)
        fi = i if better else fi
        fv = u if better else fv
    if par != eps:
        if fi < 0:
            return -_INF, 0.0, 0.0
        tot += fl
        nrm += fv * fv - v[fi] * v[fi]
        v[fi] = fv
    n_ref = n_hi if lam >= 0.0 else n_lo
    return tot - lam * n_ref, nrm - n_ref, nrm


@jit(inline="always")
def _dual(y, eps, w, T, n_lo, n_hi, vals, nv, vpar, thr, v, sc):
    """Bound coset (eps, w) by its Lagrangian dual, maximised over the multiplier.

    Returns ``(0, q)`` if some value ``q`` of the dual reaches ``thr`` (the coset
    cannot beat it), ``(1, d)`` if a minimiser is feasible with complementary
    slackness (it is the coset's constrained optimum, at distance ``d``, in ``v``),
    else ``(2, q)`` with ``q`` the best dual value found (a lower bound of the
    coset's optimum): a DP is needed.  The dual is concave and piecewise linear in
    the multiplier: from the search's first multiplier (and its second, if any, on
    the side of the maximum) it steps out until the slopes bracket the maximum, then
    cuts at the intersections of the tangents, stopping as soon as that
    intersection (an upper bound of the maximum) falls below ``thr``.
    """
    coef = sc[10]
    a = 0.0
    qa = 0.0
    sa = 0.0
    b = 0.0
    qb = 0.0
    sb = 0.0
    ha = False
    hb = False
    lam = coef[2]
    stp = 0.05
    qbest = -_INF
    lam1 = coef[6] if T > 1 else _INF
    for _ in range(10):
        q, sl, nrm = _lagrangian(y, eps, w, lam, n_lo, n_hi, vals, nv, vpar, v)
        if q == -_INF:
            return 0, q
        if n_lo <= nrm <= n_hi and (lam == 0.0 or sl == 0.0):
            d = 0.0
            for i in range(24):
                e = y[i] - v[i]
                d += e * e
            return 1, d
        qbest = max(qbest, q)
        if q >= thr:
            return 0, q
        if sl > 0.0 or (lam == 0.0 and nrm > n_hi):
            a = lam
            qa = q
            sa = nrm - n_hi if lam == 0.0 else sl
            ha = True
        else:
            b = lam
            qb = q
            sb = nrm - n_lo if lam == 0.0 else sl
            hb = True
        if ha and hb:
            if not (sa > 0.0 and sb < 0.0 and a < b):
                break
            lx = (qb - qa + sa * a - sb * b) / (sa - sb)
            ux = qa + sa * (lx - a)
            if ux < thr or not (a < lx < b) or ux - qbest <= 1e-12 * (1.0 + abs(ux)):
                break
            lam = lx
        elif ha:
            lam = lam1 if a < lam1 < _INF else a + stp
            lam1 = _INF
            stp *= 2.0
        else:
            lam = lam1 if lam1 < b else b - stp
            lam1 = _INF
            stp *= 2.0
            if lam <= -0.5:
                lam = 0.5 * (b - 0.5)
                if b <= -0.49:
                    break
    return 2, qbest
