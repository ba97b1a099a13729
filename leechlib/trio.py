r"""The trio code: a decode-friendly 48-bit code of Leech lattice points (issue #22).

A codeword is decoded from its index by a handful of table lookups, sign flips and a
fixed permutation per octet, with no search and no branch; the encoder is exact (the
nearest codeword).  The derivation and the measurements are in ``docs/trio_code.rst``.

Structure (integer model :math:`\sqrt8\Lambda_{24}`, coordinates in MOG order): a
lattice vector is ``v = eps*1 + 2c + 4k`` with ``eps`` in {0, 1}, ``c`` a Golay
codeword and ``sum(k) = eps (mod 2)``.  The three octads of the standard trio
(coordinates 0-7, 8-15, 16-23) split ``v`` into octets; on each octet ``c`` is an
even-weight pattern byte ``p_j`` and ``pi_j = sum of k_i over the octet (mod 2)`` a
class bit, ``pi_1 + pi_2 + pi_3 = eps``.  Each octet vector is a fixed transform
(sign flips by ``p_j`` when ``eps = 1``, a permutation putting the odd positions of
``p_j`` first when ``eps = 0``) of a *canonical* vector of one of 12 classes
(``eps = 1``: ``pi``; ``eps = 0``: weight of ``p_j`` and ``pi``).  Each class has a
table of its ``n_tiers * tier_size`` cheapest canonical vectors, cut into tiers of
``tier_size`` rows; the codebook holds, for every coset ``(eps, c, pi_1, pi_2)``, the
products of three tiers ``(k_1, k_2, k_3)`` from a list of ``n_combos`` allowed tier
triples (those of least summed mean norm: a 24-dimensional ball built from octet
boxes).  Default: 16 tiers of 256 rows, 512 triples: ``2 * 4096 * 4 * 512 * 256^3 =
2^48`` codewords, exactly 2 bits per dimension.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _mog
from ._jit import num_threads
from ._optimize import golden_min
from ._validation import SQRT8, as_blocks, as_codes, check_int, check_positive, check_range, subsample

__all__ = ["TrioCodebook", "TrioQuantizer"]

#: largest |coordinate| (integer model) the class tables are enumerated to; complete
#: below norm 144 (the next values are 12, 13, 14)
_VMAX = 11
_NMAX = 143
_MAX_ABS = 1e8


def _class_candidates(eps: int, w: int, pi: int):
    """Canonical vectors of a class, norm <= 143, sorted by (norm, lexicographic)."""
    r = np.arange(-_VMAX, _VMAX + 1)
    if eps == 1:
        vals = [r[r % 4 == 1]] * 8
        p = np.zeros(8, dtype=np.int32)
        base = 1
    else:
        vals = [r[r % 4 == 2]] * w + [r[r % 4 == 0]] * (8 - w)
        p = np.array([1] * w + [0] * (8 - w), dtype=np.int32)
        base = 0
    g = np.array(np.meshgrid(*vals, indexing="ij"), dtype=np.int32).reshape(8, -1).T
    nrm = (g * g).sum(axis=1)
    keep = nrm <= _NMAX
    g, nrm = g[keep], nrm[keep]
    k = (g - base - 2 * p) // 4
    g, nrm = g[k.sum(axis=1) % 2 == pi], nrm[k.sum(axis=1) % 2 == pi]
    order = np.lexsort(tuple(g.T[::-1]) + (nrm,))
    return g[order].astype(np.int8), nrm[order]


def _class_key(eps: int, w: int, pi: int) -> int:
    return pi if eps == 1 else 2 + w + pi  # w in {0, 2, 4, 6, 8}: classes 2..11


@functools.lru_cache(maxsize=4)
def _tables(tier_size: int, n_tiers: int, n_combos: int) -> dict:
    R = tier_size * n_tiers
    tab = np.zeros((12, R, 8), dtype=np.int8)
    lo = np.ones((12, n_tiers), dtype=np.int64)
    hi = np.zeros((12, n_tiers), dtype=np.int64)
    means = np.zeros((12, n_tiers))
    for eps in (0, 1):
        for w in ((0,) if eps else (0, 2, 4, 6, 8)):
            for pi in (0, 1):
                g, nrm = _class_candidates(eps, w, pi)
                if len(g) < R:  # pragma: no cover - guarded by the argument checks
                    raise ValueError(f"class tables hold at most {len(g)} rows, asked {R}")
                cl = _class_key(eps, w, pi)
                tab[cl] = g[:R]
                for t in range(n_tiers):
                    a, b = t * tier_size, (t + 1) * tier_size
                    means[cl, t] = nrm[a:b].mean()
                    # norms wholly inside rows [a, b): the first and last level may be partial
                    full = [n for n in np.unique(nrm[a:b]) if not np.any(nrm[:a] == n)
                            and np.count_nonzero(nrm == n) == np.count_nonzero(nrm[a:b] == n)]
                    if full:
                        lo[cl, t], hi[cl, t] = min(full), max(full)
    key = means.mean(axis=0)
    allc = np.array(np.meshgrid(*[np.arange(n_tiers)] * 3, indexing="ij")).reshape(3, -1).T
    order = np.lexsort(tuple(allc.T[::-1]) + (np.round(key[allc].sum(axis=1), 9),))
    combos = allc[order[:n_combos]].astype(np.int64)
    allowed = np.zeros((n_tiers,) * 3, dtype=np.bool_)
    allowed[tuple(combos.T)] = True
    combo_of = np.full((n_tiers,) * 3, -1, dtype=np.int64)
    combo_of[tuple(combos.T)] = np.arange(n_combos)

    perm = np.tile(np.arange(8, dtype=np.int64), (2, 256, 1))
    sign = np.ones((2, 256, 8), dtype=np.int64)
    cls_of = np.full((2, 256, 2), -1, dtype=np.int64)
    for b in range(256):
        bits = (b >> np.arange(8)) & 1
        w = int(bits.sum())
        if w % 2:
            continue
        perm[0, b] = np.r_[np.nonzero(bits)[0], np.nonzero(bits == 0)[0]]
        sign[1, b] = 1 - 2 * bits
        for pi in (0, 1):
            cls_of[0, b, pi] = _class_key(0, w, pi)
            cls_of[1, b, pi] = _class_key(1, 0, pi)
    words = _mog.codeword_ints().astype(np.int64)  # word of message m = row m
    gen_lo = words[np.arange(64)]
    gen_hi = words[np.arange(64) << 6]
    # the Golay code is linear: the word of message m is the XOR of those of its halves
    # (tests/test_trio.py checks all 4096)
    word_order = np.argsort(words)
    # canonical rows: packed 8-byte keys, sorted, per class (for index())
    keys = (tab.astype(np.int64) & 255) << (8 * np.arange(8, dtype=np.int64))
    keys = keys.sum(axis=-1)
    key_order = np.argsort(keys, axis=1)
    out = dict(tab=tab, lo=lo, hi=hi, combos=combos, allowed=allowed, combo_of=combo_of,
               perm=perm, sign=sign, cls_of=cls_of, words=words, gen_lo=gen_lo, gen_hi=gen_hi,
               word_order=word_order, words_sorted=words[word_order],
               keys_sorted=np.take_along_axis(keys, key_order, axis=1), key_order=key_order)
    for v in out.values():
        v.flags.writeable = False
    return out


def _hash_slot(key, hbits):
    """The hash slot of packed octet keys (numpy int64 arrays or ints); the kernels
    compute the same (no intermediate exceeds 2**62)."""
    x = (key ^ (key >> 13) ^ (key >> 27)) & 0x3FFFFFFF
    return ((x * 2654435761) >> 16) & ((1 << hbits) - 1)


@functools.lru_cache(maxsize=4)
def _search_tables(tier_size: int, n_tiers: int, n_combos: int) -> dict:
    """Tables of the encoder only, derived from :func:`_tables` (the codebook is unchanged).

    * ``hkey`` (12, R): each row's packed key ``sum(((v_i + 16) & 31) << 5 i)``
      (entries lie in [-11, 11]); ``hslot`` (12, H) int32: an open-addressing hash
      (linear probing) key -> row, -1 empty, ``H = 2**hbits >= 2 R``;
    * ``base`` (2, 256, 8): the canonical vector of an octet set is ``base + 4 z``
      with ``z`` integer, ``sum(z) = pi (mod 2)``;
    * ``by_b1`` (256, 32): the Golay messages whose word has first byte ``b1``;
      ``pairs`` (256, 16, 4): per ``b1`` its 16 second bytes ``b2`` as ``(b2, b3, m,
      m')``: the messages ``m``, ``m'`` of the two words ``(b1, b2, b3)`` and
      ``(b1, b2, ~b3)``;
    * ``tnorm`` (12, R) float: the row norms; ``nmax`` (12,): the largest of each class;
    * ``kstar``, ``slack`` (12,): every codeword has ``sum_j |t_j|^2 <= kstar +
      sum_j slack[class_j]`` (the allowed triples have summed tier key at most
      ``kstar``, and a row's tier key is at least its norm less its class's slack).
    """
    T = _tables(tier_size, n_tiers, n_combos)
    tab = T["tab"].astype(np.int64)
    R = tab.shape[1]
    hkey = (((tab + 16) & 31) << (5 * np.arange(8, dtype=np.int64))).sum(axis=-1)
    hbits = max(int(2 * R - 1).bit_length(), 4)
    H = 1 << hbits
    hslot = np.full((12, H), -1, dtype=np.int32)
    for c in range(12):
        slots = _hash_slot(hkey[c], hbits)
        for r in range(R):
            h = int(slots[r])
            while hslot[c, h] >= 0:
                h = (h + 1) & (H - 1)
            hslot[c, h] = r
    base = np.zeros((2, 256, 8), dtype=np.int64)
    base[1] = 1
    for b in range(256):
        w = bin(b).count("1")
        base[0, b, :w] = 2
    words = T["words"]
    by_b1 = np.zeros((256, 32), dtype=np.int64)
    fill = np.zeros(256, dtype=np.int64)
    for m in range(4096):
        b1 = int(words[m]) & 255
        by_b1[b1, fill[b1]] = m
        fill[b1] += 1
    tnorm = (tab * tab).sum(axis=-1).astype(np.float64)
    nmax = tnorm.max(axis=1)
    # per first byte b1 its 16 second bytes b2, each with the two words (b3 and its
    # complement: the words zero on octets 1-2 are 0 and the third octad)
    pairs = np.zeros((256, 16, 4), dtype=np.int64)
    pos = {int(w): m for m, w in enumerate(words)}
    for b1 in range(256):
        if fill[b1] == 0:
            continue
        seen = []
        for m in by_b1[b1]:
            w = int(words[m])
            b2, b3 = (w >> 8) & 255, (w >> 16) & 255
            if b2 in seen:
                continue
            pairs[b1, len(seen)] = (b2, b3, m, pos[w ^ (255 << 16)])
            seen.append(b2)
    # the allowed triples are those of least summed tier key (the mean norm over the
    # classes): sum key <= kstar; and key(tier of row t) >= |t|^2 - slack[class]
    key = tnorm.reshape(12, n_tiers, tier_size).mean(axis=2).mean(axis=0)
    kstar = float(key[T["combos"]].sum(axis=1).max()) + 1e-9
    slack = (tnorm - np.repeat(key, tier_size)[None, :]).max(axis=1)
    out = dict(hkey=hkey, hslot=hslot, hbits=hbits, base=base, by_b1=by_b1, pairs=pairs, nmax=nmax, tnorm=tnorm,
               kstar=kstar, slack=slack)
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    return out


class TrioCodebook:
    r"""Index <-> point map of the trio code (integer model :math:`\sqrt8\Lambda_{24}`).

    Parameters
    ----------
    tier_size : int
        Rows per tier, a power of two (default 256).
    n_tiers : int
        Tiers per class table (default 16); ``tier_size * n_tiers <= 6144``.
    n_combos : int
        Allowed tier triples, a power of two at most ``n_tiers**3`` (default 512).

    Attributes
    ----------
    size : int
        ``2**bits``, ``bits = 15 + log2(n_combos) + 3 * log2(tier_size)`` (48 by default).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import LeechLattice
    >>> from leechlib.trio import TrioCodebook
    >>> cb = TrioCodebook()
    >>> cb.bits, cb.size == 2**48
    (48, True)
    >>> idx = np.array([0, 12345678901234, 2**48 - 1])
    >>> v = cb.point(idx)
    >>> bool(LeechLattice().contains(v, coords="int").all()), bool((cb.index(v) == idx).all())
    (True, True)
    """

    def __init__(self, tier_size=256, n_tiers=16, n_combos=512):
        s = check_int(tier_size, "tier_size", 1, 4096)
        t = check_int(n_tiers, "n_tiers", 1, 6144)
        c = check_int(n_combos, "n_combos", 1)
        if s & (s - 1):
            raise ValueError(f"tier_size must be a power of two, got {s}")
        if c & (c - 1):
            raise ValueError(f"n_combos must be a power of two, got {c}")
        if s * t > 6144:
            raise ValueError(f"tier_size * n_tiers must be at most 6144, got {s * t}")
        if c > t ** 3:
            raise ValueError(f"n_combos must be at most n_tiers**3 = {t ** 3}, got {c}")
        self.tier_size, self.n_tiers, self.n_combos = s, t, c
        self._b = s.bit_length() - 1
        self._cb = c.bit_length() - 1
        self.bits = 15 + self._cb + 3 * self._b
        self.size = 1 << self.bits

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"TrioCodebook(tier_size={self.tier_size}, n_tiers={self.n_tiers}, n_combos={self.n_combos})"

    @property
    def row_bits(self) -> int:
        """Bits of a row index within a tier (``log2(tier_size)``; 8 by default)."""
        return self._b

    @property
    def combo_bits(self) -> int:
        """Bits of the tier-triple index (``log2(n_combos)``; 9 by default)."""
        return self._cb

    @property
    def tables(self) -> dict:
        """The decode and search tables (read-only numpy arrays)."""
        return _tables(self.tier_size, self.n_tiers, self.n_combos)

    @property
    def table_bytes(self) -> int:
        """Bytes of the tables a decoder needs (int8 class tables, packed words, tier
        triples, permutation/sign bytes, class map)."""
        return 12 * self.tier_size * self.n_tiers * 8 + 128 * 4 + self.n_combos * 3 + 2 * 256 * 8 * 2 + 256

    def point(self, indices, *, reference=False) -> np.ndarray:
        """Codewords (int64, integer model, shape ``indices.shape + (24,)``)."""
        idx = as_codes(indices, "indices", allow_empty=True)
        check_range(idx, self.size, "indices")
        T = self.tables
        flat = idx.ravel()
        args = (self._b, self._cb, T["tab"], T["perm"], T["sign"], T["cls_of"], T["gen_lo"], T["gen_hi"],
                T["combos"])
        if reference:
            out = _ref().trio_point_ref(flat, *args)
        else:
            out = np.zeros((len(flat), 24), dtype=np.int64)
            if len(flat):
                _kern().trio_point(flat, *args, out)
        return out.reshape(idx.shape + (24,))

    def index(self, points) -> np.ndarray:
        """Indices (int64) of codewords ``points`` (integer model, ``(..., 24)``).

        A point that is not a codeword is a ``ValueError``.
        """
        arr = np.asarray(points)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"points must be an integer array, got dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape[-1] != 24:
            raise ValueError(f"points must have shape (..., 24), got shape {arr.shape}")
        v = arr.reshape(-1, 24).astype(np.int64)
        T = self.tables
        bad = np.zeros(len(v), dtype=bool)
        eps = v[:, 0] & 1
        bad |= np.any((v & 1) != eps[:, None], axis=1)
        pat = np.where(eps[:, None] == 1, (v % 4) == 3, (v % 4) == 2).astype(np.int64)
        k = (v - eps[:, None] - 2 * pat) // 4
        word = (pat << np.arange(24)).sum(axis=1)
        pos = np.clip(np.searchsorted(T["words_sorted"], word), 0, 4095)
        bad |= T["words_sorted"][pos] != word
        msg = T["word_order"][pos]
        pis = (k.reshape(-1, 3, 8).sum(axis=2)) & 1
        bad |= (pis.sum(axis=1) & 1) != eps
        S = self.tier_size
        tiers = np.zeros((len(v), 3), dtype=np.int64)
        rows = np.zeros((len(v), 3), dtype=np.int64)
        for j in range(3):
            p = (word >> (8 * j)) & 255
            oct_ = v[:, 8 * j:8 * j + 8]
            canon = np.take_along_axis(oct_, T["perm"][eps, p], axis=1) * T["sign"][eps, p]
            bad |= np.abs(canon).max(axis=1) > 127
            key = ((canon & 255) << (8 * np.arange(8))).sum(axis=1)
            cl = T["cls_of"][eps, p, pis[:, j]]
            r = np.empty(len(v), dtype=np.int64)
            for c in np.unique(cl):
                sel = cl == c
                ks = T["keys_sorted"][c]
                at = np.clip(np.searchsorted(ks, key[sel]), 0, len(ks) - 1)
                bad[sel] |= ks[at] != key[sel]
                r[sel] = T["key_order"][c][at]
            tiers[:, j], rows[:, j] = r // S, r % S
        combo = T["combo_of"][tiers[:, 0], tiers[:, 1], tiers[:, 2]]
        bad |= combo < 0
        if bad.any():
            raise ValueError(f"points holds {int(bad.sum())} vectors that are not codewords of {self!r}")
        b = self._b
        q = ((eps * 4096 + msg) * 2 + pis[:, 0]) * 2 + pis[:, 1]
        out = (((q << self._cb) + combo) << (3 * b)) + (rows[:, 0] << (2 * b)) + (rows[:, 1] << b) + rows[:, 2]
        return out.reshape(arr.shape[:-1])

    def nearest(self, y, *, reference=False, return_scans=False, workers=None):
        """Exact nearest codewords (int64, integer model) of real blocks ``y`` (..., 24)
        given in the integer model, on ``workers`` threads.  ``reference=True``: the
        exhaustive numpy scan.  ``return_scans=True`` also returns, per block, the
        number of octet sets the search enumerated or scanned."""
        yy, shape = as_blocks(y, "y")
        if np.abs(yy).max() >= _MAX_ABS:
            raise ValueError(f"y has entries too large: |y| must stay below {_MAX_ABS:.0e}")
        T = self.tables
        if reference:
            out = _ref().trio_nearest_ref(yy, self.tier_size, T["tab"], T["perm"], T["sign"], T["cls_of"],
                                          T["words"], T["combos"])
            scans = None
        else:
            X = _search_tables(self.tier_size, self.n_tiers, self.n_combos)
            out = np.zeros(yy.shape, dtype=np.int64)
            scans = np.zeros(len(yy), dtype=np.int64)
            with num_threads(workers):
                _kern().trio_nearest(yy, self.tier_size, T["tab"], T["perm"], T["sign"], T["cls_of"], T["words"],
                                     T["allowed"], X["hkey"], X["hslot"], X["hbits"], X["base"], X["pairs"],
                                     X["nmax"], X["tnorm"], X["kstar"], X["slack"], out, scans)
        out = out.reshape(shape + (24,))
        return (out, scans) if return_scans else out


def _kern():
    from ._kernels import trio

    return trio


def _ref():
    from ._kernels import trio

    return trio


class TrioQuantizer:
    """Quantizer on the trio code: ``x_hat = scale * v / sqrt(8)``, ``v`` the nearest
    codeword of ``x * sqrt(8) / scale`` (follows :class:`leechlib.Quantizer`).

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib.trio import TrioQuantizer
    >>> x = np.random.default_rng(0).standard_normal((300, 24))
    >>> q = TrioQuantizer().fit(x, iters=8)
    >>> q.bits_per_dim
    2.0
    >>> codes = q.encode(x[:5])
    >>> bool(np.allclose(q.decode(codes), q.quantize(x[:5])))
    True
    """

    block_size = 24

    def __init__(self, *, scale=None, tier_size=256, n_tiers=16, n_combos=512):
        self.codebook = TrioCodebook(tier_size, n_tiers, n_combos)
        self.size = self.codebook.size
        self.scale = None if scale is None else check_positive(scale, "scale")

    @property
    def bits(self) -> float:
        return float(self.codebook.bits)

    @property
    def bits_per_dim(self) -> float:
        return self.codebook.bits / 24.0

    def __repr__(self) -> str:
        return f"TrioQuantizer({self.codebook!r}, scale={self.scale!r})"

    def prepare(self) -> TrioQuantizer:
        self.codebook.tables  # noqa: B018 - builds the cached tables
        return self

    def _scale(self) -> float:
        if self.scale is None:
            raise RuntimeError("call fit() or pass scale= before encoding or decoding")
        return self.scale

    def _points(self, y, s, workers=None):
        return self.codebook.nearest(y * (SQRT8 / s), workers=workers).astype(np.float64) * (s / SQRT8)

    def fit(self, x, *, max_points=2000, iters=12, workers=None) -> TrioQuantizer:
        """MSE-optimal scale for the blocks ``x`` by golden-section search (as
        :meth:`BallQuantizer.fit`, whose range it uses); returns ``self``."""
        max_points = check_int(max_points, "max_points", 1)
        iters = check_int(iters, "iters", 1, 200)
        y, _ = as_blocks(x)
        y = subsample(y, max_points)
        rms = float(np.sqrt(np.mean(y ** 2)))
        if rms == 0.0:
            raise ValueError("x is all zeros: no scale fits it")
        s, _ = golden_min(lambda s: float(np.mean((self._points(y, s, workers) - y) ** 2)), 0.5 * rms, 1.5 * rms,
                          iters)
        self.scale = float(s)
        return self

    def quantize(self, x, *, workers=None) -> np.ndarray:
        s = self._scale()
        y, shape = as_blocks(x)
        return self._points(y, s, workers).reshape(shape + (24,))

    def encode(self, x, *, workers=None) -> np.ndarray:
        s = self._scale()
        y, shape = as_blocks(x)
        return self.codebook.index(self.codebook.nearest(y * (SQRT8 / s), workers=workers)).reshape(shape)

    def decode(self, codes, *, workers=None) -> np.ndarray:
        s = self._scale()
        c = as_codes(codes, "codes")
        return self.codebook.point(c).astype(np.float64) * (s / SQRT8)


