"""Numba kernels: exact Leech lattice decoding, soft Golay decoding, nearest minimal vector.

Everything works in the integer model sqrt(8)*Lambda24 in MOG coordinates
(coordinate ``4*column + row``) on float64 input.  Tables (hexacode words, MOG
column patterns, octads, the Golay information set) are passed in by the wrappers
in :mod:`leechlib.decode`; this module imports nothing from leechlib but the jit
policy.

Leech decoder (design note ``design/decoder.md``)
-------------------------------------------------
1. Translate by 8Z^24 (a sublattice): ``n_i = floor(y_i/8 + 1/2)``, ``r_i = y_i - 8 n_i``
   (exact in floating point), so ``r_i`` is in [-4, 4).  The answer for ``y`` is
   ``8n`` plus the answer for ``r``.
2. The lattice is E u O with x_i = eps + 2 b_i + 4 y_i, b a Golay word and
   sum(y_i) = eps (mod 2).  For each coordinate, coset eps and (b, p) in {0,1}^2 the
   nearest point of 8Z + eps + 2b + 4p has squared distance ``cost8``; per (eps, i, b)
   the best p, its parity and the penalty for switching p.
3. Per MOG column and column pattern P: cost with the best p's, the column's
   p-parity rho and the cheapest p switch.  Per (column j, score s, parity pi) the
   four options (t, rho) in Z2^2 (t = top bit, q = t + 2 rho): the minimum, its
   arg-min g and the increments dd[a] = cost(g ^ a) - min.
4. Per (eps, hexacode word h, pi): base = sum_j min_j; the options' sum must be
   (pi, eps) in Z2^2; a non-zero deficit delta is repaired by ONE column moving by
   delta or TWO columns moving by a, b with a ^ b = delta (see ``_repair``).

Tie-breaking (identical with and without ``NUMBA_DISABLE_JIT``): every minimum is
taken with a strict ``<`` in a fixed order, so the answer is the first minimiser
in the enumeration: coset E (eps = 0) before O, hexacode word index 0..63
(``16a + 4b + c``), parity 0 before 1; within it the options of each column
in the order q = 0..3, the single-column repair before the two-column one,
columns in index order; the p switch at the first row of least penalty; and per
coordinate the candidate of 8Z + a at distance exactly 4 is ``a`` itself.
"""

import numpy as np
from numba import prange

from leechlib._jit import jit, pjit

#: points per task of the parallel loops (scratch arrays are allocated per chunk)
CHUNK = 128
#: inputs with |y_i| (integer frame) at or above this bound are rejected by the wrappers
MAX_ABS = 2.0**50

_INF = np.inf


# ---------------------------------------------------------------------------
# Leech lattice: nearest point
# ---------------------------------------------------------------------------


@jit
def _col_index(eps, b, p):
    """Column of ``cost8`` (residue a in -3..4 stored at a + 3) for eps + 2b + 4p."""
    a = eps + 2 * b + 4 * p
    if a > 4:
        a -= 8
    return a + 3


