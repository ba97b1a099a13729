r"""Numba kernels of the trio code (:mod:`leechlib.trio`), each beside a plain-numpy reference.

Tables (built by :mod:`leechlib.trio`, all small, int64 unless said):

* ``tab`` (12, R, 8) int8: the canonical octet vectors of the 12 octet *classes*
  (integer model), rows sorted by norm; tier ``k`` is rows ``k*S .. (k+1)*S``;
* ``perm`` (2, 256, 8), ``sign`` (2, 256, 8): per ``(eps, pattern byte)`` the
  position of canonical coordinate ``i`` and its sign (eps = 1: identity and
  ``(-1)^{p_i}``; eps = 0: the pattern's odd positions first, signs +1);
* ``cls_of`` (2, 256, 2): the class of ``(eps, pattern byte, pi)``;
* ``gen_lo``, ``gen_hi`` (64,): the Golay codewords (packed) of the low and high
  6 message bits (the codeword of a message is their XOR);
* ``combos`` (C, 3): the allowed tier triples; ``allowed`` (T, T, T) bool;
* ``lo``, ``hi`` (12, T): norms in ``[lo, hi]`` lie wholly inside tier ``k``.

Index layout (low to high): ``i3, i2, i1`` (``b`` bits each, row within the tier),
combo (``cb`` bits), ``pi2, pi1`` (1 bit each), Golay message (12), ``eps`` (1).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import jit, pjit

# ---------------------------------------------------------------------------
# decode: index -> point
# ---------------------------------------------------------------------------


@jit
def split_index(x, b, cb, gen_lo, gen_hi):
    """The fields of index ``x``: ``(eps, pi1, pi2, combo, Golay word, i1, i2, i3)``.

    The pattern byte of octet ``j`` is ``(word >> 8 j) & 255`` and its class bit
    ``pi1``, ``pi2``, ``eps ^ pi1 ^ pi2``.
    """
    mask = (1 << b) - 1
    q = x >> (3 * b)
    c = q & ((1 << cb) - 1)
    q >>= cb
    m = (q >> 2) & 4095
    return (q >> 14, (q >> 1) & 1, q & 1, c, gen_lo[m & 63] ^ gen_hi[m >> 6],
            (x >> (2 * b)) & mask, (x >> b) & mask, x & mask)


@jit
def decode_block(x, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, out, o):
    """The codeword of index ``x`` (integer model) into ``out[o:o + 24]`` (any numeric dtype).

    The one decode of the trio code: the batch decode below and the fused
    codes-times-activations kernels (:mod:`leechlib._kernels.qmatmul`) inline it
    (the matrix-vector kernel its :func:`split_index` only).
    """
    eps, pi1, pi2, c, word, i1, i2, i3 = split_index(x, b, cb, gen_lo, gen_hi)
    S = 1 << b
    for j in range(3):
        p = (word >> (8 * j)) & 255
        pij = pi1 if j == 0 else (pi2 if j == 1 else eps ^ pi1 ^ pi2)
        row = combos[c, j] * S + (i1 if j == 0 else (i2 if j == 1 else i3))
        cl = cls_of[eps, p, pij]
        for i in range(8):
            out[o + 8 * j + perm[eps, p, i]] = sign[eps, p, i] * tab[cl, row, i]


@pjit
def trio_point(idx, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, out):
    flat = out.reshape(-1)  # out is C-contiguous (n, 24)
    for t in prange(idx.shape[0]):
        decode_block(idx[t], b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, flat, 24 * t)


def trio_point_ref(idx, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos):
    """Plain numpy: the same map, vectorized over the batch."""
    idx = np.asarray(idx, dtype=np.int64)
    mask = (1 << b) - 1
    q = idx >> (3 * b)
    c = q & ((1 << cb) - 1)
    q = q >> cb
    pis = [(q >> 1) & 1, q & 1]
    m = (q >> 2) & 4095
    eps = q >> 14
    pis.append(eps ^ pis[0] ^ pis[1])
    word = gen_lo[m & 63] ^ gen_hi[m >> 6]
    out = np.zeros((len(idx), 24), dtype=np.int64)
    rows_in = [(idx >> (2 * b)) & mask, (idx >> b) & mask, idx & mask]
    ar = np.arange(len(idx))[:, None]
    for j in range(3):
        p = (word >> (8 * j)) & 255
        row = combos[c, j] * (1 << b) + rows_in[j]
        v = tab[cls_of[eps, p, pis[j]], row].astype(np.int64) * sign[eps, p]
        out[ar, 8 * j + perm[eps, p]] = v
    return out


# ---------------------------------------------------------------------------
# exact nearest codeword
# ---------------------------------------------------------------------------


#: blocks per parallel chunk of :func:`trio_nearest` (each chunk has its own scratch)
CHUNK = 256
#: above this radius (squared, integer model) an octet set is scanned row by row
#: instead of enumerated: the ball around the octet holds too many class points
RHO_SCAN = 200.0
#: the first radius margin of the heuristic codeword (doubled until one is found)
RHO0 = 16.0
INF = 1e300
#: the Lagrangian multipliers of an octet y_j scale it to these norms (x the least table cap)
LAG_TARGETS = np.array([1.0])


@jit
def _hash_slot(key, hbits):
    x = (key ^ (key >> 13) ^ (key >> 27)) & 0x3FFFFFFF
    return ((x * 2654435761) >> 16) & ((1 << hbits) - 1)


@jit
def _set_index(j, eps, b, pi):
    return ((j * 2 + eps) * 256 + b) * 2 + pi


@jit
def _enumerate(yc, base, pi, rho, cl, S, nt, hkey, hslot, hbits, nmax, e, arg, fnd, cv, cc, zi, part):
    """Every class point of the octet set within squared distance ``rho`` of ``yc``
    (canonical coordinates): the tier minima ``e[k]`` (``arg[k]`` the row) of the tiers
    with a row nearer than ``rho``, ``INF`` elsewhere.  Returns the number of tiers found
    (listed in ``fnd``).

    The class is ``base + 4 z``, ``z`` integer with ``sum(z) = pi (mod 2)``: a depth-first
    enumeration over the coordinates (candidates of each coordinate by increasing
    cost, pruned by the partial cost plus the least cost of the coordinates left),
    the parity at the last coordinate; each point found is looked up in the class
    table's hash (points beyond the table are not codewords).
    """
    for k in range(nt):
        e[k] = INF
    nf = 0
    yn = 0.0
    for i in range(8):
        yn += yc[i] * yc[i]
    rr = math.sqrt(yn) - math.sqrt(nmax[cl])
    if rr > 0.0 and rr * rr >= rho:
        return 0
    nmx = nmax[cl]
    suf = 0.0
    sufn = 0.0
    for i in range(7, -1, -1):
        u = (yc[i] - base[i]) * 0.25
        r0 = math.floor(u + 0.5)
        dirn = 1.0 if u >= r0 else -1.0
        n = 0
        mnn = INF
        # candidates by increasing cost, within rho (rho <= RHO_SCAN: at most 8) and
        # within the tables' entries (|t_i| <= 11)
        for s in range(10):
            zz = r0 + dirn * ((s + 1) // 2) * (1.0 if s % 2 == 1 else -1.0) if s > 0 else r0
            c = 16.0 * (zz - u) * (zz - u)
            if c >= rho:
                break
            tv = base[i] + 4.0 * zz
            if tv > 11.0 or tv < -11.0:
                continue
            cv[i, n] = zz
            cc[i, n] = c
            n += 1
            mnn = min(mnn, tv * tv)
        if n == 0:
            return 0
        zi[1, i] = n  # candidate counts
        cc[i, 11] = suf  # least cost of coordinates i+1..7
        suf += cc[i, 0]
        cc[i, 10] = sufn  # least norm of coordinates i+1..7
        sufn += mnn
    z = zi[0]
    cnt = zi[1]
    cur = zi[2]
    pnorm = zi[3]  # partial norm of the coordinates fixed (integers)
    part[0] = 0.0
    pnorm[0] = 0
    lev = 0
    cur[0] = 0
    while lev >= 0:
        if lev == 7:
            zs = 0
            for i in range(7):
                zs += z[i]
            need = (pi - zs) & 1
            for c in range(cnt[7]):
                zz = np.int64(cv[7, c])
                if (zz & 1) != need:
                    continue
                if part[7] + cc[7, c] >= rho:
                    break
                t7 = base[7] + 4 * zz
                if pnorm[7] + t7 * t7 > nmx:
                    continue
                z[7] = zz
                key = 0
                ok = True
                d = 0.0
                for i in range(8):
                    t = base[i] + 4 * z[i]
                    if t > 11 or t < -11:
                        ok = False
                        break
                    key |= ((t + 16) & 31) << (5 * i)
                    u = yc[i] - t
                    d += u * u
                if not ok:
                    continue
                h = _hash_slot(key, hbits)
                msk = (1 << hbits) - 1
                row = -1
                while hslot[cl, h] >= 0:
                    rw = hslot[cl, h]
                    if hkey[cl, rw] == key:
                        row = rw
                        break
                    h = (h + 1) & msk
                if row < 0:
                    continue
                k = row // S
                if e[k] == INF:
                    fnd[nf] = k
                    nf += 1
                if d < e[k]:
                    e[k] = d
                    arg[k] = row
            lev -= 1
            continue
        c = cur[lev]
        if c >= cnt[lev] or part[lev] + cc[lev, c] + cc[lev, 11] >= rho:
            lev -= 1
            continue
        cur[lev] = c + 1
        zz = np.int64(cv[lev, c])
        tv = base[lev] + 4 * zz
        pn = pnorm[lev] + tv * tv
        if pn + cc[lev, 10] > nmx:  # beyond the class table's norm cap
            continue
        z[lev] = zz
        part[lev + 1] = part[lev] + cc[lev, c]
        pnorm[lev + 1] = pn
        lev += 1
        if lev < 7:
            cur[lev] = 0
    return nf


@jit
def _scan_set(yc, rho, cl, S, nt, tab, tnorm, e, arg, fnd):
    """The tier minima of an octet set by scanning its rows; tiers whose radial bound
    ``(|yc| - sqrt(norm))^2`` is at least ``rho`` are skipped (``INF``).  Returns the
    number of tiers found and the radius the result is exact to (the least radial
    bound of a skipped tier, ``INF`` if none)."""
    yn = 0.0
    for i in range(8):
        yn += yc[i] * yc[i]
    ynr = math.sqrt(yn)
    nf = 0
    rad = INF
    for k in range(nt):
        e[k] = INF
        a = k * S
        lo = math.sqrt(tnorm[cl, a])
        hi = math.sqrt(tnorm[cl, a + S - 1])
        rr = lo - ynr if ynr < lo else (ynr - hi if ynr > hi else 0.0)
        if rr * rr >= rho:
            rad = min(rad, rr * rr)
            continue
        best = INF
        ba = a
        for r in range(a, a + S):
            d = 0.0
            for i in range(8):
                u = yc[i] - tab[cl, r, i]
                d += u * u
            if d < best:
                best = d
                ba = r
        e[k] = best
        arg[k] = ba
        fnd[nf] = k
        nf += 1
    return nf, rad


@jit
def _octet_bounds(yt, j, f, add, lam, nmax, cls_of, ulb, A, P, D, NA, NP, ND, first):
    """Lower bounds of the octet sets of octet ``j``: ``ulb[j, eps, b, pi]`` (the max
    with what it holds unless ``first``) of ``(1 + lam) * d(f y_j, class) + add - lam *
    nmax[class]`` with ``f = 1 / (1 + lam)``, ``d`` the distance to the unbounded class
    (the parity-constrained rounding, D_n decoding).  ``lam = 0``: the plain class
    bound; ``lam > 0``: the Lagrangian bound of the class table's norm cap."""
    for ii in range(8):
        i = 8 * j + ii
        yi = yt[i] * f
        for eps in range(2):
            for pb in range(2):
                r0 = eps + 2 * pb
                v0 = r0 + 8.0 * np.rint((yi - r0) / 8.0)
                v1 = r0 + 4 + 8.0 * np.rint((yi - r0 - 4) / 8.0)
                c0 = (yi - v0) ** 2
                c1 = (yi - v1) ** 2
                if c0 <= c1:
                    A[ii, eps, pb] = c0
                    P[ii, eps, pb] = 0
                    D[ii, eps, pb] = c1 - c0
                else:
                    A[ii, eps, pb] = c1
                    P[ii, eps, pb] = 1
                    D[ii, eps, pb] = c0 - c1
    g = 1.0 + lam
    for eps in range(2):
        for h in range(2):
            for nb in range(16):
                sa = 0.0
                sp = 0
                sd = INF
                for ii in range(4):
                    i = 4 * h + ii
                    pb = (nb >> ii) & 1
                    sa += A[i, eps, pb]
                    sp ^= P[i, eps, pb]
                    if D[i, eps, pb] < sd:
                        sd = D[i, eps, pb]
                NA[h, nb] = sa
                NP[h, nb] = sp
                ND[h, nb] = sd
        for b in range(256):
            if cls_of[eps, b, 0] < 0:
                continue
            lo_ = b & 15
            hi_ = b >> 4
            sa = NA[0, lo_] + NA[1, hi_]
            par = NP[0, lo_] ^ NP[1, hi_]
            sd = min(ND[0, lo_], ND[1, hi_])
            for pi in range(2):
                v = g * (sa if pi == par else sa + sd) + add - lam * nmax[cls_of[eps, b, pi]]
                if first or v > ulb[j, eps, b, pi]:
                    ulb[j, eps, b, pi] = v


