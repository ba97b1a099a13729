"""Numba kernels: exact Leech lattice decoding (the nearest point).

Everything works in the integer model sqrt(8)*Lambda24 in MOG coordinates
(coordinate ``4*column + row``) on float64 input.  Tables (hexacode words, MOG
column patterns, octads, the Golay information set) are passed in by the wrappers
in :mod:`leechlib.decode`; this module imports nothing from leechlib but the jit
policy.

Leech decoder (derived in ``docs/decoding.rst``, section "The derivation")
-------------------------------------------------------------------------
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

Kernel factory
--------------
The per-point functions (``_repair`` .. ``_leech_one``) are plain numeric Python
built by :func:`make_kernels` with a jit decorator it is given: here with the CPU
policy of :mod:`leechlib._jit` (the batch loop :func:`leech_nearest` calls them),
and in :mod:`leechlib._kernels.cuda` with ``numba.cuda.jit(device=True)``, so the
GPU runs the very same algorithm and tie-breaking, one thread per point.  With
``NUMBA_DISABLE_JIT=1`` all of it is the same plain Python.  The helpers are not
cached on disk by themselves (Numba would key a closure's entry on its cells, which
hold other dispatchers with per-process ids); the batch loop that calls them is,
with their code linked in.
"""

import math
import types

import numpy as np
from numba import prange

from leechlib._constants import MAX_ABS
from leechlib._jit import jit, pjit

#: points per task of the parallel loops (scratch arrays are allocated per chunk)
CHUNK = 128
#: sizes of the float64 and int64 scratch buffers of :func:`_leech_one` (the end of
#: its last table slice); the CPU batch loop and the CUDA kernel allocate these
SCRATCH_F = 1208
SCRATCH_I = 192

_INF = np.inf