@jit
def _repair(dd, e, hexa, w, pi, delta):
    """Cheapest change of the per-column options that adds ``delta`` (non-zero) in Z2^2.

    Each column j may move from its best option g_j to g_j ^ a_j at cost
    dd[e, j, h_j, pi, a_j] >= 0 and the moves must add up to delta.  Claim: an
    optimal set of moves uses one column (a_j = delta) or two (a_j ^ a_k = delta).
    Proof: take any multiset of non-zero elements of Z2^2 summing to delta != 0.
    If it contains delta, that element alone sums to delta.  Otherwise all its
    elements lie in {a, b}, the two non-zero elements other than delta, which are
    linearly independent with a ^ b = delta; n_a a + n_b b = delta forces n_a and
    n_b odd, so one a and one b are present and sum to delta.  Dropping the other
    moves keeps the sum and does not raise the cost (increments are >= 0).

    Returns (cost, j1, a1, j2, a2); j2 = -1 for a one-column repair.
    """
    if delta == 1:
        x1 = 2
        x2 = 3
    elif delta == 2:
        x1 = 1
        x2 = 3
    else:
        x1 = 1
        x2 = 2
    s_best = _INF
    s_j = -1
    b1 = _INF
    b1j = -1
    b2 = _INF
    b2j = -1
    c1 = _INF
    c1j = -1
    c2 = _INF
    c2j = -1
    for j in range(6):
        s = hexa[w, j]
        v = dd[e, j, s, pi, delta]
        if v < s_best:
            s_best = v
            s_j = j
        v = dd[e, j, s, pi, x1]
        if v < b1:
            b2 = b1
            b2j = b1j
            b1 = v
            b1j = j
        elif v < b2:
            b2 = v
            b2j = j
        v = dd[e, j, s, pi, x2]
        if v < c1:
            c2 = c1
            c2j = c1j
            c1 = v
            c1j = j
        elif v < c2:
            c2 = v
            c2j = j
    if b1j != c1j:
        pc = b1 + c1
        pj1 = b1j
        pj2 = c1j
    else:
        u = b1 + c2
        v = b2 + c1
        if u <= v:
            pc = u
            pj1 = b1j
            pj2 = c2j
        else:
            pc = v
            pj1 = b2j
            pj2 = c1j
    if s_best <= pc:
        return s_best, s_j, delta, -1, 0
    return pc, pj1, x1, pj2, x2


@jit
def _leech_one(y, out, pat, hexa, cost8, cc, qq, pp, m, g, dd, base, rho, pen, opt):
    """Nearest point of sqrt(8)*Lambda24 to ``y`` (24 floats); writes ``out``.

    Returns the squared distance.  The remaining arguments are scratch arrays.
    """
    # 1. reduce modulo 8Z^24 and the squared distance to every residue class mod 8
    for i in range(24):
        v = y[i]
        n8 = np.floor(v * 0.125 + 0.5) * 8.0
        ri = v - n8
        out[i] = n8
        for k in range(8):
            d = ri - (k - 3)
            if d > 4.0:
                d -= 8.0
            elif d < -4.0:
                d += 8.0
            cost8[i, k] = d * d
    # 2. per coset, coordinate and b: best p, its parity and the switch penalty
    for e in range(2):
        for i in range(24):
            for b in range(2):
                u0 = cost8[i, _col_index(e, b, 0)]
                u1 = cost8[i, _col_index(e, b, 1)]
                if u1 < u0:
                    cc[e, i, b] = u1
                    qq[e, i, b] = 1
                    pp[e, i, b] = u0 - u1
                else:
                    cc[e, i, b] = u0
                    qq[e, i, b] = 0
                    pp[e, i, b] = u1 - u0
        # 3. column tables
        for j in range(6):
            i0 = 4 * j
            for P in range(16):
                sc = 0.0
                par = 0
                pn = _INF
                for r in range(4):
                    bb = (P >> r) & 1
                    sc += cc[e, i0 + r, bb]
                    par ^= qq[e, i0 + r, bb]
                    if pp[e, i0 + r, bb] < pn:
                        pn = pp[e, i0 + r, bb]
                base[P] = sc
                rho[P] = par
                pen[P] = pn
            for s in range(4):
                for pi in range(2):
                    for t in range(2):
                        P = pat[s, pi, t]
                        if rho[P] == 0:
                            opt[t] = base[P]
                            opt[t + 2] = base[P] + pen[P]
                        else:
                            opt[t] = base[P] + pen[P]
                            opt[t + 2] = base[P]
                    mn = opt[0]
                    am = 0
                    for q in range(1, 4):
                        if opt[q] < mn:
                            mn = opt[q]
                            am = q
                    m[e, j, s, pi] = mn
                    g[e, j, s, pi] = am
                    for a in range(4):
                        dd[e, j, s, pi, a] = opt[am ^ a] - mn
    # 4. search over (eps, hexacode word, parity)
    best = _INF
    be = 0
    bw = 0
    bpi = 0
    for e in range(2):
        for w in range(64):
            h0 = hexa[w, 0]
            h1 = hexa[w, 1]
            h2 = hexa[w, 2]
            h3 = hexa[w, 3]
            h4 = hexa[w, 4]
            h5 = hexa[w, 5]
            for pi in range(2):
                tot = (
                    m[e, 0, h0, pi]
                    + m[e, 1, h1, pi]
                    + m[e, 2, h2, pi]
                    + m[e, 3, h3, pi]
                    + m[e, 4, h4, pi]
                    + m[e, 5, h5, pi]
                )
                if tot >= best:
                    continue
                delta = (
                    g[e, 0, h0, pi]
                    ^ g[e, 1, h1, pi]
                    ^ g[e, 2, h2, pi]
                    ^ g[e, 3, h3, pi]
                    ^ g[e, 4, h4, pi]
                    ^ g[e, 5, h5, pi]
                    ^ (pi + 2 * e)
                )
                if delta != 0:
                    rc, _, _, _, _ = _repair(dd, e, hexa, w, pi, delta)
                    tot += rc
                if tot < best:
                    best = tot
                    be = e
                    bw = w
                    bpi = pi
    # 5. rebuild the point
    e = be
    w = bw
    pi = bpi
    delta = pi + 2 * e
    for j in range(6):
        delta ^= g[e, j, hexa[w, j], pi]
    j1 = -1
    j2 = -1
    a1 = 0
    a2 = 0
    if delta != 0:
        _, j1, a1, j2, a2 = _repair(dd, e, hexa, w, pi, delta)
    dist = 0.0
    for j in range(6):
        s = hexa[w, j]
        q = g[e, j, s, pi]
        if j == j1:
            q ^= a1
        if j == j2:
            q ^= a2
        t = q & 1
        rh = q >> 1
        P = pat[s, pi, t]
        i0 = 4 * j
        par = 0
        sw = -1
        pn = _INF
        for r in range(4):
            bb = (P >> r) & 1
            par ^= qq[e, i0 + r, bb]
            if pp[e, i0 + r, bb] < pn:
                pn = pp[e, i0 + r, bb]
                sw = r
        for r in range(4):
            i = i0 + r
            bb = (P >> r) & 1
            p = qq[e, i, bb]
            if par != rh and r == sw:
                p ^= 1
            a = e + 2 * bb + 4 * p
            if a > 4:
                a -= 8
            ri = y[i] - out[i]
            d = ri - a
            z = float(a)
            if d > 4.0:
                z += 8.0
            elif d < -4.0:
                z -= 8.0
            d = ri - z
            dist += d * d
            out[i] += z
    return dist