@jit
def _cosets_below(eps, cap, least, ulb, gl, useg, mn, gm, m2, cls_of, pairs, cand_v, cand_q, nc):
    """The cosets of ``eps`` whose bound (the sum of the octet sets' bounds; with
    ``useg`` also the global Lagrangian one) is below ``cap``, appended to
    ``cand_v``/``cand_q`` from ``nc``; returns the new count.  Branch and bound over the
    first byte, then the second (the third is one of two complementary bytes), each
    level pruned by the least bounds of the octets left.  ``least``: find only the least
    bound instead (into ``cand_v[0]``; ``cap`` shrinks to the best so far)."""
    for b in range(256):
        if cls_of[eps, b, 0] >= 0:
            m2[b] = min(ulb[1, eps, b, 0], ulb[1, eps, b, 1])
    rest = mn[1, eps] + mn[2, eps]
    grest = gm[1, eps] + gm[2, eps]
    if least:
        cand_v[0] = INF
    for b in range(256):
        if cls_of[eps, b, 0] < 0:
            continue
        for p1 in range(2):
            u1 = ulb[0, eps, b, p1]
            g1 = gl[0, eps, b, p1] if useg else -INF
            if u1 + rest >= cap or g1 + grest >= cap:
                continue
            for i in range(16):
                b2 = pairs[b, i, 0]
                if u1 + m2[b2] + mn[2, eps] >= cap:
                    continue
                b3 = pairs[b, i, 1]
                for h in range(2):
                    msg = pairs[b, i, 2 + h]
                    b3h = b3 ^ (255 * h)
                    for p2 in range(2):
                        p3 = eps ^ p1 ^ p2
                        v = u1 + ulb[1, eps, b2, p2] + ulb[2, eps, b3h, p3]
                        if useg:
                            v = max(v, g1 + gl[1, eps, b2, p2] + gl[2, eps, b3h, p3])
                        if v < cap:
                            if least:
                                cap = v
                                cand_v[0] = v
                            else:
                                cand_v[nc] = v
                                cand_q[nc] = ((eps * 4096 + msg) * 2 + p1) * 2 + p2
                                nc += 1
    return nc