def make_kernels(jit):
    """The per-point functions of the nearest-point decoder, decorated with ``jit``.

    ``jit`` is a decorator (the CPU policy's ``njit`` or ``numba.cuda.jit(device=True)``);
    the functions call each other through this closure, so each call of the factory
    gives a complete, independent set.  Nothing compiles here.

    Returns
    -------
    types.SimpleNamespace
        ``leech_one`` (see :func:`_leech_one`), ``repair`` and ``candidate_repair``.
    """

    @jit
    def _repair(dd, lane, hoff, w, delta):
        """Cheapest change of the per-column options that adds ``delta`` (non-zero) in Z2^2.

        Column j may move from its best option g_j to g_j ^ a (a in Z2^2 minus 0) at cost
        ``dd[64*j + 16*h_j + 4*lane + a] >= 0`` (lane = 2 eps + pi, h = hexacode word w,
        ``hoff[6w + j] = 16j + 4 h_j``), and the moves must add up to delta.  Claim:
        an optimal set of moves uses one column (a = delta) or two (a ^ a' = delta).
        Proof: take any multiset of non-zero elements of Z2^2 summing to delta != 0.
        If it contains delta, that element alone sums to delta.  Otherwise all its
        elements lie in {x1, x2}, the two non-zero elements other than delta, which are
        linearly independent with x1 ^ x2 = delta; n1 x1 + n2 x2 = delta forces n1 and
        n2 odd, so one x1 and one x2 are present and already sum to delta.  Dropping the
        other moves keeps the sum and does not raise the cost (increments are >= 0).
        (Two moves in one column are one move by their sum, so columns are distinct.)

        Returns (cost, j1, a1, j2, a2); ``j2 = -1`` for a one-column repair.  Ties: the
        one-column repair first, then columns in index order.
        """
        x1 = 2 if delta == 1 else 1
        x2 = 2 if delta == 3 else 3
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
            o = 4 * ((hoff[6 * w + j] & 127) + lane)
            v = dd[o + delta]
            if v < s_best:
                s_best = v
                s_j = j
            v = dd[o + x1]
            if v < b1:
                b2 = b1
                b2j = b1j
                b1 = v
                b1j = j
            elif v < b2:
                b2 = v
                b2j = j
            v = dd[o + x2]
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
    def _candidate_repair(w, lane, g, dd, hoff):
        """Repair cost (>= 0) of candidate (hexacode word ``w``, lane = 2 eps + pi).

        The cost of :func:`_repair` (the same sums, so the same floating-point value),
        branch-free: the single-column repair is a minimum over the columns, the
        two-column one a minimum over j of the move x1 in column j plus the least move
        x2 in any other column (prefix and suffix minima).
        """
        o0 = 4 * ((hoff[6 * w] & 127) + lane)
        o1 = 4 * ((hoff[6 * w + 1] & 127) + lane)
        o2 = 4 * ((hoff[6 * w + 2] & 127) + lane)
        o3 = 4 * ((hoff[6 * w + 3] & 127) + lane)
        o4 = 4 * ((hoff[6 * w + 4] & 127) + lane)
        o5 = 4 * ((hoff[6 * w + 5] & 127) + lane)
        dv = lane ^ g[o0 >> 2] ^ g[o1 >> 2] ^ g[o2 >> 2] ^ g[o3 >> 2] ^ g[o4 >> 2] ^ g[o5 >> 2]
        if dv == 0:
            return 0.0
        x1 = 2 if dv == 1 else 1
        x2 = x1 ^ dv
        single = min(
            min(min(dd[o0 + dv], dd[o1 + dv]), min(dd[o2 + dv], dd[o3 + dv])),
            min(dd[o4 + dv], dd[o5 + dv]),
        )
        c0 = dd[o0 + x2]
        c1 = dd[o1 + x2]
        c2 = dd[o2 + x2]
        c3 = dd[o3 + x2]
        c4 = dd[o4 + x2]
        c5 = dd[o5 + x2]
        p1 = min(c0, c1)
        p2 = min(p1, c2)
        p3 = min(p2, c3)
        p4 = min(p3, c4)
        s4 = min(c4, c5)
        s3 = min(c3, s4)
        s2 = min(c2, s3)
        s1 = min(c1, s2)
        pair = min(
            min(dd[o0 + x1] + s1, dd[o1 + x1] + min(c0, s2)),
            min(
                min(dd[o2 + x1] + min(p1, s3), dd[o3 + x1] + min(p2, s4)),
                min(dd[o4 + x1] + min(p3, c5), dd[o5 + x1] + p4),
            ),
        )
        return min(single, pair)


    @jit
    def _option(m, g, dd, mi, B0, r0, e0, B1, r1, e1):
        """Table entry ``mi`` from the two column options t = 0 (cost B0, p-parity r0,
        switch penalty e0) and t = 1 (B1, r1, e1): minimum, arg-min option g = t + 2 rho
        (t = 0 on ties) and the increments of the options g ^ a, a = 0..3.  Branch-free
        (selects): the comparison is data-dependent and would mispredict half the time."""
        ts = B1 < B0
        m[mi] = min(B0, B1)
        g[mi] = (1 + 2 * r1) if ts else (2 * r0)
        df = abs(B1 - B0)
        eo = e0 if ts else e1
        same = r0 == r1
        dd[4 * mi] = 0.0
        dd[4 * mi + 1] = df + (0.0 if same else eo)
        dd[4 * mi + 2] = e1 if ts else e0
        dd[4 * mi + 3] = df + (eo if same else 0.0)


    @jit
    def _column_options(m, g, dd, mi, c0, q0, p0, c1, q1, p1, cx, qx, px, cy, qy, py):
        """Entries ``mi`` (pi = 0) and ``mi + 1`` (pi = 1) of one column and score.

        Row 0 costs (c0, q0, p0) with bit 0 and (c1, q1, p1) with bit 1; rows 1..3 cost
        (cx, qx, px) as X_s and (cy, qy, py) as Y_s.  pi = 0 pairs t = 0 with X_s and
        t = 1 with Y_s; pi = 1 the other way round.
        """
        _option(m, g, dd, mi, c0 + cx, q0 ^ qx, min(p0, px), c1 + cy, q1 ^ qy, min(p1, py))
        _option(m, g, dd, mi + 1, c0 + cy, q0 ^ qy, min(p0, py), c1 + cx, q1 ^ qx, min(p1, px))


    @jit
    def _column_rows(t, k0):
        """The eight entries of one column in a per-(residue, coordinate) table: rows 0..3
        with bit b = 0 (residue eps, flat index ``k0 + r``) and b = 1 (residue eps + 2,
        ``k0 + 48 + r``), ordered (r0b0, r0b1, r1b0, r1b1, ...)."""
        k1 = k0 + 48
        return t[k0], t[k1], t[k0 + 1], t[k1 + 1], t[k0 + 2], t[k1 + 2], t[k0 + 3], t[k1 + 3]


    @jit
    def _leech_one(y, out, pat, hexa, hoff, fs, js):
        """Nearest point of sqrt(8)*Lambda24 to ``y`` (24 floats); writes ``out``.

        ``pat`` is ``column_pattern().ravel()`` (index ``4*s + 2*pi + t``) and ``hexa``
        ``hexacode_words().ravel()`` (index ``6*w + j``), ``hoff[6w + j] = 16j + 4 hexa[6w + j]``,
        all int64.  Returns the squared
        distance.  ``fs`` (float64) and ``js`` (int64) are scratch buffers of
        :func:`_leech_scratch`, cut into the flat tables below.
        """
        rr = fs[0:24]  # y reduced mod 8
        cA = fs[24:120]  # cA[24a + i]: best cost for residue a = eps + 2b (mod 4)
        pA = fs[120:216]  # penalty to switch p
        zB = fs[216:312]  # the nearest point of 8Z + a + 4p with the best p
        zO = fs[312:408]  # ... with the other p
        m = fs[408:504]  # m[16j + 4s + 2e + pi]
        dd = fs[504:888]  # dd[4*(m index) + a]
        T = fs[888:1144]  # T[4w + 2e + pi]
        Tw = fs[1144:SCRATCH_F]  # min over the four lanes of word w
        qA = js[0:96]  # best p
        g = js[96:SCRATCH_I]  # g[m index]
        # 1. reduce modulo 8Z^24: r = y - 8n in [-4, 4) (exact)
        for i in range(24):
            v = y[i]
            n8 = math.floor(v * 0.125 + 0.5) * 8.0  # exact (|v| < 2**50); math.floor also compiles for CUDA
            out[i] = n8
            rr[i] = v - n8
        # 2. per residue a = eps + 2b (mod 4) and coordinate: |distance| s to 8Z + a;
        #    8Z + a + 4 is at 4 - s.  Best p, its cost, the penalty to switch p and
        #    both points (zB with the best p, zO with the other).  Flat index 24*a + i.
        #    (At distance exactly 4 from 8Z + a the candidate is a itself.)
        for a in range(4):
            for i in range(24):
                ri = rr[i]
                t = ri - a
                wrap = t < -4.0
                t = t + 8.0 if wrap else t
                z0 = a - 8.0 if wrap else float(a)
                z4 = z0 + 4.0 if t >= 0.0 else z0 - 4.0
                s = abs(t)
                o = 4.0 - s
                s2 = s * s
                o2 = o * o
                k = 24 * a + i
                p = o < s
                cA[k] = min(s2, o2)
                qA[k] = np.int64(p)
                pA[k] = abs(s2 - o2)
                zB[k] = z4 if p else z0
                zO[k] = z0 if p else z4
        # 3. column tables per coset.  Per (column j, score s, lane = 2 eps + pi) at
        #    mi = 16j + 4s + lane: the minimum m, its option g (t + 2 rho) and the
        #    increments dd[4 mi + a] of the options g ^ a.  Column patterns (rows
        #    labelled 0..3, score = XOR of the labels of the set rows): rows 1..3 form
        #    X_s (even, {}, {2,3}, {1,3}, {1,2} for s = 0..3) or its complement Y_s
        #    (odd); pi = 0 pairs t = 0 with X_s and t = 1 with Y_s, pi = 1 pairs t = 0
        #    with Y_s and t = 1 with X_s (``column_pattern``; a test checks the match).
        #    Everything is kept in scalars (cost c, p-parity q, switch penalty p per
        #    row r and bit b) so that LLVM keeps it in registers.
        for e in range(2):
            for j in range(6):
                k0 = 24 * e + 4 * j
                c00, c01, c10, c11, c20, c21, c30, c31 = _column_rows(cA, k0)
                q00, q01, q10, q11, q20, q21, q30, q31 = _column_rows(qA, k0)
                p00, p01, p10, p11, p20, p21, p30, p31 = _column_rows(pA, k0)
                mb = 16 * j + 2 * e
                # s = 0: X = {}, Y = {1, 2, 3}
                _column_options(
                    m, g, dd, mb,
                    c00, q00, p00, c01, q01, p01,
                    c10 + c20 + c30, q10 ^ q20 ^ q30, min(p10, min(p20, p30)),
                    c11 + c21 + c31, q11 ^ q21 ^ q31, min(p11, min(p21, p31)),
                )
                # s = 1: X = {2, 3}, Y = {1}
                _column_options(
                    m, g, dd, mb + 4,
                    c00, q00, p00, c01, q01, p01,
                    c10 + c21 + c31, q10 ^ q21 ^ q31, min(p10, min(p21, p31)),
                    c11 + c20 + c30, q11 ^ q20 ^ q30, min(p11, min(p20, p30)),
                )
                # s = 2: X = {1, 3}, Y = {2}
                _column_options(
                    m, g, dd, mb + 8,
                    c00, q00, p00, c01, q01, p01,
                    c11 + c20 + c31, q11 ^ q20 ^ q31, min(p11, min(p20, p31)),
                    c10 + c21 + c30, q10 ^ q21 ^ q30, min(p10, min(p21, p30)),
                )
                # s = 3: X = {1, 2}, Y = {3}
                _column_options(
                    m, g, dd, mb + 12,
                    c00, q00, p00, c01, q01, p01,
                    c11 + c21 + c30, q11 ^ q21 ^ q30, min(p11, min(p21, p30)),
                    c10 + c20 + c31, q10 ^ q20 ^ q31, min(p10, min(p20, p31)),
                )
        # 4a. lower bounds T (sum of the column minima) of all 256 (word w, lane =
        #     2 eps + pi) at 4w + lane.  hoff[6w + j] = 16j + 4 h_j(w); the masks let
        #     LLVM drop negative-index checks.  Deficits are only computed for the
        #     candidates that survive the bound (4b), not for all 256.
        t0 = _INF
        t1 = _INF
        t2 = _INF
        t3 = _INF
        w0 = 0
        w1 = 0
        w2 = 0
        w3 = 0
        for w in range(64):
            o0 = hoff[6 * w] & 127
            o1 = hoff[6 * w + 1] & 127
            o2 = hoff[6 * w + 2] & 127
            o3 = hoff[6 * w + 3] & 127
            o4 = hoff[6 * w + 4] & 127
            o5 = hoff[6 * w + 5] & 127
            k = (4 * w) & 255
            v0 = m[o0] + m[o1] + m[o2] + m[o3] + m[o4] + m[o5]
            v1 = m[o0 + 1] + m[o1 + 1] + m[o2 + 1] + m[o3 + 1] + m[o4 + 1] + m[o5 + 1]
            v2 = m[o0 + 2] + m[o1 + 2] + m[o2 + 2] + m[o3 + 2] + m[o4 + 2] + m[o5 + 2]
            v3 = m[o0 + 3] + m[o1 + 3] + m[o2 + 3] + m[o3 + 3] + m[o4 + 3] + m[o5 + 3]
            T[k] = v0
            T[k + 1] = v1
            T[k + 2] = v2
            T[k + 3] = v3
            Tw[w & 63] = min(min(v0, v1), min(v2, v3))
            # branch-free running minimum and arg-min per lane
            w0 = w if v0 < t0 else w0
            w1 = w if v1 < t1 else w1
            w2 = w if v2 < t2 else w2
            w3 = w if v3 < t3 else w3
            t0 = min(t0, v0)
            t1 = min(t1, v1)
            t2 = min(t2, v2)
            t3 = min(t3, v3)
        kmin = 4 * w0
        tmin = t0
        if t1 < tmin:
            kmin = 4 * w1 + 1
            tmin = t1
        if t2 < tmin:
            kmin = 4 * w2 + 2
            tmin = t2
        if t3 < tmin:
            kmin = 4 * w3 + 3
        # An upper bound: the exact cost of the candidate with the least lower bound.
        # (Any achieved cost works: 4b returns the first minimiser in enumeration
        # order whatever bound it starts from, see the acceptance rule below.)
        best = T[kmin] + _candidate_repair(kmin >> 2, kmin & 3, g, dd, hoff)
        # 4b. exact search, pruned by the lower bounds.  Words are visited in order,
        #     each word's lanes (eps, pi) after it; the winner is the least (cost,
        #     enumeration index 128 eps + 2 w + pi), i.e. the first minimiser in the
        #     enumeration order (eps, w, pi) of the tie-breaking rule.
        be = -1
        bw = 0
        bpi = 0
        bord = 256
        for w in range(64):
            if Tw[w] > best:
                continue
            for lane in range(4):
                tv = T[4 * w + lane]
                if tv > best:
                    continue
                tv = tv + _candidate_repair(w, lane, g, dd, hoff)
                e = lane >> 1
                pi = lane & 1
                od = 128 * e + 2 * w + pi
                if tv < best or (tv == best and od < bord):
                    best = tv
                    be = e
                    bw = w
                    bpi = pi
                    bord = od
        # 5. rebuild the point
        e = be
        w = bw
        pi = bpi
        lane = 2 * e + pi
        delta = lane
        for j in range(6):
            delta ^= g[(hoff[6 * w + j] & 127) + lane]
        j1 = -1
        j2 = -1
        a1 = 0
        a2 = 0
        if delta != 0:
            _, j1, a1, j2, a2 = _repair(dd, lane, hoff, w, delta)
        dist = 0.0
        for j in range(6):
            s = hexa[6 * w + j]
            q = g[16 * j + 4 * s + lane]
            q ^= a1 if j == j1 else 0
            q ^= a2 if j == j2 else 0
            P = pat[4 * s + 2 * pi + (q & 1)]
            rh = q >> 1
            i0 = 4 * j
            # each row's best p; if their parity is not rh, the first row of least
            # penalty switches p
            par = 0
            sw = 0
            pn = _INF
            for r in range(4):
                k = 24 * (e + 2 * ((P >> r) & 1)) + i0 + r
                par ^= qA[k]
                pk = pA[k]
                sw = r if pk < pn else sw
                pn = min(pn, pk)
            sw = sw if par != rh else 4
            for r in range(4):
                k = 24 * (e + 2 * ((P >> r) & 1)) + i0 + r
                z = zO[k] if r == sw else zB[k]
                d = rr[i0 + r] - z
                dist += d * d
                out[i0 + r] += z
        return dist

    return types.SimpleNamespace(leech_one=_leech_one, repair=_repair,
                                 candidate_repair=_candidate_repair)