@pjit
def leech_nearest(y, pat, hexa, out, dist):
    """Nearest points of sqrt(8)*Lambda24 to the rows of ``y`` (n, 24) float64."""
    n = y.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        cost8 = np.empty((24, 8))
        cc = np.empty((2, 24, 2))
        qq = np.empty((2, 24, 2), dtype=np.int64)
        pp = np.empty((2, 24, 2))
        m = np.empty((2, 6, 4, 2))
        g = np.empty((2, 6, 4, 2), dtype=np.int64)
        dd = np.empty((2, 6, 4, 2, 4))
        base = np.empty(16)
        rho = np.empty(16, dtype=np.int64)
        pen = np.empty(16)
        opt = np.empty(4)
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            dist[k] = _leech_one(
                y[k], out[k], pat, hexa, cost8, cc, qq, pp, m, g, dd, base, rho, pen, opt
            )


# ---------------------------------------------------------------------------
# Golay code: soft-decision maximum likelihood
# ---------------------------------------------------------------------------


@jit
def _golay_tables(r, pat, j, gm, gg, gd, base):
    """Column j tables: for (s, pi) the cheaper top bit, its cost sum_{c_i=1} r_i, the gap.

    ``base`` is a scratch array of 16 floats.
    """
    i0 = 4 * j
    for P in range(16):
        sc = 0.0
        for k in range(4):
            if (P >> k) & 1:
                sc += r[i0 + k]
        base[P] = sc
    for s in range(4):
        for pi in range(2):
            c0 = base[pat[s, pi, 0]]
            c1 = base[pat[s, pi, 1]]
            if c1 < c0:
                gm[j, s, pi] = c1
                gg[j, s, pi] = 1
                gd[j, s, pi] = c0 - c1
            else:
                gm[j, s, pi] = c0
                gg[j, s, pi] = 0
                gd[j, s, pi] = c1 - c0