@jit
def _least_per_eps(bound, j, cls_of, out):
    """``out[j, eps]``: the least ``bound[j, eps, byte, pi]`` over the valid pattern bytes."""
    for eps in range(2):
        m = INF
        for b in range(256):
            if cls_of[eps, b, 0] >= 0:
                m = min(m, bound[j, eps, b, 0], bound[j, eps, b, 1])
        out[j, eps] = m


@jit
def _nearest_chunk(y, S, tab, perm, sign, cls_of, words, allowed, hkey, hslot, hbits, base, pairs,
                   nmax, tnorm, kstar, slack, out, scans, start, stop, A, P, D, ulb, gl, mn, gm, m2, NA, NP, ND,
                   cand_v, cand_q, se, sarg, sfnd, snf, srho, touched, yc, cv, cc, zi, part, bestrow):
    """Rows ``start:stop`` of :func:`trio_nearest`, with the chunk's scratch."""
    nt = tab.shape[1] // S
    nref = INF
    smean = 0.0
    for c in range(nmax.shape[0]):
        nref = min(nref, nmax[c])
        smean += slack[c] / nmax.shape[0]
    for t in range(start, stop):
        yt = y[t]
        for j in range(3):
            _octet_bounds(yt, j, 1.0, 0.0, 0.0, nmax, cls_of, ulb, A, P, D, NA, NP, ND, True)
            yn2 = 0.0
            for i in range(8 * j, 8 * j + 8):
                yn2 += yt[i] * yt[i]
            for li in range(LAG_TARGETS.shape[0]):
                tg = LAG_TARGETS[li] * nref
                if yn2 > tg:  # the Lagrangian bounds of the class tables' norm caps
                    lam = math.sqrt(yn2 / tg) - 1.0
                    _octet_bounds(yt, j, 1.0 / (1.0 + lam), lam / (1.0 + lam) * yn2, lam, nmax, cls_of, ulb,
                                  A, P, D, NA, NP, ND, False)
            _least_per_eps(ulb, j, cls_of, mn)
        # the global Lagrangian bound of sum_j |t_j|^2 <= kstar + sum_j slack: a second
        # separable coset bound, gl summed over the octets (not maxed per set)
        yy2 = 0.0
        for i in range(24):
            yy2 += yt[i] * yt[i]
        nglob = kstar + 3.0 * smean
        useg = yy2 > 0.8 * nglob
        if useg:
            mu = max(math.sqrt(yy2 / nglob) - 1.0, 0.05)
            for j in range(3):
                yn2 = 0.0
                for i in range(8 * j, 8 * j + 8):
                    yn2 += yt[i] * yt[i]
                _octet_bounds(yt, j, 1.0 / (1.0 + mu), mu / (1.0 + mu) * yn2 - mu * kstar / 3.0, mu, slack,
                              cls_of, gl, A, P, D, NA, NP, ND, True)
                _least_per_eps(gl, j, cls_of, gm)
        else:
            for j in range(3):
                for eps in range(2):
                    gm[j, eps] = -INF
        nt_touch = 0
        ns = 0
        ub = INF
        bq = -1
        # a first threshold: the bound of a good coset (per eps the best completion of
        # the best first octet set)
        g0 = INF
        for eps in range(2):
            bb = 0
            pb = 0
            vb = INF
            for b in range(256):
                if cls_of[eps, b, 0] < 0:
                    continue
                for p1 in range(2):
                    if ulb[0, eps, b, p1] < vb:
                        vb = ulb[0, eps, b, p1]
                        bb = b
                        pb = p1
            for i in range(16):
                b2 = pairs[bb, i, 0]
                for h in range(2):
                    b3h = pairs[bb, i, 1] ^ (255 * h)
                    for p2 in range(2):
                        v = vb + ulb[1, eps, b2, p2] + ulb[2, eps, b3h, eps ^ pb ^ p2]
                        if useg:
                            v = max(v, gl[0, eps, bb, pb] + gl[1, eps, b2, p2] + gl[2, eps, b3h, eps ^ pb ^ p2])
                        g0 = min(g0, v)
        step = 2.0 + 0.05 * g0
        theta = g0 + step
        # rounds: every coset whose bound is below cap = min(ub, theta), by increasing
        # bound, searched for codewords nearer than cap; done once ub <= theta
        while True:
            cap = min(ub, theta)
            nc = 0
            for eps in range(2):
                nc = _cosets_below(eps, cap, False, ulb, gl, useg, mn, gm, m2, cls_of, pairs, cand_v, cand_q, nc)
            order = np.argsort(cand_v[:nc])
            for oi in range(nc):
                q = cand_q[order[oi]]
                cap = min(ub, theta)
                if cand_v[order[oi]] >= cap:
                    break
                # enumerate out to the next round's cap: ub once a codeword is known
                # (every codeword found counts, even beyond cap), else theta + step
                extra = (ub if ub < INF else theta + step) - cap
                v, ns, nt_touch = _eval_coset(q, cap, extra, useg, gl, yt, S, nt, tab, perm, sign, cls_of, words,
                                              allowed, hkey, hslot, hbits, base, nmax, tnorm, ulb, se, sarg, sfnd,
                                              snf, srho, touched, nt_touch, ns, yc, cv, cc, zi, part, bestrow)
                if v < ub:
                    ub = v
                    bq = q
                    for j in range(3):
                        bestrow[3 + j] = bestrow[j]
            if ub <= theta:
                break
            step *= 2.0
            theta = ub if ub < INF else g0 + step
        scans[t] = ns
        for k in range(nt_touch):
            srho[touched[k]] = -1.0
        p2 = bq & 1
        p1 = (bq >> 1) & 1
        msg = (bq >> 2) & 4095
        eps = bq >> 14
        w = words[msg]
        for j in range(3):
            b = (w >> (8 * j)) & 255
            pij = p1 if j == 0 else (p2 if j == 1 else eps ^ p1 ^ p2)
            cl = cls_of[eps, b, pij]
            r = bestrow[3 + j]
            for ii in range(8):
                out[t, 8 * j + perm[eps, b, ii]] = sign[eps, b, ii] * tab[cl, r, ii]


