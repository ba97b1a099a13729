"""The first exact trio encoder (before the bounded search), kept as the baseline of
``benchmarks/trio_encode_speed.py``: cosets by increasing bound, every visited octet set
scanned in full (16 tiers x 256 rows).  Same arguments as the first
``leechlib._kernels.trio.trio_nearest``.
"""

import numpy as np

from leechlib._jit import jit


@jit
def _coset_sets(q, words):
    """(eps, byte, pi) of the three octets of coset q = ((eps * 4096 + m) * 2 + pi1) * 2 + pi2."""
    p2 = q & 1
    p1 = (q >> 1) & 1
    m = (q >> 2) & 4095
    eps = q >> 14
    w = words[m]
    return eps, w & 255, (w >> 8) & 255, (w >> 16) & 255, p1, p2, eps ^ p1 ^ p2


@jit
def _scan(y, j, eps, p, cl, tab, perm, sign, S, nt, e, arg):
    """Nearest row of every tier of the octet set (eps, p, class cl) to octet j of y."""
    yc = np.empty(8)
    for i in range(8):
        yc[i] = sign[eps, p, i] * y[8 * j + perm[eps, p, i]]
    for k in range(nt):
        best = 1e300
        a = k * S
        for r in range(k * S, (k + 1) * S):
            d = 0.0
            for i in range(8):
                u = yc[i] - tab[cl, r, i]
                d += u * u
            if d < best:
                best = d
                a = r
        e[k] = best
        arg[k] = a


@jit
def trio_nearest_original(y, S, tab, perm, sign, cls_of, words, combos, allowed, lo, hi, out, scans):
    """Exact nearest codewords (integer model) of y (n, 24), by best-first search.

    Per octet and octet set (eps, pattern byte, pi) the parity-constrained rounding
    (per coordinate the nearer of the two residues mod 8 allowed, then the cheapest
    single change if the class bit is wrong: D_n decoding) is the nearest point of the
    unbounded class, so its distance bounds every tier from below, and equals the
    tier minimum when the rounded point lies in the tier.  The coset bound is the sum
    over the octets; cosets are visited by increasing bound; a visited coset gets its
    exact minimum (a scan of its three octet sets, memoised, then the best allowed
    tier triple), and the search stops when the next bound is no smaller than the best
    codeword so far: nothing discarded can be nearer.
    """
    n = y.shape[0]
    nt = tab.shape[1] // S
    C = combos.shape[0]
    ulb = np.empty((3, 2, 256, 2))
    utier = np.empty((3, 2, 256, 2), dtype=np.int64)
    urow = np.zeros((3, 2, 256, 2, 8), dtype=np.int64)
    ex = np.empty((3, 2, 256, 2, nt))
    exarg = np.empty((3, 2, 256, 2, nt), dtype=np.int64)
    done = np.zeros((3, 2, 256, 2), dtype=np.bool_)
    cost = np.empty((24, 8))
    near = np.empty((24, 8), dtype=np.int64)
    cval = np.empty(2 * 4096 * 4)
    for t in range(n):
        done[:] = False
        yt = y[t]
        for i in range(24):
            for r in range(8):
                v = r + 8.0 * np.rint((yt[i] - r) / 8.0)
                near[i, r] = np.int64(v)
                cost[i, r] = (yt[i] - v) ** 2
        for j in range(3):
            for eps in range(2):
                for b in range(256):
                    if cls_of[eps, b, 0] < 0:
                        continue
                    for pi in range(2):
                        lb = 0.0
                        par = 0
                        fix = 1e300
                        fixi = 0
                        for ii in range(8):
                            i = 8 * j + ii
                            r0 = (eps + 2 * ((b >> ii) & 1)) % 8
                            r1 = (r0 + 4) % 8
                            if cost[i, r0] <= cost[i, r1]:
                                lb += cost[i, r0]
                                urow[j, eps, b, pi, ii] = near[i, r0]
                                d = cost[i, r1] - cost[i, r0]
                            else:
                                lb += cost[i, r1]
                                par ^= 1
                                urow[j, eps, b, pi, ii] = near[i, r1]
                                d = cost[i, r0] - cost[i, r1]
                            if d < fix:
                                fix = d
                                fixi = ii
                        if par != pi:
                            lb += fix
                            i = 8 * j + fixi
                            r0 = (eps + 2 * ((b >> fixi) & 1)) % 8
                            if urow[j, eps, b, pi, fixi] == near[i, r0]:
                                urow[j, eps, b, pi, fixi] = near[i, (r0 + 4) % 8]
                            else:
                                urow[j, eps, b, pi, fixi] = near[i, r0]
                        nu = 0
                        for ii in range(8):
                            nu += urow[j, eps, b, pi, ii] ** 2
                        ulb[j, eps, b, pi] = lb
                        cl = cls_of[eps, b, pi]
                        tier = -1
                        for k in range(nt):
                            if lo[cl, k] <= nu and nu <= hi[cl, k]:
                                tier = k
                        utier[j, eps, b, pi] = tier
        ub = 1e300
        ubq = -1
        for q in range(cval.shape[0]):
            eps, b1, b2, b3, p1, p2, p3 = _coset_sets(q, words)
            v = ulb[0, eps, b1, p1] + ulb[1, eps, b2, p2] + ulb[2, eps, b3, p3]
            cval[q] = v
            if v < ub:
                k1 = utier[0, eps, b1, p1]
                k2 = utier[1, eps, b2, p2]
                k3 = utier[2, eps, b3, p3]
                if k1 >= 0 and k2 >= 0 and k3 >= 0 and allowed[k1, k2, k3]:
                    ub = v
                    ubq = q
        best_c = -1
        cand = np.nonzero(cval < ub)[0]
        order = np.argsort(cval[cand], kind="mergesort")
        ns = 0
        for oi in range(order.shape[0]):
            q = cand[order[oi]]
            if cval[q] >= ub:
                break
            eps, b1, b2, b3, p1, p2, p3 = _coset_sets(q, words)
            bs = (b1, b2, b3)
            ps = (p1, p2, p3)
            for j in range(3):
                if not done[j, eps, bs[j], ps[j]]:
                    _scan(yt, j, eps, bs[j], cls_of[eps, bs[j], ps[j]], tab, perm, sign, S, nt,
                          ex[j, eps, bs[j], ps[j]], exarg[j, eps, bs[j], ps[j]])
                    done[j, eps, bs[j], ps[j]] = True
                    ns += 1
            e1 = ex[0, eps, b1, p1]
            e2 = ex[1, eps, b2, p2]
            e3 = ex[2, eps, b3, p3]
            for c in range(C):
                v = e1[combos[c, 0]] + e2[combos[c, 1]] + e3[combos[c, 2]]
                if v < ub:
                    ub = v
                    ubq = q
                    best_c = c
        scans[t] = ns
        eps, b1, b2, b3, p1, p2, p3 = _coset_sets(ubq, words)
        bs = (b1, b2, b3)
        ps = (p1, p2, p3)
        for j in range(3):
            b = bs[j]
            pi = ps[j]
            if best_c < 0:
                for ii in range(8):
                    out[t, 8 * j + ii] = urow[j, eps, b, pi, ii]
            else:
                r = exarg[j, eps, b, pi, combos[best_c, j]]
                cl = cls_of[eps, b, pi]
                for ii in range(8):
                    out[t, 8 * j + perm[eps, b, ii]] = sign[eps, b, ii] * tab[cl, r, ii]
