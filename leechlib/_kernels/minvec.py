"""Numba kernels: soft-decision Golay decoding and the nearest minimal vector.

Both work in MOG coordinates (coordinate ``4*column + row``) on float64 input, with
the tables of :func:`leechlib._mog.kernel_tables` passed in by the wrappers
(:func:`leechlib.golay.golay_decode_soft`, :func:`leechlib.nearest_minimal_vector`);
this module imports nothing from leechlib but the jit policy.

Soft Golay decoding (maximum likelihood): per MOG column, score ``s`` and parity
``pi`` the cheaper of the two column patterns (top bit 0 or 1) and the gap between
them; per (hexacode word, parity) the sum of the column minima, repaired by the
column of least gap when the top bits have the wrong parity (``docs/decoding.rst``,
section "The derivation").

Nearest minimal vector: the best of the three shapes of the minimal vectors, the
third by 24 soft Golay decodes (see :func:`_minvec_one`).

As in :mod:`leechlib._kernels.leech`, the per-point functions come from
:func:`make_kernels`, called here with the CPU policy (uncached helpers, cached batch
loops) and in :mod:`leechlib._kernels.cuda` with ``numba.cuda.jit(device=True)``.
"""

import types

import numpy as np
from numba import prange

from leechlib._jit import jit, pjit

#: points per task of the parallel loops (scratch arrays are allocated per chunk)
CHUNK = 128

_INF = np.inf