@jit
def _eval_coset(q, ub, extra, useg, gl, yt, S, nt, tab, perm, sign, cls_of, words, allowed, hkey, hslot, hbits,
                base, nmax, tnorm, ulb, se, sarg, sfnd, snf, srho, touched, nt_touch, ns, yc, cv, cc, zi,
                part, bestrow):
    """The best codeword of coset ``q`` if it may be nearer than ``ub``: each octet
    set is enumerated (memoised, with the radius it was enumerated to) out to the
    radius that can still matter, ``ub`` less the bounds of the two other octets,
    plus ``extra``; then the best allowed triple of the tiers found.  Returns its
    distance (``INF`` if the coset's bound reaches ``ub`` or nothing was found; a
    codeword beyond ``ub`` may be returned: it is a codeword all the same), and
    writes its three rows to ``bestrow[0:3]``.  Every codeword of the coset nearer
    than ``ub`` is found: the result is exact below ``ub``."""
    p2 = q & 1
    p1 = (q >> 1) & 1
    msg = (q >> 2) & 4095
    eps = q >> 14
    w = words[msg]
    b1 = w & 255
    b2 = (w >> 8) & 255
    b3 = (w >> 16) & 255
    p3 = eps ^ p1 ^ p2
    s1 = _set_index(0, eps, b1, p1)
    s2 = _set_index(1, eps, b2, p2)
    s3 = _set_index(2, eps, b3, p3)
    for j in range(3):
        # the bounds as they stand (an enumerated set's bound is its exact minimum)
        u1 = ulb[0, eps, b1, p1]
        u2 = ulb[1, eps, b2, p2]
        u3 = ulb[2, eps, b3, p3]
        if u1 + u2 + u3 >= ub or (useg and gl[0, eps, b1, p1] + gl[1, eps, b2, p2] + gl[2, eps, b3, p3] >= ub):
            return INF, ns, nt_touch
        if j == 0:
            s, b, pi, need = s1, b1, p1, ub - u2 - u3
        elif j == 1:
            s, b, pi, need = s2, b2, p2, ub - u1 - u3
        else:
            s, b, pi, need = s3, b3, p3, ub - u1 - u2
        if srho[s] >= need:
            continue
        if srho[s] < 0.0:
            touched[nt_touch] = s
            nt_touch += 1
        cl = cls_of[eps, b, pi]
        for i in range(8):
            yc[i] = sign[eps, b, i] * yt[8 * j + perm[eps, b, i]]
        ns += 1
        need += extra
        if need > RHO_SCAN:
            # far out: scan once, every tier (INF: never again this block)
            nf, rad = _scan_set(yc, INF, cl, S, nt, tab, tnorm, se[s], sarg[s], sfnd[s])
            snf[s] = nf
            srho[s] = rad
        else:
            snf[s] = _enumerate(yc, base[eps, b], pi, need, cl, S, nt, hkey, hslot, hbits, nmax,
                                se[s], sarg[s], sfnd[s], cv, cc, zi, part)
            srho[s] = need
        emin = srho[s]
        for a in range(snf[s]):
            emin = min(emin, se[s, sfnd[s, a]])
        if emin > ulb[j, eps, b, pi]:
            ulb[j, eps, b, pi] = emin
    best = INF  # any codeword found is an upper bound, even beyond ub
    e1 = se[s1]
    e2 = se[s2]
    e3 = se[s3]
    m3 = INF
    for a in range(snf[s3]):
        m3 = min(m3, e3[sfnd[s3, a]])
    for a in range(snf[s1]):
        k1 = sfnd[s1, a]
        for c in range(snf[s2]):
            k2 = sfnd[s2, c]
            v12 = e1[k1] + e2[k2]
            if v12 + m3 >= best:
                continue
            for d in range(snf[s3]):
                k3 = sfnd[s3, d]
                v = v12 + e3[k3]
                if v < best and allowed[k1, k2, k3]:
                    best = v
                    bestrow[0] = sarg[s1, k1]
                    bestrow[1] = sarg[s2, k2]
                    bestrow[2] = sarg[s3, k3]
    return best, ns, nt_touch


