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

import numpy as np
from numba import prange

from .._jit import jit, pjit

# ---------------------------------------------------------------------------
# decode: index -> point
# ---------------------------------------------------------------------------


@jit
def decode_block(x, b, cb, tab, perm, sign, cls_of, gen_lo, gen_hi, combos, out, o):
    """The codeword of index ``x`` (integer model) into ``out[o:o + 24]`` (any numeric dtype).

    The one decode of the trio code: the batch decode below and the fused
    codes-times-activations kernels (:mod:`leechlib._kernels.qmatmul`) inline it.
    """
    mask = (1 << b) - 1
    S = 1 << b
    i3 = x & mask
    i2 = (x >> b) & mask
    i1 = (x >> (2 * b)) & mask
    q = x >> (3 * b)
    c = q & ((1 << cb) - 1)
    q >>= cb
    pi2 = q & 1
    pi1 = (q >> 1) & 1
    m = (q >> 2) & 4095
    eps = q >> 14
    word = gen_lo[m & 63] ^ gen_hi[m >> 6]
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
def trio_nearest(y, S, tab, perm, sign, cls_of, words, combos, allowed, lo, hi, out, scans):
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