@jit
def _golay_search(hexa, gm, gg, gd, best_in):
    """Min over (hexacode word, parity) of sum_{c_i=1} r_i; prunes at ``best_in``.

    Returns (cost, w, pi, repair column or -1); w = -1 if nothing beat ``best_in``.
    """
    best = best_in
    bw = -1
    bpi = 0
    bj = -1
    for w in range(64):
        h0 = hexa[w, 0]
        h1 = hexa[w, 1]
        h2 = hexa[w, 2]
        h3 = hexa[w, 3]
        h4 = hexa[w, 4]
        h5 = hexa[w, 5]
        for pi in range(2):
            tot = gm[0, h0, pi] + gm[1, h1, pi] + gm[2, h2, pi] + gm[3, h3, pi]
            tot += gm[4, h4, pi] + gm[5, h5, pi]
            if tot >= best:
                continue
            par = (
                gg[0, h0, pi] ^ gg[1, h1, pi] ^ gg[2, h2, pi]
                ^ gg[3, h3, pi] ^ gg[4, h4, pi] ^ gg[5, h5, pi]
            )
            rj = -1
            if par != pi:
                dm = _INF
                for j in range(6):
                    v = gd[j, hexa[w, j], pi]
                    if v < dm:
                        dm = v
                        rj = j
                tot += dm
            if tot < best:
                best = tot
                bw = w
                bpi = pi
                bj = rj
    return best, bw, bpi, bj


@jit
def _golay_word(hexa, pat, gg, w, pi, rj, out):
    """Write the codeword of (hexacode word w, parity pi, repair column rj) to ``out``."""
    for j in range(6):
        s = hexa[w, j]
        t = gg[j, s, pi]
        if j == rj:
            t ^= 1
        P = pat[s, pi, t]
        for k in range(4):
            out[4 * j + k] = (P >> k) & 1


@pjit
def golay_soft(r, pat, hexa, out):
    """Codewords maximising sum (-1)^{c_i} r_i for the rows of ``r`` (n, 24) float64."""
    n = r.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        gm = np.empty((6, 4, 2))
        gg = np.empty((6, 4, 2), dtype=np.int64)
        gd = np.empty((6, 4, 2))
        base = np.empty(16)
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            rk = r[k]
            for j in range(6):
                _golay_tables(rk, pat, j, gm, gg, gd, base)
            _, w, pi, rj = _golay_search(hexa, gm, gg, gd, _INF)
            _golay_word(hexa, pat, gg, w, pi, rj, out[k])


# ---------------------------------------------------------------------------
# Nearest minimal vector (largest inner product)
# ---------------------------------------------------------------------------