@pjit
def trio_nearest(y, S, tab, perm, sign, cls_of, words, allowed, hkey, hslot, hbits, base, pairs, nmax,
                 tnorm, kstar, slack, out, scans):
    """Exact nearest codewords (integer model) of ``y`` (n, 24); ``scans[t]``: the octet
    set enumerations (or row scans) the search of row ``t`` ran.

    Bounds, per octet set (eps, pattern byte, pi), all lower bounds of the distance
    from the octet of ``y`` to every row of the set: the parity-constrained rounding
    (D_n decoding: the nearest point of the unbounded class), the Lagrangian bounds
    of the class table's norm cap for octets beyond it (``LAG_TARGETS``), and, once
    the set has been enumerated, its exact minimum.  A coset's bound is the sum over
    its three octets, or the global Lagrangian bound of the summed tier key of the
    allowed triples (``kstar``, ``slack``) where larger.

    Rounds with a threshold ``theta`` (first the bound of a greedy coset plus a
    step): every coset with bound below ``cap = min(ub, theta)`` is generated (first
    byte, then second byte, each level pruned by the least bounds of the octets
    left) and visited by increasing bound.  A visited coset enumerates its octet
    sets out to ``cap`` less the two other octets' bounds (a depth-first
    enumeration of the class, a coset of 4 D_8, looked up in the class table's hash;
    memoised per set with its radius; a row scan beyond ``RHO_SCAN``) and sums the
    allowed tier triples of the tiers found; any codeword found lowers ``ub``.  A
    round ends with every codeword nearer than ``cap`` found; if ``ub <= theta`` the
    search is over (nothing unvisited is below ``ub``), else ``theta`` becomes ``ub``
    (or grows by a doubling step when no codeword was found yet).  Exact: every
    pruning compares a lower bound with ``cap``.
    """
    n = y.shape[0]
    nt = tab.shape[1] // S
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        A = np.empty((24, 2, 2))
        P = np.empty((24, 2, 2), dtype=np.int64)
        D = np.empty((24, 2, 2))
        ulb = np.full((3, 2, 256, 2), INF)
        gl = np.full((3, 2, 256, 2), INF)
        mn = np.empty((3, 2))
        gm = np.empty((3, 2))
        m2 = np.empty(256)
        NA = np.empty((2, 16))
        NP = np.empty((2, 16), dtype=np.int64)
        ND = np.empty((2, 16))
        cand_v = np.empty(2 * 4096 * 4)
        cand_q = np.empty(2 * 4096 * 4, dtype=np.int64)
        ns_ = 3 * 2 * 256 * 2
        se = np.empty((ns_, nt))
        sarg = np.zeros((ns_, nt), dtype=np.int64)
        sfnd = np.zeros((ns_, nt), dtype=np.int64)
        snf = np.zeros(ns_, dtype=np.int64)
        srho = np.full(ns_, -1.0)
        touched = np.empty(ns_, dtype=np.int64)
        yc = np.empty(8)
        cv = np.empty((8, 12))
        cc = np.empty((8, 12))
        zi = np.zeros((4, 8), dtype=np.int64)
        part = np.zeros(9)
        bestrow = np.zeros(6, dtype=np.int64)
        _nearest_chunk(y, S, tab, perm, sign, cls_of, words, allowed, hkey, hslot, hbits, base, pairs,
                       nmax, tnorm, kstar, slack, out, scans, ch * CHUNK, min(n, (ch + 1) * CHUNK), A, P, D,
                       ulb, gl, mn, gm, m2,
                       NA, NP, ND, cand_v, cand_q, se, sarg, sfnd, snf, srho, touched, yc, cv, cc, zi,
                       part, bestrow)


