r"""Explore decode-friendly Leech codes built on the standard trio (issue #22, item 1).

Prototype (numpy tables + one Numba search kernel, not part of leechlib) of "trio
codes": subsets of :math:`\sqrt8\Lambda_{24}` (integer model) of the form

    union over (eps, Golay word c, class bits pi_1, pi_2, pi_3 = eps + pi_1 + pi_2)
    of  S(eps, c|octet 1, pi_1) x S(eps, c|octet 2, pi_2) x S(eps, c|octet 3, pi_3)

where the octets are the trio 0-7, 8-15, 16-23 and each octet set is a *table*
(the cheapest vectors of its class, optionally cut into norm *tiers* that are
combined by a small list of allowed tier triples).  Every variant is encoded
EXACTLY (nearest codeword): best-first over (coset, tier triple) by the sum of
per-octet lower bounds (the parity-constrained per-coordinate rounding, exact when
that point lies in the tier), with a table scan for the octet problems that are
popped.  ``--check`` compares against full scans of every octet set.

Gaussian source, scale (and gains) fitted by golden-section search on the MSE,
MSE measured on other blocks.  Run::

    PYTHONPATH=. python benchmarks/trio_code_explore.py --fit 1500 --test 3000
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from leechlib import _mog
from leechlib._optimize import golden_min

SQRT8 = math.sqrt(8.0)
BYTES = np.array([b for b in range(256) if bin(b).count("1") % 2 == 0], dtype=np.int64)


# ---------------------------------------------------------------------------
# octet classes and tables
# ---------------------------------------------------------------------------

def _grid(values_per_coord):
    g = np.array(np.meshgrid(*values_per_coord, indexing="ij"), dtype=np.int8)
    return g.reshape(8, -1).T.copy()


def class_candidates(eps: int, w: int, pi: int, vmax: int = 11, nmax: int = 143):
    """All v in the class, |v_i| <= vmax, norm <= nmax, sorted by (norm, lex).

    eps = 1: canonical form t in (1 + 4Z)^8 (pattern = sign flips), class bit =
    #{t_i = 5 mod 8} mod 2.  eps = 0: positions < w odd-pattern (v = 2 mod 4),
    the rest v = 0 mod 4, class bit = sum k_i mod 2 with v = 2p + 4k.
    """
    if eps == 1:
        vals = [np.arange(-vmax, vmax + 1)[(np.arange(-vmax, vmax + 1) % 4) == 1]] * 8
    else:
        r = np.arange(-vmax, vmax + 1)
        vals = [r[r % 4 == 2]] * w + [r[r % 4 == 0]] * (8 - w)
    g = _grid(vals).astype(np.int32)  # complete below norm 144 (next values: 12, 13, 14)
    if eps == 1:
        bits = (((g - 1) // 4) % 2).sum(axis=1) % 2
    else:
        p = np.array([1] * w + [0] * (8 - w))
        bits = (((g - 2 * p) // 4) % 2).sum(axis=1) % 2
    g = g[bits == pi]
    nrm = (g * g).sum(axis=1)
    g, nrm = g[nrm <= nmax], nrm[nrm <= nmax]
    order = np.lexsort(tuple(g.T[::-1]) + (nrm,))
    return g[order].astype(np.int8), nrm[order]


def full_norm_interval(nrm_all, start, stop):
    """(lo, hi): norms n with lo <= n <= hi are wholly inside rows [start, stop)."""
    n_in = nrm_all[start:stop]
    levels = np.unique(n_in)
    full = [n for n in levels if np.all((nrm_all == n)[:start] == 0) and
            np.count_nonzero(nrm_all == n) == np.count_nonzero(n_in == n)]
    # rows are sorted by norm: only the first and last level of a tier can be partial
    if not full:
        return 1, 0
    return int(min(full)), int(max(full))


class TrioTables:
    """Explicit per-set tables for every (eps, pattern byte, pi): int8 v-values."""

    def __init__(self, tier_sizes, triples):
        self.tier_sizes = list(tier_sizes)
        total = sum(tier_sizes)
        self.n_tiers = len(tier_sizes)
        starts = np.cumsum([0] + self.tier_sizes)
        canon = {}
        for eps in (0, 1):
            for w in ((0,) if eps else (0, 2, 4, 6, 8)):
                for pi in (0, 1):
                    g, n = class_candidates(eps, w, pi)
                    assert len(g) >= total, (eps, w, pi, len(g))
                    lohi = [full_norm_interval(n, starts[t], starts[t + 1]) for t in range(self.n_tiers)]
                    canon[eps, w, pi] = (g[:total], lohi, n[:total])
        self.canon = canon
        n_sets = 2 * 256 * 2
        self.tab = np.zeros((n_sets, total, 8), dtype=np.int8)
        self.lo = np.zeros((n_sets, self.n_tiers), dtype=np.int64)
        self.hi = np.zeros((n_sets, self.n_tiers), dtype=np.int64)
        self.start = starts.astype(np.int64)
        for eps in (0, 1):
            for b in BYTES:
                bits = (b >> np.arange(8)) & 1
                w = int(bits.sum())
                for pi in (0, 1):
                    s = eps * 512 + b * 2 + pi
                    if eps == 1:
                        g, lohi, _ = canon[1, 0, pi]
                        v = g * np.where(bits == 1, -1, 1).astype(np.int8)
                    else:
                        g, lohi, _ = canon[0, w, pi]
                        pos = np.r_[np.nonzero(bits)[0], np.nonzero(bits == 0)[0]]
                        v = np.empty_like(g)
                        v[:, pos] = g
                    self.tab[s] = v
                    self.lo[s] = [a for a, _ in lohi]
                    self.hi[s] = [c for _, c in lohi]
        nt = self.n_tiers
        if isinstance(triples, int):  # the `triples` tier triples of least summed mean norm
            key = np.mean([[n[starts[k]:starts[k + 1]].mean() for k in range(nt)]
                           for (_, _, n) in canon.values()], axis=0)
            allc = np.array(np.meshgrid(*[np.arange(nt)] * 3, indexing="ij")).reshape(3, -1).T
            order = np.lexsort(tuple(allc.T[::-1]) + (key[allc].sum(1),))
            triples = allc[order[:triples]]
        self.triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        self.allowed = np.zeros((nt, nt, nt), dtype=np.bool_)
        self.allowed[tuple(self.triples.T)] = True
        cw = _mog.codewords().astype(np.int64)
        self.pbytes = np.stack([(cw[:, 8 * j:8 * j + 8] << np.arange(8)).sum(1) for j in range(3)], 1)

    @property
    def log2_size(self):
        per = sum(math.prod(self.tier_sizes[t] for t in tr) for tr in self.triples)
        return 1 + 12 + 2 + math.log2(per)


# ---------------------------------------------------------------------------
# the exact search kernel
# ---------------------------------------------------------------------------

def _kernels():
    import numba

    @numba.njit(cache=False)
    def scan_tiers(y8, tab, s, start, e, arg):
        """e[k], arg[k]: the nearest row of tier k of set s (rows start[k]..start[k+1])."""
        nt = start.shape[0] - 1
        for k in range(nt):
            best = 1e300
            a = start[k]
            for r in range(start[k], start[k + 1]):
                d = 0.0
                for i in range(8):
                    q = y8[i] - tab[s, r, i]
                    d += q * q
                if d < best:
                    best = d
                    a = r
            e[k] = best
            arg[k] = a

    @numba.njit(cache=False)
    def coset_sets(q, pbytes):
        p2 = q % 2
        p1 = (q // 2) % 2
        m = (q // 4) % 4096
        eps = q // (4 * 4096)
        return (eps * 512 + pbytes[m, 0] * 2 + p1, eps * 512 + pbytes[m, 1] * 2 + p2,
                eps * 512 + pbytes[m, 2] * 2 + (eps ^ p1 ^ p2))

    @numba.njit(cache=False)
    def encode(y, tab, lo, hi, start, combos, allowed, pbytes, bytes_, out, stats):
        n = y.shape[0]
        nt = start.shape[0] - 1
        C = combos.shape[0]
        ulb = np.empty((3, 1024))
        utier = np.empty((3, 1024), dtype=np.int64)
        urow = np.zeros((3, 1024, 8), dtype=np.int64)
        ex = np.empty((3, 1024, nt))
        exarg = np.empty((3, 1024, nt), dtype=np.int64)
        done = np.zeros((3, 1024), dtype=np.bool_)
        cost = np.empty((24, 8))
        near = np.empty((24, 8), dtype=np.int64)
        cval = np.empty(2 * 4096 * 4)
        for blk in range(n):
            done[:] = False
            for i in range(24):
                for r in range(8):
                    v = r + 8 * np.rint((y[blk, i] - r) / 8.0)
                    near[i, r] = np.int64(v)
                    cost[i, r] = (y[blk, i] - v) ** 2
            for j in range(3):
                for eps in range(2):
                    for bi in range(bytes_.shape[0]):
                        b = bytes_[bi]
                        for pi in range(2):
                            s = eps * 512 + b * 2 + pi
                            lb = 0.0
                            par = 0
                            fix = 1e300
                            fixi = -1
                            for ii in range(8):
                                i = 8 * j + ii
                                r0 = (eps + 2 * ((b >> ii) & 1)) % 8
                                c0 = cost[i, r0]
                                c1 = cost[i, (r0 + 4) % 8]
                                if c0 <= c1:
                                    lb += c0
                                    urow[j, s, ii] = near[i, r0]
                                    d = c1 - c0
                                else:
                                    lb += c1
                                    par ^= 1
                                    urow[j, s, ii] = near[i, (r0 + 4) % 8]
                                    d = c0 - c1
                                if d < fix:
                                    fix = d
                                    fixi = ii
                            if par != pi:  # the cheapest single change of class (D_n decoding)
                                lb += fix
                                i = 8 * j + fixi
                                r0 = (eps + 2 * ((b >> fixi) & 1)) % 8
                                if urow[j, s, fixi] == near[i, r0]:
                                    urow[j, s, fixi] = near[i, (r0 + 4) % 8]
                                else:
                                    urow[j, s, fixi] = near[i, r0]
                            nu = 0
                            for ii in range(8):
                                nu += urow[j, s, ii] * urow[j, s, ii]
                            ulb[j, s] = lb
                            utier[j, s] = -1
                            for k in range(nt):
                                if lo[s, k] <= nu and nu <= hi[s, k]:
                                    utier[j, s] = k
            # coset bounds; an upper bound from the cosets whose rounding is a codeword
            ub = 1e300
            ubq = -1
            for q in range(cval.shape[0]):
                s1, s2, s3 = coset_sets(q, pbytes)
                v = ulb[0, s1] + ulb[1, s2] + ulb[2, s3]
                cval[q] = v
                t1 = utier[0, s1]
                t2 = utier[1, s2]
                t3 = utier[2, s3]
                if v < ub and t1 >= 0 and t2 >= 0 and t3 >= 0 and allowed[t1, t2, t3]:
                    ub = v
                    ubq = q
            best_c = -1
            cand = np.nonzero(cval < ub)[0]
            order = np.argsort(cval[cand])
            nscan = 0
            for oi in range(order.shape[0]):
                q = cand[order[oi]]
                if cval[q] >= ub:
                    break
                ss = coset_sets(q, pbytes)
                for j in range(3):
                    if not done[j, ss[j]]:
                        scan_tiers(y[blk, 8 * j:8 * j + 8], tab, ss[j], start, ex[j, ss[j]], exarg[j, ss[j]])
                        done[j, ss[j]] = True
                        nscan += 1
                for c in range(C):
                    v = ex[0, ss[0], combos[c, 0]] + ex[1, ss[1], combos[c, 1]] + ex[2, ss[2], combos[c, 2]]
                    if v < ub:
                        ub = v
                        ubq = q
                        best_c = c
            stats[blk] = nscan
            ss = coset_sets(ubq, pbytes)
            for j in range(3):
                for ii in range(8):
                    if best_c < 0:
                        out[blk, 8 * j + ii] = urow[j, ss[j], ii]
                    else:
                        out[blk, 8 * j + ii] = tab[ss[j], exarg[j, ss[j], combos[best_c, j]], ii]
        return out

    @numba.njit(cache=False)
    def encode_scan(y, tab, start, combos, pbytes, bytes_, out):
        """Reference: every octet set and tier scanned in full, every coset and combo."""
        n = y.shape[0]
        nt = start.shape[0] - 1
        C = combos.shape[0]
        ex = np.empty((3, 1024, nt))
        exarg = np.empty((3, 1024, nt), dtype=np.int64)
        for blk in range(n):
            for j in range(3):
                for eps in range(2):
                    for bi in range(bytes_.shape[0]):
                        for pi in range(2):
                            s = eps * 512 + bytes_[bi] * 2 + pi
                            scan_tiers(y[blk, 8 * j:8 * j + 8], tab, s, start, ex[j, s], exarg[j, s])
            best = 1e300
            bq = 0
            bc = 0
            for q in range(2 * 4096 * 4):
                ss = coset_sets(q, pbytes)
                for c in range(C):
                    v = ex[0, ss[0], combos[c, 0]] + ex[1, ss[1], combos[c, 1]] + ex[2, ss[2], combos[c, 2]]
                    if v < best:
                        best = v
                        bq = q
                        bc = c
            ss = coset_sets(bq, pbytes)
            for j in range(3):
                a = exarg[j, ss[j], combos[bc, j]]
                for ii in range(8):
                    out[blk, 8 * j + ii] = tab[ss[j], a, ii]
        return out

    return encode, encode_scan


_K = None


def kernels():
    global _K
    if _K is None:
        _K = _kernels()
    return _K


def encode(tables: TrioTables, y):
    """Exact nearest codewords (int64 v-units) of y (n, 24) in v-units; also scans per block."""
    enc, _ = kernels()
    out = np.zeros(y.shape, dtype=np.int64)
    stats = np.zeros(len(y), dtype=np.int64)
    enc(np.ascontiguousarray(y, dtype=np.float64), tables.tab, tables.lo, tables.hi, tables.start,
        tables.triples, tables.allowed, tables.pbytes, BYTES, out, stats)
    return out, stats


def encode_scan(tables: TrioTables, y):
    _, enc = kernels()
    out = np.zeros(y.shape, dtype=np.int64)
    enc(np.ascontiguousarray(y, dtype=np.float64), tables.tab, tables.start, tables.triples,
        tables.pbytes, BYTES, out)
    return out


# ---------------------------------------------------------------------------
# quantizers on top: one scale, or two scales (1 gain bit)
# ---------------------------------------------------------------------------

def quantize(tables, x, scale):
    v, st = encode(tables, x * (SQRT8 / scale))
    return v * (scale / SQRT8), st


def quantize2(tables, x, scales):
    """Union of two scaled copies (a gain bit): nearest of the two nearest codewords."""
    q0, _ = quantize(tables, x, scales[0])
    q1, _ = quantize(tables, x, scales[1])
    d0 = ((x - q0) ** 2).sum(1)
    d1 = ((x - q1) ** 2).sum(1)
    return np.where((d1 < d0)[:, None], q1, q0)


def fit_scale(tables, x, iters):
    rms = float(np.sqrt(np.mean(x ** 2)))
    s, f = golden_min(lambda s: float(np.mean((quantize(tables, x, s)[0] - x) ** 2)), 0.5 * rms, 1.5 * rms, iters)
    return s, f


def fit_two(tables, x, iters):
    """Two scales: Lloyd-style alternation from a split of the single scale."""
    s, _ = fit_scale(tables, x, iters)
    sc = np.array([0.8 * s, 1.15 * s])
    for _ in range(4):
        q = [quantize(tables, x, c)[0] for c in sc]
        d = np.stack([((x - qq) ** 2).sum(1) for qq in q])
        sel = d.argmin(0)
        for c in range(2):
            m = sel == c
            if m.any():
                xm = x[m]
                sc[c] = golden_min(lambda s, xm=xm: float(np.mean((quantize(tables, xm, s)[0] - xm) ** 2)),
                               0.6 * sc[c], 1.4 * sc[c], max(6, iters // 2))[0]
    return sc


# ---------------------------------------------------------------------------

VARIANTS = {
    # name: (tier sizes, allowed tier triples, gain bit)
    "trio": ([2048], [(0, 0, 0)], False),
    "ball-512x8": ([512] * 8, 64, False),
    "ball-256x16": ([256] * 16, 512, False),
    "ball-128x40": ([128] * 40, 4096, False),
    "trio-1024+gain": ([1024], [(0, 0, 0)], True),
}


def bits_of(name, tables):
    return tables.log2_size + (1 if VARIANTS[name][2] else 0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--fit", type=int, default=1500, help="blocks for the scale fit")
    ap.add_argument("--test", type=int, default=3000, help="blocks for the MSE")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--check", type=int, default=0, help="blocks checked against full scans")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anchors", action="store_true", help="BallQuantizer and ShapeGainQuantizer, same blocks")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    xf = rng.standard_normal((a.fit, 24))
    xt = rng.standard_normal((a.test, 24))
    print(f"{'variant':24s} {'bits/dim':>9s} {'MSE/dim':>16s} {'scale(s)':>16s} {'scans/blk':>9s} {'s':>6s}")
    if a.anchors:
        from leechlib import BallQuantizer, ShapeGainQuantizer
        for q in (BallQuantizer(2.0), ShapeGainQuantizer(2.0)):
            t0 = time.time()
            q.fit(xf)
            e = ((q.quantize(xt) - xt) ** 2).mean(1)
            print(f"{type(q).__name__:24s} {q.bits_per_dim:9.4f} {e.mean():9.4f} ± {e.std() / math.sqrt(len(e)):.4f} "
                  f"{'':>16s} {'':>9s} {time.time() - t0:6.1f}", flush=True)
    for name in filter(None, a.variants.split(",")):
        t0 = time.time()
        sizes, triples, gain = VARIANTS[name]
        tables = TrioTables(sizes, triples)
        bits = bits_of(name, tables)
        if a.check:
            y = rng.standard_normal((a.check, 24)) * (SQRT8 / 0.33)
            v1, _ = encode(tables, y)
            v2 = encode_scan(tables, y)
            d1 = ((y - v1) ** 2).sum(1)
            d2 = ((y - v2) ** 2).sum(1)
            print(f"  check {name}: max |d_fast - d_scan| = {np.abs(d1 - d2).max():.2e} on {a.check} blocks")
            assert np.allclose(d1, d2), name
        if gain:
            sc = fit_two(tables, xf, a.iters)
            q = quantize2(tables, xt, sc)
            st = np.zeros(1)
            sdesc = f"{sc[0]:.4f},{sc[1]:.4f}"
        else:
            s, _ = fit_scale(tables, xf, a.iters)
            q, st = quantize(tables, xt, s)
            sdesc = f"{s:.4f}"
        e = ((q - xt) ** 2).mean(1)
        print(f"{name:24s} {bits / 24:9.4f} {e.mean():9.4f} ± {e.std() / math.sqrt(len(e)):.4f} "
              f"{sdesc:>16s} {st.mean():9.2f} {time.time() - t0:6.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