@jit
def _minvec_one(x, pat, hexa, octads, info, out, gm, gg, gd, sm, sg, sd, rr, word, ax, base):
    """Minimal vector of sqrt(8)*Lambda24 with the largest inner product with ``x``.

    Writes the vector (integer model) to ``out`` and returns its index in the order
    of ``LeechLattice.minimal_vectors``.  Candidates are compared with a strict
    ``>`` in the order shape 1, shape 2 (octads in order), shape 3 (k = 0..23).
    """
    tot_abs = 0.0
    for i in range(24):
        ax[i] = abs(x[i])
        tot_abs += ax[i]
    # shape 1: (+-4, +-4): the two largest |x_i| (first indices on ties)
    i1 = 0
    for i in range(1, 24):
        if ax[i] > ax[i1]:
            i1 = i
    i2 = -1
    for i in range(24):
        if i != i1 and (i2 < 0 or ax[i] > ax[i2]):
            i2 = i
    best = 4.0 * (ax[i1] + ax[i2])
    kind = 1
    # shape 2: octads, 2 * (sum |x| - 2 min |x| if an odd number of x_i < 0)
    bo = -1
    for o in range(octads.shape[0]):
        s = 0.0
        neg = 0
        mn = _INF
        for k in range(8):
            i = octads[o, k]
            v = ax[i]
            s += v
            if x[i] < 0.0:
                neg ^= 1
            if v < mn:
                mn = v
        if neg:
            s -= 2.0 * mn
        s *= 2.0
        if s > best:
            best = s
            bo = o
    if bo >= 0:
        kind = 2
    # shape 3: max over (c, k) of sum_{i != k} (-1)^{c_i} x_i - 3 (-1)^{c_k} x_k:
    # for each k a soft Golay decode of x with x_k replaced by -3 x_k.  The value is
    # sum r_i - 2 min_c sum_{c_i=1} r_i and is at most sum|x_i| + 2|x_k|.
    for j in range(6):
        _golay_tables(x, pat, j, gm, gg, gd, base)
    for i in range(24):
        rr[i] = x[i]
    bk = -1
    bw = 0
    bpi = 0
    brj = -1
    for k in range(24):
        if tot_abs + 2.0 * ax[k] <= best:
            continue
        j = k // 4
        rr[k] = -3.0 * x[k]
        rsum = 0.0
        for i in range(24):
            rsum += rr[i]
        for s in range(4):
            for pi in range(2):
                sm[s, pi] = gm[j, s, pi]
                sg[s, pi] = gg[j, s, pi]
                sd[s, pi] = gd[j, s, pi]
        _golay_tables(rr, pat, j, gm, gg, gd, base)
        # prune: cost must beat (rsum - best) / 2
        lim = 0.5 * (rsum - best)
        cst, w, pi, rj = _golay_search(hexa, gm, gg, gd, lim)
        if w >= 0:
            val = rsum - 2.0 * cst
            if val > best:
                best = val
                bk = k
                bw = w
                bpi = pi
                brj = rj
                # the chosen codeword depends on column j's tables: keep the word now
                _golay_word(hexa, pat, gg, w, pi, rj, word)
        for s in range(4):
            for pi in range(2):
                gm[j, s, pi] = sm[s, pi]
                gg[j, s, pi] = sg[s, pi]
                gd[j, s, pi] = sd[s, pi]
        rr[k] = x[k]
    if bk >= 0:
        kind = 3
    # write the vector and its index
    for i in range(24):
        out[i] = 0.0
    if kind == 1:
        a = min(i1, i2)
        b = max(i1, i2)
        sa = 1 if x[a] < 0.0 else 0
        sb = 1 if x[b] < 0.0 else 0
        out[a] = -4.0 if sa else 4.0
        out[b] = -4.0 if sb else 4.0
        pair = 23 * a - (a * (a - 1)) // 2 + (b - a - 1)
        return 4 * pair + sa + 2 * sb
    if kind == 2:
        neg = 0
        mk = -1
        mn = _INF
        for k in range(8):
            i = octads[bo, k]
            if x[i] < 0.0:
                neg ^= 1
            if ax[i] < mn:
                mn = ax[i]
                mk = k
        bits = 0
        for k in range(8):
            i = octads[bo, k]
            minus = 1 if x[i] < 0.0 else 0
            if neg and k == mk:
                minus ^= 1
            out[i] = -2.0 if minus else 2.0
            if k < 7:
                bits |= minus << k
        return 1104 + 128 * bo + bits
    cidx = 0
    for t in range(12):
        cidx |= np.int64(word[info[t]]) << t
    for i in range(24):
        out[i] = -1.0 if word[i] else 1.0
    out[bk] = -3.0 * out[bk]
    _ = bw + bpi + brj
    return 1104 + 97152 + 24 * cidx + bk


@pjit
def nearest_minvec(x, pat, hexa, octads, info, out, idx):
    """Nearest minimal vectors (largest inner product) for the rows of ``x`` (n, 24)."""
    n = x.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        gm = np.empty((6, 4, 2))
        gg = np.empty((6, 4, 2), dtype=np.int64)
        gd = np.empty((6, 4, 2))
        sm = np.empty((4, 2))
        sg = np.empty((4, 2), dtype=np.int64)
        sd = np.empty((4, 2))
        rr = np.empty(24)
        word = np.zeros(24, dtype=np.int64)
        ax = np.empty(24)
        base = np.empty(16)
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            idx[k] = _minvec_one(
                x[k], pat, hexa, octads, info, out[k], gm, gg, gd, sm, sg, sd, rr, word, ax, base
            )