def trio_nearest_ref(y, S, tab, perm, sign, cls_of, words, combos):
    """Plain numpy, by exhaustion: every octet set scanned in full, every coset and
    allowed tier triple summed; shares nothing with the search but the tables.
    Slow (a fraction of a second per block)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, 24)
    nt = tab.shape[1] // S
    out = np.zeros(y.shape, dtype=np.int64)
    q = np.arange(2 * 4096 * 4)
    p2, p1, m, eps = q & 1, (q >> 1) & 1, (q >> 2) & 4095, q >> 14
    pis = [p1, p2, eps ^ p1 ^ p2]
    valid = np.nonzero(cls_of[0, :, 0] >= 0)[0]
    for t in range(len(y)):
        ex = np.full((3, 2, 256, 2, nt), np.inf)
        arg = np.zeros((3, 2, 256, 2, nt), dtype=np.int64)
        for j in range(3):
            for e in range(2):
                for pi in range(2):
                    pts = tab[cls_of[e, valid, pi]].astype(np.float64) * sign[e, valid][:, None, :]
                    yc = y[t, 8 * j + perm[e, valid]]  # (B, 8): y at the canonical positions
                    d = ((yc[:, None, :] - pts) ** 2).sum(-1).reshape(len(valid), nt, S)
                    ex[j, e, valid, pi] = d.min(-1)
                    arg[j, e, valid, pi] = d.argmin(-1) + np.arange(nt) * S
        bytes_ = [(words[m] >> (8 * j)) & 255 for j in range(3)]
        tot = sum(ex[j, eps, bytes_[j], pis[j]][:, combos[:, j]] for j in range(3))  # (8192*4, C)
        k = int(np.argmin(tot))
        qq, c = divmod(k, len(combos))
        for j in range(3):
            e, b, pi = eps[qq], bytes_[j][qq], pis[j][qq]
            r = arg[j, e, b, pi, combos[c, j]]
            out[t, 8 * j + perm[e, b]] = sign[e, b] * tab[cls_of[e, b, pi], r]
    return out