def make_kernels(jit):
    """The per-point functions of soft Golay decoding and the minimal-vector search.

    ``jit`` is a decorator (the CPU policy's ``njit`` or ``numba.cuda.jit(device=True)``).

    Returns
    -------
    types.SimpleNamespace
        ``golay_tables``, ``golay_search``, ``golay_word`` and ``minvec_one``.
    """

    @jit
    def _golay_tables(r, pat, j, gm, gg, gd, base):
        """Column j tables of the soft Golay decoder, at index 8j + 2s + pi.

        For score s and parity pi the two column patterns (top bit t = 0, 1) cost
        sum_{rows in P} r_i; ``gm`` gets the smaller cost, ``gg`` its top bit (0 on
        ties), ``gd`` the gap.  ``base`` is a scratch array of 16 floats.
        """
        i0 = 4 * j
        r0 = r[i0]
        r1 = r[i0 + 1]
        r2 = r[i0 + 2]
        r3 = r[i0 + 3]
        lo0 = 0.0
        lo1 = r0
        lo2 = r1
        lo3 = r0 + r1
        for hi in range(4):
            hv = (r2 if hi & 1 else 0.0) + (r3 if hi & 2 else 0.0)
            base[4 * hi] = lo0 + hv
            base[4 * hi + 1] = lo1 + hv
            base[4 * hi + 2] = lo2 + hv
            base[4 * hi + 3] = lo3 + hv
        for s in range(4):
            for pi in range(2):
                c0 = base[pat[4 * s + 2 * pi]]
                c1 = base[pat[4 * s + 2 * pi + 1]]
                k = 8 * j + 2 * s + pi
                gm[k] = min(c0, c1)
                gg[k] = np.int64(c1 < c0)
                gd[k] = abs(c1 - c0)


    @jit
    def _golay_search(hoff, gm, gg, gd, best_in):
        """Min over (hexacode word w, parity pi) of sum_{c_i = 1} r_i, pruned at ``best_in``.

        ``hoff[6w + j] = 8j + 2 h_j(w)``.  The first minimum in the order (w, pi) wins
        (strict ``<``).  Returns (cost, w, pi); w = -1 if nothing is below ``best_in``.
        """
        best = best_in
        bw = -1
        bpi = 0
        for w in range(64):
            o0 = hoff[6 * w] & 63
            o1 = hoff[6 * w + 1] & 63
            o2 = hoff[6 * w + 2] & 63
            o3 = hoff[6 * w + 3] & 63
            o4 = hoff[6 * w + 4] & 63
            o5 = hoff[6 * w + 5] & 63
            t0 = gm[o0] + gm[o1] + gm[o2] + gm[o3] + gm[o4] + gm[o5]
            t1 = gm[o0 + 1] + gm[o1 + 1] + gm[o2 + 1] + gm[o3 + 1] + gm[o4 + 1] + gm[o5 + 1]
            # the lower bounds t0, t1 rarely beat ``best``: test them before the repair
            if t0 < best:
                p0 = gg[o0] ^ gg[o1] ^ gg[o2] ^ gg[o3] ^ gg[o4] ^ gg[o5]
                if p0 != 0:
                    t0 += min(min(min(gd[o0], gd[o1]), min(gd[o2], gd[o3])), min(gd[o4], gd[o5]))
                if t0 < best:
                    best = t0
                    bw = w
                    bpi = 0
            if t1 < best:
                p1 = gg[o0 + 1] ^ gg[o1 + 1] ^ gg[o2 + 1] ^ gg[o3 + 1] ^ gg[o4 + 1] ^ gg[o5 + 1]
                if p1 != 1:
                    t1 += min(
                        min(min(gd[o0 + 1], gd[o1 + 1]), min(gd[o2 + 1], gd[o3 + 1])),
                        min(gd[o4 + 1], gd[o5 + 1]),
                    )
                if t1 < best:
                    best = t1
                    bw = w
                    bpi = 1
        return best, bw, bpi


    @jit
    def _golay_word(hoff, pat, gg, gd, w, pi, out):
        """Write the codeword of (hexacode word w, parity pi) to ``out`` (24 ints).

        Each column takes its cheaper top bit; if their parity is not pi, the first
        column with the least gap flips its top bit.
        """
        par = 0
        rj = -1
        dm = _INF
        for j in range(6):
            k = (hoff[6 * w + j] & 63) + pi
            par ^= gg[k]
            if gd[k] < dm:
                dm = gd[k]
                rj = j
        for j in range(6):
            k = (hoff[6 * w + j] & 63) + pi
            t = gg[k]
            if par != pi and j == rj:
                t ^= 1
            s = (k >> 1) & 3
            P = pat[4 * s + 2 * pi + t]
            for q in range(4):
                out[4 * j + q] = (P >> q) & 1

    @jit
    def _minvec_one(x, pat, hoff, octads, info, out, gm, gg, gd, sv, rr, word, ax, base):
        """Minimal vector of sqrt(8)*Lambda24 with the largest inner product with ``x``.

        Writes the vector (integer model) to ``out`` and returns its index in the order
        of ``LeechLattice.minimal_vectors``.  ``octads`` is the (759*8,) int64 raveled
        octad table, ``info`` the Golay information set (codeword index = sum over t of
        c[info[t]] << t).  Candidates are compared with a strict ``>`` in the order
        shape 1, shape 2 (octads in order), shape 3 (k = 0..23).
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
        i2 = 1 if i1 == 0 else 0
        for i in range(24):
            if i != i1 and ax[i] > ax[i2]:
                i2 = i
        best = 4.0 * (ax[i1] + ax[i2])
        kind = 1
        # shape 2: octads, 2 * (sum |x| - 2 min |x| if an odd number of x_i < 0);
        # at most 2 * (sum of the 8 largest |x_i|) -- skip the loop when that cannot win
        # (the 8 largest by insertion into rr[0:8], descending -- no sort, so that the
        # same source compiles for CUDA -- and summed in ascending order)
        bo = -1
        for q in range(8):
            rr[q] = -1.0
        for i in range(24):
            v = ax[i]
            if v > rr[7]:
                q = 7
                while q > 0 and rr[q - 1] < v:
                    rr[q] = rr[q - 1]
                    q -= 1
                rr[q] = v
        top8 = 0.0
        for q in range(7, -1, -1):
            top8 += rr[q]
        if 2.0 * top8 > best:
            for o in range(octads.shape[0] // 8):
                s = 0.0
                neg = 0
                mn = _INF
                for k in range(8):
                    i = octads[8 * o + k] & 31
                    v = ax[i]
                    s += v
                    neg ^= np.int64(x[i] < 0.0)
                    mn = min(mn, v)
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
        for k in range(24):
            if tot_abs + 2.0 * ax[k] <= best:
                continue
            j = k // 4
            rr[k] = -3.0 * x[k]
            rsum = 0.0
            for i in range(24):
                rsum += rr[i]
            for q in range(8):
                sv[q] = gm[8 * j + q]
                sv[8 + q] = gd[8 * j + q]
                sv[16 + q] = gg[8 * j + q]
            _golay_tables(rr, pat, j, gm, gg, gd, base)
            # the value beats ``best`` iff the cost is below (rsum - best) / 2
            cst, w, pi = _golay_search(hoff, gm, gg, gd, 0.5 * (rsum - best))
            if w >= 0:
                val = rsum - 2.0 * cst
                if val > best:
                    best = val
                    bk = k
                    _golay_word(hoff, pat, gg, gd, w, pi, word)
            for q in range(8):
                gm[8 * j + q] = sv[q]
                gd[8 * j + q] = sv[8 + q]
                gg[8 * j + q] = np.int64(sv[16 + q])
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
                i = octads[8 * bo + k]
                if x[i] < 0.0:
                    neg ^= 1
                if ax[i] < mn:
                    mn = ax[i]
                    mk = k
            bits = 0
            for k in range(8):
                i = octads[8 * bo + k]
                minus = 1 if x[i] < 0.0 else 0
                if neg and k == mk:
                    minus ^= 1
                out[i] = -2.0 if minus else 2.0
                if k < 7:
                    bits |= minus << k
            return 1104 + 128 * bo + bits
        cidx = 0
        for t in range(12):
            cidx |= word[info[t]] << t
        for i in range(24):
            out[i] = -1.0 if word[i] else 1.0
        out[bk] = -3.0 * out[bk]
        return 1104 + 97152 + 24 * cidx + bk

    return types.SimpleNamespace(golay_tables=_golay_tables, golay_search=_golay_search,
                                 golay_word=_golay_word, minvec_one=_minvec_one)


# The CPU kernels (helpers uncached; the batch loops below are cached whole).
_cpu = make_kernels(jit(cache=False))
_golay_tables = _cpu.golay_tables
_golay_search = _cpu.golay_search
_golay_word = _cpu.golay_word
_minvec_one = _cpu.minvec_one


@pjit
def golay_soft(r, pat, hoff, out):
    """Codewords maximising sum (-1)^{c_i} r_i for the rows of ``r`` (n, 24) float64.

    ``pat = column_pattern().ravel()``; ``hoff[6w + j] = 8j + 2 hexacode_words()[w, j]``.
    """
    n = r.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        gm = np.zeros(48)
        gg = np.zeros(48, dtype=np.int64)
        gd = np.zeros(48)
        base = np.zeros(16)
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            rk = r[k]
            for j in range(6):
                _golay_tables(rk, pat, j, gm, gg, gd, base)
            _, w, pi = _golay_search(hoff, gm, gg, gd, _INF)
            _golay_word(hoff, pat, gg, gd, w, pi, out[k])


@pjit
def nearest_minvec(x, pat, hoff, octads, info, out, idx):
    """Nearest minimal vectors (largest inner product) for the rows of ``x`` (n, 24).

    ``hoff`` as for :func:`golay_soft`; see :func:`_minvec_one` for the rest.
    """
    n = x.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        gm = np.zeros(48)
        gg = np.zeros(48, dtype=np.int64)
        gd = np.zeros(48)
        sv = np.zeros(24)
        rr = np.zeros(24)
        word = np.zeros(24, dtype=np.int64)
        ax = np.zeros(24)
        base = np.zeros(16)
        stop = min(n, (ch + 1) * CHUNK)
        for k in range(ch * CHUNK, stop):
            idx[k] = _minvec_one(
                x[k], pat, hoff, octads, info, out[k], gm, gg, gd, sv, rr, word, ax, base
            )