# The CPU kernels.  ``jit(cache=False)``: see "Kernel factory" above.
_cpu = make_kernels(jit(cache=False))
_leech_one = _cpu.leech_one
_repair = _cpu.repair
_candidate_repair = _cpu.candidate_repair


@jit
def _leech_scratch():
    """Scratch buffers of :func:`_leech_one` (allocated once per chunk of points)."""
    return np.zeros(SCRATCH_F), np.zeros(SCRATCH_I, dtype=np.int64)


@pjit
def leech_nearest(x, factor, mul, div, dmul, ddiv, pat, hexa, hoff, out, dist):
    """Nearest points of the Leech lattice to the rows of ``x`` (n, 24), fused I/O.

    Row k is taken to the integer frame as ``y = float64(x[k]) * factor``, decoded in
    sqrt(8)*Lambda24 (:func:`_leech_one`), and written back as ``out[k] = z * mul / div``
    and ``dist[k] = d * dmul / ddiv`` (``z`` the nearest point and ``d`` the squared
    distance in the integer frame; ``out`` and ``dist`` may be float32: one rounding
    from float64).  ``pat``, ``hexa`` and ``hoff`` are the raveled int64 tables (see
    :func:`_leech_one`).  Rows with an entry of ``y`` that is not finite or not
    below ``MAX_ABS`` in absolute value are not decoded (``dist`` is NaN there);
    the number of such rows is returned.
    """
    n = x.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    bad = 0
    for ch in prange(nch):
        fs, js = _leech_scratch()
        yb = np.empty(24)
        ob = np.empty(24)
        nb = 0
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            ok = True
            for i in range(24):
                v = np.float64(x[k, i]) * factor
                yb[i] = v
                ok = ok and abs(v) < MAX_ABS  # False for NaN and inf
            if not ok:
                nb += 1
                dist[k] = np.nan
                continue
            d = _leech_one(yb, ob, pat, hexa, hoff, fs, js)
            for i in range(24):
                out[k, i] = ob[i] * mul / div
            dist[k] = d * dmul / ddiv
        bad += nb
    return bad
